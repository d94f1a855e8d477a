//! The task's output write under faults injected with wiremock (500, 503 SlowDown,
//! ExpiredToken, in a single PUT and in the middle of a multipart upload), the task run as a real
//! process: it retries or refreshes and its output completes, or it exits 1 with one diagnostic
//! line and no output.
//!
//! Run plainly, `main` runs the cases; each starts this same binary again with
//! `LINEDEE_TASK_TEST_CHILD=1`, which makes it `linedee_task::main()`. (`harness = false`.)

use std::process::Output as ProcessOutput;

use linedee_task::{Json, Output, TaskContext, ld_task};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const CHILD: &str = "LINEDEE_TASK_TEST_CHILD";
const BUCKET: &str = "ld-private-test";
const KEY: &str = "out/R.0.0";
const UPLOAD_ID: &str = "upload-1";
/// Over the 16 MiB multipart threshold: parts of 8, 8 and 1 MiB.
const BIG: u64 = 17 * 1024 * 1024;

/// A small JSON output, written by the runtime from the return value.
#[ld_task]
async fn small(_ctx: TaskContext) -> anyhow::Result<Json<Vec<u32>>> {
    Ok(Json(vec![1, 2, 3]))
}

/// A 17 MiB streamed output: a multipart upload.
#[ld_task]
async fn big(_ctx: TaskContext) -> anyhow::Result<Output> {
    Ok(Output::stream(tokio::io::repeat(b'x').take(BIG)))
}

/// Runs task `name` as a process against `server`.
async fn task(name: &str, server: &MockServer) -> ProcessOutput {
    let exe = std::env::current_exe().expect("current exe");
    tokio::process::Command::new(exe)
        .arg(name)
        .env_clear()
        .env(CHILD, "1")
        .env("RUST_LOG", "warn")
        .env("line_D", r#"{"task_id":"R.0.0"}"#)
        .env("LD_S3_ENDPOINT", server.uri())
        .env("LD_S3_BUCKET", BUCKET)
        .env("LD_AWS_ACCESS_KEY_ID", "AKIDTASK")
        .env("LD_AWS_SECRET_ACCESS_KEY", "secret-key-value")
        // One part at a time, so the order of requests is known.
        .env("LD_UPLOAD_CONCURRENCY", "1")
        .output()
        .await
        .expect("the task starts")
}

fn stderr(out: &ProcessOutput) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The one diagnostic line, which is the last line of stderr.
fn diagnostic(out: &ProcessOutput) -> Value {
    let text = stderr(out);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"error_type\""))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one diagnostic line:\n{text}");
    assert_eq!(text.lines().last(), Some(lines[0]), "it is last:\n{text}");
    serde_json::from_str(lines[0]).expect("JSON diagnostic")
}

fn succeeded(out: &ProcessOutput) {
    assert!(out.status.success(), "{}", stderr(out));
    assert!(!stderr(out).contains("error_type"), "{}", stderr(out));
}

fn s3_error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).insert_header("content-type", "application/xml").set_body_string(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{code} happened</Message><RequestId>r1</RequestId></Error>"#
    ))
}

/// Mounts a succeeding PutObject and multipart upload on `out/R.0.0`; faults go on top.
async fn mount_ok(server: &MockServer) {
    let object = format!("/{BUCKET}/{KEY}");
    let xml = |body: String| {
        ResponseTemplate::new(200)
            .insert_header("content-type", "application/xml")
            .set_body_string(body)
    };
    Mock::given(method("POST"))
        .and(path(object.clone()))
        .and(query_param("uploads", ""))
        .respond_with(xml(format!(
            "<InitiateMultipartUploadResult><Bucket>{BUCKET}</Bucket><Key>{KEY}</Key>\
             <UploadId>{UPLOAD_ID}</UploadId></InitiateMultipartUploadResult>"
        )))
        .with_priority(5)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(object.clone()))
        .and(query_param("uploadId", UPLOAD_ID))
        .respond_with(xml(format!(
            "<CompleteMultipartUploadResult><Bucket>{BUCKET}</Bucket><Key>{KEY}</Key>\
             <ETag>\"final-3\"</ETag></CompleteMultipartUploadResult>"
        )))
        .with_priority(5)
        .mount(server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(object.clone()))
        .respond_with(ResponseTemplate::new(204))
        .with_priority(5)
        .mount(server)
        .await;
    Mock::given(method("PUT"))
        .and(path(object))
        .respond_with(|req: &Request| {
            let n = part_number(req).unwrap_or(0);
            ResponseTemplate::new(200).insert_header("etag", format!("\"etag-{n}\"").as_str())
        })
        .with_priority(5)
        .mount(server)
        .await;
}

