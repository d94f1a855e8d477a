//! The SDK against moto's S3 server (an implementation no one here wrote), with the same
//! operations as against the embedded store: submit, multipart upload with `ld_code`, task
//! output and state, export, and refreshing credentials.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use linedee::credentials::{
    Credentials, CredentialsCache, CredentialsFuture, ProvideCredentials, StaticProvider,
};
use linedee::{Client, MIN_PART_SIZE, Task, Workflow};
use linedee_task::TaskContext;
use serde_json::json;

use super::support::{Moto, files_under};

const BUCKET: &str = "ld-private-moto";

/// A client for `BUCKET` on moto with this credentials cache; creates the bucket.
async fn client_with(moto: &Moto, cache: CredentialsCache, multipart: bool) -> Client {
    let mut builder = Client::builder()
        .bucket(BUCKET)
        .endpoint(&moto.endpoint)
        .credentials_cache(cache);
    if multipart {
        builder = builder
            .multipart_threshold(MIN_PART_SIZE)
            .part_size(MIN_PART_SIZE);
    }
    let client = builder.build().expect("client");
    client
        .s3()
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create the bucket on moto");
    client.check().await.expect("the bucket is there");
    client
}

async fn client(moto: &Moto) -> Client {
    let creds = Credentials::new("AKIAMOTO", "moto-secret", Some("moto-token".into()), None);
    client_with(
        moto,
        CredentialsCache::new(StaticProvider::new(creds)),
        false,
    )
    .await
}

/// Bytes that no compression or dedup could shortcut.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn media_workflow() -> Workflow {
    Workflow::new()
        .title("Process media files")
        .step(Task::new("process_image").timeout(Duration::from_secs(30)))
}

