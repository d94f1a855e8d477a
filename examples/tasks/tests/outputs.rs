//! Every kind of output body, written by a real task process to the engine's embedded store
//! over S3 HTTP: bytes from a sync task, a file and a stream large enough to go multipart.
//!
//! It lives in the example crate, which already builds the engine for its e2e test, so that
//! linedee-task's trybuild cases stay lean. `harness = false`: run plainly, `main` serves a store and runs the cases, each starting
//! this binary again with `LINEDEE_TASK_TEST_CHILD=1`, which makes it `linedee_task::main()`.

use std::collections::BTreeMap;
use std::process::Output as ProcessOutput;

use linedee_engine::store::{ObjectEvent, Store, StoreOptions};
use linedee_task::{Json, Output, TaskContext, ld_task};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::broadcast;

const CHILD: &str = "LINEDEE_TASK_TEST_CHILD";
const BUCKET: &str = "ld-test";
/// Over the SDK's 16 MiB multipart threshold.
const BIG: u64 = 17 * 1024 * 1024;

/// A sync task that writes its output itself, from blocking code.
#[ld_task]
fn sync_writes(ctx: &TaskContext) -> anyhow::Result<()> {
    ctx.block_on(
        ctx.output()
            .bytes("a,b\n1,2\n")
            .content_type("text/csv")
            .state(&json!({ "rows": 1, "city": "Zürich" }))
            .send(),
    )?;
    Ok(())
}

/// A sync task whose return value becomes the output.
#[ld_task]
fn sync_returns(ctx: TaskContext) -> anyhow::Result<Json<Value>> {
    Ok(Json(json!({ "attempt": ctx.attempt() })))
}

/// A file body, large: multipart.
#[ld_task]
async fn big_file(ctx: TaskContext) -> anyhow::Result<Output> {
    let path = std::env::temp_dir().join(format!("linedee-example-big-{}", ctx.task_id()));
    let mut file = tokio::fs::File::create(&path).await?;
    tokio::io::copy(&mut tokio::io::repeat(b'f').take(BIG), &mut file).await?;
    file.sync_all().await?;
    Ok(Output::file(path).state(&json!({ "bytes": BIG })))
}

/// A stream of unknown length, large: multipart with bounded memory.
#[ld_task]
async fn big_stream(_ctx: TaskContext) -> anyhow::Result<Output> {
    Ok(Output::stream(tokio::io::repeat(b's').take(BIG)).content_type("text/plain"))
}

/// A state over the 2 KB budget fails the task before anything is written.
#[ld_task]
async fn fat_state(ctx: TaskContext) -> anyhow::Result<()> {
    ctx.output().state(&"x".repeat(3000)).send().await?;
    Ok(())
}

struct S3 {
    store: Store,
    endpoint: String,
    events: broadcast::Receiver<ObjectEvent>,
}

impl S3 {
    async fn run(&mut self, task: &str, task_id: &str) -> ProcessOutput {
        let creds = self.store.credentials().expect("credentials");
        let exe = std::env::current_exe().expect("current exe");
        tokio::process::Command::new(exe)
            .arg(task)
            .env_clear()
            .env(CHILD, "1")
            .env("LD_AWS_ACCESS_KEY_ID", &creds.access_key_id)
            .env("LD_AWS_SECRET_ACCESS_KEY", &creds.secret_access_key)
            .env("LD_AWS_SESSION_TOKEN", &creds.session_token)
            .env("LD_S3_BUCKET", BUCKET)
            .env("LD_S3_ENDPOINT", &self.endpoint)
            .env(
                "line_D",
                json!({ "task_id": task_id, "attempt": 2 }).to_string(),
            )
            .env("RUST_LOG", "warn")
            .output()
            .await
            .expect("the app starts")
    }

    /// The keys written since the last call.
    fn writes(&mut self) -> Vec<String> {
        let mut keys = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            keys.push(event.key);
        }
        keys
    }

    async fn output(
        &self,
        task_id: &str,
    ) -> Option<(BTreeMap<String, String>, Option<String>, bytes::Bytes)> {
        let key = format!("out/{task_id}");
        let (meta, body) = self.store.get_object(BUCKET, &key).await.expect("get")?;
        Some((meta.metadata, meta.content_type, body))
    }
}

