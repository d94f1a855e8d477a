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

pub(super) fn line<'a>(out: &'a str, start: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{out}"))
}

pub(super) async fn arn(aws: &Aws) -> String {
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

/// `linedee cloud ARGS` against `endpoint` with the tests' AWS key: its exit code and output.
pub(super) fn cloud(endpoint: &str, args: &[&str]) -> (i32, String) {
    cloud_as(endpoint, (KEY_ID, SECRET), args)
}

/// `linedee cloud ARGS` against `endpoint` with the AWS key `key` (id, secret), and nothing
/// of this process's AWS, line^d or Heroku settings.
pub(super) fn cloud_as(endpoint: &str, key: (&str, &str), args: &[&str]) -> (i32, String) {
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
        .env("AWS_ACCESS_KEY_ID", key.0)
        .env("AWS_SECRET_ACCESS_KEY", key.1)
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
