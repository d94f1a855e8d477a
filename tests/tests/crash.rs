//! Crash recovery (protocol §2.7): `linedee local` is killed with SIGKILL while runs are in
//! flight, then started again on the same directory. All runs finish, none is lost or
//! duplicated, and no task whose output had landed runs again — counted with an append-only
//! file each task writes to when it starts. A power loss is played by putting back a copy of
//! the journal taken earlier: the commits after it are what the power loss took.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use linedee::credentials::{Credentials, StaticProvider};
use linedee::status::{RunState, TaskState};
use linedee::{Client, Task, Workflow};
use linedee_tests::{binary, example_tasks};

const RUNS: usize = 60;

/// `linedee local`, killed on drop.
struct Local {
    child: Child,
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_local(dir: &Path, app: &Path) -> (Local, Client) {
    let mut child = Command::new(binary("linedee-cli", "linedee"))
        .args([
            "local",
            "--port",
            "0",
            "--dashboard-port",
            "0",
            "--quiet",
            "--concurrency",
            "4",
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--app-dir")
        .arg(app)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("linedee local starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .expect("linedee local exited before it was ready")
            .expect("stdout line");
        if line.contains("linedee local ready") {
            break;
        }
    }
    // Keep draining stdout so the engine never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let env: HashMap<String, String> =
        linedee_engine::parse_dotenv(&std::fs::read_to_string(dir.join("env")).expect("env file"))
            .expect("env parses")
            .into_iter()
            .collect();
    let client = Client::builder()
        .bucket(&env["LD_S3_BUCKET"])
        .endpoint(&env["LD_S3_ENDPOINT"])
        .credentials_provider(StaticProvider::new(Credentials::new(
            &env["LD_AWS_ACCESS_KEY_ID"],
            &env["LD_AWS_SECRET_ACCESS_KEY"],
            env.get("LD_AWS_SESSION_TOKEN").cloned(),
            None,
        )))
        .build()
        .expect("client");
    (Local { child }, client)
}

fn appends(path: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("line_D is JSON");
        *counts
            .entry(v["task_id"].as_str().expect("task_id").to_owned())
            .or_default() += 1;
    }
    counts
}

async fn outputs(client: &Client) -> BTreeSet<String> {
    client
        .list("out/")
        .await
        .map(|objects| {
            objects
                .into_iter()
                .map(|o| o.key["out/".len()..].to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Submits `n` runs of two `work` steps, at `{prefix}/{i}`; returns their ids.
async fn submit_runs(client: &Client, prefix: &str, n: usize) -> Vec<String> {
    let wf = Workflow::new()
        .step(Task::new("work"))
        .step(Task::new("work"));
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let submitted = client
            .submit(format!("{prefix}/{i}"), &wf)
            .await
            .expect("submit");
        ids.push(submitted.run_id().to_owned());
    }
    ids
}

/// Kills the engine with SIGKILL and reaps it.
fn kill_9(engine: Local) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(engine.child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
    drop(engine);
}

async fn round(kill_after_outputs: usize) {
    let dir = tempfile::tempdir().expect("tmp");
    let (data, app) = (dir.path().join("data"), dir.path().join("app"));
    std::fs::create_dir_all(&app).expect("app dir");
    let log: PathBuf = dir.path().join("appends");
    std::fs::write(
        app.join("Procfile"),
        format!(
            "work: printf '%s\\n' \"$line_D\" >> {} && exec {} get-json\n",
            log.display(),
            example_tasks().display()
        ),
    )
    .expect("Procfile");

    let (engine, client) = start_local(&data, &app);
    let ids = submit_runs(&client, "in/crash", RUNS).await;
    // Let some outputs land, then kill the engine mid-flight.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while outputs(&client).await.len() < kill_after_outputs {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress before the crash"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let landed_before = outputs(&client).await;
    kill_9(engine);
    let unfinished = RUNS * 2 - landed_before.len();
    assert!(
        unfinished >= 50,
        "at least 50 tasks were in flight or queued at the crash ({unfinished})"
    );

    let (_engine, client) = start_local(&data, &app);
    for id in &ids {
        let status = eventually_finished(&client, id).await;
        assert_eq!(status.status, RunState::Succeeded, "{status:#?}");
        assert!(status.tasks().all(|t| t.status == TaskState::Succeeded));
    }
    // No run lost or duplicated: one status document per submitted run.
    let docs = client.list("ld/runs/").await.expect("list");
    assert_eq!(docs.len(), RUNS);
    // A task whose output had landed before the crash never ran again.
    let counts = appends(&log);
    for task_id in &landed_before {
        assert_eq!(
            counts.get(task_id),
            Some(&1),
            "{task_id} ran again after its output landed"
        );
    }
    // Every task ran at least once, and its output is there.
    assert_eq!(outputs(&client).await.len(), RUNS * 2);
    assert_eq!(counts.len(), RUNS * 2);
}

async fn eventually_finished(client: &Client, run_id: &str) -> linedee::RunStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(s) = client.run(run_id).await
            && s.status.is_finished()
        {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run_id} did not finish after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_flight_then_restart_loses_and_repeats_nothing() {
    // Several rounds, killing at different points.
    for kill_after in [1, 15, 40] {
        round(kill_after).await;
    }
}

/// How many triggers the store at `data` has not had acknowledged.
fn pending_triggers(data: &Path) -> i64 {
    let store = rusqlite::Connection::open(data.join("store").join("index.sqlite")).expect("store");
    store
        .query_row("SELECT count(*) FROM triggers WHERE acked = 0", [], |r| {
            r.get(0)
        })
        .expect("count the outbox")
}

/// How many runs the journal at `data` does not show finished `succeeded`.
fn unfinished_in_journal(data: &Path) -> i64 {
    let journal = rusqlite::Connection::open(data.join("journal.sqlite")).expect("journal");
    journal
        .query_row(
            "SELECT count(*) FROM ld_runs WHERE status != 'succeeded'",
            [],
            |r| r.get(0),
        )
        .expect("count the runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_loss_that_takes_back_the_journals_last_commits_runs_no_task_again() {
    const RUNS: usize = 12;
    let dir = tempfile::tempdir().expect("tmp");
    let (data, app) = (dir.path().join("data"), dir.path().join("app"));
    std::fs::create_dir_all(&app).expect("app dir");
    let (log, gate) = (dir.path().join("appends"), dir.path().join("gate"));
    // Each task counts its start, then waits for the gate before it writes its output.
    std::fs::write(
        app.join("Procfile"),
        format!(
            "work: printf '%s\\n' \"$line_D\" >> {} && while [ ! -e {} ]; do sleep 0.02; done && exec {} get-json\n",
            log.display(),
            gate.display(),
            example_tasks().display()
        ),
    )
    .expect("Procfile");
    let (engine, client) = start_local(&data, &app);
    let ids = submit_runs(&client, "in/power", RUNS).await;
    // Every trigger acknowledged (the journal synced the runs' creation first, so a power loss
    // keeps them), and the slots busy with first steps.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while pending_triggers(&data) > 0 || appends(&log).len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The journal as a power loss now could leave it (nothing is synced after this: no
    // trigger, no request, and a run that succeeded by its outputs is published unsynced).
    let kept = dir.path().join("journal-kept.sqlite");
    rusqlite::Connection::open(data.join("journal.sqlite"))
        .expect("journal")
        .execute("VACUUM INTO ?1", [kept.to_str().expect("utf-8 path")])
        .expect("copy the journal");
    std::fs::write(&gate, "").expect("open the gate");
    for id in &ids {
        let status = eventually_finished(&client, id).await;
        assert_eq!(status.status, RunState::Succeeded, "{status:#?}");
    }
    assert_eq!(appends(&log).len(), RUNS * 2, "every task ran");

    // The power fails: every process dies, and the journal comes back as it was.
    kill_9(engine);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(data.join(format!("journal.sqlite{suffix}")));
    }
    std::fs::rename(&kept, data.join("journal.sqlite")).expect("put the journal back");

    let (_engine, client) = start_local(&data, &app);
    // The documents already show every run succeeded: wait for the journal to say so again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while unfinished_in_journal(&data) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the runs did not finish after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids {
        let status = eventually_finished(&client, id).await;
        assert_eq!(status.status, RunState::Succeeded, "{status:#?}");
        assert!(status.tasks().all(|t| t.status == TaskState::Succeeded));
    }
    // The journal had forgotten most of what happened; the outputs had not. No task ran
    // again, and no run was made twice.
    let counts = appends(&log);
    assert_eq!(counts.len(), RUNS * 2);
    for (task_id, n) in &counts {
        assert_eq!(*n, 1, "{task_id} ran again after the power loss");
    }
    assert_eq!(client.list("ld/runs/").await.expect("list").len(), RUNS);
}