fn ok(out: &ProcessOutput) {
    assert!(
        out.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn sync_task_writes_bytes_with_ascii_state(s3: &mut S3) {
    ok(&s3.run("sync-writes", "R.0.0").await);
    assert_eq!(s3.writes(), ["out/R.0.0"], "written once");
    let (meta, ct, body) = s3.output("R.0.0").await.expect("output");
    assert_eq!(meta["ld_task_id"], "R.0.0");
    // Compact, ASCII-only JSON on the wire.
    assert_eq!(meta["ld_state"], r#"{"city":"Z\u00fcrich","rows":1}"#);
    let state: Value = serde_json::from_str(&meta["ld_state"]).expect("JSON state");
    assert_eq!(state, json!({ "rows": 1, "city": "Zürich" }));
    assert_eq!(ct.as_deref(), Some("text/csv"));
    assert_eq!(&body[..], b"a,b\n1,2\n");
}

async fn sync_task_return_value_becomes_the_output(s3: &mut S3) {
    ok(&s3.run("sync-returns", "R.0.1").await);
    assert_eq!(s3.writes(), ["out/R.0.1"]);
    let (meta, ct, body) = s3.output("R.0.1").await.expect("output");
    assert_eq!(meta["ld_task_id"], "R.0.1");
    assert!(!meta.contains_key("ld_state"));
    assert_eq!(ct.as_deref(), Some("application/json"));
    assert_eq!(&body[..], br#"{"attempt":2}"#);
}

async fn a_large_file_goes_multipart(s3: &mut S3) {
    ok(&s3.run("big-file", "R.1.0").await);
    let _ = std::fs::remove_file(std::env::temp_dir().join("linedee-example-big-R.1.0"));
    assert_eq!(s3.writes(), ["out/R.1.0"]);
    let (meta, ct, body) = s3.output("R.1.0").await.expect("output");
    assert_eq!(meta["ld_state"], format!(r#"{{"bytes":{BIG}}}"#));
    assert_eq!(ct.as_deref(), Some("application/octet-stream"));
    assert_eq!(body.len() as u64, BIG);
    assert!(body.iter().all(|b| *b == b'f'));
    let meta = s3
        .store
        .head_object(BUCKET, "out/R.1.0")
        .await
        .expect("head")
        .expect("exists");
    assert!(meta.etag.contains('-'), "a multipart ETag: {}", meta.etag);
}

async fn a_large_stream_goes_multipart(s3: &mut S3) {
    ok(&s3.run("big-stream", "R.1.1").await);
    assert_eq!(s3.writes(), ["out/R.1.1"]);
    let (meta, ct, body) = s3.output("R.1.1").await.expect("output");
    assert_eq!(meta["ld_task_id"], "R.1.1");
    assert_eq!(ct.as_deref(), Some("text/plain"));
    assert_eq!(body.len() as u64, BIG);
    let meta = s3
        .store
        .head_object(BUCKET, "out/R.1.1")
        .await
        .expect("head")
        .expect("exists");
    assert!(meta.etag.contains('-'), "a multipart ETag: {}", meta.etag);
}

async fn an_oversized_state_fails_and_writes_nothing(s3: &mut S3) {
    let out = s3.run("fat-state", "R.2.0").await;
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    let last: Value = serde_json::from_str(text.lines().last().unwrap_or_default()).expect("JSON");
    let msg = last["error_message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("over S3's 2048-byte limit: keep the state small"),
        "{msg}"
    );
    assert!(s3.writes().is_empty());
    assert!(s3.output("R.2.0").await.is_none());
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        linedee_task::main();
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = StoreOptions {
            default_bucket: Some(BUCKET.to_owned()),
            fsync: false,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options).expect("open the store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = store.clone();
        let server = tokio::spawn(async move {
            served
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        let events = store.subscribe_objects();
        let mut s3 = S3 {
            store,
            endpoint,
            events,
        };

        sync_task_writes_bytes_with_ascii_state(&mut s3).await;
        println!("test sync_task_writes_bytes_with_ascii_state ... ok");
        sync_task_return_value_becomes_the_output(&mut s3).await;
        println!("test sync_task_return_value_becomes_the_output ... ok");
        a_large_file_goes_multipart(&mut s3).await;
        println!("test a_large_file_goes_multipart ... ok");
        a_large_stream_goes_multipart(&mut s3).await;
        println!("test a_large_stream_goes_multipart ... ok");
        an_oversized_state_fails_and_writes_nothing(&mut s3).await;
        println!("test an_oversized_state_fails_and_writes_nothing ... ok");

        let _ = stop.send(());
        server.await.expect("join").expect("serve");
        println!("\ntest result: ok. 5 passed");
    });
}
