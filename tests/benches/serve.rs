//! `linedee serve` benchmarks (issue 14), for BENCHMARKS.md:
//!
//! 1. Requests per one-task run, counted at the servers: a counting proxy in front of moto
//!    (S3 by operation, SQS by operation) sees only the engine's requests (the app and its
//!    tasks talk to moto directly); the fake Heroku API counts its own. One run at a time,
//!    then all at once (20 runs; 5 with `LINEDEE_BENCH_QUICK=1`).
//! 2. The engine's overhead from the SQS receive of a trigger to the dyno-create request, with
//!    the embedded store as S3 on loopback: the proxy timestamps the ReceiveMessage answer that
//!    carries the trigger, the fake Heroku API the create request.
//!
//! `cargo bench -p linedee-tests --bench serve` (needs Python 3 and PyPI for the pinned moto,
//! as the interop tests). `LINEDEE_BENCH_QUICK=1` for a smaller run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_s3::types::{
    BucketVersioningStatus, Event, FilterRule, FilterRuleName, NotificationConfiguration,
    NotificationConfigurationFilter, QueueConfiguration, S3KeyFilter, VersioningConfiguration,
};
use aws_sdk_sqs::types::QueueAttributeName;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use linedee::credentials::{Credentials, StaticProvider};
use linedee::{Client, RunState, Task, Workflow};
use linedee_engine::serve::{Dynos, Serve};
use linedee_engine::store::{Store, StoreOptions};
use linedee_engine::{Console, RetryPolicy};
use linedee_tests::fake_heroku::{FakeConfig, FakeHeroku};
use linedee_tests::{example_tasks, workspace_root};
use tokio_util::sync::CancellationToken;

const BUCKET: &str = "ld-bench";
const KEY: &str = "AKIABENCH";
const SECRET: &str = "bench-secret";

fn quick() -> bool {
    std::env::var_os("LINEDEE_BENCH_QUICK").is_some()
}

// ---- a counting proxy ----

/// What went through the proxy: each request's operation, and when each SQS receive answered
/// with which body.
#[derive(Default)]
struct Seen {
    ops: BTreeMap<String, u64>,
    receives: Vec<(Instant, String)>,
}

