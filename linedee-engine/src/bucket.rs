//! The bucket operations the engine needs: read an output's proof and a trigger's body, write
//! status documents and logs. The embedded [`Store`] provides them in process; a
//! [`linedee::Client`] provides them over S3 (its bucket only).

use std::collections::BTreeMap;

use bytes::Bytes;
use linedee::metadata::{LD_STATE, LD_TASK_ID};

use crate::error::{Error, Result};
use crate::runner::LogBody;
use crate::store::{Commit, Store};

/// The `ld_state` of a landed output (`Some(None)`: landed without state), read from the
/// output object's metadata; `None` when the object is not `task_id`'s proof.
pub(crate) fn proof(task_id: &str, metadata: &BTreeMap<String, String>) -> Option<Option<String>> {
    (metadata.get(LD_TASK_ID).map(String::as_str) == Some(task_id)).then(|| {
        metadata
            .get(LD_STATE)
            .map(|s| linedee::metadata::decode_rfc2047(s).into_owned())
    })
}

/// What the engine reads from and writes to a bucket.
#[async_trait::async_trait]
pub(crate) trait Bucket: Send + Sync + 'static {
    /// Whether `out/{task_id}` landed with a matching `ld_task_id`, and its `ld_state`.
    async fn output(&self, bucket: &str, task_id: &str) -> Result<Option<Option<String>>>;
    /// An object's body, `None` when it is gone.
    async fn body(&self, bucket: &str, key: &str) -> Result<Option<Bytes>>;
    /// Writes a JSON document (a run's status document). It may survive power loss only with
    /// a later write: [`Bucket::durable`] waits for that.
    async fn put_json(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()>;
    /// [`Bucket::put_json`] for a document nobody waits for (a status the run is moving
    /// through): the embedded store lets it ride a commit made for another write, waiting a
    /// few milliseconds for one.
    async fn put_json_deferred(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
        self.put_json(bucket, key, body).await
    }
    /// Stores an attempt's log. Nobody waits for it: the embedded store defers it as
    /// [`Bucket::put_json_deferred`] does.
    async fn put_log(&self, bucket: &str, key: &str, log: LogBody) -> Result<()>;
    /// Returns once every write this bucket answered before the call survives power loss: at
    /// once where a write is durable when answered (S3).
    async fn durable(&self) -> Result<()>;
}

/// How long [`Bucket::durable`] on the embedded store waits for a synced commit made for
/// another write before it makes one of its own.
const DURABLE_WITHIN: std::time::Duration = std::time::Duration::from_millis(20);

#[async_trait::async_trait]
impl Bucket for Store {
    async fn output(&self, bucket: &str, task_id: &str) -> Result<Option<Option<String>>> {
        let key = linedee::line_d::output_key(task_id);
        Ok(self
            .head_object_now(bucket, &key)
            .await?
            .and_then(|m| proof(task_id, &m.metadata)))
    }

    async fn body(&self, bucket: &str, key: &str) -> Result<Option<Bytes>> {
        self.body_now(bucket, key).await
    }

    async fn put_json(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
        put_json_as(self, bucket, key, body, Commit::Unsynced).await
    }

    async fn put_json_deferred(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
        put_json_as(self, bucket, key, body, Commit::Deferred).await
    }

    async fn durable(&self) -> Result<()> {
        self.durable_within(DURABLE_WITHIN).await
    }

    async fn put_log(&self, bucket: &str, key: &str, log: LogBody) -> Result<()> {
        // Not synced on its own: the run's status document that follows covers it. Deferred:
        // it rides the commit of another write (the run's final status document, usually).
        match log {
            LogBody::File(path) => self
                .put_file_deferred(bucket, key, &path, Some("text/plain; charset=utf-8"))
                .await
                .map(drop),
            LogBody::Bytes(bytes) => self
                .put_object_with(
                    bucket,
                    key,
                    bytes.into(),
                    Some("text/plain; charset=utf-8"),
                    BTreeMap::new(),
                    Commit::Deferred,
                )
                .await
                .map(drop),
        }
    }
}

/// A JSON document written to the embedded store, committed as `commit` says.
async fn put_json_as(
    store: &Store,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
    commit: Commit,
) -> Result<()> {
    store
        .put_object_with(
            bucket,
            key,
            body.into(),
            Some("application/json"),
            BTreeMap::new(),
            commit,
        )
        .await
        .map(drop)
}

