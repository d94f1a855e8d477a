//! Faults against the real embedded store and real processes: connections cut in the middle of
//! uploads (a proxy in front of the store), a task writing 100 MB of logs, tasks that fork
//! children and exit, and a Procfile that changes while the engine runs.

use std::time::Duration;

use linedee::status::RunState;
use linedee::{Client, ClientBuilder, Error, MIN_PART_SIZE, Task, Workflow};
use linedee_tests::TestEngine;
use linedee_tests::proxy::{Cut, CuttingProxy, Plan};

#[path = "faults/engine.rs"]
mod engine;

const WAIT: Duration = Duration::from_secs(60);

/// A client for `t`'s bucket at `endpoint` (the proxy), retrying quickly.
fn client_via(t: &TestEngine, endpoint: &str) -> ClientBuilder {
    let env: std::collections::HashMap<String, String> =
        t.engine.app_env(&t.endpoint).into_iter().collect();
    Client::builder()
        .bucket(t.engine.bucket())
        .endpoint(endpoint)
        .credentials_provider(linedee::credentials::StaticProvider::new(
            linedee::credentials::Credentials::new(
                env["LD_AWS_ACCESS_KEY_ID"].clone(),
                env["LD_AWS_SECRET_ACCESS_KEY"].clone(),
                env.get("LD_AWS_SESSION_TOKEN").cloned(),
                None,
            ),
        ))
        .initial_backoff(Duration::from_millis(10))
}

/// `len` bytes that differ from part to part, so a misplaced part would show.
fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Reads `key` straight from the store (not through the proxy).
async fn stored(t: &TestEngine, key: &str) -> Vec<u8> {
    t.client
        .get(key)
        .await
        .expect("the object is there")
        .bytes()
        .await
        .expect("its body")
        .to_vec()
}

async fn assert_absent(t: &TestEngine, key: &str) {
    let err = t.client.head(key).await.expect_err("no object");
    assert!(matches!(err, Error::NotFound { .. }), "{key}: {err:?}");
}

/// The upload is gone from the store (ListParts answers NoSuchUpload), and no other upload
/// was left open in the bucket (ListMultipartUploads is empty).
async fn assert_no_upload(t: &TestEngine, key: &str, upload_id: &str) {
    let err = t
        .client
        .s3()
        .list_parts()
        .bucket(t.engine.bucket())
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
        .expect_err("the upload was aborted");
    let err = format!("{err:?}");
    assert!(err.contains("NoSuchUpload"), "{err}");
    let open = t
        .client
        .s3()
        .list_multipart_uploads()
        .bucket(t.engine.bucket())
        .send()
        .await
        .expect("list the open uploads");
    assert!(open.uploads().is_empty(), "left open: {:?}", open.uploads());
}

#[tokio::test]
async fn a_put_reset_mid_body_is_retried_and_lands_whole() {
    let t = TestEngine::start("").await;
    for cut in [Cut::Reset, Cut::Close] {
        let proxy = CuttingProxy::start(
            &t.endpoint,
            Plan {
                after_bytes: 300_000,
                connections: 2,
                cut,
            },
        )
        .await;
        let client = client_via(&t, &proxy.endpoint).build().unwrap();
        let key = format!("in/single-{cut:?}.bin");
        let body = payload(1024 * 1024);
        let out = client.put(&key, body.clone()).send().await.unwrap();
        assert!(!out.multipart);
        assert_eq!(proxy.cuts(), 2, "{cut:?}: two attempts were cut mid-body");
        assert_eq!(
            proxy.connections(),
            3,
            "{cut:?}: the third attempt went through"
        );
        assert_eq!(stored(&t, &key).await, body, "{cut:?}: byte-identical");
    }
}

