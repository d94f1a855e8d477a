//! The task app as a real process: `line_D` in, an output object out, over S3 HTTP.
//!
//! S3 is the engine's embedded store, served on `127.0.0.1:0`: the test writes the trigger
//! object into it, runs the binary with the store's `LD_*` variables and a `line_D`, and
//! reads back the output object (its `ld_task_id`, `ld_state` and body). Every committed
//! write is also observed, so "written once" and "nothing written" are asserted, not assumed.

use std::collections::BTreeMap;
use std::process::Output as ProcessOutput;

use bytes::Bytes;
use linedee_engine::store::{ObjectEvent, Store, StoreOptions};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::{broadcast, oneshot};

const BIN: &str = env!("CARGO_BIN_EXE_linedee-example-tasks");
const BUCKET: &str = "ld-private-test";

/// The embedded store, served until dropped.
struct S3 {
    store: Store,
    endpoint: String,
    events: broadcast::Receiver<ObjectEvent>,
    _stop: oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl S3 {
    async fn start() -> S3 {
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
        let (stop, stopped) = oneshot::channel::<()>();
        let served = store.clone();
        tokio::spawn(async move {
            served
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        let events = store.subscribe_objects();
        S3 {
            store,
            endpoint,
            events,
            _stop: stop,
            _dir: dir,
        }
    }

    async fn put(&mut self, key: &str, body: Vec<u8>, content_type: &str) -> String {
        let etag = self
            .store
            .put_object(
                BUCKET,
                key,
                Bytes::from(body),
                Some(content_type),
                BTreeMap::new(),
            )
            .await
            .expect("put the input");
        self.drain();
        etag
    }

    /// Forgets the writes seen so far.
    fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }

    /// The keys written since the last call.
    fn writes(&mut self) -> Vec<String> {
        let mut keys = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            keys.push(event.key);
        }
        keys
    }

    /// The output object: its metadata, content type and body.
    async fn output(
        &self,
        task_id: &str,
    ) -> Option<(BTreeMap<String, String>, Option<String>, Bytes)> {
        let (meta, body) = self
            .store
            .get_object(BUCKET, &format!("out/{task_id}"))
            .await
            .expect("get")?;
        Some((meta.metadata, meta.content_type, body))
    }

    /// Runs the app with the store's `LD_*` variables and `line_D`.
    async fn run(&self, args: &[&str], line_d: &str) -> ProcessOutput {
        let creds = self.store.credentials().expect("credentials");
        Command::new(BIN)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LD_AWS_ACCESS_KEY_ID", &creds.access_key_id)
            .env("LD_AWS_SECRET_ACCESS_KEY", &creds.secret_access_key)
            .env("LD_AWS_SESSION_TOKEN", &creds.session_token)
            .env("LD_REGION", "us-east-1")
            .env("LD_S3_BUCKET", BUCKET)
            .env("LD_S3_ENDPOINT", &self.endpoint)
            .env("line_D", line_d)
            .env("RUST_LOG", "debug")
            .output()
            .await
            .expect("the task app starts")
    }

    fn secrets(&self) -> [String; 2] {
        let creds = self.store.credentials().expect("credentials");
        [creds.secret_access_key, creds.session_token]
    }
}

fn stderr(out: &ProcessOutput) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The last stderr line, which a failed task makes its diagnostic.
fn diagnostic(out: &ProcessOutput) -> Value {
    let text = stderr(out);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"error_type\""))
        .collect();
    assert_eq!(lines.len(), 1, "one diagnostic line:\n{text}");
    assert_eq!(
        text.lines().last(),
        Some(lines[0]),
        "it is the last line:\n{text}"
    );
    serde_json::from_str(lines[0]).expect("the diagnostic is JSON")
}

#[tokio::test]
async fn process_image_reads_its_input_and_writes_output_with_state() {
    let mut s3 = S3::start().await;
    let image: Vec<u8> = [0xff, 0xd8, 0xff, 0xe0]
        .into_iter()
        .chain((0..300_000u32).map(|i| (i % 251) as u8))
        .collect();
    let etag = s3
        .put("in/img/example_img.jpg", image.clone(), "image/jpeg")
        .await;
    let task_id = "01JDX3Q7ZK6Q.0.0";
    let line_d = json!({
        "task_id": task_id, "run_id": "01JDX3Q7ZK6Q", "attempt": 1, "cmd": "process-image",
        "options": {"dir": "thumbs"}, "bucket": BUCKET, "trigger_key": "in/img/example_img.jpg",
        "trigger_etag": etag, "unknown_field": [1, 2],
    });

    let out = s3.run(&["process-image"], &line_d.to_string()).await;

    let log = stderr(&out);
    assert!(
        out.status.success(),
        "exit {:?}, stderr:\n{log}",
        out.status
    );
    for secret in s3.secrets() {
        assert!(!log.contains(&secret), "a secret reached the log:\n{log}");
    }
    assert_eq!(s3.writes(), [format!("out/{task_id}")], "exactly one write");
    let (metadata, content_type, body) = s3.output(task_id).await.expect("the output exists");
    assert_eq!(
        metadata.get("ld_task_id").map(String::as_str),
        Some(task_id)
    );
    let state: Value = serde_json::from_str(&metadata["ld_state"]).expect("JSON state");
    assert_eq!(state, json!({ "bytes": image.len() }));
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(body["bytes"], image.len());
    assert_eq!(body["format"], "jpeg");
    assert_eq!(body["dir"], "thumbs", "the option from line_D");
    assert_eq!(body["input"], "in/img/example_img.jpg");
    assert_eq!(body["content_type"], "image/jpeg");
}