#[tokio::test(flavor = "multi_thread")]
async fn moto_submit_writes_the_ld_run_object_as_sent() {
    let moto = Moto::start().await;
    let client = client(&moto).await;
    let wf = Workflow::new()
        .title("Example 2-step workflow")
        .step(Task::new(r#"bash -c 'echo "Do Step 1"'"#).no_output())
        .step(Task::new(r#"bash -c 'echo "Do Step 2"'"#).no_output());
    let submission = client.submit("in/example", &wf).await.expect("submit");
    let object = client.get("in/example").await.expect("the trigger object");
    let meta = object.metadata().clone();
    assert_eq!(meta.get("ld_run").map(String::as_str), Some("true"));
    assert_eq!(
        meta.get("ld_run_id").map(String::as_str),
        Some(submission.run_id())
    );
    assert_eq!(object.content_type(), Some("application/json"));
    assert_eq!(object.etag(), submission.etag());
    let body = object.bytes().await.expect("body");
    assert_eq!(body, wf.to_json().as_bytes());
    assert_eq!(Workflow::from_json(&wf.to_json()).expect("parses"), wf);
}

#[tokio::test(flavor = "multi_thread")]
async fn moto_multipart_upload_with_ld_code_keeps_the_metadata_and_the_bytes() {
    let moto = Moto::start().await;
    let creds = Credentials::new("AKIAMOTO", "moto-secret", None, None);
    let client = client_with(
        &moto,
        CredentialsCache::new(StaticProvider::new(creds)),
        true,
    )
    .await;
    let body = noise(2 * MIN_PART_SIZE + 12_345);
    let wf = media_workflow();
    let submission = client
        .upload("in/img/large.bin", body.clone())
        .workflow(&wf)
        .content_type("application/octet-stream")
        .send()
        .await
        .expect("upload");
    // Three parts: S3's multipart ETag ends in `-3`.
    let etag = submission.etag().expect("an ETag").to_owned();
    assert!(etag.ends_with("-3\""), "{etag}");
    let object = client.get("in/img/large.bin").await.expect("the object");
    assert_eq!(object.etag(), Some(etag.as_str()));
    assert_eq!(object.content_length(), Some(body.len() as u64));
    let meta = object.metadata().clone();
    let code = meta.get("ld_code").expect("ld_code");
    assert_eq!(code, &wf.to_metadata_json());
    assert_eq!(Workflow::from_json(code).expect("ld_code parses"), wf);
    assert_eq!(
        meta.get("ld_run_id").map(String::as_str),
        Some(submission.run_id())
    );
    let got = object.bytes().await.expect("body");
    assert!(got == body[..], "the downloaded bytes differ");
    // No multipart upload is left behind.
    let uploads = client
        .s3()
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list uploads");
    assert!(uploads.uploads().is_empty(), "{uploads:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn moto_task_output_and_state_are_read_back() {
    let moto = Moto::start().await;
    let client = client(&moto).await;
    let input = noise(4096);
    client
        .put("in/img/example_img.jpg", input.clone())
        .send()
        .await
        .expect("input");
    let run_id = "01JDX3Q7ZK6QMOTO";
    let task_id = linedee::line_d::task_id(run_id, 0, 0);
    let line_d = json!({"task_id": task_id, "run_id": run_id, "attempt": 1,
                        "bucket": BUCKET, "trigger_key": "in/img/example_img.jpg"});
    // The task side writes its output the way a task process does.
    let ctx = TaskContext::from_line_d(&line_d.to_string())
        .expect("line_D")
        .with_client(client.clone());
    let read = ctx
        .input()
        .await
        .expect("input")
        .bytes()
        .await
        .expect("body");
    assert!(read == input[..]);
    let records = json!([{"id": 1, "title": "caf\u{e9}"}, {"id": 2}]);
    let state = json!({"resp_status_code": 200, "num_records": 2, "note": "\u{1F600}"});
    ctx.output()
        .json(&records)
        .state(&state)
        .send()
        .await
        .expect("the output is written");
    assert!(ctx.output_written());

    let out = client.task_output(&task_id).await.expect("task output");
    assert_eq!(out.state, Some(state.clone()));
    let meta = out.object.metadata().clone();
    assert_eq!(meta.get("ld_task_id"), Some(&task_id));
    assert!(meta["ld_state"].is_ascii(), "{}", meta["ld_state"]);
    let body: serde_json::Value =
        serde_json::from_slice(&out.bytes().await.expect("body")).expect("the body is JSON");
    assert_eq!(body, records);

    // The run's state through a status document, as the engine publishes it.
    let doc = json!({"run_id": run_id, "title": "t",
        "trigger": {"bucket": BUCKET, "key": "in/img/example_img.jpg", "kind": "ld_code"},
        "status": "succeeded", "created_at": "2026-11-27T10:00:00Z",
        "steps": [{"tasks": [{"task_id": task_id, "cmd": "process_image",
                              "status": "succeeded", "attempts": 1, "state": state}]}]});
    client
        .put(linedee::status::status_key(run_id), doc.to_string())
        .send()
        .await
        .expect("status document");
    let run = client.run(run_id).await.expect("run");
    assert_eq!(
        run.task(&task_id).and_then(|t| t.state.clone()),
        Some(state)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn moto_export_downloads_every_object_with_the_ld_history() {
    let moto = Moto::start().await;
    let client = client(&moto).await;
    let objects: Vec<(&str, Vec<u8>)> = vec![
        ("in/example", br#"{"run":[{"cmd":"x"}]}"#.to_vec()),
        ("etl/users.json", br#"[{"id":1}]"#.to_vec()),
        (
            "etl/a b/caf\u{e9}+1.json",
            b"spaces, plus and UTF-8".to_vec(),
        ),
        ("out/R.0.0", noise(70_000)),
        ("ld/runs/R.json", br#"{"run_id":"R"}"#.to_vec()),
        ("ld/logs/R.0.0/1.log", b"line 1\nline 2\n".to_vec()),
        ("empty", Vec::new()),
    ];
    for (key, body) in &objects {
        client.put(*key, body.clone()).send().await.expect("put");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let report = client
        .export(dir.path().join("s3_export"))
        .send()
        .await
        .expect("export");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(report.objects, objects.len());
    let total: usize = objects.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(report.bytes, total as u64);
    let files = files_under(&dir.path().join("s3_export"));
    let want: std::collections::BTreeMap<String, Vec<u8>> = objects
        .into_iter()
        .map(|(k, b)| (k.to_owned(), b))
        .collect();
    assert_eq!(files, want);
}

/// Credentials that expire `lifetime` after each fetch, each with a new key id; records when
/// each was fetched.
#[derive(Debug)]
struct Expiring {
    lifetime: Duration,
    calls: AtomicUsize,
    fetches: Mutex<Vec<SystemTime>>,
}

impl ProvideCredentials for Expiring {
    fn provide(&self) -> CredentialsFuture<'_> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let now = SystemTime::now();
        if let Ok(mut f) = self.fetches.lock() {
            f.push(now);
        }
        let expires = now + self.lifetime;
        Box::pin(async move {
            Ok(Credentials::new(
                format!("AKIAMOTO{n}"),
                format!("secret-{n}"),
                Some(format!("token-{n}")),
                Some(expires),
            ))
        })
    }
}

/// The last fetch at or before `t`.
fn fetched_before(fetches: &[SystemTime], t: SystemTime) -> Option<SystemTime> {
    fetches.iter().rev().find(|f| **f <= t).copied()
}

#[tokio::test(flavor = "multi_thread")]
async fn moto_credentials_refresh_ahead_of_expiry_and_every_request_succeeds() {
    const LIFETIME: Duration = Duration::from_millis(1500);
    const AHEAD: Duration = Duration::from_secs(1);
    let moto = Moto::start().await;
    let provider = std::sync::Arc::new(Expiring {
        lifetime: LIFETIME,
        calls: AtomicUsize::new(0),
        fetches: Mutex::new(Vec::new()),
    });
    // Refreshed 1 s before expiry: credentials come due 0.5 s after each fetch.
    let cache = CredentialsCache::with_timing(provider.clone(), Duration::from_secs(900), AHEAD);
    let client = client_with(&moto, cache, false).await;
    // Every request, with when it started and ended. The claims below hold however slowly moto
    // answers, so the loop runs until the credentials have rotated a few times, not for a time.
    let mut calls: Vec<(&str, SystemTime, SystemTime)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut n = 0;
    while provider.calls.load(Ordering::SeqCst) < 5 || calls.len() < 30 {
        assert!(
            Instant::now() < deadline,
            "credentials did not rotate: {} fetches in {} requests",
            provider.calls.load(Ordering::SeqCst),
            calls.len()
        );
        let key = format!("etl/{n}.json");
        let body = format!("{{\"n\":{n}}}");
        let t0 = SystemTime::now();
        client.put(&key, body.clone()).send().await.expect("put");
        let t1 = SystemTime::now();
        calls.push(("put", t0, t1));
        let got = client
            .get(&key)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        let t2 = SystemTime::now();
        calls.push(("get", t1, t2));
        assert_eq!(got, body.as_bytes());
        client.list("etl/").await.expect("list");
        calls.push(("list", t2, SystemTime::now()));
        n += 1;
        // Time must pass for credentials to come due; this is not waiting for anything.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fetches = provider.fetches.lock().expect("fetches").clone();
    let due = |fetched: SystemTime| fetched + LIFETIME - AHEAD;
    // Cached: no credentials are replaced before they come due (so a request that ends before
    // then fetches nothing).
    for pair in fetches.windows(2) {
        assert!(
            pair[1] >= due(pair[0]),
            "fetched again {:?} after the last fetch, before the {:?} it is due",
            pair[1].duration_since(pair[0]).unwrap_or_default(),
            LIFETIME - AHEAD
        );
    }
    // Refreshed ahead of expiry: a request that starts when the credentials are due is signed
    // with fresh ones, fetched while it runs, so no request goes out with expiring credentials.
    for (op, t0, t1) in &calls {
        let current = fetched_before(&fetches, *t0).expect("credentials before the first request");
        if *t0 >= due(current) {
            assert!(
                fetches.iter().any(|f| f >= t0 && f <= t1),
                "a {op} started {:?} after its credentials were fetched (due after {:?}) \
                 and was signed without a refresh",
                t0.duration_since(current).unwrap_or_default(),
                LIFETIME - AHEAD
            );
        }
    }
}
