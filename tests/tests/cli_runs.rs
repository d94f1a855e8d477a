//! `linedee runs` against a running `linedee local`: the list comes from the engine's journal
//! (an indexed query), newest first, filtered and limited, with the bucket's credentials checked.

use std::process::{Command, Output};

use linedee::status::RunState;
use linedee::{Task, Workflow};
use linedee_tests::{LinedeeLocal, binary};

fn runs(data: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(binary("linedee-cli", "linedee"))
        .arg("--dir")
        .arg(data)
        .arg("runs")
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .expect("linedee runs")
}

/// The run ids of a listing, in its order.
fn listed(out: &Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn linedee_runs_lists_the_engines_runs_newest_first_even_without_their_documents() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, app) = (dir.path().join("data"), dir.path().join("app"));
    std::fs::create_dir_all(&app).expect("app dir");
    std::fs::write(app.join("Procfile"), "").expect("Procfile");
    let mut local = LinedeeLocal::start(&data, &app, &["--quiet"]);
    let client = local.client();
    let quick = Workflow::new().step(Task::new("true").no_output());
    let mut done = Vec::new();
    for i in 0..3 {
        let run = client
            .submit(format!("in/quick{i}"), &quick)
            .await
            .expect("submit");
        let status = run
            .wait(std::time::Duration::from_secs(60))
            .await
            .expect("finished");
        assert_eq!(status.status, RunState::Succeeded);
        done.push(run.run_id().to_owned());
    }
    // Still running: it waits for an output that never comes.
    let slow = client
        .submit("in/slow", &Workflow::new().step(Task::new("sleep 60")))
        .await
        .expect("submit");
    let slow_id = slow.run_id().to_owned();
    loop {
        if slow
            .status()
            .await
            .expect("status")
            .is_some_and(|s| s.status == RunState::Running)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The finished runs' documents are gone from the bucket: the list is the engine's.
    for run_id in &done {
        client
            .delete(&linedee::status::status_key(run_id))
            .await
            .expect("delete a document");
    }

    let newest_first: Vec<String> = [slow_id.clone()]
        .into_iter()
        .chain(done.iter().rev().cloned())
        .collect();
    assert_eq!(listed(&runs(&data, &[], &[])), newest_first);
    assert_eq!(
        listed(&runs(&data, &["--status", "running"], &[])),
        [slow_id]
    );
    assert_eq!(
        listed(&runs(
            &data,
            &["--status", "succeeded", "--limit", "2"],
            &[]
        )),
        [done[2].clone(), done[1].clone()]
    );
    // Credentials the bucket refuses get no listing.
    let refused = runs(
        &data,
        &[],
        &[("LD_AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all")],
    );
    assert!(!refused.status.success(), "a wrong secret is refused");
    local.stop();
}
