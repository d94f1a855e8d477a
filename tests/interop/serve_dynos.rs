//! `linedee serve --runner heroku`: each attempt is a one-off dyno of a fake Heroku Platform
//! API (`linedee_tests::fake_heroku`, whose dynos are real processes), on moto's S3 and SQS.

use std::time::Duration;

use linedee::{Body, RunState, Task, TaskGroup, Workflow};
use linedee_tests::example_tasks;
use linedee_tests::fake_heroku::{FakeConfig, FakeHeroku};

use super::serve::{BUCKET, KEY_ID, SECRET, Serve, aws, procfile, wait};
use super::support::DEADLINE;

const APP: &str = "ld-app";
const TOKEN: &str = "heroku-token-never-logged";

async fn heroku(aws: &super::serve::Aws, app_dir: &std::path::Path) -> FakeHeroku {
    let mut config = FakeConfig::new(APP, TOKEN, app_dir);
    // The app's config vars, as every dyno gets them.
    config.env = vec![
        ("LD_S3_BUCKET".into(), BUCKET.into()),
        ("LD_S3_ENDPOINT".into(), aws.moto.endpoint.clone()),
        ("LD_AWS_ACCESS_KEY_ID".into(), KEY_ID.into()),
        ("LD_AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
        ("LD_REGION".into(), "us-east-1".into()),
    ];
    FakeHeroku::start(config).await
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_runs_each_attempt_as_a_one_off_dyno() {
    let aws = aws(30).await;
    let app = tempfile::tempdir().expect("app dir");
    let procfile = procfile(&example_tasks());
    std::fs::write(app.path().join("Procfile"), &procfile).expect("Procfile");
    let fake = heroku(&aws, app.path()).await;
    // The first create is refused for the rate limit: the runner waits and tries again.
    fake.fail_next(1, 429);
    let url = fake.url();
    let serve = Serve::start(
        &aws,
        &procfile,
        &[
            ("LD_RUNNER", "heroku"),
            ("LD_HEROKU_APP", APP),
            ("HEROKU_API_KEY", TOKEN),
            ("LD_HEROKU_API_URL", &url),
            ("LD_DYNO_LIST_INTERVAL", "1"),
        ],
    );
    let media = Workflow::new().title("Process media files").step(
        Task::new("process_image")
            .timeout(Duration::from_secs(30))
            .option("dir", "out"),
    );
    let s1 = aws
        .client
        .upload("in/img/example_img.jpg", Body::from(vec![7u8; 2048]))
        .workflow(&media)
        .send()
        .await
        .expect("upload");
    let etl = Workflow::new().step(TaskGroup::new(
        ["posts", "users", "comments"].map(|e| Task::new("get_data").option("endpoint", e)),
    ));
    let s2 = aws.client.submit("in/etl", &etl).await.expect("submit");
    let run1 = wait(&aws.client, s1.run_id(), &serve).await;
    assert_eq!(
        run1.status,
        RunState::Succeeded,
        "{run1:#?}\n{}",
        serve.log()
    );
    let state = run1.steps[0].tasks[0].state.as_ref().expect("ld_state");
    assert_eq!(state["bytes"], 2048);
    let run2 = wait(&aws.client, s2.run_id(), &serve).await;
    assert_eq!(
        run2.status,
        RunState::Succeeded,
        "{run2:#?}\n{}",
        serve.log()
    );

    // One dyno per attempt, with the process type as Heroku knows it, `line_D` and the
    // options in its env, and none left running.
    let dynos = fake.dynos();
    assert_eq!(dynos.len(), 4, "{dynos:#?}");
    let media_dyno = dynos
        .iter()
        .find(|d| d.command == "process-image")
        .expect("process_image ran as the process-image type");
    let line_d: serde_json::Value =
        serde_json::from_str(&media_dyno.env["line_D"]).expect("line_D");
    assert_eq!(line_d["task_id"], run1.steps[0].tasks[0].task_id);
    assert_eq!(media_dyno.env["dir"], "out");
    let endpoints: std::collections::BTreeSet<&str> = dynos
        .iter()
        .filter(|d| d.command == "get-data")
        .map(|d| d.env["endpoint"].as_str())
        .collect();
    assert_eq!(endpoints, ["comments", "posts", "users"].into());
    assert!(
        fake.wait_until(DEADLINE, |d| d.iter().all(|d| !d.listed()))
            .await,
        "dynos left: {:#?}",
        fake.dynos()
    );
    // The 429 was retried, and the attempts' logs came through log sessions.
    let requests = fake.requests();
    assert!(requests.to("POST /apps/{app}/dynos") >= 5, "{requests:#?}");
    let log = super::support::eventually("the media dyno's log", || async {
        let key = linedee::status::log_key(&run1.steps[0].tasks[0].task_id, 1);
        let o = aws.client.get(&key).await.ok()?;
        o.bytes().await.ok()
    })
    .await;
    assert!(
        String::from_utf8_lossy(&log).contains("app[run."),
        "{}",
        String::from_utf8_lossy(&log)
    );
    // A replica that stops reports its API requests per dyno it started.
    let mut serve = serve;
    serve.stop();
    let log = serve.log();
    assert!(
        log.contains("Heroku Platform API requests made by this replica, and per dyno started"),
        "{log}"
    );
    assert!(log.contains("starts=4"), "{log}");
    // The token reaches no log.
    assert!(!log.contains(TOKEN), "{log}");
}
