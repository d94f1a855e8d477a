//! `linedee serve` end to end on moto's S3 and SQS, with a real bucket notification: the
//! product document's three workflows run by a `linedee serve` child process, and bad input
//! on the queue (a body that is not an event, an event for a deleted object) that goes to the
//! dead-letter queue or is dropped, without stopping the replica.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::types::{
    BucketVersioningStatus, Event, FilterRule, FilterRuleName, NotificationConfiguration,
    NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter, VersioningConfiguration,
};
use aws_sdk_sqs::types::QueueAttributeName;
use linedee::credentials::{Credentials, CredentialsCache, StaticProvider};
use linedee::status::TriggerKind;
use linedee::{Body, Client, Machine, RunState, Task, TaskGroup, Workflow};
use linedee_tests::{binary, example_tasks};

use super::support::{DEADLINE, Moto, eventually};

pub(super) const BUCKET: &str = "ld-served";
pub(super) const KEY_ID: &str = "AKIAMOTOSERVE";
pub(super) const SECRET: &str = "moto-serve-secret";

/// moto as S3 and SQS: the bucket (versioned) notifies `ld-events`, whose dead-letter queue
/// takes a message after 2 receives.
pub(super) struct Aws {
    pub(super) moto: Moto,
    pub(super) client: Client,
    pub(super) sqs: aws_sdk_sqs::Client,
    pub(super) queue_url: String,
    pub(super) dlq_url: String,
}

pub(super) async fn aws(visibility_s: u32) -> Aws {
    let moto = Moto::start().await;
    let creds = Credentials::new(KEY_ID, SECRET, None, None);
    let client = Client::builder()
        .bucket(BUCKET)
        .endpoint(&moto.endpoint)
        .credentials_cache(CredentialsCache::new(StaticProvider::new(creds)))
        .build()
        .expect("client");
    let s3 = client.s3();
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("bucket");
    s3.put_bucket_versioning()
        .bucket(BUCKET)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .expect("versioning");
    let sqs_conf = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .endpoint_url(&moto.endpoint)
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            KEY_ID, SECRET, None, None, "test",
        ))
        .build();
    let sqs = aws_sdk_sqs::Client::from_conf(sqs_conf);
    let dlq_url = sqs
        .create_queue()
        .queue_name("ld-events-dlq")
        // A dead letter the replica leaves there is soon visible again (to the tests).
        .attributes(QueueAttributeName::VisibilityTimeout, "1")
        .send()
        .await
        .expect("dlq")
        .queue_url
        .expect("dlq url");
    let dlq_arn = queue_arn(&sqs, &dlq_url).await;
    let redrive = format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"2"}}"#);
    let queue_url = sqs
        .create_queue()
        .queue_name("ld-events")
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_s.to_string(),
        )
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("queue url");
    let arn = queue_arn(&sqs, &queue_url).await;
    s3.put_bucket_notification_configuration()
        .bucket(BUCKET)
        .notification_configuration({
            // One rule per prefix that matters (docs/serve.md): uploads, outputs, control
            // requests; the engine's own documents under `ld/` make no events.
            let mut n = NotificationConfiguration::builder();
            for prefix in ["in/", "out/", "ld/control/"] {
                n = n.queue_configurations(
                    QueueConfiguration::builder()
                        .queue_arn(&arn)
                        .events(Event::from("s3:ObjectCreated:*"))
                        .filter(
                            NotificationConfigurationFilter::builder()
                                .key(
                                    S3KeyFilter::builder()
                                        .filter_rules(
                                            FilterRule::builder()
                                                .name(FilterRuleName::Prefix)
                                                .value(prefix)
                                                .build(),
                                        )
                                        .build(),
                                )
                                .build(),
                        )
                        .build()
                        .expect("queue configuration"),
                );
            }
            n.build()
        })
        .send()
        .await
        .expect("notification");
    Aws {
        moto,
        client,
        sqs,
        queue_url,
        dlq_url,
    }
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("queue attributes")
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("queue arn")
}

/// A `linedee serve` child process (its own process group, killed with its tasks on drop).
pub(super) struct Serve {
    pub(super) child: Child,
    dir: tempfile::TempDir,
}

