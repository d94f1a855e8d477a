//! Uploads under faults a real server will not produce on demand, injected with wiremock: a 500
//! on a PUT, throttling and expired tokens in the middle of a multipart upload, retries that run
//! out (the upload is aborted, never completed), and a server slower than the attempt timeout;
//! parts in flight at once, within the bound, and a failure among them.
//! (`faults.rs` covers the single-request cases of refresh, throttling and access denied.)

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{BUCKET, Rotating, s3_error};
use linedee::{ClientBuilder, Error, MIN_PART_SIZE};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "big/object.bin";
const UPLOAD_ID: &str = "upload-1";

/// One part at a time, so the order of requests is known (concurrent parts are tested at the
/// end of this file).
fn builder(server: &MockServer, provider: Arc<Rotating>) -> ClientBuilder {
    common::builder(server, provider)
        .multipart_threshold(MIN_PART_SIZE)
        .part_size(MIN_PART_SIZE)
        .upload_concurrency(1)
}

fn xml(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("content-type", "application/xml")
        .set_body_string(body)
}

/// A body of two full parts and a short third one.
fn body() -> Vec<u8> {
    (0..2 * MIN_PART_SIZE + 1234)
        .map(|i| (i % 251) as u8)
        .collect()
}

/// Mounts CreateMultipartUpload, UploadPart (any part), CompleteMultipartUpload and
/// AbortMultipartUpload, all succeeding. Faults are mounted with a higher priority on top.
async fn mount_multipart(server: &MockServer) {
    let object = format!("/{BUCKET}/{KEY}");
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
    Mock::given(method("PUT"))
        .and(path(object.clone()))
        .and(query_param("uploadId", UPLOAD_ID))
        .respond_with(|req: &Request| {
            let n = part_number(req).unwrap_or(0);
            ResponseTemplate::new(200).insert_header("etag", format!("\"part-etag-{n}\"").as_str())
        })
        .with_priority(5)
        .mount(server)
        .await;
    Mock::given(method("POST"))
        .and(path(object.clone()))
        .and(query_param("uploadId", UPLOAD_ID))
        .respond_with(xml(format!(
            "<CompleteMultipartUploadResult><Bucket>{BUCKET}</Bucket><Key>{KEY}</Key>\
             <ETag>\"final-etag-3\"</ETag></CompleteMultipartUploadResult>"
        )))
        .with_priority(5)
        .mount(server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(object))
        .and(query_param("uploadId", UPLOAD_ID))
        .respond_with(ResponseTemplate::new(204))
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

/// What the server received, in order: `Create`, `Part n`, `Complete`, `Abort`, `Put` …, each
/// with the access key id its signature names.
async fn received(server: &MockServer) -> Vec<(String, String)> {
    let reqs = server.received_requests().await.unwrap_or_default();
    reqs.iter()
        .map(|r| {
            let has = |q: &str| r.url.query_pairs().any(|(k, _)| k == q);
            let what = match r.method.as_str() {
                "POST" if has("uploads") => "Create".to_owned(),
                "POST" if has("uploadId") => "Complete".to_owned(),
                "PUT" if has("partNumber") => format!("Part {}", part_number(r).unwrap_or(0)),
                "PUT" => "Put".to_owned(),
                "DELETE" => "Abort".to_owned(),
                other => other.to_owned(),
            };
            let auth = r
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let key = auth
                .split("Credential=")
                .nth(1)
                .and_then(|c| c.split('/').next())
                .unwrap_or("")
                .to_owned();
            (what, key)
        })
        .collect()
}

fn names(log: &[(String, String)]) -> Vec<&str> {
    log.iter().map(|(w, _)| w.as_str()).collect()
}

#[tokio::test]
async fn a_500_on_a_put_is_retried_and_the_put_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(format!("/{BUCKET}/etl/users.json")))
        .respond_with(s3_error(500, "InternalError"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(format!("/{BUCKET}/etl/users.json")))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("etag", "\"0123456789abcdef0123456789abcdef\""),
        )
        .mount(&server)
        .await;

    let provider = Arc::new(Rotating::default());
    let out = builder(&server, provider.clone())
        .build()
        .unwrap()
        .put("etl/users.json", r#"[{"id":1}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.etag.as_deref(),
        Some("\"0123456789abcdef0123456789abcdef\"")
    );
    assert!(!out.multipart);
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 2, "one 500, then the retry that succeeded");
    assert_eq!(
        reqs[0].body, reqs[1].body,
        "the retry sends the same body again"
    );
    assert_eq!(provider.calls(), 1, "a 500 does not refresh credentials");
}

