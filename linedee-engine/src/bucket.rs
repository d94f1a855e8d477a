//! The bucket operations the engine needs: read an output's proof and a trigger's body, write
//! status documents and logs. The embedded [`Store`] provides them in process; an S3 client
//! provides them in the cloud.

use std::collections::BTreeMap;

use bytes::Bytes;
use linedee::metadata::{LD_STATE, LD_TASK_ID};

use crate::error::Result;
use crate::runner::LogBody;
use crate::store::Store;

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
    /// Writes a JSON document (a run's status document).
    async fn put_json(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()>;
    /// Stores an attempt's log.
    async fn put_log(&self, bucket: &str, key: &str, log: LogBody) -> Result<()>;
}

#[async_trait::async_trait]
impl Bucket for Store {
    async fn output(&self, bucket: &str, task_id: &str) -> Result<Option<Option<String>>> {
        let key = linedee::line_d::output_key(task_id);
        Ok(self
            .head_object(bucket, &key)
            .await?
            .and_then(|m| proof(task_id, &m.metadata)))
    }

    async fn body(&self, bucket: &str, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get_object(bucket, key).await?.map(|(_, body)| body))
    }

    async fn put_json(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
        self.put_object(
            bucket,
            key,
            body.into(),
            Some("application/json"),
            BTreeMap::new(),
        )
        .await
        .map(drop)
    }

    async fn put_log(&self, bucket: &str, key: &str, log: LogBody) -> Result<()> {
        match log {
            LogBody::File(path) => self
                .put_file(bucket, key, &path, Some("text/plain; charset=utf-8"))
                .await
                .map(drop),
        }
    }
}
