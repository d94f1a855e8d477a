//! The dashboard's overview (issue 18) after real runs the test makes happen: its JSON API,
//! the page in headless Chromium, the runs list its links lead to, and the lockdown of its
//! routes. Uses the dashboard tests' helpers (`dashboard/support.rs`).

use std::time::Duration;

use crate::dashboard::support::*;
use linedee::status::RunState;
use linedee::{Task, Workflow};
use linedee_tests::{TestEngine, workspace_root};

/// Process types, so each `cmd` of the overview's table is a plain name.
const PROCFILE: &str = "ok: true\nfail: echo failing >&2; exit 3\nslow: sleep 30\n";

/// Made to happen: 7 runs of `ok` that succeed, 2 of `fail` that fail twice each (one retry),
/// 1 of `slow` that times out. Returns their run ids in that order.
async fn known_runs(t: &TestEngine) -> (Vec<String>, Vec<String>, String) {
    let mut handles = Vec::new();
    for i in 0..7 {
        let wf = Workflow::new()
            .title(format!("Ok {i}"))
            .step(Task::new("ok").no_output());
        handles.push((
            RunState::Succeeded,
            t.client.submit(format!("in/ok/{i}"), &wf).await,
        ));
    }
    for i in 0..2 {
        let wf = Workflow::new()
            .title(format!("Fail {i}"))
            .step(Task::new("fail").retries(1));
        handles.push((
            RunState::Failed,
            t.client.submit(format!("in/fail/{i}"), &wf).await,
        ));
    }
    let wf = Workflow::new()
        .title("Slow")
        .step(Task::new("slow").timeout(Duration::from_secs(1)).retries(0));
    handles.push((RunState::Failed, t.client.submit("in/slow", &wf).await));
    let mut ids = Vec::new();
    for (want, handle) in handles {
        let handle = handle.expect("submit");
        let status = handle.wait(WAIT).await.expect("the run finishes");
        assert_eq!(status.status, want, "{status:#?}");
        ids.push(handle.run_id().to_owned());
    }
    let slow = ids.pop().expect("slow");
    let fail = ids.split_off(7);
    (ids, fail, slow)
}

/// The text of the first element after `marker` in `dom` whose class is `class`.
fn text_after<'a>(dom: &'a str, marker: &str, class: &str) -> &'a str {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {dom}"));
    let rest = &dom[at..];
    let open = format!("class=\"{class}\">");
    let start = rest
        .find(&open)
        .unwrap_or_else(|| panic!("no {open} after {marker}: {rest}"))
        + open.len();
    let end = rest[start..].find('<').expect("a closing tag") + start;
    &rest[start..end]
}

