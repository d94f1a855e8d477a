//! `linedee cloud check`'s live items against moto and a running replica: the harmless
//! permission probes, the rotation role, the Heroku app (the fake API), the event round trip
//! (and its probe cleaned up, answered or not); and retention of finished runs, whose
//! documents a replica then writes tagged.

use aws_sdk_sqs::types::QueueAttributeName;

use super::serve::{BUCKET, KEY_ID, SECRET, aws};
use super::serve_check::{arn, cloud, line};

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

    let iam = super::serve_rotate::iam_setup(&aws.moto, BUCKET);

    // No replica yet: nobody answers the probe, which is gone afterwards. The rotation role
    // is checked without the app (its lifetime set here).
    let (code, out) = cloud(
        &aws.moto.endpoint,
        &[
            &base[..],
            &[
                "--round-trip-wait",
                "1",
                "--rotate-role-arn",
                &iam.role_arn,
                "--rotate-lifetime",
                "3600",
            ],
        ]
        .concat(),
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
    assert!(
        line(&out, "ok    rotation role:").contains("can be assumed for 3600 s"),
        "{out}"
    );
    let left = aws.client.list("ld/control/").await.expect("list");
    assert!(left.is_empty(), "{left:?}");

    // A replica, the Heroku app (its release lacks `get-data`), and the rotation role.
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
