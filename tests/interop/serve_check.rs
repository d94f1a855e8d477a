//! `linedee cloud check` against moto: a half-configured deployment has each missing piece
//! named with its fix; a wrong queue policy is named; a complete one passes (exit 0).

use std::process::{Command, Output, Stdio};

use aws_sdk_sqs::types::QueueAttributeName;
use linedee_tests::binary;

use super::serve::{Aws, BUCKET, KEY_ID, SECRET, aws};
use super::support::Moto;

fn cloud_check(endpoint: &str, bucket: &str, queue_url: &str) -> (i32, String) {
    cloud(
        endpoint,
        &[
            "check",
            "--bucket",
            bucket,
            "--queue-url",
            queue_url,
            "--no-round-trip",
        ],
    )
}

/// S3 and SQS clients for moto.
fn clients(moto: &Moto) -> (aws_sdk_s3::Client, aws_sdk_sqs::Client) {
    let creds = aws_credential_types::Credentials::new(KEY_ID, SECRET, None, None, "test");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(&moto.endpoint)
            .force_path_style(true)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds.clone())
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .endpoint_url(&moto.endpoint)
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .build(),
    );
    (s3, sqs)
}

fn line<'a>(out: &'a str, start: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{out}"))
}

async fn arn(aws: &Aws) -> String {
    aws.sqs
        .get_queue_attributes()
        .queue_url(&aws.queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attributes")
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("arn")
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_check_names_each_missing_piece_with_its_fix() {
    let moto = Moto::start().await;
    let (s3, sqs) = clients(&moto);
    s3.create_bucket()
        .bucket("half")
        .send()
        .await
        .expect("bucket");
    let url = sqs
        .create_queue()
        .queue_name("half-events")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let (code, out) = cloud_check(&moto.endpoint, "half", &url);
    assert_eq!(code, 1, "{out}");
    assert!(
        line(&out, "ok    bucket:").contains("`half` exists"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  bucket versioning: never enabled"),
        "{out}"
    );
    assert!(
        out.contains("fix: aws s3api put-bucket-versioning --bucket half --versioning-configuration Status=Enabled"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  bucket notification: no rule sends object-created events to the queue"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  queue policy: the queue has no policy"),
        "{out}"
    );
    assert!(
        out.contains("\"aws:SourceArn\": \"arn:aws:s3:::half\""),
        "the policy to apply: {out}"
    );
    assert!(out.contains("FAIL  dead-letter queue: none"), "{out}");
    assert!(
        line(&out, "ok    visibility timeout:").contains("30 s"),
        "{out}"
    );
    assert!(
        line(&out, "ok    retention:").contains("grow forever"),
        "{out}"
    );

    // A bucket that does not exist stops the check at its first line.
    let (code, out) = cloud_check(&moto.endpoint, "no-such-bucket", &url);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  bucket: `no-such-bucket` cannot be reached"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_check_passes_a_complete_deployment_and_names_a_wrong_policy() {
    let aws = aws(60).await;
    let arn = arn(&aws).await;
    // The policy for another bucket: named as wrong.
    let other = linedee_engine::serve::queue_policy(&arn, "some-other-bucket");
    aws.sqs
        .set_queue_attributes()
        .queue_url(&aws.queue_url)
        .attributes(QueueAttributeName::Policy, other)
        .send()
        .await
        .expect("policy");
    let (code, out) = cloud_check(&aws.moto.endpoint, BUCKET, &aws.queue_url);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "FAIL  queue policy: no statement lets bucket `{BUCKET}` (arn:aws:s3:::{BUCKET}) send to {arn}"
        )),
        "{out}"
    );
    // The policy `check` proposes makes it whole.
    aws.sqs
        .set_queue_attributes()
        .queue_url(&aws.queue_url)
        .attributes(
            QueueAttributeName::Policy,
            linedee_engine::serve::queue_policy(&arn, BUCKET),
        )
        .send()
        .await
        .expect("policy");
    let (code, out) = cloud_check(&aws.moto.endpoint, BUCKET, &aws.queue_url);
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    assert!(
        line(&out, "ok    bucket versioning:").contains("enabled"),
        "{out}"
    );
    assert!(
        line(&out, "ok    bucket notification:").contains("in/, out/, ld/control/"),
        "{out}"
    );
    assert!(
        line(&out, "ok    dead-letter queue:").contains("after 2 receives"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_check_probes_the_engine_the_heroku_app_and_a_round_trip_through_a_replica() {
    const APP: &str = "ld-checked-app";
    const TOKEN: &str = "heroku-token-check-never-printed";
    const APP_SECRET: &str = "app-secret-never-printed";
    let aws = aws(60).await;
    let arn = arn(&aws).await;
    aws.sqs
        .set_queue_attributes()
        .queue_url(&aws.queue_url)
        .attributes(
            QueueAttributeName::Policy,
            linedee_engine::serve::queue_policy(&arn, BUCKET),
        )
        .send()
        .await
        .expect("policy");
    let base = ["check", "--bucket", BUCKET, "--queue-url", &aws.queue_url];

    // No replica yet: nobody answers the probe, which is gone afterwards.
    let (code, out) = cloud(
        &aws.moto.endpoint,
        &[&base[..], &["--round-trip-wait", "1"]].concat(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        line(&out, "FAIL  event round trip:").contains("no replica answered the probe within 1 s"),
        "{out}"
    );
    assert!(
        line(&out, "skip  heroku app:").contains("not checked"),
        "{out}"
    );
    let left = aws.client.list("ld/control/").await.expect("list");
    assert!(left.is_empty(), "{left:?}");

    // A replica, the Heroku app (its release lacks `get-data`), and the rotation role.
    let iam = super::serve_rotate::iam_setup(&aws.moto, BUCKET);
    let released = tempfile::tempdir().expect("app dir");
    std::fs::write(
        released.path().join("Procfile"),
        "process-image: bin/process-image\n",
    )
    .expect("Procfile");
    let mut config = linedee_tests::fake_heroku::FakeConfig::new(APP, TOKEN, released.path());
    config.env = vec![
        ("LD_S3_BUCKET".into(), BUCKET.into()),
        ("LD_REGION".into(), "us-east-1".into()),
        ("LD_AWS_ACCESS_KEY_ID".into(), KEY_ID.into()),
        ("LD_AWS_SECRET_ACCESS_KEY".into(), APP_SECRET.into()),
    ];
    let fake = linedee_tests::fake_heroku::FakeHeroku::start(config).await;
    let procfile = super::serve::procfile(&linedee_tests::example_tasks());
    let local = tempfile::tempdir().expect("local app dir");
    std::fs::write(local.path().join("Procfile"), &procfile).expect("Procfile");
    let serve = super::serve::Serve::start(&aws, &procfile, &[]);
    let url = fake.url();
    let app_dir = local.path().display().to_string();
    let (code, out) = cloud(
        &aws.moto.endpoint,
        &[
            &base[..],
            &[
                "--app-dir",
                &app_dir,
                "--heroku-app",
                APP,
                "--heroku-api-key",
                TOKEN,
                "--heroku-api-url",
                &url,
                "--rotate-role-arn",
                &iam.role_arn,
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 1, "{out}\n{}", serve.log());
    for ok in [
        "ok    engine permissions (S3):",
        "ok    engine permissions (SQS):",
        "ok    heroku app:",
    ] {
        line(&out, ok);
    }
    assert!(
        line(&out, "ok    rotation role:").contains("can be assumed for 43200 s"),
        "{out}"
    );
    assert!(
        line(&out, "FAIL  process types:")
            .contains("the release lacks `get-data` (it has `process-image`)"),
        "{out}"
    );
    assert!(
        line(&out, "ok    config vars:")
            .contains("LD_S3_BUCKET=ld-served, LD_REGION=us-east-1, long-lived credentials"),
        "{out}"
    );
    assert!(
        line(&out, "ok    event round trip:").contains("was answered in"),
        "{out}\n{}",
        serve.log()
    );
    for secret in [TOKEN, APP_SECRET, SECRET] {
        assert!(!out.contains(secret), "{out}");
    }
    let left = aws.client.list("ld/control/").await.expect("list");
    assert!(
        left.is_empty(),
        "the probe and its answer are deleted: {left:?}"
    );
}

fn cloud(endpoint: &str, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(binary("linedee-cli", "linedee"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("AWS_") || k.starts_with("LD_") || k.starts_with("HEROKU_") {
            cmd.env_remove(&k);
        }
    }
    let out: Output = cmd
        .arg("cloud")
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .stdin(Stdio::null())
        .output()
        .expect("linedee runs");
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_setup_completes_a_deployment_once_keeping_the_buckets_own_rules() {
    use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
    let moto = Moto::start().await;
    let (s3, sqs) = clients(&moto);
    // A bucket with a rule of its own, to another queue.
    s3.create_bucket()
        .bucket("half")
        .send()
        .await
        .expect("bucket");
    let other = sqs
        .create_queue()
        .queue_name("audit")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let other_arn = sqs
        .get_queue_attributes()
        .queue_url(&other)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attrs")
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("arn");
    s3.put_bucket_notification_configuration()
        .bucket("half")
        .notification_configuration(
            NotificationConfiguration::builder()
                .queue_configurations(
                    QueueConfiguration::builder()
                        .id("audit")
                        .queue_arn(&other_arn)
                        .events(Event::from("s3:ObjectRemoved:*"))
                        .build()
                        .expect("rule"),
                )
                .build(),
        )
        .send()
        .await
        .expect("notification");

    // A dry run says what it would do and changes nothing.
    let (code, out) = cloud(&moto.endpoint, &["setup", "--bucket", "half", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("todo     bucket versioning: would call: aws s3api put-bucket-versioning"),
        "{out}"
    );
    assert!(
        out.contains("todo     queue: would call: aws sqs create-queue --queue-name ld-events"),
        "{out}"
    );
    assert!(
        sqs.get_queue_url()
            .queue_name("ld-events")
            .send()
            .await
            .is_err(),
        "a dry run created the queue"
    );

    let (code, out) = cloud(
        &moto.endpoint,
        &["setup", "--bucket", "half", "--retain-days", "30"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("changed  bucket versioning: enabled"), "{out}");
    assert!(
        out.contains("changed  retention: ld/logs/ expires after 30 days"),
        "{out}"
    );
    assert!(
        out.contains("changed  bucket notification: added a rule"),
        "{out}"
    );
    let url = sqs
        .get_queue_url()
        .queue_name("ld-events")
        .send()
        .await
        .expect("the queue exists")
        .queue_url
        .expect("url");
    let (code, check) = cloud_check(&moto.endpoint, "half", &url);
    assert_eq!(code, 0, "after setup:\n{out}\ncheck:\n{check}");
    assert!(
        line(&check, "ok    retention:").contains("ld/logs/ expires after 30 days"),
        "{check}"
    );
    // The bucket's own rule is still there, beside linedee's.
    let rules = s3
        .get_bucket_notification_configuration()
        .bucket("half")
        .send()
        .await
        .expect("notification");
    let arns: Vec<&str> = rules
        .queue_configurations()
        .iter()
        .map(|q| q.queue_arn())
        .collect();
    assert!(arns.contains(&other_arn.as_str()), "{arns:?}");
    assert_eq!(arns.len(), 2, "{arns:?}");
    // A second run changes nothing, and says so.
    let (code, out) = cloud(
        &moto.endpoint,
        &["setup", "--bucket", "half", "--retain-days", "30"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("changed"), "{out}");
    assert!(out.contains("nothing to change"), "{out}");
    // Finished runs too: not for less than SQS may hold a duplicate event.
    let (code, out) = cloud(
        &moto.endpoint,
        &[
            "setup",
            "--bucket",
            "half",
            "--retain-days",
            "10",
            "--retain-runs",
        ],
    );
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("finished runs are kept at least 15 days"),
        "{out}"
    );
    let (code, out) = cloud(
        &moto.endpoint,
        &[
            "setup",
            "--bucket",
            "half",
            "--retain-days",
            "30",
            "--retain-runs",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "changed  retention: ld/logs/ and finished runs' documents expire after 30 days"
        ),
        "{out}"
    );
    let (code, check) = cloud_check(&moto.endpoint, "half", &url);
    assert_eq!(code, 0, "{check}");
    assert!(
        line(&check, "ok    retention:").contains("finished runs after 30 days"),
        "{check}"
    );
    let lifecycle = s3
        .get_bucket_lifecycle_configuration()
        .bucket("half")
        .send()
        .await
        .expect("lifecycle");
    let ids: Vec<&str> = lifecycle.rules().iter().filter_map(|r| r.id()).collect();
    assert_eq!(
        ids,
        ["linedee-logs", "linedee-finished-runs"],
        "{lifecycle:?}"
    );
    // A bucket that does not exist is not created: setup says so.
    let (code, out) = cloud(&moto.endpoint, &["setup", "--bucket", "nope-bucket"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("setup does not create buckets"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_that_expires_finished_runs_gets_their_documents_tagged() {
    let aws = aws(30).await;
    let (code, out) = cloud(
        &aws.moto.endpoint,
        &[
            "setup",
            "--bucket",
            BUCKET,
            "--retain-days",
            "20",
            "--retain-runs",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let serve = super::serve::Serve::start(
        &aws,
        &super::serve::procfile(&linedee_tests::example_tasks()),
        &[],
    );
    let starter = linedee::Workflow::new().step(linedee::Task::new("bash -c true").no_output());
    let submitted = aws
        .client
        .submit("in/tagged", &starter)
        .await
        .expect("submit");
    let run = super::serve::wait(&aws.client, submitted.run_id(), &serve).await;
    assert_eq!(run.status, linedee::RunState::Succeeded, "{run:#?}");
    let id = submitted.run_id();
    for key in [
        linedee::status::status_key(id),
        format!("ld/engine/runs/{id}.json"),
    ] {
        let tags = super::support::eventually("the finished document's tag", || {
            let (s3, key) = (aws.client.s3().clone(), key.clone());
            async move {
                let t = s3
                    .get_object_tagging()
                    .bucket(BUCKET)
                    .key(&key)
                    .send()
                    .await
                    .ok()?;
                let tags: Vec<(String, String)> = t
                    .tag_set()
                    .iter()
                    .map(|t| (t.key().to_owned(), t.value().to_owned()))
                    .collect();
                (!tags.is_empty()).then_some(tags)
            }
        })
        .await;
        assert_eq!(
            tags,
            [("ld_finished".to_owned(), "true".to_owned())],
            "{key}"
        );
    }
}