#[tokio::test]
async fn a_multipart_upload_reset_mid_part_is_retried_and_lands_whole() {
    let t = TestEngine::start("").await;
    // Connection 1 carries CreateMultipartUpload and part 1, then part 2 is cut 2 MiB in.
    let proxy = CuttingProxy::start(
        &t.endpoint,
        Plan {
            after_bytes: MIN_PART_SIZE + 2 * 1024 * 1024,
            connections: 1,
            cut: Cut::Reset,
        },
    )
    .await;
    // One part at a time, so the parts follow each other on the first connection.
    let client = client_via(&t, &proxy.endpoint)
        .multipart_threshold(MIN_PART_SIZE)
        .part_size(MIN_PART_SIZE)
        .upload_concurrency(1)
        .build()
        .unwrap();
    let body = payload(2 * MIN_PART_SIZE + 12_345);
    let out = client
        .put("in/multi.bin", body.clone())
        .send()
        .await
        .unwrap();
    assert!(out.multipart);
    assert_eq!(proxy.cuts(), 1);
    assert!(proxy.connections() >= 2);
    assert_eq!(
        out.etag.as_deref().map(|e| e.ends_with("-3\"")),
        Some(true),
        "{:?}",
        out.etag
    );
    assert_eq!(stored(&t, "in/multi.bin").await, body, "byte-identical");
    let ids = proxy.response_values("UploadId");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_no_upload(&t, "in/multi.bin", &ids[0]).await;
}

#[tokio::test]
async fn concurrent_parts_cut_mid_body_are_retried_and_land_whole() {
    let t = TestEngine::start("").await;
    // Three parts in flight at once: the first two connections are each cut 1 MiB into
    // what they carry after their first request's headers (a part's body, or the second
    // part after CreateMultipartUpload).
    let proxy = CuttingProxy::start(
        &t.endpoint,
        Plan {
            after_bytes: 1024 * 1024,
            connections: 2,
            cut: Cut::Reset,
        },
    )
    .await;
    let client = client_via(&t, &proxy.endpoint)
        .multipart_threshold(MIN_PART_SIZE)
        .part_size(MIN_PART_SIZE)
        .upload_concurrency(3)
        .build()
        .unwrap();
    let body = payload(4 * MIN_PART_SIZE + 777);
    let out = client
        .put("in/concurrent.bin", body.clone())
        .send()
        .await
        .unwrap();
    assert!(out.multipart);
    assert_eq!(proxy.cuts(), 2);
    assert_eq!(
        out.etag.as_deref().map(|e| e.ends_with("-5\"")),
        Some(true),
        "{:?}",
        out.etag
    );
    assert_eq!(
        stored(&t, "in/concurrent.bin").await,
        body,
        "byte-identical"
    );
    let ids = proxy.response_values("UploadId");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_no_upload(&t, "in/concurrent.bin", &ids[0]).await;
}

#[tokio::test]
async fn a_file_goes_up_in_parts_read_from_disk_and_a_cut_part_is_read_again() {
    let t = TestEngine::start("").await;
    let proxy = CuttingProxy::start(
        &t.endpoint,
        Plan {
            after_bytes: 1024 * 1024,
            connections: 2,
            cut: Cut::Reset,
        },
    )
    .await;
    let client = client_via(&t, &proxy.endpoint)
        .multipart_threshold(MIN_PART_SIZE)
        .part_size(MIN_PART_SIZE)
        .upload_concurrency(2)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let body = payload(3 * MIN_PART_SIZE + 4321);
    std::fs::write(&path, &body).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let progress = std::sync::Arc::clone(&seen);
    let out = client
        .put("in/file.bin", linedee::Body::from_path(&path))
        .on_progress(move |done| progress.lock().unwrap().push(done))
        .send()
        .await
        .unwrap();
    assert!(out.multipart);
    assert_eq!(proxy.cuts(), 2, "two parts were cut and sent again");
    assert_eq!(stored(&t, "in/file.bin").await, body, "byte-identical");
    // One report per part, growing to the whole file.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert_eq!(seen.last().copied(), Some(body.len() as u64));
}