struct Proxy {
    endpoint: String,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let stop = CancellationToken::new();
        let (upstream, seen2, stop2) = (upstream.to_owned(), Arc::clone(&seen), stop.clone());
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client");
        tokio::spawn(async move {
            loop {
                let (io, _) = tokio::select! {
                    () = stop2.cancelled() => return,
                    a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                };
                let (upstream, seen, http) = (upstream.clone(), Arc::clone(&seen2), http.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        forward(req, upstream.clone(), Arc::clone(&seen), http.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                        .await;
                });
            }
        });
        Proxy {
            endpoint: format!("http://{addr}"),
            seen,
            stop,
        }
    }

    fn ops(&self) -> BTreeMap<String, u64> {
        self.seen.lock().expect("seen").ops.clone()
    }

    /// When a receive first answered with a body containing `needle`.
    fn received(&self, needle: &str) -> Option<Instant> {
        let seen = self.seen.lock().expect("seen");
        seen.receives
            .iter()
            .find(|(_, body)| body.contains(needle))
            .map(|(t, _)| *t)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// S3 or SQS operation of a request.
fn operation(req: &http::request::Parts) -> String {
    if let Some(target) = req.headers.get("x-amz-target") {
        let t = target.to_str().unwrap_or_default();
        return format!("SQS {}", t.trim_start_matches("AmazonSQS."));
    }
    let query = req.uri.query().unwrap_or_default();
    let path = req.uri.path().trim_start_matches('/');
    let object = path.contains('/');
    let conditional =
        req.headers.contains_key("if-match") || req.headers.contains_key("if-none-match");
    let op = match (req.method.as_str(), object) {
        ("HEAD", true) => "HeadObject",
        ("GET", true) => "GetObject",
        ("PUT", true) if conditional => "PutObject (conditional)",
        ("PUT", true) => "PutObject",
        ("DELETE", true) => "DeleteObject",
        ("HEAD", false) => "HeadBucket",
        ("GET", false) if query.contains("notification") => "GetBucketNotificationConfiguration",
        ("GET", false) => "ListObjectsV2",
        (m, _) => m,
    };
    format!("S3 {op}")
}

async fn forward(
    req: Request<Incoming>,
    upstream: String,
    seen: Arc<Mutex<Seen>>,
    http: reqwest::Client,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let op = operation(&parts);
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let url = format!(
        "{upstream}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut out = http.request(parts.method.clone(), url).body(body);
    for (k, v) in &parts.headers {
        out = out.header(k, v);
    }
    let answer = match out.send().await {
        Ok(r) => r,
        Err(_) => {
            return Ok(Response::builder()
                .status(502)
                .body(Full::new(Bytes::new()))
                .unwrap_or_default());
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    {
        let mut s = seen.lock().expect("seen");
        *s.ops.entry(op.clone()).or_default() += 1;
        if op == "SQS ReceiveMessage" {
            s.receives
                .push((Instant::now(), String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    let mut response = Response::builder().status(status);
    for (k, v) in &headers {
        if k != "content-length" && k != "transfer-encoding" {
            response = response.header(k, v);
        }
    }
    Ok(response.body(Full::new(bytes)).unwrap_or_default())
}

// ---- moto ----

struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    async fn start() -> Moto {
        let setup = workspace_root().join("tests/interop/setup-venv");
        let out = Command::new("bash")
            .arg(&setup)
            .stderr(Stdio::inherit())
            .output()
            .expect("setup-venv runs");
        assert!(out.status.success(), "setup-venv failed");
        let venv = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let child = Command::new(format!("{venv}/bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        // Owned at once, so that it is killed (on drop) whatever happens next.
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if http
                .post(format!("{}/moto-api/reset", moto.endpoint))
                .send()
                .await
                .is_ok()
            {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("moto_server did not start");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3_client(endpoint: &str, creds: aws_credential_types::Credentials) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .force_path_style(true)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .build(),
    )
}

fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(moto_creds())
            .build(),
    )
}

fn moto_creds() -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new(KEY, SECRET, None, None, "bench")
}

/// A queue with a dead-letter queue; returns its URL and ARN.
async fn queue(sqs: &aws_sdk_sqs::Client, name: &str) -> (String, String) {
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .expect("dlq")
        .queue_url
        .expect("url");
    let arn = |url: String| async move {
        sqs.get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("attributes")
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("arn")
    };
    let dlq_arn = arn(dlq).await;
    let url = sqs
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"5"}}"#),
        )
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let queue_arn = arn(url.clone()).await;
    (url, queue_arn)
}

async fn wait_finished(client: &Client, run_ids: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in run_ids {
        loop {
            if let Ok(s) = client.run(id).await
                && s.status.is_finished()
            {
                assert_eq!(s.status, RunState::Succeeded, "{s:#?}");
                break;
            }
            assert!(Instant::now() < deadline, "run {id} did not finish");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---- 1. requests per run ----

async fn requests_per_run(runs: usize) {
    let moto = Moto::start().await;
    let proxy = Proxy::start(&moto.endpoint).await;
    let s3 = s3_client(&moto.endpoint, moto_creds());
    let sqs = sqs_client(&moto.endpoint);
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
    let (queue_url, queue_arn) = queue(&sqs, "ld-events").await;
    let mut n = NotificationConfiguration::builder();
    for prefix in ["in/", "out/", "ld/control/"] {
        n = n.queue_configurations(
            QueueConfiguration::builder()
                .queue_arn(&queue_arn)
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
    s3.put_bucket_notification_configuration()
        .bucket(BUCKET)
        .notification_configuration(n.build())
        .send()
        .await
        .expect("notification");

    let app = tempfile::tempdir().expect("app");
    let procfile = format!("one: {} get-data\n", example_tasks().display());
    std::fs::write(app.path().join("Procfile"), &procfile).expect("Procfile");
    let mut config = FakeConfig::new("ld-app", "token", app.path());
    config.budget = 1_000_000;
    config.env = vec![
        ("LD_S3_BUCKET".into(), BUCKET.into()),
        ("LD_S3_ENDPOINT".into(), moto.endpoint.clone()),
        ("LD_AWS_ACCESS_KEY_ID".into(), KEY.into()),
        ("LD_AWS_SECRET_ACCESS_KEY".into(), SECRET.into()),
        ("LD_REGION".into(), "us-east-1".into()),
    ];
    let fake = FakeHeroku::start(config).await;
    let list_every = Duration::from_secs(5);
    let heartbeat = Duration::from_secs(5);
    let serve = Serve::builder()
        .bucket(BUCKET)
        .queue_url(&queue_url)
        .clients(
            s3_client(&proxy.endpoint, moto_creds()),
            sqs_client(&proxy.endpoint),
        )
        .app_dir(app.path())
        .console(Console::quiet())
        .heartbeat(heartbeat)
        .dynos(
            Dynos::new("ld-app", "token")
                .api_url(fake.url())
                .list_interval(list_every),
        )
        .build()
        .await
        .expect("serve");
    let stop = CancellationToken::new();
    let served = tokio::spawn({
        let stop = stop.clone();
        async move { serve.run(stop.cancelled_owned()).await }
    });
    let client = Client::builder()
        .bucket(BUCKET)
        .endpoint(&moto.endpoint)
        .credentials_provider(StaticProvider::new(Credentials::new(
            KEY, SECRET, None, None,
        )))
        .build()
        .expect("client");
    let wf = Workflow::new().step(Task::new("one").option("endpoint", "users"));

    let mut rows = Vec::new();
    let at_once = format!("{runs} at once");
    for (label, concurrent) in [("one at a time", false), (at_once.as_str(), true)] {
        let (ops0, heroku0) = (proxy.ops(), fake.requests());
        let started = Instant::now();
        let mut ids = Vec::new();
        if concurrent {
            let mut set = tokio::task::JoinSet::new();
            for i in 0..runs {
                let (client, wf) = (client.clone(), wf.clone());
                set.spawn(async move {
                    client
                        .submit(&format!("in/c-{i}"), &wf)
                        .await
                        .expect("submit")
                        .run_id()
                        .to_owned()
                });
            }
            ids = set.join_all().await;
            wait_finished(&client, &ids).await;
        } else {
            for i in 0..runs {
                let s = client
                    .submit(&format!("in/s-{i}"), &wf)
                    .await
                    .expect("submit");
                wait_finished(&client, &[s.run_id().to_owned()]).await;
                ids.push(s.run_id().to_owned());
            }
        }
        // The runs' last ticks and the dynos' exits (and logs) come within a heartbeat and a
        // listing after the last run finished.
        tokio::time::sleep(heartbeat + list_every + Duration::from_secs(2)).await;
        let elapsed = started.elapsed();
        let (ops1, heroku1) = (proxy.ops(), fake.requests());
        let mut per: BTreeMap<String, f64> = BTreeMap::new();
        for (op, n) in &ops1 {
            let d = n - ops0.get(op).copied().unwrap_or(0);
            if d > 0 {
                per.insert(op.clone(), d as f64 / runs as f64);
            }
        }
        for (route, n) in &heroku1.by_route {
            let d = n - heroku0.by_route.get(route).copied().unwrap_or(0);
            if d > 0 && !route.starts_with("GET /logplex") {
                per.insert(format!("Heroku {route}"), d as f64 / runs as f64);
            }
        }
        rows.push((label, per, elapsed));
    }
    stop.cancel();
    let _ = served.await;

    println!("### serve: requests per one-task run ({runs} runs, counted at the servers)\n");
    println!(
        "heartbeat {}s, dyno list every {}s; the engine's requests only (the app's submits and the tasks' output writes go to moto directly)\n",
        heartbeat.as_secs(),
        list_every.as_secs()
    );
    println!("| request | {} | {} |", rows[0].0, rows[1].0);
    println!("|---|---:|---:|");
    let mut names: Vec<&String> = rows.iter().flat_map(|r| r.1.keys()).collect();
    names.sort();
    names.dedup();
    for name in &names {
        println!(
            "| {name} | {:.2} | {:.2} |",
            rows[0].1.get(*name).copied().unwrap_or(0.0),
            rows[1].1.get(*name).copied().unwrap_or(0.0)
        );
    }
    for (prefix, label) in [
        ("S3 ", "**S3 total**"),
        ("SQS ", "**SQS total**"),
        ("Heroku ", "**Heroku API total**"),
    ] {
        let sum = |r: &BTreeMap<String, f64>| {
            r.iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(_, v)| v)
                .sum::<f64>()
        };
        println!(
            "| {label} | {:.2} | {:.2} |",
            sum(&rows[0].1),
            sum(&rows[1].1)
        );
    }
    // AWS list prices (us-east-1): S3 PUT/COPY/POST/LIST $0.005 per 1,000, GET/HEAD and other
    // requests $0.0004 per 1,000; SQS standard $0.40 per million requests.
    for (label, per, _) in &rows {
        let (mut s3_put, mut s3_get, mut sqs) = (0.0, 0.0, 0.0);
        for (k, v) in per {
            if k.starts_with("SQS ") {
                sqs += v;
            } else if k.starts_with("S3 PutObject") || k.starts_with("S3 ListObjects") {
                s3_put += v;
            } else if k.starts_with("S3 ") {
                s3_get += v;
            }
        }
        let dollars = s3_put * 5.0 + s3_get * 0.4 + sqs * 0.4;
        println!(
            "\nAWS list price per million runs ({label}): S3 ${:.2} + SQS ${:.2} = **${dollars:.2}** (dynos, storage and transfer not included)",
            s3_put * 5.0 + s3_get * 0.4,
            sqs * 0.4
        );
    }
    println!();
}

// ---- 2. overhead from the receive to the dyno create ----

async fn overhead(runs: usize) {
    let moto = Moto::start().await;
    let proxy = Proxy::start(&moto.endpoint).await;
    let sqs = sqs_client(&moto.endpoint);
    let (queue_url, _) = queue(&sqs, "ld-overhead").await;
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::open(
        dir.path().join("store"),
        StoreOptions {
            default_bucket: Some(BUCKET.to_owned()),
            ..StoreOptions::default()
        },
    )
    .expect("store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let stop_store = CancellationToken::new();
    tokio::spawn({
        let (store, stop) = (store.clone(), stop_store.clone());
        async move { store.serve(listener, stop.cancelled_owned()).await }
    });
    let c = store.credentials().expect("credentials");
    let store_creds = aws_credential_types::Credentials::new(
        c.access_key_id.clone(),
        c.secret_access_key.clone(),
        Some(c.session_token.clone()),
        None,
        "store",
    );
    let app = tempfile::tempdir().expect("app");
    std::fs::write(app.path().join("Procfile"), "").expect("Procfile");
    let mut config = FakeConfig::new("ld-app", "token", app.path());
    config.budget = 1_000_000;
    let fake = FakeHeroku::start(config).await;
    let serve = Serve::builder()
        .bucket(BUCKET)
        .queue_url(&queue_url)
        .clients(
            s3_client(&endpoint, store_creds.clone()),
            sqs_client(&proxy.endpoint),
        )
        .check_notification(false)
        .app_dir(app.path())
        .console(Console::quiet())
        .retry_policy(RetryPolicy::default())
        .dynos(Dynos::new("ld-app", "token").api_url(fake.url()))
        .build()
        .await
        .expect("serve");
    let stop = CancellationToken::new();
    let served = tokio::spawn({
        let stop = stop.clone();
        async move { serve.run(stop.cancelled_owned()).await }
    });
    let s3 = s3_client(&endpoint, store_creds);
    let wf = Workflow::new().step(Task::new("true").no_output());
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        let key = format!("in/b{i:05}x");
        let put = s3
            .put_object()
            .bucket(BUCKET)
            .key(&key)
            .metadata("ld_run", "true")
            .body(wf.to_json().into_bytes().into())
            .send()
            .await
            .expect("put");
        let etag = put.e_tag().unwrap_or_default().trim_matches('"').to_owned();
        let record = serde_json::json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": BUCKET},
                   "object": {"key": key, "eTag": etag, "sequencer": format!("{:016X}", i + 1)}}
        }]});
        sqs.send_message()
            .queue_url(&queue_url)
            .message_body(record.to_string())
            .send()
            .await
            .expect("send");
        let needle = format!("b{i:05}x");
        let deadline = Instant::now() + Duration::from_secs(30);
        let created = loop {
            let found = fake.dynos().into_iter().find(|d| {
                d.env
                    .get("line_D")
                    .is_some_and(|l| l.contains(&format!("\"trigger_key\":\"{key}\"")))
            });
            if let Some(d) = found {
                break d.requested;
            }
            assert!(Instant::now() < deadline, "no dyno for {key}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let received = proxy
            .received(&needle)
            .expect("the receive that carried it");
        samples.push(created.saturating_duration_since(received).as_secs_f64() * 1000.0);
    }
    stop.cancel();
    let _ = served.await;
    // The baseline, same run: the I/O the engine cannot skip between the receive and the
    // create, made back to back by hand (HEAD and GET the trigger, create the state with
    // If-None-Match, POST the dyno).
    let http = reqwest::Client::new();
    let mut baseline = Vec::with_capacity(runs);
    for i in 0..runs {
        let key = format!("in/b{i:05}x");
        let t0 = Instant::now();
        s3.head_object()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .expect("head");
        let body = s3
            .get_object()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .expect("get");
        let _ = body.body.collect().await.expect("body");
        s3.put_object()
            .bucket(BUCKET)
            .key(format!("bench/state-{i}.json"))
            .if_none_match("*")
            .body(b"{}".to_vec().into())
            .send()
            .await
            .expect("put");
        let created = http
            .post(format!("{}/apps/ld-app/dynos", fake.url()))
            .header("Accept", "application/vnd.heroku+json; version=3")
            .bearer_auth("token")
            .json(&serde_json::json!({"command": "true", "env": {"line_D": "{}"}}))
            .send()
            .await
            .expect("create");
        assert_eq!(created.status(), 201);
        baseline.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    baseline.sort_by(f64::total_cmp);
    stop_store.cancel();
    samples.sort_by(f64::total_cmp);
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let b50 = baseline[(baseline.len() - 1) / 2];
    println!(
        "### serve: engine overhead, SQS receive of a trigger → dyno-create request ({runs} runs)\n"
    );
    println!(
        "S3 = the embedded store on loopback (fsync on), SQS = moto, Heroku = the fake API.\n"
    );
    println!("| | p50 | p90 | max |");
    println!("|---|---:|---:|---:|");
    println!(
        "| engine: receive → create | {:.1} ms | {:.1} ms | {:.1} ms |",
        p(0.5),
        p(0.9),
        samples[samples.len() - 1]
    );
    println!(
        "| baseline: the same 4 requests back to back | {b50:.1} ms | {:.1} ms | {:.1} ms |",
        baseline[((baseline.len() - 1) as f64 * 0.9).round() as usize],
        baseline[baseline.len() - 1]
    );
    println!("\nratio (p50): {:.2}×\n", p(0.5) / b50);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let runs = if quick() { 5 } else { 20 };
    runtime.block_on(async {
        requests_per_run(runs).await;
        overhead(if quick() { 10 } else { 50 }).await;
    });
}