#[tokio::test]
async fn slow_down_on_an_upload_part_is_retried_and_the_upload_completes() {
    let server = MockServer::start().await;
    mount_multipart(&server).await;
    Mock::given(method("PUT"))
        .and(query_param("partNumber", "2"))
        .respond_with(s3_error(503, "SlowDown"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;

    let provider = Arc::new(Rotating::default());
    let client = builder(&server, provider.clone()).build().unwrap();
    let out = client.put(KEY, body()).send().await.unwrap();
    assert!(out.multipart);
    assert_eq!(out.etag.as_deref(), Some("\"final-etag-3\""));
    let log = received(&server).await;
    assert_eq!(
        names(&log),
        ["Create", "Part 1", "Part 2", "Part 2", "Part 3", "Complete"],
        "part 2 is sent again after SlowDown; nothing is aborted"
    );
    assert_eq!(provider.calls(), 1);
    // Complete lists every part, with the ETag each part returned.
    let reqs = server.received_requests().await.unwrap();
    let complete = String::from_utf8_lossy(&reqs.last().unwrap().body).into_owned();
    for n in 1..=3 {
        assert!(
            complete.contains(&format!("<PartNumber>{n}</PartNumber>"))
                && complete.contains(&format!("part-etag-{n}")),
            "{complete}"
        );
    }
}

#[tokio::test]
async fn retries_that_run_out_on_a_part_abort_the_upload_with_a_clear_error() {
    let server = MockServer::start().await;
    mount_multipart(&server).await;
    Mock::given(method("PUT"))
        .and(query_param("partNumber", "2"))
        .respond_with(s3_error(503, "SlowDown"))
        .with_priority(1)
        .mount(&server)
        .await;

    let client = builder(&server, Arc::default()).build().unwrap();
    let err = client.put(KEY, body()).send().await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            &err,
            Error::S3 { operation: "UploadPart", key, status: Some(503), code: Some(code), .. }
                if key == KEY && code == "SlowDown"
        ),
        "{err:?}"
    );
    assert_eq!(
        msg,
        format!(
            "S3 UploadPart on `{KEY}` failed: the server is throttling requests (SlowDown) and \
             retries ran out; try again later"
        )
    );
    let log = received(&server).await;
    assert_eq!(
        names(&log),
        ["Create", "Part 1", "Part 2", "Part 2", "Part 2", "Abort"],
        "three attempts at part 2, then AbortMultipartUpload and never Complete"
    );
    let reqs = server.received_requests().await.unwrap();
    let abort = reqs.last().unwrap();
    assert_eq!(abort.method.as_str(), "DELETE");
    assert!(
        abort
            .url
            .query_pairs()
            .any(|(k, v)| k == "uploadId" && v == UPLOAD_ID),
        "{}",
        abort.url
    );
}

