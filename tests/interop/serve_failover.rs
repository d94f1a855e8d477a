//! Failover: three `linedee serve` replicas with the dyno runner; one is killed with SIGKILL
//! while at least 50 runs are in flight, ten times over. Every run ends and succeeds, each
//! trigger has exactly one run, no task is started again once it succeeded (every dyno is
//! attempt 1), and no dyno is left running. The time from the kill to the last run's end is
//! printed against the queue's visibility timeout (BENCHMARKS.md).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use linedee::{RunState, Task, Workflow};
use linedee_tests::example_tasks;
use linedee_tests::fake_heroku::{FakeConfig, FakeHeroku};

use super::serve::{BUCKET, KEY_ID, SECRET, Serve, aws, wait};
use super::support::DEADLINE;

const RUNS: usize = 60;
const IN_FLIGHT: usize = 50;
const VISIBILITY_S: u32 = 3;

fn trials() -> usize {
    std::env::var("LINEDEE_FAILOVER_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_killed_mid_run_loses_nothing() {
    let mut recoveries = Vec::new();
    for trial in 0..trials() {
        recoveries.push(trial_once(trial).await);
    }
    recoveries.sort();
    eprintln!(
        "failover: {} trials, {RUNS} runs each, kill -9 of 1 of 3 replicas with >= {IN_FLIGHT} runs in flight; \
         last run ended after the kill: min {:?}, median {:?}, max {:?} (visibility timeout {VISIBILITY_S} s)",
        recoveries.len(),
        recoveries[0],
        recoveries[recoveries.len() / 2],
        recoveries[recoveries.len() - 1]
    );
}

async fn trial_once(trial: usize) -> Duration {
    let aws = aws(VISIBILITY_S).await;
    let app = tempfile::tempdir().expect("app dir");
    let procfile = format!(
        "slow: bash -c 'sleep 2; exec {} get-data'\n",
        example_tasks().display()
    );
    std::fs::write(app.path().join("Procfile"), &procfile).expect("Procfile");
    let mut config = FakeConfig::new("ld-app", "token", app.path());
    config.budget = 1_000_000;
    config.env = vec![
        ("LD_S3_BUCKET".into(), BUCKET.into()),
        ("LD_S3_ENDPOINT".into(), aws.moto.endpoint.clone()),
        ("LD_AWS_ACCESS_KEY_ID".into(), KEY_ID.into()),
        ("LD_AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
        ("LD_REGION".into(), "us-east-1".into()),
    ];
    let fake = FakeHeroku::start(config).await;
    let url = fake.url();
    let env = [
        ("LD_RUNNER", "heroku"),
        ("LD_HEROKU_APP", "ld-app"),
        ("HEROKU_API_KEY", "token"),
        ("LD_HEROKU_API_URL", url.as_str()),
        ("LD_DYNO_LIST_INTERVAL", "1"),
        ("LD_HEARTBEAT", "1"),
        ("LD_START_GRACE", "2"),
        (
            "RUST_LOG",
            if std::env::var_os("LINEDEE_FAILOVER_DEBUG").is_some() {
                "info,aws=warn,linedee_engine::serve=debug"
            } else {
                "info,aws=warn"
            },
        ),
    ];
    let mut replicas: Vec<Serve> = (0..3)
        .map(|_| Serve::start(&aws, &procfile, &env))
        .collect();
    let wf = Workflow::new().step(Task::new("slow").option("endpoint", "users"));
    let mut submits = tokio::task::JoinSet::new();
    for i in 0..RUNS {
        let (client, wf) = (aws.client.clone(), wf.clone());
        submits.spawn(async move {
            client
                .submit(&format!("in/failover-{i}"), &wf)
                .await
                .expect("submit")
                .run_id()
                .to_owned()
        });
    }
    let run_ids = submits.join_all().await;
    assert!(
        fake.wait_until(DEADLINE, |d| d.len() >= 10).await,
        "trial {trial}: no dynos started: {}",
        replicas[0].log()
    );
    let ended = fake.dynos().iter().filter(|d| !d.listed()).count();
    assert!(
        RUNS - ended >= IN_FLIGHT,
        "trial {trial}: only {} runs in flight at the kill",
        RUNS - ended
    );
    let victim = nix::unistd::Pid::from_raw(replicas[0].child.id() as i32);
    nix::sys::signal::kill(victim, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
    let killed = Instant::now();
    let _ = replicas[0].child.wait();

    let mut last = Duration::ZERO;
    let mut slowest = (Duration::ZERO, None);
    for run_id in &run_ids {
        let run = wait(&aws.client, run_id, &replicas[1]).await;
        last = last.max(killed.elapsed());
        let took = run
            .finished_at
            .zip(Some(run.created_at))
            .map(|(f, c)| f - c);
        if let Some(t) = took.and_then(|t| Duration::try_from(t).ok())
            && t > slowest.0
        {
            slowest = (t, Some(run.clone()));
        }
        assert_eq!(
            run.status,
            RunState::Succeeded,
            "trial {trial}: {run:#?}\nsurvivor's log:\n{}",
            replicas[1].log()
        );
        let task = &run.steps[0].tasks[0];
        // 0 when the output of a dyno whose start the killed replica never recorded landed
        // first: the task succeeded without a start of its own.
        assert!(task.attempts <= 1, "trial {trial}: {run:#?}");
    }
    if std::env::var_os("LINEDEE_FAILOVER_DEBUG").is_some() {
        eprintln!(
            "trial {trial}: slowest run took {:?}: {:#?}",
            slowest.0, slowest.1
        );
        eprintln!("survivor log:\n{}", replicas[1].log());
    }
    // Exactly one run per trigger.
    let states = aws.client.list("ld/engine/runs/").await.expect("list");
    assert_eq!(states.len(), RUNS, "trial {trial}");
    // No task started again once it succeeded: every dyno ran attempt 1 of its task (a start
    // the killed replica never reported may have been made twice: at least once).
    let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
    for d in fake.dynos() {
        let line_d: serde_json::Value = serde_json::from_str(&d.env["line_D"]).expect("line_D");
        assert_eq!(line_d["attempt"], 1, "trial {trial}: {d:#?}");
        *per_task
            .entry(line_d["task_id"].as_str().expect("task id").to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_task.len(), RUNS, "trial {trial}");
    let twice = per_task.values().filter(|n| **n > 1).count();
    if twice > 0 {
        eprintln!("trial {trial}: {twice} tasks had a second dyno for the same attempt");
    }
    // No dyno left running.
    assert!(
        fake.wait_until(DEADLINE, |d| d.iter().all(|d| !d.listed()))
            .await,
        "trial {trial}: dynos left: {:#?}",
        fake.dynos()
    );
    assert_eq!(fake.running(), 0, "trial {trial}");
    drop(replicas);
    last
}
