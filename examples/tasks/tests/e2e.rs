//! The task app as a real process: `line_D` in, an output object out, over S3 HTTP.
//!
//! The embedded store has not landed yet, so a wiremock server stands in for S3 here (and
//! only here): it answers GetObject for the trigger and records the PutObject of the
//! output, whose headers and body the tests assert on.

use std::process::Output as ProcessOutput;

use serde_json::Value;
use tokio::process::Command;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const BIN: &str = env!("CARGO_BIN_EXE_linedee-example-tasks");
const BUCKET: &str = "ld-private-test";
const SECRET: &str = "e2e-secret-never-printed";

/// Runs the app with the `LD_*` variables of `server` and `line_D`.
async fn run(server: &MockServer, args: &[&str], line_d: &str) -> ProcessOutput {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LD_AWS_ACCESS_KEY_ID", "AKIDE2E")
        .env("LD_AWS_SECRET_ACCESS_KEY", SECRET)
        .env("LD_AWS_SESSION_TOKEN", "e2e-token")
        .env("LD_REGION", "us-east-1")
        .env("LD_S3_BUCKET", BUCKET)
        .env("LD_S3_ENDPOINT", server.uri())
        .env("line_D", line_d)
        .env("RUST_LOG", "info")
        .output()
        .await
        .expect("the task app starts")
}

async fn s3() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).insert_header("ETag", "\"out-etag\""))
        .mount(&server)
        .await;
    server
}

fn puts(requests: &[Request]) -> Vec<&Request> {
    requests
        .iter()
        .filter(|r| r.method.as_str() == "PUT")
        .collect()
}

fn header<'a>(req: &'a Request, name: &str) -> &'a str {
    req.headers
        .get(name)
        .unwrap_or_else(|| panic!("header {name} missing"))
        .to_str()
        .expect("ASCII header")
}

/// The JSON body of a PutObject, also when the SDK framed it as `aws-chunked`.
fn json_body(req: &Request) -> Value {
    let raw = &req.body;
    if let Ok(v) = serde_json::from_slice(raw) {
        return v;
    }
    // aws-chunked: `{hex len}\r\n{data}\r\n … 0\r\n{trailers}`
    let text = String::from_utf8_lossy(raw);
    let (len, rest) = text.split_once("\r\n").expect("chunk header");
    let len = usize::from_str_radix(len.trim(), 16).expect("chunk length");
    serde_json::from_str(&rest[..len]).expect("JSON body")
}

fn stderr_lines(out: &ProcessOutput) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn process_image_reads_its_input_and_writes_output_with_state() {
    let server = s3().await;
    let image: Vec<u8> = [0xff, 0xd8, 0xff, 0xe0]
        .into_iter()
        .chain((0..100_000u32).map(|i| (i % 251) as u8))
        .collect();
    Mock::given(method("GET"))
        .and(path(format!("/{BUCKET}/in/img/example_img.jpg")))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("ETag", "\"9b2cf535f27731c974343645a3985328\"")
                .insert_header("Content-Type", "image/jpeg")
                .set_body_bytes(image.clone()),
        )
        .mount(&server)
        .await;
    let task_id = "01JDX3Q7ZK6Q.0.0";
    let line_d = serde_json::json!({
        "task_id": task_id, "run_id": "01JDX3Q7ZK6Q", "attempt": 1, "cmd": "process-image",
        "options": {"dir": "thumbs"}, "bucket": BUCKET, "trigger_key": "in/img/example_img.jpg",
        "trigger_etag": "\"9b2cf535f27731c974343645a3985328\"", "unknown_field": [1, 2],
    });

    let out = run(&server, &["process-image"], &line_d.to_string()).await;

    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}, stderr:\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains(SECRET),
        "a secret reached the log:\n{stderr}"
    );
    let requests = server.received_requests().await.expect("recording on");
    let puts = puts(&requests);
    assert_eq!(puts.len(), 1, "exactly one output write");
    let put = puts[0];
    assert_eq!(put.url.path(), format!("/{BUCKET}/out/{task_id}"));
    assert_eq!(header(put, "x-amz-meta-ld_task_id"), task_id);
    let state: Value =
        serde_json::from_str(header(put, "x-amz-meta-ld_state")).expect("JSON state");
    assert_eq!(state, serde_json::json!({ "bytes": image.len() }));
    assert_eq!(header(put, "content-type"), "application/json");
    let body = json_body(put);
    assert_eq!(body["bytes"], image.len());
    assert_eq!(body["format"], "jpeg");
    assert_eq!(body["dir"], "thumbs", "the option from line_D");
    assert_eq!(body["input"], "in/img/example_img.jpg");
    assert_eq!(body["content_type"], "image/jpeg");
}

