//! Shared helpers: a store served on `127.0.0.1:0` and aws-sdk-s3 clients for it.
#![allow(dead_code, unreachable_pub)]

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials as SdkCredentials, Region};
use linedee_engine::store::{Credentials, Store, StoreOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A store served over HTTP until dropped.
pub struct Served {
    pub store: Store,
    pub endpoint: String,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<linedee_engine::Result<()>>>,
}

impl Served {
    pub async fn start(options: StoreOptions) -> Served {
        Self::start_in(tempfile::tempdir().expect("tempdir"), options).await
    }

    /// A store on `dir` (which may hold one already), served over HTTP.
    pub async fn start_in(dir: tempfile::TempDir, options: StoreOptions) -> Served {
        let store = Store::open(dir.path(), options).expect("open store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .serve(listener, async {
                        let _ = stopped.await;
                    })
                    .await
            }
        });
        Served {
            store,
            endpoint,
            dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// A client with the store's current credentials and the SDK's default settings.
    pub fn client(&self) -> Client {
        client(
            &self.endpoint,
            &self.store.credentials().expect("credentials"),
        )
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(self) {
        drop(self.stop_keeping_dir().await);
    }

    /// Stops serving, waits for the server to finish and hands back the store's directory,
    /// for a store opened again on it.
    pub async fn stop_keeping_dir(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("serve");
        }
        drop(self.store);
        self.dir
    }
}

pub fn sdk_credentials(c: &Credentials) -> SdkCredentials {
    SdkCredentials::new(
        c.access_key_id.clone(),
        c.secret_access_key.clone(),
        Some(c.session_token.clone()),
        None,
        "test",
    )
}

pub fn client(endpoint: &str, c: &Credentials) -> Client {
    client_with(endpoint, sdk_credentials(c))
}

pub fn client_with(endpoint: &str, creds: SdkCredentials) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    Client::from_conf(conf)
}

/// The S3 error code of a failed SDK call.
pub fn code<E, R>(err: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug,
    R: std::fmt::Debug,
{
    err.as_service_error()
        .and_then(|e| e.code())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{err:?}"))
}

/// The HTTP status of a failed SDK call.
pub fn status<E>(
    err: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> u16 {
    err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0)
}

/// Records the `x-amz-content-sha256` and `x-amz-trailer` headers of every request sent.
#[derive(Debug, Default, Clone)]
pub struct WireRecorder(pub std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

impl aws_sdk_s3::config::Intercept for WireRecorder {
    fn name(&self) -> &'static str {
        "WireRecorder"
    }

    fn read_before_transmit(
        &self,
        context: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let headers = context.request().headers();
        let get = |n: &str| headers.get(n).unwrap_or_default().to_owned();
        self.0
            .lock()
            .expect("lock")
            .push((get("x-amz-content-sha256"), get("x-amz-trailer")));
        Ok(())
    }
}

/// A client with the SDK's default settings that records what it sends.
pub fn recording_client(endpoint: &str, c: &Credentials) -> (Client, WireRecorder) {
    let rec = WireRecorder::default();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(sdk_credentials(c))
        .interceptor(rec.clone())
        .build();
    (Client::from_conf(conf), rec)
}

/// Every file in the store's directory that holds a body: temporary files and body files.
pub fn body_files(dir: &std::path::Path) -> usize {
    let tmp = std::fs::read_dir(dir.join("tmp")).expect("tmp").count();
    let blobs: usize = std::fs::read_dir(dir.join("blobs"))
        .expect("blobs")
        .map(|d| {
            std::fs::read_dir(d.expect("entry").path())
                .expect("sub")
                .count()
        })
        .sum();
    tmp + blobs
}

/// The body of `bucket`/`key`, or of a range of it (`bytes=…`).
pub async fn get(c: &Client, bucket: &str, key: &str, range: Option<&str>) -> Vec<u8> {
    c.get_object()
        .bucket(bucket)
        .key(key)
        .set_range(range.map(str::to_owned))
        .send()
        .await
        .unwrap_or_else(|e| panic!("get {key} {range:?}: {e:?}"))
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes()
        .to_vec()
}

/// Uploads `parts` to `bucket`/`key` as one multipart upload with `metadata` and completes
/// it; returns the object's ETag, or the first failed request's error as text.
pub async fn try_multipart(
    c: &Client,
    bucket: &str,
    key: &str,
    parts: &[&[u8]],
    metadata: std::collections::HashMap<String, String>,
) -> Result<String, String> {
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
    let text = |e: &dyn std::fmt::Debug| format!("{e:?}");
    let id = c
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .set_metadata(Some(metadata))
        .send()
        .await
        .map_err(|e| text(&e))?
        .upload_id
        .ok_or("no upload id")?;
    let mut done = Vec::new();
    for (n, data) in (1..).zip(parts) {
        let out = c
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(data.to_vec()))
            .send()
            .await
            .map_err(|e| text(&e))?;
        done.push(
            CompletedPart::builder()
                .part_number(n)
                .set_e_tag(out.e_tag)
                .build(),
        );
    }
    c.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(done))
                .build(),
        )
        .send()
        .await
        .map_err(|e| text(&e))?
        .e_tag
        .ok_or_else(|| "no ETag".to_owned())
}

/// [`try_multipart`] without metadata, which must succeed.
pub async fn multipart(c: &Client, bucket: &str, key: &str, parts: &[&[u8]]) -> String {
    try_multipart(c, bucket, key, parts, Default::default())
        .await
        .unwrap_or_else(|e| panic!("multipart upload of {key}: {e}"))
}