#[tokio::test]
async fn cuts_that_never_stop_are_a_clear_error_and_leave_nothing_visible() {
    let t = TestEngine::start("").await;
    let proxy = CuttingProxy::start(
        &t.endpoint,
        Plan {
            after_bytes: 100_000,
            connections: usize::MAX,
            cut: Cut::Reset,
        },
    )
    .await;
    // One part at a time: part 1's three attempts are the ones counted.
    let client = client_via(&t, &proxy.endpoint)
        .multipart_threshold(MIN_PART_SIZE)
        .part_size(MIN_PART_SIZE)
        .upload_concurrency(1)
        .build()
        .unwrap();

    // A single PUT.
    let err = client
        .put("in/never-single.bin", payload(1024 * 1024))
        .send()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            &err,
            Error::S3 {
                operation: "PutObject",
                status: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        msg.starts_with("S3 PutObject on `in/never-single.bin` failed: cannot reach ")
            && msg.contains(&proxy.endpoint),
        "{msg}"
    );
    assert_eq!(proxy.cuts(), 3, "three attempts, each cut");
    assert_absent(&t, "in/never-single.bin").await;

    // A multipart upload: CreateMultipartUpload is small enough to pass; every part is cut.
    let before = proxy.cuts();
    let err = client
        .put("in/never-multi.bin", payload(2 * MIN_PART_SIZE))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::S3 { operation: "UploadPart", key, .. } if key == "in/never-multi.bin"),
        "{err:?}"
    );
    assert_eq!(proxy.cuts() - before, 3, "part 1 was tried three times");
    assert_absent(&t, "in/never-multi.bin").await;
    let ids = proxy.response_values("UploadId");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_no_upload(&t, "in/never-multi.bin", &ids[0]).await;
}

/// The example `get-data` task, its `LD_S3_ENDPOINT` pointed at `endpoint`.
fn get_data_via(endpoint: &str) -> Task {
    Task::new(format!(
        "LD_S3_ENDPOINT={endpoint} {} get-data",
        linedee_tests::example_tasks().display()
    ))
    .option("endpoint", "comments")
    .retries(0)
}

#[tokio::test]
async fn a_task_output_cut_mid_upload_lands_whole_or_not_at_all() {
    let t = TestEngine::start("").await;
    let expected: serde_json::Value =
        serde_json::from_str(include_str!("../../examples/tasks/data/comments.json")).unwrap();

    // The first connection is cut 200 bytes into the body: the task's SDK retries.
    let proxy = CuttingProxy::start(
        &t.endpoint,
        Plan {
            after_bytes: 200,
            connections: 1,
            cut: Cut::Reset,
        },
    )
    .await;
    let wf = Workflow::new().step(get_data_via(&proxy.endpoint));
    let run = t.client.submit("in/cut-once", &wf).await.unwrap();
    let status = run.wait(WAIT).await.unwrap();
    assert_eq!(status.status, RunState::Succeeded, "{status:#?}");
    assert_eq!(proxy.cuts(), 1);
    let task_id = format!("{}.0.0", run.run_id());
    let out = t.client.task_output(&task_id).await.unwrap();
    let got: serde_json::Value =
        serde_json::from_slice(&out.bytes().await.unwrap()).expect("the whole JSON");
    assert_eq!(got, expected);

    // Cuts that never stop: the task fails with the SDK's error, and writes no output.
    let proxy = CuttingProxy::start(
        &t.endpoint,
        Plan {
            after_bytes: 200,
            connections: usize::MAX,
            cut: Cut::Reset,
        },
    )
    .await;
    let wf = Workflow::new().step(get_data_via(&proxy.endpoint));
    let run = t.client.submit("in/cut-always", &wf).await.unwrap();
    let status = run.wait(WAIT).await.unwrap();
    assert_eq!(status.status, RunState::Failed, "{status:#?}");
    let task_id = format!("{}.0.0", run.run_id());
    let task = status.tasks().next().unwrap();
    let error = task.error.clone().unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "exited with code 1 without writing out/{task_id}: linedee_task::Error: S3 PutObject \
             on `out/{task_id}` failed: cannot reach {}",
            proxy.endpoint
        )),
        "{error}"
    );
    assert_eq!(
        proxy.cuts(),
        3,
        "the task's three attempts at the PUT were cut"
    );
    assert_absent(&t, &format!("out/{task_id}")).await;
}
