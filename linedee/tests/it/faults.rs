//! The client under faults a real server will not produce on demand, injected with wiremock:
//! expired tokens, bodiless HEAD 403s, throttling and access denied.

use crate::common;

use std::sync::Arc;

use common::{Rotating, builder, s3_error};
use linedee::{Client, Error, Task, Workflow};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn client(server: &MockServer, provider: Arc<Rotating>) -> Client {
    builder(server, provider).build().expect("client builds")
}

fn ok_put() -> ResponseTemplate {
    ResponseTemplate::new(200).insert_header("etag", "\"0123456789abcdef0123456789abcdef\"")
}

/// The access key id each request was signed with.
async fn signing_keys(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let auth = r
                .headers
                .get("authorization")
                .map(|v| v.to_str().unwrap_or("").to_owned())
                .unwrap_or_default();
            auth.split("Credential=")
                .nth(1)
                .and_then(|c| c.split('/').next())
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn expired_token_refreshes_credentials_and_retries_once() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path("/ld-private-test/in/example"))
        .respond_with(s3_error(400, "ExpiredToken"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/ld-private-test/in/example"))
        .respond_with(ok_put())
        .mount(&server)
        .await;

    let provider = Arc::new(Rotating::default());
    let wf = Workflow::new().step(Task::new("echo hi").no_output());
    let submission = client(&server, provider.clone())
        .submit("in/example", &wf)
        .await
        .unwrap();

    assert_eq!(
        provider.calls(),
        2,
        "the provider is asked again after ExpiredToken"
    );
    assert_eq!(
        signing_keys(&server).await,
        ["AKIA0", "AKIA1"],
        "the retry is signed with the fresh key"
    );
    assert_eq!(
        submission.etag(),
        Some("\"0123456789abcdef0123456789abcdef\"")
    );
    assert_eq!(submission.run_id().len(), 26);
    // The trigger carries the run id and ld_run, and the body is the workflow.
    let reqs = server.received_requests().await.unwrap();
    let last = reqs.last().unwrap();
    assert_eq!(last.headers.get("x-amz-meta-ld_run").unwrap(), "true");
    assert_eq!(
        last.headers.get("x-amz-meta-ld_run_id").unwrap(),
        submission.run_id()
    );
    assert!(String::from_utf8_lossy(&last.body).contains(r#""cmd":"echo hi""#));
}

#[tokio::test]
async fn a_bodiless_403_to_a_head_refreshes_credentials() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path("/ld-private-test/out/R.0.0"))
        .respond_with(ResponseTemplate::new(403))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("HEAD"))
        .and(path("/ld-private-test/out/R.0.0"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-length", "0")
                .insert_header("x-amz-meta-ld_task_id", "R.0.0")
                .insert_header(
                    "x-amz-meta-ld_state",
                    "=?UTF-8?B?eyJjaXR5IjoiWsO8cmljaCJ9?=",
                ),
        )
        .mount(&server)
        .await;

    let provider = Arc::new(Rotating::default());
    let info = client(&server, provider.clone())
        .head("out/R.0.0")
        .await
        .unwrap();
    assert_eq!(provider.calls(), 2);
    assert_eq!(info.metadata["ld_task_id"], "R.0.0");
    // Readers decode RFC 2047 values.
    assert_eq!(info.metadata["ld_state"], r#"{"city":"Zürich"}"#);
}

#[tokio::test]
async fn slow_down_is_retried_with_backoff() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(s3_error(503, "SlowDown"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ok_put())
        .mount(&server)
        .await;

    let provider = Arc::new(Rotating::default());
    let out = client(&server, provider.clone())
        .put("etl/users.json", "[]")
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.etag.as_deref(),
        Some("\"0123456789abcdef0123456789abcdef\"")
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        3,
        "two throttled attempts, then success"
    );
    assert_eq!(
        provider.calls(),
        1,
        "throttling does not refresh credentials"
    );
}

#[tokio::test]
async fn throttling_that_never_ends_is_a_clear_error() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(s3_error(503, "SlowDown"))
        .mount(&server)
        .await;
    let err = client(&server, Arc::default())
        .put("k", "x")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.s3_code(), Some("SlowDown"));
    assert!(
        err.to_string()
            .contains("throttling requests (SlowDown) and retries ran out"),
        "{err}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn access_denied_is_surfaced_with_a_clear_message() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(s3_error(403, "AccessDenied"))
        .mount(&server)
        .await;

    let provider = Arc::new(Rotating::default());
    let err = client(&server, provider.clone())
        .get("in/example")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            Error::S3 {
                status: Some(403),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.s3_code(), Some("AccessDenied"));
    assert_eq!(
        msg,
        "S3 GetObject on `in/example` failed: access denied; check that the credentials are current and may use bucket `ld-private-test`"
    );
    assert!(!msg.contains("secret-key-value") && !msg.contains("token0"));
    assert_eq!(provider.calls(), 1, "AccessDenied is not a refresh case");
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        1,
        "AccessDenied is not retried"
    );
}

#[tokio::test]
async fn oversized_ld_code_is_refused_before_sending() {
    let server = MockServer::start().await;
    let mut wf = Workflow::new();
    for i in 0..60 {
        wf = wf.step(Task::new(format!("process_image_{i}")).option("dir", "out"));
    }
    let err = client(&server, Arc::default())
        .upload("in/img/a.jpg", "jpeg")
        .workflow(&wf)
        .send()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::MetadataTooLarge { limit: 2048, .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("over the 2048-byte limit") && msg.contains("Client::submit"),
        "{msg}"
    );
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "nothing was sent"
    );
}

#[tokio::test]
async fn an_invalid_workflow_is_refused_before_sending() {
    let server = MockServer::start().await;
    let wf = Workflow::new().step(Task::new("x").option("LD_S3_BUCKET", "other"));
    let err = client(&server, Arc::default())
        .submit("in/x", &wf)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("run[0].options[0]: option name `LD_S3_BUCKET` is reserved"),
        "{err}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_endpoint_says_what_to_check() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::builder()
        .bucket("b")
        .endpoint(format!("http://{addr}"))
        .credentials_provider(Rotating::default())
        .max_attempts(1)
        .build()
        .unwrap();
    let err = client.check().await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "S3 HeadBucket on `b` failed: cannot reach http://{addr} (Connection refused (os error \
             111)); check LD_S3_ENDPOINT and that the server is running"
        )
    );
}