impl Serve {
    pub(super) fn start(aws: &Aws, procfile: &str, extra: &[(&str, &str)]) -> Serve {
        let dir = tempfile::tempdir().expect("temp dir");
        let app = dir.path().join("app");
        std::fs::create_dir_all(&app).expect("app dir");
        std::fs::write(app.join("Procfile"), procfile).expect("Procfile");
        let log = std::fs::File::create(dir.path().join("serve.log")).expect("log");
        let mut cmd = Command::new(binary("linedee-cli", "linedee"));
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("AWS_") || k.starts_with("LD_") || k == "line_D" {
                cmd.env_remove(&k);
            }
        }
        let env: HashMap<&str, String> = HashMap::from([
            ("AWS_ENDPOINT_URL", aws.moto.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_CONFIG_FILE", "/dev/null".to_owned()),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("LD_S3_BUCKET", BUCKET.to_owned()),
            ("LD_SQS_QUEUE_URL", aws.queue_url.clone()),
            ("LD_APP_DIR", app.display().to_string()),
            (
                "LD_SERVE_DATA_DIR",
                dir.path().join("data").display().to_string(),
            ),
            ("LD_HEARTBEAT", "2".to_owned()),
            // What the tasks use to write their outputs, as on a dyno.
            ("LD_S3_ENDPOINT", aws.moto.endpoint.clone()),
            ("LD_AWS_ACCESS_KEY_ID", KEY_ID.to_owned()),
            ("LD_AWS_SECRET_ACCESS_KEY", SECRET.to_owned()),
            ("LD_REGION", "us-east-1".to_owned()),
            ("RUST_LOG", "info,aws=warn".to_owned()),
        ]);
        cmd.envs(env)
            .envs(extra.iter().copied())
            .arg("serve")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0);
        let child = cmd.spawn().expect("linedee serve starts");
        Serve { child, dir }
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    /// SIGTERM, and waits for the replica to exit (its log is then complete).
    pub(super) fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }

    pub(super) fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Serve {
    /// SIGTERM first: the replica stops the task processes it started (each in a process
    /// group of its own), then exits; SIGKILL only if it has not within the deadline.
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let start = std::time::Instant::now();
        while start.elapsed() < DEADLINE {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(nix::unistd::Pid::from_raw(-pid.as_raw()), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

pub(super) fn procfile(bin: &Path) -> String {
    format!(
        "process-image: {b} process-image\nget-data: {b} get-data\n",
        b = bin.display()
    )
}

pub(super) async fn wait(client: &Client, run_id: &str, serve: &Serve) -> linedee::RunStatus {
    let mut last = None;
    let start = std::time::Instant::now();
    loop {
        if let Ok(s) = client.run(run_id).await {
            if s.status.is_finished() {
                return s;
            }
            last = Some(s);
        }
        assert!(
            start.elapsed() < DEADLINE,
            "run {run_id} did not finish within {DEADLINE:?}: {last:#?}\nserve log:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_on_moto_runs_the_product_documents_three_workflows() {
    let aws = aws(30).await;
    let serve = Serve::start(&aws, &procfile(&example_tasks()), &[]);
    // 1. The starter: two steps that only echo (`ld_run`).
    let starter = Workflow::new()
        .title("Example 2-step workflow")
        .step(
            Task::new(r#"bash -c 'echo "Do Step 1"'"#)
                .machine(Machine::Basic)
                .no_output(),
        )
        .step(
            Task::new(r#"bash -c 'echo "Do Step 2"'"#)
                .machine(Machine::Basic)
                .no_output(),
        );
    let s1 = aws
        .client
        .submit("in/example", &starter)
        .await
        .expect("submit");
    // 2. A media file with its workflow as `ld_code`, run by a Rust `#[ld_task]`.
    let media = Workflow::new().title("Process media files").step(
        Task::new("process_image")
            .timeout(Duration::from_secs(30))
            .option("dir", "out"),
    );
    let s2 = aws
        .client
        .upload("in/img/example_img.jpg", Body::from(vec![7u8; 4096]))
        .workflow(&media)
        .content_type("image/jpeg")
        .send()
        .await
        .expect("upload");
    // 3. The parallel `get_data` group.
    let etl = Workflow::new().step(
        TaskGroup::new(
            ["posts", "users", "comments"].map(|e| Task::new("get_data").option("endpoint", e)),
        )
        .name("Run a parallel Task Group"),
    );
    let s3 = aws.client.submit("in/etl", &etl).await.expect("submit");

    let run1 = wait(&aws.client, s1.run_id(), &serve).await;
    assert_eq!(
        run1.status,
        RunState::Succeeded,
        "{run1:#?}\n{}",
        serve.log()
    );
    assert_eq!(run1.steps.len(), 2);
    assert!(run1.tasks().all(|t| t.attempts == 1), "{run1:#?}");

    let run2 = wait(&aws.client, s2.run_id(), &serve).await;
    assert_eq!(
        run2.status,
        RunState::Succeeded,
        "{run2:#?}\n{}",
        serve.log()
    );
    assert_eq!(run2.trigger.kind, TriggerKind::LdCode);
    let task = &run2.steps[0].tasks[0];
    let state = task
        .state
        .as_ref()
        .expect("ld_state in the status document");
    assert_eq!(state["bytes"], 4096, "{state}");

    let run3 = wait(&aws.client, s3.run_id(), &serve).await;
    assert_eq!(
        run3.status,
        RunState::Succeeded,
        "{run3:#?}\n{}",
        serve.log()
    );
    for (task, expected) in run3.steps[0].tasks.iter().zip([5, 3, 6]) {
        let out = aws.client.task_output(&task.task_id).await.expect("output");
        let records: serde_json::Value =
            serde_json::from_slice(&out.bytes().await.expect("body")).expect("json");
        assert_eq!(
            records.as_array().map(Vec::len),
            Some(expected),
            "{records}"
        );
    }
    // Each attempt's log is stored, as on the local engine.
    let log = eventually("the media task's log", || async {
        let key = linedee::status::log_key(&task.task_id, 1);
        let o = aws.client.get(&key).await.ok()?;
        o.bytes().await.ok()
    })
    .await;
    assert!(!log.is_empty());
    // One state object per run, in the state prefix.
    let states = aws.client.list("ld/engine/runs/").await.expect("list");
    assert_eq!(states.len(), 3, "{states:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_survives_bad_messages_and_vanished_objects() {
    let aws = aws(1).await;
    let mut serve = Serve::start(
        &aws,
        &procfile(&example_tasks()),
        &[("LD_DEAD_LETTER_INTERVAL", "1")],
    );
    // A body that is no event: handled twice, then the queue moves it to its DLQ.
    aws.sqs
        .send_message()
        .queue_url(&aws.queue_url)
        .message_body("this is not an S3 event")
        .send()
        .await
        .expect("send");
    // An event for an object that does not exist (deleted before it was read): no run.
    let ghost = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"ld-served"},"object":{"key":"in/gone","eTag":"x"}}}]}"#;
    aws.sqs
        .send_message()
        .queue_url(&aws.queue_url)
        .message_body(ghost)
        .send()
        .await
        .expect("send");
    // An event for a version that no longer exists, of an object that is a trigger (under a
    // prefix the notification leaves out, so only this event names it): the engine reads the
    // version the event names, finds none, and starts nothing.
    let wf = Workflow::new().step(Task::new("bash -c 'echo never'").no_output());
    aws.client
        .put("other/versioned", wf.to_json())
        .metadata("ld_run", "true")
        .send()
        .await
        .expect("put");
    let old_version = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"ld-served"},"object":{"key":"other/versioned","eTag":"x","versionId":"3HL4kqtJlcpXroDTDmJ-rmSpXd3dIbrHY"}}}]}"#;
    aws.sqs
        .send_message()
        .queue_url(&aws.queue_url)
        .message_body(old_version)
        .send()
        .await
        .expect("send");
    eventually("the vanished version is logged", || {
        let log = serve.log();
        let seen = log.lines().any(|l| {
            l.contains("deleted before it could be read") && l.contains("other/versioned")
        });
        async move { seen.then_some(()) }
    })
    .await;
    let dead = eventually("the bad message in the dead-letter queue", || async {
        let got = aws
            .sqs
            .receive_message()
            .queue_url(&aws.dlq_url)
            .wait_time_seconds(1)
            .send()
            .await
            .ok()?;
        got.messages?.into_iter().next()?.body
    })
    .await;
    assert_eq!(dead, "this is not an S3 event");
    assert!(serve.still_running(), "{}", serve.log());
    let log = serve.log();
    assert!(
        log.contains("not an S3 event notification"),
        "the log says what is wrong: {log}"
    );
    assert!(log.contains("deleted before it could be read"), "{log}");
    // And the replica still runs workflows.
    let wf = Workflow::new().step(Task::new("bash -c 'echo ok'").no_output());
    let s = aws.client.submit("in/after", &wf).await.expect("submit");
    let run = wait(&aws.client, s.run_id(), &serve).await;
    assert_eq!(run.status, RunState::Succeeded, "{run:#?}");
    assert!(aws.client.list("ld/runs/").await.expect("list").len() == 1);
    // A state object edited by hand: its run's messages cannot be handled; they go to the
    // dead-letter queue, where the replica tries once more, then marks the run failed with
    // the reason (its status document says why), instead of leaving it running.
    let state_key = format!("ld/engine/runs/{}.json", s.run_id());
    aws.client
        .put(&state_key, r#"{"edited": "by hand"}"#)
        .send()
        .await
        .expect("edit");
    let tick = format!(
        r#"{{"ld_tick":{{"run_id":"{}","tick":99,"due_ms":0}}}}"#,
        s.run_id()
    );
    aws.sqs
        .send_message()
        .queue_url(&aws.queue_url)
        .message_body(&tick)
        .send()
        .await
        .expect("send");
    let failed = eventually("the edited run marked failed", || async {
        let r = aws.client.run(s.run_id()).await.ok()?;
        (r.status == RunState::Failed).then_some(r)
    })
    .await;
    let error = failed.error.clone().unwrap_or_default();
    assert!(
        error.contains("the engine gave up on this run"),
        "{failed:#?}"
    );
    assert!(
        error.contains(&format!(
            "the state of run {} (s3://ld-served/{state_key}) cannot be read",
            s.run_id()
        )),
        "{failed:#?}"
    );
    let log = serve.log();
    assert!(log.contains("the run is marked failed"), "{log}");
    assert!(serve.still_running(), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_refuses_to_start_without_the_notification_and_says_the_fix() {
    let aws = aws(30).await;
    aws.client
        .s3()
        .put_bucket_notification_configuration()
        .bucket(BUCKET)
        .notification_configuration(NotificationConfiguration::builder().build())
        .send()
        .await
        .expect("no notification");
    let mut serve = Serve::start(&aws, "", &[]);
    let code = eventually("linedee serve exits", || {
        let status = serve.child.try_wait().expect("try_wait");
        async move { status }
    })
    .await;
    assert_eq!(code.code(), Some(2), "{}", serve.log());
    let log = serve.log();
    assert!(
        log.contains("the notification of bucket `ld-served` to the queue")
            && log.contains("no rule sends object-created events to the queue; fix: aws s3api put-bucket-notification-configuration"),
        "{log}"
    );
    // Uploads only: outputs and control requests would never reach the engine.
    let arn = queue_arn(&aws.sqs, &aws.queue_url).await;
    let uploads_only = QueueConfiguration::builder()
        .queue_arn(&arn)
        .events(Event::from("s3:ObjectCreated:*"))
        .filter(
            NotificationConfigurationFilter::builder()
                .key(
                    S3KeyFilter::builder()
                        .filter_rules(
                            FilterRule::builder()
                                .name(FilterRuleName::Prefix)
                                .value("in/")
                                .build(),
                        )
                        .build(),
                )
                .build(),
        )
        .build()
        .expect("rule");
    aws.client
        .s3()
        .put_bucket_notification_configuration()
        .bucket(BUCKET)
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(uploads_only)
                .build(),
        )
        .send()
        .await
        .expect("uploads-only notification");
    let mut serve = Serve::start(&aws, "", &[]);
    let code = eventually("linedee serve exits", || {
        let status = serve.child.try_wait().expect("try_wait");
        async move { status }
    })
    .await;
    assert_eq!(code.code(), Some(2), "{}", serve.log());
    assert!(
        serve
            .log()
            .contains("the rules cover in/ but not out/, ld/control/"),
        "{}",
        serve.log()
    );
    // A queue that does not exist is named, with the variable to fix.
    let mut serve = Serve::start(
        &aws,
        "",
        &[(
            "LD_SQS_QUEUE_URL",
            &format!("{}/123456789012/no-such-queue", aws.moto.endpoint),
        )],
    );
    let code = eventually("linedee serve exits", || {
        let status = serve.child.try_wait().expect("try_wait");
        async move { status }
    })
    .await;
    assert_eq!(code.code(), Some(2), "{}", serve.log());
    let log = serve.log();
    assert!(log.contains("no-such-queue cannot be read"), "{log}");
    assert!(log.contains("check LD_SQS_QUEUE_URL"), "{log}");
}

/// `linedee` (the CLI) with only the `LD_*` variables of the served bucket.
fn cli(aws: &Aws, cwd: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(binary("linedee-cli", "linedee"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("AWS_") || k.starts_with("LD_") || k == "line_D" {
            cmd.env_remove(&k);
        }
    }
    cmd.current_dir(cwd)
        .env("LINEDEE_DIR", cwd.join("no-local-engine"))
        .env("LD_S3_BUCKET", BUCKET)
        .env("LD_S3_ENDPOINT", &aws.moto.endpoint)
        .env("LD_AWS_ACCESS_KEY_ID", KEY_ID)
        .env("LD_AWS_SECRET_ACCESS_KEY", SECRET)
        .env("LD_REGION", "us-east-1")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("linedee runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_retry_reach_the_replica_through_the_bucket() {
    let aws = aws(30).await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let flag = tmp.path().join("failed-once");
    // `flaky` fails once (no output), then writes its output like `get-data`.
    let serve = Serve::start(
        &aws,
        &format!(
            "flaky: bash -c 'echo flaky says hello; test -f {f} || {{ touch {f}; exit 3; }}; exec {bin} get-data'\n",
            f = flag.display(),
            bin = example_tasks().display()
        ),
        &[],
    );
    // A run whose task sleeps without an output: cancel stops it.
    let marker = tmp.path().join("started");
    let sleeper = Workflow::new().step(
        Task::new(format!(
            "bash -c 'touch {}; exec sleep 600'",
            marker.display()
        ))
        .timeout(Duration::from_secs(900)),
    );
    let s = aws
        .client
        .submit("in/sleep", &sleeper)
        .await
        .expect("submit");
    eventually("the sleeping task started", || async {
        marker.exists().then_some(())
    })
    .await;
    let out = cli(&aws, tmp.path(), &["cancel", s.run_id()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{stderr}\n{}",
        serve.log()
    );
    assert!(
        stdout.contains(&format!("run {} cancelled", s.run_id())),
        "{stdout}"
    );
    let run = wait(&aws.client, s.run_id(), &serve).await;
    assert_eq!(run.status, RunState::Cancelled, "{run:#?}");
    // Cancelling it again is refused, with the reason.
    let out = cli(&aws, tmp.path(), &["cancel", s.run_id()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("already finished"), "{stderr}");

    // A run that fails once: retry runs it again, from its failed step.
    let flaky = Workflow::new().step(Task::new("flaky").option("endpoint", "posts").retries(0));
    let s = aws.client.submit("in/flaky", &flaky).await.expect("submit");
    let run = wait(&aws.client, s.run_id(), &serve).await;
    assert_eq!(run.status, RunState::Failed, "{run:#?}");
    let out = cli(&aws, tmp.path(), &["retry", s.run_id()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = eventually("the redriven run succeeded", || async {
        let r = aws.client.run(s.run_id()).await.ok()?;
        (r.status == RunState::Succeeded).then_some(r)
    })
    .await;
    assert_eq!(run.steps[0].tasks[0].attempts, 2, "{run:#?}");
    // `runs`, `run` and `logs` read the served bucket with the LD_* variables alone.
    let out = cli(&aws, tmp.path(), &["runs"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{listing}");
    assert!(listing.contains(s.run_id()), "{listing}");
    let out = cli(&aws, tmp.path(), &["run", s.run_id()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("succeeded"));
    let task_id = run.steps[0].tasks[0].task_id.clone();
    let log = super::support::eventually("the first attempt's log", || {
        let out = cli(&aws, tmp.path(), &["logs", &task_id, "--attempt", "1"]);
        async move { (out.status.code() == Some(0)).then_some(out) }
    })
    .await;
    assert!(
        String::from_utf8_lossy(&log.stdout).contains("flaky says hello"),
        "{}",
        String::from_utf8_lossy(&log.stdout)
    );
    // An unknown run is "not found" (exit 3).
    let out = cli(&aws, tmp.path(), &["retry", "no-such-run"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_that_goes_away_is_logged_and_the_replica_carries_on_when_it_is_back() {
    let aws = aws(30).await;
    let mut serve = Serve::start(&aws, "", &[]);
    eventually("linedee serve is up", || {
        let up = serve.log().contains("Ctrl-C stops");
        async move { up.then_some(()) }
    })
    .await;
    aws.sqs
        .delete_queue()
        .queue_url(&aws.queue_url)
        .send()
        .await
        .expect("delete the queue");
    eventually("the lost queue is logged", || {
        let logged = serve.log().contains("cannot receive from the queue");
        async move { logged.then_some(()) }
    })
    .await;
    assert!(serve.still_running(), "{}", serve.log());
    // The same queue again (same URL and ARN, so the notification still points at it).
    aws.sqs
        .create_queue()
        .queue_name("ld-events")
        .send()
        .await
        .expect("the queue again");
    let wf = Workflow::new().step(Task::new("bash -c 'echo back'").no_output());
    let s = aws.client.submit("in/back", &wf).await.expect("submit");
    let run = wait(&aws.client, s.run_id(), &serve).await;
    assert_eq!(run.status, RunState::Succeeded, "{run:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_reads_a_served_bucket_and_cancels_through_it() {
    use crate::dashboard::support::{chromium, get_json, post};
    let aws = aws(30).await;
    let serve = Serve::start(&aws, "", &[]);
    let ok = Workflow::new()
        .title("Served and shown")
        .step(Task::new("bash -c 'echo shown in the dashboard'").no_output());
    let done = aws.client.submit("in/shown", &ok).await.expect("submit");
    let run = wait(&aws.client, done.run_id(), &serve).await;
    assert_eq!(run.status, RunState::Succeeded);
    let tmp = tempfile::tempdir().expect("temp dir");
    let marker = tmp.path().join("started");
    let sleeper = Workflow::new().step(
        Task::new(format!(
            "bash -c 'touch {}; exec sleep 600'",
            marker.display()
        ))
        .timeout(Duration::from_secs(900)),
    );
    let sleeping = aws
        .client
        .submit("in/sleeping", &sleeper)
        .await
        .expect("submit");
    eventually("the sleeping run's document says running", || async {
        let r = aws.client.run(sleeping.run_id()).await.ok()?;
        (r.status == RunState::Running && marker.exists()).then_some(())
    })
    .await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let token = linedee_engine::dashboard::new_token();
    let stop = tokio_util::sync::CancellationToken::new();
    let served = tokio::spawn(linedee_engine::dashboard::serve_bucket(
        aws.client.clone(),
        listener,
        token.clone(),
        stop.clone().cancelled_owned(),
    ));

    let (code, page) = get_json(&format!("{base}/api/runs")).await;
    assert_eq!(code, 200, "{page}");
    let runs = page["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "{page}");
    let by_id = |id: &str| runs.iter().find(|r| r["run_id"] == id).cloned();
    assert_eq!(by_id(done.run_id()).expect("listed")["status"], "succeeded");
    assert_eq!(
        by_id(sleeping.run_id()).expect("listed")["status"],
        "running"
    );
    let (_, only) = get_json(&format!("{base}/api/runs?status=succeeded")).await;
    assert_eq!(only["runs"].as_array().map(Vec::len), Some(1), "{only}");
    let (code, one) = get_json(&format!("{base}/api/runs/{}", done.run_id())).await;
    assert_eq!(
        (code, &one["run"]["title"]),
        (200, &serde_json::json!("Served and shown"))
    );
    let task_id = run.steps[0].tasks[0].task_id.clone();
    let (code, log) = eventually("the log through the dashboard", || async {
        let (code, log) = get_json(&format!("{base}/api/logs/{task_id}/1")).await;
        (code == 200).then_some((code, log))
    })
    .await;
    assert_eq!(code, 200);
    assert!(
        log["text"]
            .as_str()
            .unwrap_or_default()
            .contains("shown in the dashboard"),
        "{log}"
    );
    let (code, overview) = get_json(&format!("{base}/api/overview?window=1h")).await;
    assert_eq!(code, 404, "{overview}");
    assert!(
        overview["error"]
            .as_str()
            .unwrap_or_default()
            .contains("runs list")
    );

    // Cancel needs the token; with it, the request reaches the replica through the bucket.
    let cancel = format!("{base}/api/runs/{}/cancel", sleeping.run_id());
    let (code, _) = post(&cancel, None).await;
    assert_eq!(code, 401);
    let (code, answer) = post(&cancel, Some(&format!("Bearer {token}"))).await;
    assert_eq!(code, 200, "{answer}\n{}", serve.log());
    let run = wait(&aws.client, sleeping.run_id(), &serve).await;
    assert_eq!(run.status, RunState::Cancelled);
    let (code, refused) = post(&cancel, Some(&format!("Bearer {token}"))).await;
    assert_eq!(code, 409, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("already finished")
    );

    // The app renders the runs list in a real browser.
    let dom = chromium(&format!("{base}/#/runs"), &["--dump-dom"]).await;
    assert!(dom.contains(done.run_id()), "{dom}");
    assert!(dom.contains(sleeping.run_id()), "{dom}");

    stop.cancel();
    served
        .await
        .expect("join")
        .expect("the dashboard stops cleanly");
}