fn part_number(req: &Request) -> Option<u32> {
    req.url
        .query_pairs()
        .find(|(k, _)| k == "partNumber")
        .and_then(|(_, v)| v.parse().ok())
}

/// The requests, named: `Put`, `Create`, `Part n`, `Complete`, `Abort`.
async fn received(server: &MockServer) -> Vec<String> {
    let reqs = server.received_requests().await.unwrap_or_default();
    reqs.iter()
        .map(|r| {
            let has = |q: &str| r.url.query_pairs().any(|(k, _)| k == q);
            match r.method.as_str() {
                "POST" if has("uploads") => "Create".to_owned(),
                "POST" => "Complete".to_owned(),
                "PUT" if has("partNumber") => format!("Part {}", part_number(r).unwrap_or(0)),
                "PUT" => "Put".to_owned(),
                "DELETE" => "Abort".to_owned(),
                other => other.to_owned(),
            }
        })
        .collect()
}

async fn a_500_on_the_output_put_is_retried_and_the_output_completes() {
    let server = MockServer::start().await;
    mount_ok(&server).await;
    Mock::given(method("PUT"))
        .respond_with(s3_error(500, "InternalError"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let out = task("small", &server).await;
    succeeded(&out);
    assert_eq!(received(&server).await, ["Put", "Put"]);
    let reqs = server.received_requests().await.unwrap_or_default();
    let last = reqs.last().expect("a request");
    assert_eq!(
        last.headers
            .get("x-amz-meta-ld_task_id")
            .map(|v| v.as_bytes()),
        Some(&b"R.0.0"[..])
    );
    assert!(String::from_utf8_lossy(&last.body).contains("[1,2,3]"));
}

async fn throttling_that_never_ends_fails_the_task_with_one_line() {
    let server = MockServer::start().await;
    mount_ok(&server).await;
    Mock::given(method("PUT"))
        .respond_with(s3_error(503, "SlowDown"))
        .with_priority(1)
        .mount(&server)
        .await;
    let out = task("small", &server).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let d = diagnostic(&out);
    assert_eq!(d["error_type"], "linedee_task::Error");
    assert_eq!(
        d["error_message"],
        format!(
            "S3 PutObject on `{KEY}` failed: the server is throttling requests (SlowDown) and \
             retries ran out; try again later"
        )
    );
    assert_eq!(
        received(&server).await,
        ["Put", "Put", "Put"],
        "three attempts, none accepted: no output"
    );
}

async fn an_expired_token_is_refreshed_and_the_output_completes() {
    let server = MockServer::start().await;
    mount_ok(&server).await;
    Mock::given(method("PUT"))
        .respond_with(s3_error(400, "ExpiredToken"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let out = task("small", &server).await;
    succeeded(&out);
    assert_eq!(received(&server).await, ["Put", "Put"]);
}

async fn an_expired_token_mid_multipart_resends_the_part_and_completes() {
    let server = MockServer::start().await;
    mount_ok(&server).await;
    Mock::given(method("PUT"))
        .and(query_param("partNumber", "2"))
        .respond_with(s3_error(400, "ExpiredToken"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    let out = task("big", &server).await;
    succeeded(&out);
    assert_eq!(
        received(&server).await,
        ["Create", "Part 1", "Part 2", "Part 2", "Part 3", "Complete"]
    );
}

async fn a_multipart_output_that_fails_is_aborted_and_the_task_fails() {
    let server = MockServer::start().await;
    mount_ok(&server).await;
    Mock::given(method("PUT"))
        .and(query_param("partNumber", "2"))
        .respond_with(s3_error(500, "InternalError"))
        .with_priority(1)
        .mount(&server)
        .await;
    let out = task("big", &server).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let d = diagnostic(&out);
    assert_eq!(
        d["error_message"],
        format!(
            "S3 UploadPart on `{KEY}` failed: InternalError (HTTP 500): InternalError happened"
        )
    );
    assert_eq!(
        received(&server).await,
        ["Create", "Part 1", "Part 2", "Part 2", "Part 2", "Abort"],
        "aborted, never completed: no output"
    );
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        linedee_task::main();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let mut ran = 0;
    macro_rules! case {
        ($name:ident) => {
            if wanted(stringify!($name)) {
                rt.block_on($name());
                println!("test {} ... ok", stringify!($name));
                ran += 1;
            }
        };
    }
    case!(a_500_on_the_output_put_is_retried_and_the_output_completes);
    case!(throttling_that_never_ends_fails_the_task_with_one_line);
    case!(an_expired_token_is_refreshed_and_the_output_completes);
    case!(an_expired_token_mid_multipart_resends_the_part_and_completes);
    case!(a_multipart_output_that_fails_is_aborted_and_the_task_fails);
    println!("\ntest result: ok. {ran} passed");
}