/// Over S3, with the SDK's client: its credential refresh and retries included. It serves its
/// own bucket; another bucket is an error that names both.
#[async_trait::async_trait]
impl Bucket for linedee::Client {
    async fn output(&self, bucket: &str, task_id: &str) -> Result<Option<Option<String>>> {
        same_bucket(self, bucket)?;
        match self.get(&linedee::line_d::output_key(task_id)).await {
            Ok(object) => Ok(proof(task_id, object.metadata())),
            Err(linedee::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::Bucket(e)),
        }
    }

    async fn body(&self, bucket: &str, key: &str) -> Result<Option<Bytes>> {
        same_bucket(self, bucket)?;
        match self.get(key).await {
            Ok(object) => Ok(Some(object.bytes().await.map_err(Error::Bucket)?)),
            Err(linedee::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::Bucket(e)),
        }
    }

    async fn durable(&self) -> Result<()> {
        Ok(())
    }

    async fn put_json(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
        same_bucket(self, bucket)?;
        self.put(key, body)
            .content_type("application/json")
            .send()
            .await
            .map(drop)
            .map_err(Error::Bucket)
    }

    async fn put_log(&self, bucket: &str, key: &str, log: LogBody) -> Result<()> {
        same_bucket(self, bucket)?;
        let body = match log {
            LogBody::File(path) => linedee::Body::from_path(path),
            LogBody::Bytes(bytes) => linedee::Body::from(bytes),
        };
        self.put(key, body)
            .content_type("text/plain; charset=utf-8")
            .send()
            .await
            .map(drop)
            .map_err(Error::Bucket)
    }
}

fn same_bucket(client: &linedee::Client, bucket: &str) -> Result<()> {
    if client.bucket() == bucket {
        Ok(())
    } else {
        Err(Error::Internal(format!(
            "a run of bucket `{bucket}` reached the client of bucket `{}`",
            client.bucket()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same operations through the store in process and through the SDK's client over
    /// HTTP give the same answers.
    #[tokio::test]
    async fn the_store_and_the_sdk_client_are_the_same_bucket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            dir.path(),
            crate::store::StoreOptions {
                default_bucket: Some("ld-bucket".to_owned()),
                ..Default::default()
            },
        )
        .expect("store");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .serve(listener, async move {
                        let _ = stopped.await;
                    })
                    .await
            })
        };
        let c = store.credentials().expect("credentials");
        let client = linedee::Client::builder()
            .bucket("ld-bucket")
            .endpoint(&endpoint)
            .credentials_provider(linedee::credentials::StaticProvider::new(
                linedee::credentials::Credentials::new(
                    c.access_key_id,
                    c.secret_access_key,
                    Some(c.session_token),
                    None,
                ),
            ))
            .build()
            .expect("client");
        let log = dir.path().join("1.log");
        std::fs::write(&log, "hello\n").expect("log");
        let metadata = BTreeMap::from([
            (LD_TASK_ID.to_owned(), "R.0.0".to_owned()),
            (LD_STATE.to_owned(), r#"{"n":1}"#.to_owned()),
        ]);
        store
            .put_object("ld-bucket", "out/R.0.0", "x".into(), None, metadata)
            .await
            .expect("output");
        let buckets: [&dyn Bucket; 2] = [&store, &client];
        for (i, b) in buckets.into_iter().enumerate() {
            let who = if i == 0 { "store" } else { "client" };
            let state = b.output("ld-bucket", "R.0.0").await.expect(who);
            assert_eq!(state, Some(Some(r#"{"n":1}"#.to_owned())), "{who}");
            assert_eq!(
                b.output("ld-bucket", "R.0.1").await.expect(who),
                None,
                "{who}"
            );
            let key = format!("ld/runs/{who}.json");
            b.put_json("ld-bucket", &key, b"{}".to_vec())
                .await
                .expect(who);
            b.durable().await.expect(who);
            let body = b.body("ld-bucket", &key).await.expect(who);
            assert_eq!(body.as_deref(), Some(&b"{}"[..]), "{who}");
            assert_eq!(b.body("ld-bucket", "nope").await.expect(who), None, "{who}");
            let key = format!("ld/logs/{who}/1.log");
            b.put_log("ld-bucket", &key, LogBody::File(log.clone()))
                .await
                .expect(who);
            let (meta, body) = store
                .get_object("ld-bucket", &key)
                .await
                .expect("read back")
                .expect("stored");
            assert_eq!(
                (&body[..], meta.content_type.as_deref()),
                (&b"hello\n"[..], Some("text/plain; charset=utf-8")),
                "{who}"
            );
        }
        let err = client
            .output("other", "R.0.0")
            .await
            .expect_err("another bucket");
        assert!(err.to_string().contains("`other`"), "{err}");
        let _ = stop.send(());
        served.await.expect("serve task").expect("served");
    }
}