#[tokio::test]
async fn get_data_reads_its_option_and_writes_the_records() {
    let mut s3 = S3::start().await;
    let line_d = r#"{"task_id":"R.1.2","options":{"endpoint":"users"}}"#;

    let out = s3.run(&["get_data"], line_d).await;

    assert!(out.status.success(), "stderr:\n{}", stderr(&out));
    assert_eq!(s3.writes(), ["out/R.1.2"]);
    let (metadata, _, body) = s3.output("R.1.2").await.expect("the output exists");
    assert_eq!(
        metadata.get("ld_task_id").map(String::as_str),
        Some("R.1.2")
    );
    assert!(!metadata.contains_key("ld_state"));
    let body: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(body.as_array().map(Vec::len), Some(3));
    assert_eq!(body[2]["name"], "Clémentine Bauch");
}

#[tokio::test]
async fn get_json_writes_its_own_output_once_with_the_documents_state() {
    let mut s3 = S3::start().await;

    let out = s3.run(&["get-json"], r#"{"task_id":"R.0.0"}"#).await;

    assert!(out.status.success(), "stderr:\n{}", stderr(&out));
    assert_eq!(
        s3.writes(),
        ["out/R.0.0"],
        "by the handler, not again by the runtime"
    );
    let (metadata, _, body) = s3.output("R.0.0").await.expect("the output exists");
    let state: Value = serde_json::from_str(&metadata["ld_state"]).expect("JSON state");
    assert_eq!(state["resp_status_code"], 200);
    assert_eq!(state["num_records"], 5);
    assert!(state["resp_time"].is_string());
    let posts: Value = serde_json::from_slice(&body).expect("JSON body");
    assert_eq!(posts.as_array().map(Vec::len), Some(5));
}

#[tokio::test]
async fn a_failing_task_prints_the_diagnostic_line_exits_non_zero_and_writes_nothing() {
    let mut s3 = S3::start().await;
    let line_d = r#"{"task_id":"R.1.0","options":{"endpoint":"albums"}}"#;

    let out = s3.run(&["get-data"], line_d).await;

    assert_eq!(out.status.code(), Some(1));
    let diag = diagnostic(&out);
    assert_eq!(diag["error_type"], "anyhow::Error");
    assert_eq!(
        diag["error_message"],
        "unknown endpoint `albums`: expected one of posts, users, comments"
    );
    assert!(s3.writes().is_empty(), "no output on failure");
    assert!(s3.output("R.1.0").await.is_none());
}

#[tokio::test]
async fn a_missing_option_and_a_malformed_line_d_are_named() {
    let mut s3 = S3::start().await;

    let out = s3.run(&["get-data"], r#"{"task_id":"R.1.0"}"#).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        diagnostic(&out)["error_message"],
        "option `endpoint` is not set: add `endpoint=…` to the task's `options`"
    );

    let out = s3
        .run(&["get-data"], r#"{"task_id":"R.1.0","attempt":"two"}"#)
        .await;
    assert_eq!(out.status.code(), Some(1));
    let diag = diagnostic(&out);
    assert_eq!(diag["error_type"], "linedee_task::Error");
    assert_eq!(
        diag["error_message"],
        "`line_D` field `attempt`: expected a whole number from 1, found string \"two\""
    );
    assert!(s3.writes().is_empty());
}

#[tokio::test]
async fn a_replaced_input_or_no_input_fails_without_output() {
    let mut s3 = S3::start().await;
    let old = s3.put("in/img/new.jpg", vec![1u8; 10], "image/jpeg").await;
    let new = s3.put("in/img/new.jpg", vec![2u8; 10], "image/jpeg").await;
    let line_d = json!({"task_id": "R.0.0", "trigger_key": "in/img/new.jpg", "trigger_etag": old});

    let out = s3.run(&["process-image"], &line_d.to_string()).await;

    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        diagnostic(&out)["error_message"],
        format!(
            "the input `in/img/new.jpg` changed since the run started: its ETag is now {new}, \
             the run was started by ETag {old}"
        )
    );

    let out = s3.run(&["process-image"], r#"{"task_id":"R.0.1"}"#).await;
    assert_eq!(out.status.code(), Some(1));
    let msg = diagnostic(&out)["error_message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        msg.starts_with("this task has no input: `line_D` has no `trigger_key`"),
        "{msg}"
    );
    assert!(s3.writes().is_empty(), "no output on failure");
}

#[test]
fn the_committed_procfile_matches_the_tasks() {
    let manifest = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(BIN)
        .args(["procfile", "--check", "Procfile"])
        .current_dir(manifest)
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let printed = std::process::Command::new(BIN)
        .arg("procfile")
        .output()
        .expect("runs");
    let committed = std::fs::read_to_string(format!("{manifest}/Procfile")).expect("Procfile");
    let task_lines: String = committed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&printed.stdout), task_lines);
}
