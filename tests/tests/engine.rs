//! The engine end to end: real processes, the real store over HTTP, a real SQLite journal.

use std::time::Duration;

use linedee::status::{RunState, TaskState};
use linedee::{Body, Task, TaskGroup, Workflow};
use linedee_tests::{TestEngine, example_tasks};

const WAIT: Duration = Duration::from_secs(60);

fn bash(script: &str) -> Task {
    Task::new(format!("bash -c '{script}'"))
}

#[tokio::test]
async fn the_seed_starter_workflow_runs_both_steps() {
    let t = TestEngine::start("").await;
    let wf = Workflow::new()
        .title("Example 2-step workflow")
        .step(bash(r#"echo "Do Step 1""#).no_output())
        .step(bash(r#"echo "Do Step 2""#).no_output());
    let run = t.client.submit("in/example", &wf).await.unwrap();
    let status = run.wait(WAIT).await.unwrap();
    assert_eq!(status.status, RunState::Succeeded, "{status:#?}");
    assert_eq!(status.title.as_deref(), Some("Example 2-step workflow"));
    assert_eq!(status.trigger.key, "in/example");
    let tasks: Vec<_> = status.tasks().collect();
    assert_eq!(tasks.len(), 2);
    assert!(
        tasks
            .iter()
            .all(|t| t.status == TaskState::Succeeded && t.attempts == 1)
    );
    assert_eq!(tasks[0].task_id, format!("{}.0.0", run.run_id()));
    assert_eq!(tasks[1].task_id, format!("{}.1.0", run.run_id()));
    // Step 2 starts after step 1 (no_output: success once spawned).
    assert!(tasks[1].started_at >= tasks[0].started_at);
    // Each attempt's output is kept in the bucket; the no_output process may still be
    // finishing, so follow the log until it has the line.
    for (task, line) in tasks.iter().zip(["Do Step 1", "Do Step 2"]) {
        let key = linedee::status::log_key(&task.task_id, 1);
        let log = eventually(|| async { t.client.get(&key).await.ok()?.bytes().await.ok() }).await;
        assert_eq!(String::from_utf8_lossy(&log).trim(), line);
        // A short attempt's output went from memory to the store: no local file was made.
        assert!(!t.engine.log_path(&task.task_id, 1).exists());
    }
}

/// Polls `f` until it returns `Some` (for effects with no event to wait on from outside).
async fn eventually<T, F, Fut>(f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_invalid_workflow_gives_a_failed_run_with_path_and_reason() {
    let t = TestEngine::start("").await;
    // Written by hand: the SDK would refuse to send it.
    let out = t
        .client
        .put(
            "in/bad",
            r#"{"run":[{"cmd":"x","timout":5},{"parallel":[]}]}"#,
        )
        .metadata("ld_run", "true")
        .metadata("ld_run_id", "bad-1")
        .send()
        .await
        .unwrap();
    assert!(out.etag.is_some());
    let status = wait_run(&t, "bad-1").await;
    assert_eq!(status.status, RunState::Failed);
    let error = status.error.unwrap();
    assert!(
        error.contains("run[0].timout: unknown field `timout` (did you mean `timeout`?)"),
        "{error}"
    );
    assert!(
        error.contains("run[1].parallel: expected at least one task"),
        "{error}"
    );
    assert!(status.steps.is_empty());
}

async fn wait_run(t: &TestEngine, run_id: &str) -> linedee::RunStatus {
    eventually(|| async {
        t.client
            .run(run_id)
            .await
            .ok()
            .filter(|s| s.status.is_finished())
    })
    .await
}

#[tokio::test]
async fn a_second_trigger_with_the_same_run_id_starts_nothing() {
    let t = TestEngine::start("").await;
    let wf = Workflow::new().step(bash("echo once").no_output());
    let first = t
        .client
        .submit_with_run_id("in/a", &wf, "same-id")
        .await
        .unwrap();
    first.wait(WAIT).await.unwrap();
    t.client
        .submit_with_run_id("in/b", &wf, "same-id")
        .await
        .unwrap();
    // The second trigger is consumed without a run: the list still has one run.
    let t2 = &t;
    eventually(|| async move {
        t2.engine
            .store()
            .pending_triggers()
            .await
            .ok()
            .filter(|p| p.is_empty())
    })
    .await;
    let (runs, _) = t.engine.runs(None, None, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(t.client.run("same-id").await.unwrap().trigger.key, "in/a");
}

#[tokio::test]
async fn a_failing_task_is_retried_then_failed_with_its_reason_and_logs() {
    let t = TestEngine::start("").await;
    let script = r#"echo attempt $(echo $line_D | sed "s/.*\"attempt\":\([0-9]*\).*/\1/"); echo "{\"error_type\":\"Boom\",\"error_message\":\"no input\"}" >&2; exit 3"#;
    let wf = Workflow::new()
        .step(bash(script))
        .step(bash("echo never").no_output());
    let run = t.client.submit("in/fail", &wf).await.unwrap();
    let status = run.wait(WAIT).await.unwrap();
    assert_eq!(status.status, RunState::Failed);
    let task = &status.steps[0].tasks[0];
    assert_eq!(
        (task.status, task.attempts, task.exit_code),
        (TaskState::Failed, 3, Some(3))
    );
    let reason = task.error.as_deref().unwrap();
    assert!(
        reason.contains("exited with code 3 without writing out/")
            && reason.ends_with("Boom: no input"),
        "{reason}"
    );
    assert!(status.error.unwrap().contains(&task.task_id));
    // The next step never ran.
    assert_eq!(status.steps[1].tasks[0].status, TaskState::Cancelled);
    assert_eq!(status.steps[1].tasks[0].attempts, 0);
    // One log per attempt, each from its own attempt.
    for attempt in 1..=3 {
        let log = t
            .client
            .get(&linedee::status::log_key(&task.task_id, attempt))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let log = String::from_utf8_lossy(&log);
        assert!(
            log.contains(&format!("attempt {attempt}\n")) && log.contains("Boom"),
            "{log}"
        );
    }
    // Backoff: each attempt started after the previous one ended.
    let attempts = t.engine.attempts(run.run_id()).await.unwrap();
    assert_eq!(attempts.len(), 3);
    for pair in attempts.windows(2) {
        assert!(
            pair[1].started_ms >= pair[0].finished_ms.unwrap(),
            "{attempts:?}"
        );
    }
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let t = TestEngine::start("").await;
    let pids = t.app_dir.join("pids");
    let script = format!(
        "sleep 600 & echo $! >> {p}; bash -c \"sleep 600\" & echo $! >> {p}; sleep 600",
        p = pids.display()
    );
    let wf = Workflow::new().step(bash(&script).timeout(Duration::from_secs(1)).retries(0));
    let status = t
        .client
        .submit("in/slow", &wf)
        .await
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    assert_eq!(status.status, RunState::Failed);
    let task = &status.steps[0].tasks[0];
    assert!(
        task.error
            .as_deref()
            .unwrap()
            .starts_with("timed out: no out/"),
        "{task:?}"
    );
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        // Killed and reaped (by init, as orphans): no such process, or a zombie on its way out.
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
            .unwrap_or(false);
        assert!(!alive, "process {pid} outlived its attempt");
    }
}

#[tokio::test]
async fn wait_for_pauses_before_the_next_step() {
    let t = TestEngine::start("").await;
    let wf = Workflow::new()
        .step(bash("true").no_output().wait_for(Duration::from_secs(2)))
        .step(bash("true").no_output());
    let status = t
        .client
        .submit("in/pause", &wf)
        .await
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    assert_eq!(status.status, RunState::Succeeded);
    let first = status.steps[0].tasks[0].finished_at.unwrap();
    let second = status.steps[1].tasks[0].started_at.unwrap();
    assert!(
        second - first >= time::Duration::seconds(2),
        "{first} -> {second}"
    );
}

#[tokio::test]
async fn an_exit_after_the_attempt_is_decided_reaches_the_status_document() {
    let t = TestEngine::start("").await;
    // no_output: the attempt succeeds once the process starts; it exits later, with 7.
    let wf = Workflow::new().step(bash("sleep 0.5; exit 7").no_output());
    let run = t.client.submit("in/late-exit", &wf).await.unwrap();
    let status = run.wait(WAIT).await.unwrap();
    assert_eq!(status.status, RunState::Succeeded, "{status:#?}");
    // Nothing else changes in the run: only the exit can make the document be rewritten.
    let code = eventually(|| async {
        let s = t.client.run(run.run_id()).await.ok()?;
        s.steps[0].tasks[0].exit_code
    })
    .await;
    assert_eq!(code, 7);
}

#[tokio::test]
async fn the_media_upload_runs_process_image_and_records_its_state() {
    let bin = example_tasks();
    let t = TestEngine::start(&format!("process-image: {} process-image\n", bin.display())).await;
    let image = vec![7u8; 4096];
    let wf = Workflow::new().title("Process media files").step(
        Task::new("process_image")
            .timeout(Duration::from_secs(30))
            .option("dir", "out"),
    );
    let run = t
        .client
        .upload("in/img/example_img.jpg", Body::from(image.clone()))
        .workflow(&wf)
        .content_type("image/jpeg")
        .send()
        .await
        .unwrap();
    let status = run.wait(WAIT).await.unwrap();
    assert_eq!(status.status, RunState::Succeeded, "{status:#?}");
    assert_eq!(status.trigger.kind, linedee::status::TriggerKind::LdCode);
    let task = &status.steps[0].tasks[0];
    let state = task
        .state
        .as_ref()
        .expect("ld_state in the status document");
    assert_eq!(state["bytes"], 4096, "{state}");
    let output = t.client.task_output(&task.task_id).await.unwrap();
    assert_eq!(output.state.as_ref(), Some(state));
}

#[tokio::test]
async fn a_parallel_group_of_three_with_options() {
    let bin = example_tasks();
    let t = TestEngine::start(&format!("get-data: {} get-data\n", bin.display())).await;
    let wf = Workflow::new().step(
        TaskGroup::new(
            ["posts", "users", "comments"].map(|e| Task::new("get_data").option("endpoint", e)),
        )
        .name("Run a parallel Task Group"),
    );
    let status = t
        .client
        .submit("in/etl", &wf)
        .await
        .unwrap()
        .wait(WAIT)
        .await
        .unwrap();
    assert_eq!(status.status, RunState::Succeeded, "{status:#?}");
    let step = &status.steps[0];
    assert!(step.parallel);
    assert_eq!(step.name.as_deref(), Some("Run a parallel Task Group"));
    // Each task read its own option: the example data has 5 posts, 3 users and 6 comments.
    for (task, expected) in step.tasks.iter().zip([5, 3, 6]) {
        let out = t.client.task_output(&task.task_id).await.unwrap();
        let records: serde_json::Value =
            serde_json::from_slice(&out.bytes().await.unwrap()).unwrap();
        assert_eq!(
            records.as_array().map(Vec::len),
            Some(expected),
            "{}",
            task.task_id
        );
    }
    // All three ran at the same time: each started before any finished.
    let last_start = step
        .tasks
        .iter()
        .map(|t| t.started_at.unwrap())
        .max()
        .unwrap();
    let first_end = step
        .tasks
        .iter()
        .map(|t| t.finished_at.unwrap())
        .min()
        .unwrap();
    assert!(last_start <= first_end);
}

#[tokio::test]
async fn a_hundred_invalid_workflows_give_a_hundred_failed_runs() {
    let t = TestEngine::start("").await;
    for i in 0..100 {
        let body = match i % 4 {
            0 => "not json".to_owned(),
            1 => format!(r#"{{"run":[{{"cmd":"x","timeout":{}}}]}}"#, 100_000 + i),
            2 => r#"{"run":[]}"#.to_owned(),
            _ => format!(r#"{{"run":[{{"cmd":"x","options":["LD_X={i}"]}}]}}"#),
        };
        t.client
            .put(format!("in/bad/{i}"), body)
            .metadata("ld_run", "true")
            .metadata("ld_run_id", format!("bad-{i}"))
            .send()
            .await
            .unwrap();
    }
    for i in 0..100 {
        let status = wait_run(&t, &format!("bad-{i}")).await;
        assert_eq!(status.status, RunState::Failed);
        let error = status.error.unwrap();
        let expected = [
            "is not valid JSON (line 1",
            "run[0].timeout: expected 1 to 86400",
            "run: expected at least one step",
            "run[0].options[0]: option name `LD_X` is reserved",
        ];
        assert!(error.contains(expected[i % 4]), "{i}: {error}");
    }
    // Still serving: a valid workflow runs.
    let ok = Workflow::new().step(bash("true").no_output());
    assert_eq!(
        t.client
            .submit("in/ok", &ok)
            .await
            .unwrap()
            .wait(WAIT)
            .await
            .unwrap()
            .status,
        RunState::Succeeded
    );
}