#[tokio::test]
async fn an_expired_token_on_the_second_part_refreshes_and_resends_that_part() {
    let server = MockServer::start().await;
    mount_multipart(&server).await;
    Mock::given(method("PUT"))
        .and(query_param("partNumber", "2"))
        .respond_with(s3_error(400, "ExpiredToken"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;

    let provider = Arc::new(Rotating::default());
    let client = builder(&server, provider.clone()).build().unwrap();
    let out = client.put(KEY, body()).send().await.unwrap();
    assert_eq!(out.etag.as_deref(), Some("\"final-etag-3\""));
    assert_eq!(
        provider.calls(),
        2,
        "the provider is asked again after ExpiredToken"
    );
    let log = received(&server).await;
    let expected = [
        ("Create", "AKIA0"),
        ("Part 1", "AKIA0"),
        ("Part 2", "AKIA0"),
        ("Part 2", "AKIA1"),
        ("Part 3", "AKIA1"),
        ("Complete", "AKIA1"),
    ];
    let got: Vec<(&str, &str)> = log.iter().map(|(w, k)| (w.as_str(), k.as_str())).collect();
    assert_eq!(
        got, expected,
        "part 2 is re-sent signed with the new key, and the rest of the upload uses it"
    );
    // Part 2 was sent whole both times.
    let reqs = server.received_requests().await.unwrap();
    assert_eq!(reqs[2].body.len(), reqs[3].body.len());
}

#[tokio::test]
async fn a_server_slower_than_the_attempt_timeout_is_a_clear_timeout_error() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(10)))
        .mount(&server)
        .await;
    let client = builder(&server, Arc::default())
        .attempt_timeout(Duration::from_millis(300))
        .max_attempts(2)
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = client.put("slow/key", "x").send().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "gave up at the timeout, not when the server answered ({:?})",
        started.elapsed()
    );
    let msg = err.to_string();
    assert!(
        matches!(
            &err,
            Error::S3 {
                status: None,
                code: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        msg,
        format!(
            "S3 PutObject on `slow/key` failed: no answer from {} within 300ms (the attempt \
             timeout), on every attempt; the server is slow or stuck (raise \
             `ClientBuilder::attempt_timeout` for slow links)",
            server.uri()
        )
    );
    assert_eq!(
        server.received_requests().await.unwrap().len(),
        2,
        "a timed-out attempt is retried like a transient error"
    );
}

#[tokio::test]
async fn a_server_slower_than_usual_but_within_the_timeout_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("etag", "\"slow-but-fine\"")
                .set_delay(Duration::from_millis(200)),
        )
        .mount(&server)
        .await;
    let client = builder(&server, Arc::default())
        .attempt_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let out = client.put("slow/key", "x").send().await.unwrap();
    assert_eq!(out.etag.as_deref(), Some("\"slow-but-fine\""));
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

/// Part PUTs answered after `delay`, each arrival recorded (part number, when).
async fn mount_slow_parts(server: &MockServer, delay: Duration) -> Arc<Mutex<Vec<(u32, Instant)>>> {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&arrivals);
    Mock::given(method("PUT"))
        .and(query_param("uploadId", UPLOAD_ID))
        .respond_with(move |req: &Request| {
            let n = part_number(req).unwrap_or(0);
            seen.lock().expect("arrivals").push((n, Instant::now()));
            ResponseTemplate::new(200)
                .insert_header("etag", format!("\"part-etag-{n}\"").as_str())
                .set_delay(delay)
        })
        .with_priority(1)
        .mount(server)
        .await;
    arrivals
}

