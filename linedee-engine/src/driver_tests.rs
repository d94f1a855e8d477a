//! The local driver end to end, in process: regressions of the executor it replaced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use linedee::status::{RunState, RunStatus};
use tokio::sync::oneshot;

use crate::{Console, Engine, Error, RetryPolicy, RunError};

/// An engine on a temporary data and app directory, running until dropped or stopped.
struct Running {
    engine: Engine,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<crate::Result<()>>,
}

fn build(dir: &Path, grace: Duration) -> Engine {
    build_with(dir, grace, 8)
}

fn build_with(dir: &Path, grace: Duration, concurrency: usize) -> Engine {
    let app = dir.join("app");
    std::fs::create_dir_all(&app).expect("app dir");
    Engine::builder()
        .data_dir(dir.join("data"))
        .concurrency(concurrency)
        .app_dir(&app)
        .console(Console::quiet())
        .shutdown_grace(grace)
        .retry(RetryPolicy {
            retries: 0,
            ..RetryPolicy::default()
        })
        .build()
        .expect("engine builds")
}

async fn start(engine: Engine) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (stop, stopped) = oneshot::channel::<()>();
    let runner = engine.clone();
    let task = tokio::spawn(async move {
        runner
            .run(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    Running {
        engine,
        stop: Some(stop),
        task,
    }
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .expect("engine task")
            .expect("engine stops cleanly");
    }

    /// Writes an `ld_run` trigger with this run id and workflow.
    async fn submit(&self, run_id: &str, workflow: &str) {
        let metadata = BTreeMap::from([
            ("ld_run".to_owned(), "true".to_owned()),
            ("ld_run_id".to_owned(), run_id.to_owned()),
        ]);
        self.engine
            .store()
            .put_object(
                self.engine.bucket(),
                &format!("in/{run_id}"),
                workflow.to_owned().into(),
                None,
                metadata,
            )
            .await
            .expect("trigger written");
    }

    /// Polls the journal until the run's status satisfies `ok` (30 s at most).
    async fn until(&self, run_id: &str, ok: impl Fn(&RunStatus) -> bool) -> RunStatus {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = self.engine.status(run_id).await
                && ok(&s)
            {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run_id} never got there: {:?}",
                self.engine.status(run_id).await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Running {
    /// Polls the run's status document (written by the background publisher) until it says
    /// `status` (30 s at most). Unlike [`Running::until`], it leaves the journal alone.
    async fn document(&self, run_id: &str, status: RunState) {
        let key = linedee::status::status_key(run_id);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let doc = self
                .engine
                .store()
                .get_object(self.engine.bucket(), &key)
                .await
                .expect("read the document")
                .map(|(_, body)| serde_json::from_slice::<RunStatus>(&body).expect("a document"));
            if doc.as_ref().is_some_and(|d| d.status == status) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{doc:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join("data").join("journal.sqlite")
}

#[tokio::test]
async fn a_stored_run_that_cannot_be_read_fails_with_the_reason_instead_of_staying_queued() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = start(build(dir.path(), Duration::ZERO)).await;
    first
        .submit("damaged", r#"{"run":[{"cmd":"sleep 30"}]}"#)
        .await;
    first
        .until("damaged", |s| s.status == RunState::Running)
        .await;
    first.stop().await;
    // Interrupted, so it would be resumed; then its stored record is damaged.
    crate::journal::damage(
        &journal_path(dir.path()),
        "damaged",
        "{\"version\": 1, \"run\"",
    )
    .expect("damage the record");

    let second = start(build(dir.path(), Duration::ZERO)).await;
    let status = second.until("damaged", |s| s.status.is_finished()).await;
    assert_eq!(status.status, RunState::Failed, "{status:?}");
    let error = status.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("cannot read this run's stored record") && error.contains("not JSON"),
        "{error}"
    );
    assert!(status.steps.is_empty(), "no task runs again: {status:?}");
    // The status document says so too.
    second.document("damaged", RunState::Failed).await;
    second.stop().await;
}

#[tokio::test]
async fn a_graceful_stop_leaves_the_next_start_no_listing_to_project_and_no_document_to_rewrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(build(dir.path(), Duration::ZERO)).await;
    running
        .submit("short", r#"{"run":[{"cmd":"true","no_output":true}]}"#)
        .await;
    // Waited for on the document: a read of the journal would project it first.
    running.document("short", RunState::Succeeded).await;
    running.stop().await;

    let journal = rusqlite::Connection::open(journal_path(dir.path())).expect("journal");
    let unprojected: i64 = journal
        .query_row("SELECT count(*) FROM ld_unprojected", [], |r| r.get(0))
        .expect("count");
    assert_eq!(unprojected, 0, "every saved record is projected");
    let (status, published): (String, Option<String>) = journal
        .query_row(
            "SELECT status, published FROM ld_runs WHERE run_id = 'short'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("the run's row");
    assert_eq!(status, "succeeded", "the listing shows the run's end");
    assert_eq!(
        published.as_deref(),
        Some("succeeded"),
        "the document's final status is marked, so the next start leaves it alone"
    );
}

#[tokio::test]
async fn a_cancel_right_after_a_retry_stops_the_redriven_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("marker");
    let running = start(build(dir.path(), Duration::ZERO)).await;
    // The first attempt fails; the redriven one runs until it is stopped.
    let script = format!(
        "test -f {m} || {{ touch {m}; exit 1; }}; sleep 30",
        m = marker.display()
    );
    let workflow = serde_json::json!({"run": [{"cmd": script}]}).to_string();
    running.submit("redriven", &workflow).await;
    running
        .until("redriven", |s| s.status == RunState::Failed)
        .await;
    running.engine.retry("redriven").await.expect("retry");
    // Straight after the retry: the cancel reaches the redriven run (the executor this
    // driver replaced could lose it between a drive's end and the next one's start).
    running.engine.cancel("redriven").await.expect("cancel");
    let status = running.until("redriven", |s| s.status.is_finished()).await;
    assert_eq!(status.status, RunState::Cancelled, "{status:?}");
    assert_eq!(status.error.as_deref(), Some("cancelled on request"));
    match running.engine.cancel("redriven").await {
        Err(Error::Run(RunError::Finished { status, .. })) => assert_eq!(status, "cancelled"),
        other => panic!("a second cancel: {other:?}"),
    }
    running.stop().await;
}

#[tokio::test]
async fn a_journal_that_cannot_be_written_stops_the_engine_with_the_reason_and_its_processes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut running = start(build(dir.path(), Duration::ZERO)).await;
    let pid_file = dir.path().join("pid");
    let workflow = serde_json::json!({
        "run": [{"cmd": format!("echo $$ > {}; exec sleep 30", pid_file.display())}]
    })
    .to_string();
    running.submit("doomed", &workflow).await;
    running
        .until("doomed", |s| s.status == RunState::Running)
        .await;
    let pid: i32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The journal's runs table refuses every change under the engine: its next commit fails.
    rusqlite::Connection::open(journal_path(dir.path()))
        .expect("open the journal")
        .execute_batch(
            "CREATE TRIGGER ld_broken BEFORE UPDATE ON ld_runs
             BEGIN SELECT RAISE(ABORT, 'broken'); END",
        )
        .expect("break the table");
    let cancelled = running.engine.cancel("doomed").await;
    assert!(cancelled.is_err(), "{cancelled:?}");
    let ended = (&mut running.task).await.expect("engine task");
    let err = ended.expect_err("the engine stops with an error");
    let chain = format!("{err}: {:?}", std::error::Error::source(&err));
    assert!(chain.contains("journal"), "{chain}");
    // Nothing it started is left running.
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    assert!(!alive, "process {pid} outlived the engine");
    running.stop = None;
}

#[tokio::test]
async fn a_cancel_sent_right_after_the_trigger_waits_for_the_run_instead_of_not_finding_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let running = start(build(dir.path(), Duration::ZERO)).await;
    for i in 0..5 {
        let run_id = format!("early{i}");
        running
            .submit(&run_id, r#"{"run":[{"cmd":"sleep 30"}]}"#)
            .await;
        // No wait: the trigger is committed, its run may not exist yet.
        running.engine.cancel(&run_id).await.expect("cancel");
        let status = running.until(&run_id, |s| s.status.is_finished()).await;
        assert_eq!(status.status, RunState::Cancelled, "{status:?}");
    }
    match running.engine.cancel("never-submitted").await {
        Err(Error::Run(crate::RunError::NotFound(id))) => assert_eq!(id, "never-submitted"),
        other => panic!("{other:?}"),
    }
    running.stop().await;
}

#[tokio::test]
async fn runs_queued_behind_a_busy_slot_start_in_order_and_a_cancelled_one_never_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let order = dir.path().join("order");
    let running = start(build_with(dir.path(), Duration::ZERO, 1)).await;
    running
        .submit("hold", r#"{"run":[{"cmd":"sleep 30"}]}"#)
        .await;
    running
        .until("hold", |s| s.status == RunState::Running)
        .await;
    // More runs than the driver hands to the runner ahead (2 per slot): most wait in its
    // queue, their records out of memory, and are loaded again when their turn comes.
    let queued: Vec<String> = (0..12).map(|i| format!("q{i:02}")).collect();
    for run_id in &queued {
        let cmd = format!("echo {run_id} >> {}", order.display());
        let workflow = serde_json::json!({"run": [{"cmd": cmd, "no_output": true}]}).to_string();
        running.submit(run_id, &workflow).await;
    }
    for run_id in &queued {
        running
            .until(run_id, |s| s.status == RunState::Queued)
            .await;
    }
    // A queued run deep in the queue is cancelled: it never starts.
    running
        .engine
        .cancel("q07")
        .await
        .expect("cancel a queued run");
    let cancelled = running.until("q07", |s| s.status.is_finished()).await;
    assert_eq!(cancelled.status, RunState::Cancelled, "{cancelled:?}");
    running
        .engine
        .cancel("hold")
        .await
        .expect("cancel the holder");
    for run_id in queued.iter().filter(|r| *r != "q07") {
        let s = running.until(run_id, |s| s.status.is_finished()).await;
        assert_eq!(s.status, RunState::Succeeded, "{s:?}");
    }
    let expected: Vec<&str> = queued
        .iter()
        .map(String::as_str)
        .filter(|r| *r != "q07")
        .collect();
    // A `no_output` run is finished once its process has started (SPEC 2.6): the last one's
    // line may land a moment after its status says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let started = loop {
        let started = std::fs::read_to_string(&order).unwrap_or_default();
        if started.lines().count() >= expected.len() || tokio::time::Instant::now() > deadline {
            break started;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(started.lines().collect::<Vec<_>>(), expected);
    running.stop().await;
}

#[tokio::test]
async fn runs_still_queued_at_a_stop_start_after_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = start(build_with(dir.path(), Duration::ZERO, 1)).await;
    first
        .submit("hold", r#"{"run":[{"cmd":"sleep 30"}]}"#)
        .await;
    first.until("hold", |s| s.status == RunState::Running).await;
    let queued: Vec<String> = (0..6).map(|i| format!("q{i}")).collect();
    for run_id in &queued {
        first
            .submit(run_id, r#"{"run":[{"cmd":"true","no_output":true}]}"#)
            .await;
    }
    for run_id in &queued {
        first.until(run_id, |s| s.status == RunState::Queued).await;
    }
    first.stop().await;
    let second = start(build_with(dir.path(), Duration::ZERO, 4)).await;
    for run_id in &queued {
        let s = second.until(run_id, |s| s.status.is_finished()).await;
        assert_eq!(s.status, RunState::Succeeded, "{s:?}");
    }
    second.stop().await;
}

/// A runner whose process exits before `start` returns: its exit notice is sent at once,
/// and the start's answer comes a little later, the order a very short process under load
/// can produce.
struct ExitsBeforeStartReturns;

#[async_trait::async_trait]
impl crate::runner::Runner for ExitsBeforeStartReturns {
    async fn start(
        &self,
        spec: crate::runner::AttemptSpec,
        _cancel: tokio_util::sync::CancellationToken,
        on_exit: crate::runner::OnExit,
    ) -> Result<String, crate::runner::StartError> {
        on_exit(crate::runner::Exit {
            code: Some(0),
            detail: None,
            log: None,
        });
        // Widens the window in which the exit notice could overtake the start: this is what
        // the test provokes, not what it waits for.
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(format!("fake-{}", spec.task_id))
    }
    async fn stop(&self, _: &str) {}
    async fn stop_stale(&self, _: &str, _: &str) {}
    async fn log(&self, _: &str, _: u32) -> Option<crate::runner::LogBody> {
        Some(crate::runner::LogBody::Bytes(b"done\n".to_vec()))
    }
    async fn stop_all(&self) {}
}

#[tokio::test]
async fn an_exit_noticed_before_the_start_returned_still_ends_the_attempt() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::store::Store::open(
        dir.path().join("store"),
        crate::store::StoreOptions {
            default_bucket: Some("linedee-test".to_owned()),
            ..crate::store::StoreOptions::default()
        },
    )
    .expect("store");
    let journal = crate::journal::SqliteJournal::open(&dir.path().join("journal.sqlite"), true)
        .expect("journal");
    let driver = Arc::new(crate::driver::Driver::new(crate::driver::Parts {
        machine: crate::machine::Machine {
            retry: RetryPolicy::default(),
        },
        journal: Arc::new(journal),
        runner: Arc::new(ExitsBeforeStartReturns),
        bucket: Arc::new(store.clone()),
        triggers: Arc::new(crate::triggers::Outbox::new(store.clone())),
        shutdown_grace: Duration::ZERO,
        start_ahead: 2,
    }));
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(Arc::clone(&driver).run(stop.clone()));
    let metadata = BTreeMap::from([
        ("ld_run".to_owned(), "true".to_owned()),
        ("ld_run_id".to_owned(), "quick".to_owned()),
    ]);
    let workflow = r#"{"run":[{"cmd":"quick","no_output":true}]}"#;
    store
        .put_object("linedee-test", "in/quick", workflow.into(), None, metadata)
        .await
        .expect("trigger written");

    // The exit, once applied, stores the attempt's log and puts its code in the document.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let log = linedee::status::log_key("quick.0.0", 1);
    let doc = loop {
        let doc = store
            .get_object("linedee-test", "ld/runs/quick.json")
            .await
            .expect("read")
            .and_then(|(_, body)| serde_json::from_slice::<RunStatus>(&body).ok());
        let logged = store
            .head_object("linedee-test", &log)
            .await
            .expect("head")
            .is_some();
        if logged
            && let Some(doc) = &doc
            && doc.tasks().next().is_some_and(|t| t.exit_code.is_some())
        {
            break doc.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the exit was never applied: log stored {logged}, {doc:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(doc.status, RunState::Succeeded, "{doc:?}");
    assert_eq!(doc.tasks().next().and_then(|t| t.exit_code), Some(0));
    stop.cancel();
    running.await.expect("driver task").expect("driver stops");
}