/// The text of cell `col` in the cmd table's row of `cmd`.
fn cell<'a>(dom: &'a str, cmd: &str, col: &str) -> &'a str {
    let row = dom
        .split("<tr ")
        .find(|r| r.starts_with("class=\"cmd-row\"") && r.contains(&format!("data-cmd=\"{cmd}\"")))
        .unwrap_or_else(|| panic!("no row for cmd {cmd}: {dom}"));
    let marker = format!("data-col=\"{col}\"");
    let at = row
        .find(&marker)
        .unwrap_or_else(|| panic!("no {col}: {row}"));
    let rest = &row[at..];
    // The cmd cell holds a link; every other cell holds its text.
    let rest = &rest[rest.find('>').expect("tag end") + 1..];
    let rest = rest
        .strip_prefix("<a")
        .map_or(rest, |r| &r[r.find('>').expect("a") + 1..]);
    &rest[..rest.find('<').expect("closing tag")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_the_runs_the_test_made_and_links_to_them() {
    let t = TestEngine::start(PROCFILE).await;
    let (ok, fail, slow) = known_runs(&t).await;
    let d = dashboard(&t.engine).await;

    // The API: exactly what happened, within the last hour.
    let (code, o) = get_json(&format!("{}/api/overview?window=1h", d.url)).await;
    assert_eq!(code, 200, "{o}");
    assert_eq!(o["window"], "1h", "{o}");
    assert_eq!(
        o["counts"],
        serde_json::json!({"queued": 0, "running": 0, "succeeded": 7, "failed": 3, "cancelled": 0}),
        "{o}"
    );
    assert_eq!(o["queued_now"], 0, "{o}");
    assert!(o["duration"]["p50_ms"].as_i64().is_some(), "{o}");
    assert!(
        o["duration"]["p95_ms"].as_i64() >= o["duration"]["p50_ms"].as_i64(),
        "{o}"
    );
    assert_eq!(o["unavailable"], serde_json::json!({}), "{o}");
    let buckets = o["series"]["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 30, "{o}");
    let sum = |k: &str| {
        buckets
            .iter()
            .map(|b| b[k].as_u64().expect("n"))
            .sum::<u64>()
    };
    assert_eq!(
        (sum("started"), sum("succeeded"), sum("failed")),
        (10, 7, 3),
        "{o}"
    );
    let cmds = o["cmds"].as_array().expect("cmds");
    let row = |cmd: &str| {
        cmds.iter()
            .find(|c| c["cmd"] == cmd)
            .unwrap_or_else(|| panic!("no {cmd}: {o}"))
            .clone()
    };
    let figures = |c: &serde_json::Value| {
        ["runs", "attempts", "failures", "retries", "timeouts"].map(|k| c[k].as_u64().expect(k))
    };
    assert_eq!(figures(&row("ok")), [7, 7, 0, 0, 0], "{o}");
    assert_eq!(figures(&row("fail")), [2, 4, 4, 2, 0], "{o}");
    assert_eq!(figures(&row("slow")), [1, 1, 0, 0, 1], "{o}");
    assert_eq!(cmds.len(), 3, "{o}");

    // The page: the same numbers, one row per cmd.
    let dom = chromium(&format!("{}/#/?window=1h", d.url), &["--dump-dom"]).await;
    for (figure, n) in [
        ("succeeded", "7"),
        ("failed", "3"),
        ("cancelled", "0"),
        ("queued", "0"),
        ("running", "0"),
        ("queued_now", "0"),
    ] {
        assert_eq!(
            text_after(&dom, &format!("data-figure=\"{figure}\""), "n"),
            n,
            "{figure}: {dom}"
        );
    }
    assert_ne!(text_after(&dom, "data-figure=\"p50\"", "n"), "–", "{dom}");
    for (cmd, want) in [
        ("ok", ["7", "7", "0", "0", "0"]),
        ("fail", ["2", "4", "4", "2", "0"]),
        ("slow", ["1", "1", "0", "0", "1"]),
    ] {
        let got =
            ["runs", "attempts", "failures", "retries", "timeouts"].map(|c| cell(&dom, cmd, c));
        assert_eq!(got, want, "{cmd}: {dom}");
    }
    assert_eq!(tags(&dom, "tr", &["class=\"cmd-row\""]).len(), 3, "{dom}");
    let bars: u64 = tags(&dom, "rect", &["class=\"bar succeeded\""])
        .iter()
        .map(|b| {
            let n = b.split("data-count=\"").nth(1).expect("a count");
            n[..n.find('"').expect("quote")]
                .parse::<u64>()
                .expect("a number")
        })
        .sum();
    assert_eq!(bars, 7, "the chart's succeeded bars add up: {dom}");
    // Sorting by failures puts `fail` first; the sort is in the URL.
    let dom = chromium(
        &format!("{}/#/?window=1h&sort=failures", d.url),
        &["--dump-dom"],
    )
    .await;
    let first = tags(&dom, "tr", &["class=\"cmd-row\""]);
    assert!(first[0].contains("data-cmd=\"fail\""), "{dom}");
    assert!(!dom.contains(&d.token), "the token reached the page");

    // Each cmd row links to the runs it counts, and the runs list filters by the URL.
    assert!(
        dom.contains("href=\"#/runs?cmd=fail&amp;window=1h\""),
        "{dom}"
    );
    let listed = |dom: &str| -> Vec<String> {
        tags(dom, "tr", &["class=\"run-row\""])
            .iter()
            .map(|r| {
                let id = r.split("data-run-id=\"").nth(1).expect("id");
                id[..id.find('"').expect("quote")].to_owned()
            })
            .collect()
    };
    let dom = chromium(
        &format!("{}/#/runs?cmd=fail&window=1h", d.url),
        &["--dump-dom"],
    )
    .await;
    let mut got = listed(&dom);
    got.sort();
    let mut want = fail.clone();
    want.sort();
    assert_eq!(got, want, "{dom}");
    // So does each count: the failed figure leads to the 3 failed runs of the window.
    let dom = chromium(&format!("{}/#/?window=1h", d.url), &["--dump-dom"]).await;
    assert!(
        dom.contains("href=\"#/runs?status=failed&amp;window=1h\""),
        "{dom}"
    );
    let dom = chromium(
        &format!("{}/#/runs?status=failed&window=1h", d.url),
        &["--dump-dom"],
    )
    .await;
    let mut got = listed(&dom);
    got.sort();
    let mut want = [fail.clone(), vec![slow.clone()]].concat();
    want.sort();
    assert_eq!(got, want, "{dom}");
    let dom = chromium(&format!("{}/#/runs?q=in/ok/", d.url), &["--dump-dom"]).await;
    assert_eq!(listed(&dom).len(), 7, "{dom}");
    assert!(listed(&dom).iter().all(|id| ok.contains(id)), "{dom}");
    let dom = chromium(
        &format!("{}/#/runs?q=Slow&status=failed", d.url),
        &["--dump-dom"],
    )
    .await;
    assert_eq!(listed(&dom), [slow], "{dom}");
    let (code, page) = get_json(&format!("{}/api/runs?window=1h&limit=500", d.url)).await;
    assert_eq!(
        (code, page["runs"].as_array().map(Vec::len)),
        (200, Some(10)),
        "{page}"
    );

    // The screenshot for the README: taken by every run of this test, and written over
    // `docs/overview.png` only when asked (`LINEDEE_SCREENSHOT=overwrite`, as trybuild's
    // `TRYBUILD=overwrite`), so that a test run leaves the working tree as it found it.
    let shots = tempfile::tempdir().expect("tempdir");
    let png = if std::env::var("LINEDEE_SCREENSHOT").as_deref() == Ok("overwrite") {
        workspace_root().join("docs").join("overview.png")
    } else {
        shots.path().join("overview.png")
    };
    let _ = std::fs::remove_file(&png);
    chromium(
        &format!("{}/#/?window=1h", d.url),
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1280,1000",
        ],
    )
    .await;
    let bytes = std::fs::read(&png).expect("the screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_routes_are_locked_down_and_check_their_input() {
    let t = TestEngine::start(PROCFILE).await;
    let wf = Workflow::new().step(Task::new("ok").no_output());
    let run = t.client.submit("in/one", &wf).await.expect("submit");
    run.wait(WAIT).await.expect("the run finishes");
    let d = dashboard(&t.engine).await;
    for (path, kind) in [
        ("/overview.js", "text/javascript"),
        ("/api/overview", "application/json"),
        ("/api/overview?window=7d", "application/json"),
        ("/api/runs?window=24h&q=in/&cmd=ok", "application/json"),
    ] {
        assert_locked_down(&d.url, path, kind, &d.token).await;
    }
    let (_, o) = get_json(&format!("{}/api/overview", d.url)).await;
    assert_eq!(
        (&o["window"], &o["counts"]["succeeded"]),
        (&serde_json::json!("24h"), &serde_json::json!(1)),
        "{o}"
    );
    assert_eq!(
        raw_get(&d.url, "/api/overview", "evil.example:80").await,
        421
    );
    assert_eq!(raw_get(&d.url, "/api/overview", "localhost").await, 200);
    for (path, words) in [
        ("/api/overview?window=2h", "1h, 24h or 7d"),
        ("/api/overview?since=1", "unknown query parameter `since`"),
        ("/api/runs?window=1y", "1h, 24h or 7d"),
    ] {
        let (code, body) = get_json(&format!("{}{path}", d.url)).await;
        assert_eq!(code, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(words)),
            "{path}: {body}"
        );
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/api/overview", d.url))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_follows_the_queue_live() {
    // One slot: the second of two long runs waits for it, queued.
    let t = TestEngine::start_with(PROCFILE, |b| b.concurrency(1)).await;
    let d = dashboard(&t.engine).await;
    let wf = Workflow::new().step(Task::new("slow").timeout(Duration::from_secs(120)));
    let first = t.client.submit("in/first", &wf).await.expect("submit");
    let second = t.client.submit("in/second", &wf).await.expect("submit");
    let url = format!("{}/api/overview?window=1h", d.url);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, o) = get_json(&url).await;
        if o["counts"]["running"] == 1 && o["counts"]["queued"] == 1 {
            assert_eq!(o["queued_now"], 1, "{o}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no run queued behind the other: {o}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dom = chromium(&format!("{}/#/?window=1h", d.url), &["--dump-dom"]).await;
    for (figure, n) in [
        ("running", "1"),
        ("queued", "1"),
        ("queued_now", "1"),
        ("cancelled", "0"),
    ] {
        assert_eq!(
            text_after(&dom, &format!("data-figure=\"{figure}\""), "n"),
            n,
            "{figure}: {dom}"
        );
    }
    // The page keeps polling (the live marker shows).
    assert!(
        tags(&dom, "span", &["id=\"live\"", "hidden"]).is_empty(),
        "{dom}"
    );

    for run in [&second, &first] {
        t.engine.cancel(run.run_id()).await.expect("cancel");
        let status = run.wait(WAIT).await.expect("the run ends");
        assert_eq!(status.status, RunState::Cancelled, "{status:#?}");
    }
    let dom = chromium(&format!("{}/#/?window=1h", d.url), &["--dump-dom"]).await;
    for (figure, n) in [("running", "0"), ("queued", "0"), ("cancelled", "2")] {
        assert_eq!(
            text_after(&dom, &format!("data-figure=\"{figure}\""), "n"),
            n,
            "{figure}: {dom}"
        );
    }
}