#[tokio::test(flavor = "multi_thread")]
async fn parts_go_up_three_at_a_time_and_complete_lists_them_in_order() {
    const DELAY: Duration = Duration::from_millis(800);
    let server = MockServer::start().await;
    mount_multipart(&server).await;
    let arrivals = mount_slow_parts(&server, DELAY).await;
    let client = common::builder(&server, Arc::default())
        .multipart_threshold(MIN_PART_SIZE)
        .part_size(MIN_PART_SIZE)
        .upload_concurrency(3)
        .build()
        .unwrap();
    let body: Vec<u8> = (0..5 * MIN_PART_SIZE + 99)
        .map(|i| (i % 253) as u8)
        .collect();
    let out = client.put(KEY, body.clone()).send().await.unwrap();
    assert!(out.multipart);

    let mut arrivals = arrivals.lock().unwrap().clone();
    arrivals.sort_by_key(|(_, at)| *at);
    assert_eq!(arrivals.len(), 6, "{arrivals:?}");
    let first = arrivals[0].1;
    // Three parts were sent before the first answer came back…
    assert!(arrivals[2].1 < first + DELAY, "{arrivals:?}");
    // …and the fourth only after one had: never more than three in flight.
    assert!(arrivals[3].1 >= first + DELAY, "{arrivals:?}");

    // Each part's body is its slice of the object, and Complete lists 1..=6 in order.
    let reqs = server.received_requests().await.unwrap();
    for r in reqs.iter().filter(|r| part_number(r).is_some()) {
        // Integrity by the part's CRC32, signed as a header; no SHA-256 of the payload.
        let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok());
        assert!(header("x-amz-checksum-crc32").is_some(), "{:?}", r.headers);
        assert_eq!(header("x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
        assert!(
            header("authorization").is_some_and(|a| a.contains("x-amz-checksum-crc32")),
            "the checksum is a signed header"
        );
        let n = part_number(r).unwrap() as usize;
        let slice = &body[(n - 1) * MIN_PART_SIZE..(n * MIN_PART_SIZE).min(body.len())];
        assert!(r.body == slice, "part {n} is not its slice of the object");
    }
    let complete = String::from_utf8_lossy(&reqs.last().unwrap().body).into_owned();
    let order: Vec<usize> = (1..=6)
        .map(|n| {
            complete
                .find(&format!("<PartNumber>{n}</PartNumber>"))
                .expect("listed")
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{complete}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_part_aborts_a_concurrent_upload_and_it_is_never_completed() {
    let server = MockServer::start().await;
    mount_multipart(&server).await;
    Mock::given(method("PUT"))
        .and(query_param("partNumber", "2"))
        .respond_with(s3_error(503, "SlowDown"))
        .with_priority(1)
        .mount(&server)
        .await;
    let client = common::builder(&server, Arc::default())
        .multipart_threshold(MIN_PART_SIZE)
        .part_size(MIN_PART_SIZE)
        .upload_concurrency(3)
        .build()
        .unwrap();
    let body: Vec<u8> = (0..5 * MIN_PART_SIZE).map(|i| (i % 253) as u8).collect();
    let err = client.put(KEY, body).send().await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::S3 {
                operation: "UploadPart",
                status: Some(503),
                ..
            }
        ),
        "{err:?}"
    );
    let log = received(&server).await;
    let names = names(&log);
    assert!(names.contains(&"Abort"), "{names:?}");
    assert!(!names.contains(&"Complete"), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| **n == "Part 2").count(),
        3,
        "{names:?}"
    );
}

#[tokio::test]
async fn a_files_parts_go_up_as_plain_bodies_with_their_crc32_as_a_signed_header() {
    use base64::Engine as _;
    let server = MockServer::start().await;
    mount_multipart(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    let body = body();
    std::fs::write(&file, &body).unwrap();
    let client = builder(&server, Arc::default()).build().unwrap();
    let out = client
        .put(KEY, linedee::Body::from_path(&file))
        .send()
        .await
        .unwrap();
    assert!(out.multipart);
    let reqs = server.received_requests().await.unwrap();
    let parts: Vec<&Request> = reqs.iter().filter(|r| part_number(r).is_some()).collect();
    assert_eq!(parts.len(), 3);
    for r in parts {
        let header = |name: &str| r.headers.get(name).and_then(|v| v.to_str().ok());
        let n = part_number(r).unwrap() as usize;
        let slice = &body[(n - 1) * MIN_PART_SIZE..(n * MIN_PART_SIZE).min(body.len())];
        // Not aws-chunked with a trailing checksum (whose chunks the SDK would sign one by one
        // over plain HTTP): a sized body, unsigned, its CRC32 a signed header.
        assert_eq!(header("x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
        assert_eq!(header("content-encoding"), None, "{:?}", r.headers);
        assert_eq!(header("x-amz-trailer"), None, "{:?}", r.headers);
        let crc =
            base64::engine::general_purpose::STANDARD.encode(crc32fast::hash(slice).to_be_bytes());
        assert_eq!(
            header("x-amz-checksum-crc32"),
            Some(crc.as_str()),
            "part {n}"
        );
        assert!(
            header("authorization").is_some_and(|a| a.contains("x-amz-checksum-crc32")),
            "the checksum is a signed header"
        );
        assert!(r.body == slice, "part {n} is not its slice of the file");
    }
}

#[tokio::test]
async fn a_part_refused_for_its_checksum_says_the_file_changed_and_aborts_the_upload() {
    let server = MockServer::start().await;
    mount_multipart(&server).await;
    Mock::given(method("PUT"))
        .and(query_param("partNumber", "2"))
        .respond_with(s3_error(400, "BadDigest"))
        .with_priority(1)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, body()).unwrap();
    let client = builder(&server, Arc::default()).build().unwrap();
    let err = client
        .put(KEY, linedee::Body::from_path(&file))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::S3 { operation: "UploadPart", code: Some(c), .. } if c == "BadDigest"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("changed while it was uploaded") && text.contains("upload it again"),
        "{text}"
    );
    let log = received(&server).await;
    let names = names(&log);
    assert!(names.contains(&"Abort"), "{names:?}");
    assert!(!names.contains(&"Complete"), "{names:?}");
}
