//! The dashboard after real runs: in a real browser (headless Chromium, as `.ci/run` installs
//! it) and over HTTP. Helpers are in `dashboard/support.rs`.

#[path = "dashboard/support.rs"]
pub(crate) mod support;

use std::time::Duration;

use linedee::Workflow;
use linedee::status::RunState;
use linedee_tests::TestEngine;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_shows_the_runs_and_one_timeline_bar_per_attempt() {
    let t = TestEngine::start("").await;
    let runs = succeeded_and_failed(&t).await;
    let d = dashboard(&t.engine).await;

    let dom = chromium(&format!("{}/#/runs", d.url), &["--dump-dom"]).await;
    let rows = tags(&dom, "tr", &["class=\"run-row\""]);
    assert_eq!(rows.len(), 2, "{dom}");
    assert_eq!(
        tags(
            &dom,
            "tr",
            &[
                &format!("data-run-id=\"{}\"", runs.ok),
                "data-status=\"succeeded\""
            ]
        )
        .len(),
        1,
        "{dom}"
    );
    assert_eq!(
        tags(
            &dom,
            "tr",
            &[
                &format!("data-run-id=\"{}\"", runs.failed),
                "data-status=\"failed\""
            ]
        )
        .len(),
        1,
        "{dom}"
    );
    assert!(
        dom.contains("Fails on purpose") && dom.contains("in/bad"),
        "{dom}"
    );
    assert!(!dom.contains(&d.token), "the token reached the page");

    let failed_task = format!("{}.0.0", runs.failed);
    let dom = chromium(
        &format!("{}/#/runs/{}", d.url, runs.failed),
        &["--dump-dom"],
    )
    .await;
    let bars = tags(&dom, "rect", &["class=\"attempt"]);
    assert_eq!(bars.len(), 2, "one bar per attempt: {dom}");
    for (n, bar) in bars.iter().enumerate() {
        assert!(
            bar.contains(&format!("data-task-id=\"{failed_task}\"")),
            "{bar}"
        );
        assert!(
            bar.contains(&format!("data-attempt=\"{}\"", n + 1)),
            "{bar}"
        );
        assert!(bar.contains("class=\"attempt failed\""), "{bar}");
    }
    assert_eq!(
        tags(
            &dom,
            "section",
            &[
                &format!("data-task-id=\"{failed_task}\""),
                "data-status=\"failed\""
            ]
        )
        .len(),
        1,
        "{dom}"
    );
    assert!(dom.contains("<dd class=\"exit-code\">3</dd>"), "{dom}");
    assert!(
        tags(&dom, "dd", &["class=\"error-text failure\""]).len() == 1,
        "{dom}"
    );
    assert!(
        dom.contains("failing on purpose"),
        "the log is shown: {dom}"
    );

    let dom = chromium(&format!("{}/#/runs/{}", d.url, runs.ok), &["--dump-dom"]).await;
    let bars = tags(&dom, "rect", &["class=\"attempt"]);
    assert_eq!(bars.len(), 1, "{dom}");
    assert!(bars[0].contains("data-outcome=\"succeeded\""), "{dom}");
    assert!(dom.contains("hello from the dashboard test"), "{dom}");

    let dom = chromium(&format!("{}/#/?status=failed", d.url), &["--dump-dom"]).await;
    let rows = tags(&dom, "tr", &["class=\"run-row\""]);
    assert_eq!(rows.len(), 1, "filtered by status: {dom}");
    assert!(rows[0].contains(&runs.failed), "{dom}");

    screenshot(&format!("{}/#/runs", d.url), "runs.png").await;
    screenshot(
        &format!("{}/#/runs/{}", d.url, runs.failed),
        "run-failed.png",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_need_the_local_token() {
    let t = TestEngine::start("").await;
    let runs = succeeded_and_failed(&t).await;
    let d = dashboard(&t.engine).await;
    let bearer = format!("Bearer {}", d.token);

    let retry = format!("{}/api/runs/{}/retry", d.url, runs.failed);
    let (code, body) = post(&retry, None).await;
    assert_eq!(code, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("Authorization: Bearer")),
        "{body}"
    );
    let (code, _) = post(&retry, Some("Bearer not-the-token")).await;
    assert_eq!(code, 401);
    let (code, _) = post(&retry, Some(&d.token)).await;
    assert_eq!(code, 401, "the scheme is required");
    let (code, body) = post(&retry, Some(&bearer)).await;
    assert_eq!(
        (code, &body["ok"]),
        (200, &serde_json::json!(true)),
        "{body}"
    );
    // Once the retry is answered, the status document no longer shows the failure before it
    // (it shows the run queued, or already further on), so `linedee run --watch` follows the
    // redrive instead of printing the old result.
    let doc = t.client.run(&runs.failed).await.expect("status document");
    let task = doc.tasks().next().expect("a task");
    assert!(
        !(doc.status == RunState::Failed && task.attempts == 2),
        "the document still shows the run before the retry: {doc:#?}"
    );
    // The redriven task runs again (two more attempts) and fails again.
    let doc = wait_api(&d, &runs.failed, |doc| {
        doc["run"]["status"] == "failed" && doc["attempts"].as_array().is_some_and(|a| a.len() == 4)
    })
    .await;
    assert_eq!(doc["run"]["steps"][0]["tasks"][0]["attempts"], 4, "{doc}");

    // The engine's refusal comes back with its message.
    let (code, body) = post(
        &format!("{}/api/runs/{}/retry", d.url, runs.ok),
        Some(&bearer),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("only failed or cancelled runs can be retried")),
        "{body}"
    );

    let slow = Workflow::new()
        .title("Sleeps")
        .step(bash("echo started; sleep 30").name("Sleep"));
    let slow = t.client.submit("in/slow", &slow).await.expect("submit");
    let id = slow.run_id().to_owned();
    wait_api(&d, &id, |doc| {
        doc["run"]["steps"][0]["tasks"][0]["status"] == "running"
    })
    .await;
    // The live tail: the log of the running attempt is served while it grows.
    let log = format!("{}/api/logs/{id}.0.0/1", d.url);
    let deadline = tokio::time::Instant::now() + WAIT;
    let slice = loop {
        let (code, slice) = get_json(&log).await;
        if code == 200
            && slice["text"]
                .as_str()
                .is_some_and(|t| t.contains("started"))
        {
            break slice;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no live log: {slice}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (_, rest) = get_json(&format!("{log}?offset={}", slice["next_offset"])).await;
    assert_eq!(rest["text"], "", "{rest}");
    let cancel = format!("{}/api/runs/{id}/cancel", d.url);
    let (code, _) = post(&cancel, None).await;
    assert_eq!(code, 401);
    let (code, doc) = get_json(&format!("{}/api/runs/{id}", d.url)).await;
    assert_eq!(
        (code, &doc["run"]["status"]),
        (200, &serde_json::json!("running")),
        "still running after a refused cancel"
    );
    let (code, body) = post(&cancel, Some(&bearer)).await;
    assert_eq!(code, 200, "{body}");
    let status = slow.wait(WAIT).await.expect("cancelled run finishes");
    assert_eq!(status.status, RunState::Cancelled, "{status:#?}");

    let (code, body) = post(
        &format!("{}/api/runs/no-such-run/cancel", d.url),
        Some(&bearer),
    )
    .await;
    assert_eq!(code, 404, "{body}");
    let resp = reqwest::get(&cancel).await.expect("GET");
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_read_by_offset_and_never_from_outside_the_logs() {
    let t = TestEngine::start("").await;
    let runs = succeeded_and_failed(&t).await;
    let d = dashboard(&t.engine).await;
    let task = format!("{}.0.0", runs.failed);

    let (code, slice) = get_json(&format!("{}/api/logs/{task}/2", d.url)).await;
    assert_eq!(code, 200, "{slice}");
    let text = slice["text"].as_str().expect("text");
    assert!(text.contains("failing on purpose"), "{slice}");
    assert_eq!(slice["next_offset"], slice["size"], "{slice}");
    assert_eq!(slice["next_offset"], text.len(), "{slice}");
    let (code, tail) = get_json(&format!("{}/api/logs/{task}/2?offset=8", d.url)).await;
    assert_eq!(
        (code, tail["text"].as_str()),
        (200, Some(&text[8..])),
        "{tail}"
    );

    // Literal `..` segments, encoded slashes and anything but a task id and an attempt number
    // are refused before any file is opened.
    for path in [
        "/api/logs/../1".to_owned(),
        "/api/logs/..%2F..%2Fstore%2Fx.0.0/1".to_owned(),
        format!("/api/logs/{task}/..%2F..%2F..%2Fetc%2Fpasswd"),
        format!("/api/logs/{task}/1.log"),
        format!("/api/logs/{task}/0"),
        format!("/api/logs/{task}/1?offset=-1"),
        format!("/api/logs/{task}/1?file=x"),
    ] {
        assert_eq!(raw_get(&d.url, &path, "127.0.0.1").await, 400, "{path}");
    }
    // Path segments past the route are no route at all.
    assert_eq!(
        raw_get(&d.url, "/api/logs/../../../etc/passwd", "127.0.0.1").await,
        404
    );
    let (code, body) = get_json(&format!("{}/api/logs/{task}/9", d.url)).await;
    assert_eq!(code, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_that_printed_nothing_has_an_empty_log_and_no_file() {
    let t = TestEngine::start("").await;
    let d = dashboard(&t.engine).await;
    let silent = Workflow::new().step(linedee::Task::new("true").no_output());
    let run = t.client.submit("in/silent", &silent).await.expect("submit");
    let task = format!("{}.0.0", run.run_id());
    let log_url = format!("{}/api/logs/{task}/1", d.url);
    // The stored log lands once the process has ended; until then there is no log to show.
    let deadline = tokio::time::Instant::now() + WAIT;
    let slice = loop {
        let (code, slice) = get_json(&log_url).await;
        if code == 200 {
            break slice;
        }
        assert_eq!(code, 404, "{slice}");
        assert!(tokio::time::Instant::now() < deadline, "no log: {slice}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (&slice["text"], &slice["size"], &slice["next_offset"]),
        (
            &serde_json::json!(""),
            &serde_json::json!(0),
            &serde_json::json!(0)
        ),
        "{slice}"
    );
    assert!(
        !t.engine.log_path(&task, 1).exists(),
        "printing nothing costs no file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_pages_with_a_before_cursor_and_filters_by_status() {
    let t = TestEngine::start("").await;
    let runs = succeeded_and_failed(&t).await;
    let third = Workflow::new()
        .title("Third")
        .step(bash("true").no_output());
    let third = t.client.submit("in/third", &third).await.expect("submit");
    third.wait(WAIT).await.expect("third run finishes");
    let d = dashboard(&t.engine).await;
    let ids = |page: &serde_json::Value| -> Vec<String> {
        page["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| r["run_id"].as_str().expect("id").to_owned())
            .collect()
    };

    let (code, page) = get_json(&format!("{}/api/runs?limit=2", d.url)).await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(
        ids(&page),
        [third.run_id(), runs.failed.as_str()],
        "newest first"
    );
    let next = page["next"].as_i64().expect("a cursor to the next page");
    let (code, page) = get_json(&format!("{}/api/runs?limit=2&before={next}", d.url)).await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(ids(&page), [runs.ok.as_str()]);
    assert!(page["next"].is_null(), "{page}");
    let row = &page["runs"][0];
    assert_eq!(
        (&row["status"], &row["title"], &row["trigger_key"]),
        (
            &serde_json::json!("succeeded"),
            &serde_json::json!("Says hello"),
            &serde_json::json!("in/hello")
        )
    );

    let (_, page) = get_json(&format!("{}/api/runs?status=failed", d.url)).await;
    assert_eq!(ids(&page), [runs.failed.as_str()]);
    let (_, page) = get_json(&format!("{}/api/runs?status=succeeded&limit=1", d.url)).await;
    assert_eq!(ids(&page), [third.run_id()]);

    for (query, words) in [
        ("status=bogus", "not a run status"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("before=x", "cursor"),
        ("sort=asc", "unknown query parameter `sort`"),
    ] {
        let (code, body) = get_json(&format!("{}/api/runs?{query}", d.url)).await;
        assert_eq!(code, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(words)),
            "{query}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_is_locked_down_and_none_holds_the_token() {
    let t = TestEngine::start("").await;
    let runs = succeeded_and_failed(&t).await;
    let d = dashboard(&t.engine).await;
    for (path, kind) in [
        ("/", "text/html"),
        ("/app.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/api/runs", "application/json"),
        (
            &format!("/api/runs/{}", runs.failed) as &str,
            "application/json",
        ),
        (
            &format!("/api/logs/{}.0.0/1", runs.failed),
            "application/json",
        ),
    ] {
        assert_locked_down(&d.url, path, kind, &d.token).await;
    }
    let (code, body) = get_json(&format!("{}/nope", d.url)).await;
    assert_eq!(code, 404, "{body}");
    // A page on another name resolving to loopback (DNS rebinding) gets nothing.
    assert_eq!(raw_get(&d.url, "/api/runs", "evil.example:80").await, 421);
    assert_eq!(raw_get(&d.url, "/api/runs", "localhost").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_is_followed_live_in_the_browser() {
    let t = TestEngine::start("").await;
    let d = dashboard(&t.engine).await;
    let slow = Workflow::new()
        .title("Sleeps")
        .step(bash("echo started; sleep 30").name("Sleep"));
    let slow = t.client.submit("in/slow", &slow).await.expect("submit");
    let id = slow.run_id().to_owned();
    let task = format!("{id}.0.0");
    let log = t.engine.log_path(&task, 1);
    eventually(|| std::fs::read_to_string(&log).is_ok_and(|l| l.contains("started"))).await;

    let url = format!("{}/#/runs/{id}", d.url);
    let dom = chromium(&url, &["--dump-dom"]).await;
    assert_eq!(
        tags(&dom, "div", &["id=\"run\"", "data-status=\"running\""]).len(),
        1,
        "{dom}"
    );
    let bars = tags(&dom, "rect", &["class=\"attempt running\""]);
    assert_eq!(bars.len(), 1, "{dom}");
    assert!(
        bars[0].contains(&format!("data-task-id=\"{task}\"")),
        "{dom}"
    );
    // Still polling (the live marker shows), and the running attempt's log is tailed.
    assert_eq!(tags(&dom, "span", &["id=\"live\""]).len(), 1, "{dom}");
    assert!(
        tags(&dom, "span", &["id=\"live\"", "hidden"]).is_empty(),
        "{dom}"
    );
    assert!(dom.contains("started"), "{dom}");
    assert_eq!(
        tags(&dom, "button", &["data-action=\"cancel\""]).len(),
        1,
        "{dom}"
    );

    t.engine.cancel(&id).await.expect("cancel");
    let status = slow.wait(WAIT).await.expect("cancelled run finishes");
    assert_eq!(status.status, RunState::Cancelled);
    let dom = chromium(&url, &["--dump-dom"]).await;
    assert_eq!(
        tags(&dom, "div", &["id=\"run\"", "data-status=\"cancelled\""]).len(),
        1,
        "{dom}"
    );
    assert_eq!(
        tags(&dom, "rect", &["class=\"attempt running\""]).len(),
        0,
        "{dom}"
    );
    // Finished: no more polling.
    assert_eq!(
        tags(&dom, "span", &["id=\"live\"", "hidden"]).len(),
        1,
        "{dom}"
    );
    assert_eq!(
        tags(&dom, "button", &["data-action=\"retry\""]).len(),
        1,
        "{dom}"
    );
}
