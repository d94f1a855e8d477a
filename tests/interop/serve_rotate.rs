//! Credentials rotation (`linedee serve --rotate-credentials`, `linedee cloud rotate`): STS on
//! moto mints the app's credentials as a role, the fake Heroku API takes them as config vars,
//! and moto enforces IAM, so only credentials that STS minted (or the engine's own IAM key)
//! are accepted.
//!
//! - A `linedee::Client` reading the config vars (`HerokuApiProvider`) keeps working across
//!   three rotations, and runs started after each rotation succeed on dynos that get the new
//!   set; no minted secret, session token or API token reaches the replica's output, an
//!   error, the bucket or its dashboard (the secrets test, `tests/tests/secrets.rs`, extended
//!   to serve mode and rotation).
//! - Racing rotations (the embedded store as S3, whose conditional writes are atomic, as
//!   S3's are; moto's are not): exactly one rotates, once per generation.

use std::collections::BTreeSet;
use std::time::Duration;

use linedee::credentials::{
    ACCESS_KEY_VAR, CredentialsCache, HerokuApiProvider, SECRET_KEY_VAR, SESSION_TOKEN_VAR,
};
use linedee::{Body, Client, RunState, Task, Workflow};
use linedee_engine::serve::{Rotated, Rotation, rotate_once};
use linedee_engine::store::{Store, StoreOptions};
use linedee_tests::example_tasks;
use linedee_tests::fake_heroku::{FakeConfig, FakeHeroku};
use tokio_util::sync::CancellationToken;

use super::serve::{BUCKET, KEY_ID, SECRET, Serve, aws, procfile, wait};
use super::support::{DEADLINE, Moto, py_dir, run_ok, venv_cmd};

const APP: &str = "ld-rotating-app";
const TOKEN: &str = "heroku-token-rotation-never-logged";

/// The engine's IAM user and the app's role, made on moto.
pub(super) struct Iam {
    pub(super) key_id: String,
    pub(super) secret: String,
    pub(super) role_arn: String,
    /// A user that may read the bucket and the queue, not write or send.
    pub(super) reader: (String, String),
}

pub(super) fn iam_setup(moto: &Moto, bucket: &str) -> Iam {
    let env = std::collections::HashMap::from([
        ("AWS_ENDPOINT_URL".to_owned(), moto.endpoint.clone()),
        ("AWS_ACCESS_KEY_ID".to_owned(), KEY_ID.to_owned()),
        ("AWS_SECRET_ACCESS_KEY".to_owned(), SECRET.to_owned()),
    ]);
    let out = run_ok(
        venv_cmd("python", &py_dir(), &env)
            .arg(py_dir().join("iam_setup.py"))
            .arg(bucket),
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("iam_setup.py prints JSON");
    Iam {
        key_id: v["access_key_id"].as_str().expect("key").to_owned(),
        secret: v["secret_access_key"].as_str().expect("secret").to_owned(),
        role_arn: v["role_arn"].as_str().expect("role").to_owned(),
        reader: (
            v["reader_key_id"].as_str().expect("reader").to_owned(),
            v["reader_secret"].as_str().expect("reader").to_owned(),
        ),
    }
}

/// `linedee cloud ARGS` against moto with these AWS credentials: its exit code and output.
fn cloud(moto: &Moto, key: (&str, &str), args: &[&str]) -> (i32, String) {
    super::serve_check::cloud_as(&moto.endpoint, key, args)
}

/// An error and its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out = format!("{out}: {s}");
        source = s.source();
    }
    out
}