#[tokio::test]
async fn get_data_reads_its_option_and_writes_the_records() {
    let server = s3().await;
    let line_d = r#"{"task_id":"R.1.2","options":{"endpoint":"users"}}"#;

    let out = run(&server, &["get_data"], line_d).await;

    assert!(
        out.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = server.received_requests().await.expect("recording on");
    let put = puts(&requests)[0];
    assert_eq!(put.url.path(), format!("/{BUCKET}/out/R.1.2"));
    assert_eq!(header(put, "x-amz-meta-ld_task_id"), "R.1.2");
    assert!(put.headers.get("x-amz-meta-ld_state").is_none());
    let body = json_body(put);
    assert_eq!(body.as_array().map(Vec::len), Some(3));
    assert_eq!(body[2]["name"], "Clémentine Bauch");
}

#[tokio::test]
async fn get_json_writes_its_own_output_with_the_documents_state() {
    let server = s3().await;

    let out = run(&server, &["get-json"], r#"{"task_id":"R.0.0"}"#).await;

    assert!(
        out.status.success(),
        "stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = server.received_requests().await.expect("recording on");
    let puts = puts(&requests);
    assert_eq!(
        puts.len(),
        1,
        "written by the handler, not again by the runtime"
    );
    let state: Value =
        serde_json::from_str(header(puts[0], "x-amz-meta-ld_state")).expect("JSON state");
    assert_eq!(state["resp_status_code"], 200);
    assert_eq!(state["num_records"], 5);
    assert!(state["resp_time"].is_string());
}

#[tokio::test]
async fn a_failing_task_prints_the_diagnostic_line_exits_non_zero_and_writes_nothing() {
    let server = s3().await;
    let line_d = r#"{"task_id":"R.1.0","options":{"endpoint":"albums"}}"#;

    let out = run(&server, &["get-data"], line_d).await;

    assert_eq!(out.status.code(), Some(1));
    let lines = stderr_lines(&out);
    let last = lines.last().expect("a diagnostic line");
    let diag: Value = serde_json::from_str(last).expect("the last stderr line is JSON");
    assert_eq!(diag["error_type"], "anyhow::Error");
    assert_eq!(
        diag["error_message"],
        "unknown endpoint `albums`: expected one of posts, users, comments"
    );
    let json_lines = lines
        .iter()
        .filter(|l| l.contains("\"error_type\""))
        .count();
    assert_eq!(json_lines, 1, "one diagnostic line:\n{lines:#?}");
    let requests = server.received_requests().await.expect("recording on");
    assert!(puts(&requests).is_empty(), "no output on failure");
}

#[tokio::test]
async fn a_missing_option_and_a_malformed_line_d_are_named() {
    let server = s3().await;

    let out = run(&server, &["get-data"], r#"{"task_id":"R.1.0"}"#).await;
    assert_eq!(out.status.code(), Some(1));
    let diag: Value = serde_json::from_str(stderr_lines(&out).last().expect("line")).expect("JSON");
    assert_eq!(
        diag["error_message"],
        "option `endpoint` is not set: add `endpoint=…` to the task's `options`"
    );

    let out = run(
        &server,
        &["get-data"],
        r#"{"task_id":"R.1.0","attempt":"two"}"#,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let diag: Value = serde_json::from_str(stderr_lines(&out).last().expect("line")).expect("JSON");
    assert_eq!(diag["error_type"], "linedee_task::Error");
    assert_eq!(
        diag["error_message"],
        "`line_D` field `attempt`: expected a whole number from 1, found string \"two\""
    );
    let requests = server.received_requests().await.expect("recording on");
    assert!(puts(&requests).is_empty());
}

#[tokio::test]
async fn a_replaced_input_or_no_input_fails_without_output() {
    let server = s3().await;
    Mock::given(method("GET"))
        .and(path(format!("/{BUCKET}/in/img/new.jpg")))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("ETag", "\"ffff\"")
                .set_body_bytes(vec![1u8; 10]),
        )
        .mount(&server)
        .await;
    let line_d = r#"{"task_id":"R.0.0","trigger_key":"in/img/new.jpg","trigger_etag":"\"aaaa\""}"#;

    let out = run(&server, &["process-image"], line_d).await;

    assert_eq!(out.status.code(), Some(1));
    let diag: Value = serde_json::from_str(stderr_lines(&out).last().expect("line")).expect("JSON");
    assert_eq!(
        diag["error_message"],
        "the input `in/img/new.jpg` changed since the run started: its ETag is now \"ffff\", \
         the run was started by ETag \"aaaa\""
    );

    let out = run(&server, &["process-image"], r#"{"task_id":"R.0.1"}"#).await;
    assert_eq!(out.status.code(), Some(1));
    let diag: Value = serde_json::from_str(stderr_lines(&out).last().expect("line")).expect("JSON");
    let msg = diag["error_message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("this task has no input: `line_D` has no `trigger_key`"),
        "{msg}"
    );

    let requests = server.received_requests().await.expect("recording on");
    assert!(puts(&requests).is_empty(), "no output on failure");
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