/// From now on moto checks every request's signature and IAM permissions.
async fn enforce_iam(moto: &Moto) {
    let resp = reqwest::Client::new()
        .post(format!("{}/moto-api/reset-auth", moto.endpoint))
        .body("0")
        .send()
        .await
        .expect("reset-auth");
    assert!(resp.status().is_success(), "{resp:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_keeps_working_across_three_rotations_and_no_secret_leaks() {
    let aws = aws(30).await;
    let iam = iam_setup(&aws.moto, BUCKET);
    let app = tempfile::tempdir().expect("app dir");
    let procfile = procfile(&example_tasks());
    std::fs::write(app.path().join("Procfile"), &procfile).expect("Procfile");
    let mut config = FakeConfig::new(APP, TOKEN, app.path());
    // No AWS credentials yet: the first rotation brings them.
    config.env = vec![("LD_S3_ENDPOINT".into(), aws.moto.endpoint.clone())];
    let fake = FakeHeroku::start(config).await;
    enforce_iam(&aws.moto).await;
    // Credentials nobody minted are refused now.
    let refused = aws
        .client
        .put("data/refused", Body::from(b"x".to_vec()))
        .send()
        .await;
    assert!(refused.is_err(), "moto accepted unknown credentials");

    let url = fake.url();
    let serve = Serve::start(
        &aws,
        &procfile,
        &[
            ("AWS_ACCESS_KEY_ID", &iam.key_id),
            ("AWS_SECRET_ACCESS_KEY", &iam.secret),
            ("LD_RUNNER", "heroku"),
            ("LD_HEROKU_APP", APP),
            ("HEROKU_API_KEY", TOKEN),
            ("LD_HEROKU_API_URL", &url),
            ("LD_DYNO_LIST_INTERVAL", "1"),
            ("LD_ROTATE_CREDENTIALS", "true"),
            ("LD_ROTATE_ROLE_ARN", &iam.role_arn),
            ("LD_ROTATE_INTERVAL", "2"),
        ],
    );

    // The app's client reads the config vars at every request (no caching), as an app with
    // a short refresh would.
    let cache = CredentialsCache::with_timing(
        HerokuApiProvider::new(&url, APP, TOKEN),
        Duration::ZERO,
        Duration::ZERO,
    );
    let client = Client::builder()
        .bucket(BUCKET)
        .endpoint(&aws.moto.endpoint)
        .credentials_cache(cache.clone())
        .build()
        .expect("client");
    let media = Workflow::new().title("Process media files").step(
        Task::new("process_image")
            .timeout(Duration::from_secs(30))
            .option("dir", "out"),
    );
    let mut keys: Vec<String> = Vec::new();
    let mut tasks: Vec<(String, String)> = Vec::new();
    for round in 0u8..3 {
        let previous = keys.last().cloned();
        assert!(
            fake.wait_for_config(DEADLINE, |v| v.get(ACCESS_KEY_VAR).is_some()
                && v.get(ACCESS_KEY_VAR) != previous.as_ref())
                .await,
            "no rotation {round}: {}",
            serve.log()
        );
        let vars = fake.config_vars();
        assert_eq!(vars["LD_S3_BUCKET"], BUCKET);
        assert_eq!(vars["LD_REGION"], "us-east-1");
        let key = cache
            .get()
            .await
            .expect("the config vars")
            .access_key_id()
            .to_owned();
        assert!(!keys.contains(&key), "{key} seen twice");
        // The client works with the set it just read: a write, a read back, a run.
        let body = format!("round {round}");
        client
            .put(
                format!("data/round-{round}"),
                Body::from(body.clone().into_bytes()),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("put with {key}: {e}"));
        let back = client
            .get(&format!("data/round-{round}"))
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        assert_eq!(back, body.as_bytes());
        let submission = client
            .upload(
                format!("in/round-{round}.jpg"),
                Body::from(vec![round; 512]),
            )
            .workflow(&media)
            .send()
            .await
            .expect("upload");
        let run = wait(&client, submission.run_id(), &serve).await;
        assert_eq!(run.status, RunState::Succeeded, "{run:#?}\n{}", serve.log());
        tasks.push((run.run_id.clone(), run.steps[0].tasks[0].task_id.clone()));
        keys.push(key);
    }
    let mut serve = serve;
    serve.stop();

    // The rotation record names the set in the config vars, one generation per PATCH.
    let record: serde_json::Value = serde_json::from_slice(
        &client
            .get("ld/engine/rotation.json")
            .await
            .expect("the rotation record")
            .bytes()
            .await
            .expect("body"),
    )
    .expect("JSON");
    let history = fake.config_history();
    assert_eq!(record["state"], "done", "{record}");
    assert_eq!(record["generation"], history.len() as u64, "{record}");
    assert!(history.len() >= 3, "{history:?}");
    assert_eq!(
        record["access_key_id"],
        history.last().expect("a set")[ACCESS_KEY_VAR]
    );
    let distinct: BTreeSet<&String> = history.iter().map(|v| &v[ACCESS_KEY_VAR]).collect();
    assert_eq!(
        distinct.len(),
        history.len(),
        "every rotation mints a new set"
    );

    // No secret anywhere: the replica's output, every object of the bucket.
    let mut secrets: Vec<String> = vec![TOKEN.to_owned(), iam.secret.clone()];
    for vars in &history {
        secrets.push(vars[SECRET_KEY_VAR].clone());
        secrets.push(vars[SESSION_TOKEN_VAR].clone());
    }
    let log = serve.log();
    assert!(log.contains("rotated the app's AWS credentials"), "{log}");
    for s in &secrets {
        assert!(
            !log.contains(s.as_str()),
            "a secret in the replica's output:\n{log}"
        );
    }

    // The one-shot for a scheduler: not due within the interval, then forced.
    let generation = history.len();
    let rotate = [
        "rotate",
        "--bucket",
        BUCKET,
        "--heroku-app",
        APP,
        "--heroku-api-key",
        TOKEN,
        "--heroku-api-url",
        &url,
        "--rotate-role-arn",
        &iam.role_arn,
        "--rotate-interval",
        "3600",
    ];
    let engine = (iam.key_id.as_str(), iam.secret.as_str());
    let (code, out) = cloud(&aws.moto, engine, &rotate);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("not due: the next rotation is in"), "{out}");
    let (code, out) = cloud(&aws.moto, engine, &[&rotate[..], &["--force"]].concat());
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("rotated: generation {}", generation + 1)),
        "{out}"
    );
    let history = fake.config_history();
    assert_eq!(history.len(), generation + 1);
    secrets.push(history[generation][SECRET_KEY_VAR].clone());
    secrets.push(history[generation][SESSION_TOKEN_VAR].clone());
    for s in &secrets {
        assert!(
            !out.contains(s.as_str()),
            "a secret in `cloud rotate`'s output:\n{out}"
        );
    }

    // Credentials with less than the engine needs: the probes name what is denied.
    let (code, out) = cloud(
        &aws.moto,
        (&iam.reader.0, &iam.reader.1),
        &[
            "check",
            "--bucket",
            BUCKET,
            "--queue-url",
            &aws.queue_url,
            "--no-round-trip",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  engine permissions (S3): denied: s3:PutObject"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  engine permissions (SQS): denied: sqs:SendMessage, sqs:ChangeMessageVisibility, sqs:DeleteMessage"),
        "{out}"
    );

    // The dashboard of the bucket (read with the rotated set): every run, its page, its log.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    tokio::spawn(linedee_engine::dashboard::serve_bucket(
        client.clone(),
        listener,
        linedee_engine::dashboard::new_token(),
        stop.clone().cancelled_owned(),
    ));
    let http = reqwest::Client::new();
    let mut pages = vec![format!("{base}/api/runs")];
    for (run_id, task_id) in &tasks {
        pages.push(format!("{base}/api/runs/{run_id}"));
        pages.push(format!("{base}/api/logs/{task_id}/1"));
    }
    let mut logs = 0;
    for page in pages {
        let resp = http.get(&page).send().await.expect("dashboard");
        // The last dyno's log may not be stored yet when the replica stopped.
        if page.contains("/api/logs/") && resp.status() == reqwest::StatusCode::NOT_FOUND {
            continue;
        }
        assert!(resp.status().is_success(), "{page}: {}", resp.status());
        logs += usize::from(page.contains("/api/logs/"));
        let text = resp.text().await.expect("body");
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "a secret in {page}");
        }
    }
    assert!(logs >= 1, "no task log was shown");
    stop.cancel();

    for o in client.list("").await.expect("list") {
        let body = client
            .get(&o.key)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&body);
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "a secret in {}", o.key);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_rotations_rotate_once_per_generation() {
    const BUCKET: &str = "ld-rotate-race";
    let moto = Moto::start().await;
    let iam = iam_setup(&moto, BUCKET);
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(
        dir.path().join("store"),
        StoreOptions {
            fsync: false,
            default_bucket: Some(BUCKET.to_owned()),
            ..StoreOptions::default()
        },
    )
    .expect("store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move { store.serve(listener, stop.cancelled_owned()).await });
    }
    let c = store.credentials().expect("credentials");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .force_path_style(true)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                Some(c.session_token.clone()),
                None,
                "store",
            ))
            .build(),
    );
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .endpoint_url(&moto.endpoint)
            .region(aws_sdk_sts::config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                iam.key_id.clone(),
                iam.secret.clone(),
                None,
                None,
                "engine",
            ))
            .build(),
    );
    let app = tempfile::tempdir().expect("app dir");
    let fake = FakeHeroku::start(FakeConfig::new(APP, TOKEN, app.path())).await;
    enforce_iam(&moto).await;
    let rotation = Rotation::new(&iam.role_arn, APP, TOKEN)
        .api_url(fake.url())
        .interval(Duration::from_secs(3600))
        .retry_base(Duration::from_millis(10));
    let race = |force: bool| {
        let attempts: Vec<_> = (0..8)
            .map(|_| {
                let (rotation, s3, sts) = (rotation.clone(), s3.clone(), sts.clone());
                tokio::spawn(async move {
                    rotate_once(rotation, &s3, sts, BUCKET, "ld/engine/", force).await
                })
            })
            .collect();
        async move {
            let mut out = Vec::new();
            for a in attempts {
                out.push(a.await.expect("joined").expect("rotate"));
            }
            out
        }
    };
    let done = |outcomes: &[Rotated]| {
        outcomes
            .iter()
            .filter_map(|o| match o {
                Rotated::Done { generation, .. } => Some(*generation),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let patches = || fake.requests().to("PATCH /apps/{app}/config-vars");

    // Eight replicas at once, on a bucket never rotated: one rotates.
    let first = race(false).await;
    assert_eq!(done(&first), vec![1], "{first:#?}");
    assert_eq!(patches(), 1);
    // Again, not forced: the set is fresh, nobody rotates.
    let second = race(false).await;
    assert_eq!(done(&second), Vec::<u64>::new(), "{second:#?}");
    assert!(second.iter().all(|o| matches!(o, Rotated::NotDue { .. })));
    assert_eq!(patches(), 1);
    // Forced, one after another: a generation each.
    for generation in 2..=3 {
        let one = rotate_once(
            rotation.clone(),
            &s3,
            sts.clone(),
            BUCKET,
            "ld/engine/",
            true,
        )
        .await
        .expect("rotate");
        assert!(
            matches!(one, Rotated::Done { generation: g, .. } if g == generation),
            "{one:?}"
        );
    }
    assert_eq!(patches(), 3);
    assert_eq!(fake.config_history().len(), 3);

    // A Heroku API that keeps failing: the rotation fails, naming the request and quoting no
    // secret, and gives its claim back, so the next attempt rotates at once.
    fake.fail_next(6, 503);
    let err = rotate_once(
        rotation.clone(),
        &s3,
        sts.clone(),
        BUCKET,
        "ld/engine/",
        true,
    )
    .await
    .expect_err("the API refused every try");
    let err = chain(&err);
    assert!(
        err.contains("Heroku answered 503")
            && err.contains(&format!("PATCH /apps/{APP}/config-vars")),
        "{err}"
    );
    assert!(!err.contains(TOKEN), "{err}");
    assert_eq!(fake.config_history().len(), 3);
    let again = rotate_once(
        rotation.clone(),
        &s3,
        sts.clone(),
        BUCKET,
        "ld/engine/",
        true,
    )
    .await
    .expect("rotate");
    assert!(
        matches!(again, Rotated::Done { generation: 4, .. }),
        "{again:?}"
    );
    stop.cancel();
}
