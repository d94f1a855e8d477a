//! The S3 operations of `serve`, with the AWS SDK: reading triggers and outputs, writing status
//! documents and logs, and the conditional writes that make a run's state a compare-and-swap.

use std::collections::BTreeMap;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::bucket::{Bucket, proof};
use crate::error::{CloudError, Error, Result};
use crate::runner::LogBody;

/// An object's head.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) etag: Option<String>,
    /// User metadata, keys lowercase.
    pub(crate) metadata: BTreeMap<String, String>,
}

/// The answer to a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Written {
    /// Written; the new ETag.
    Done(String),
    /// The condition did not hold (412, or 409 for a conflicting write, or 404 for `If-Match`
    /// on a deleted object): re-read and decide again.
    Conflict,
}

/// The tag a finished run's state and status documents carry when the bucket expires
/// finished runs (`linedee cloud setup --retain-days N --retain-runs`).
pub(crate) const FINISHED_TAG: (&str, &str) = ("ld_finished", "true");

/// S3 through the SDK (any bucket the credentials reach).
#[derive(Debug, Clone)]
pub(crate) struct S3 {
    client: aws_sdk_s3::Client,
    /// Whether a finished run's documents are written with [`FINISHED_TAG`].
    tag_finished: bool,
}

fn failed<E: std::error::Error + Send + Sync + 'static>(
    op: &str,
    bucket: &str,
    key: &str,
    e: &SdkError<E>,
) -> Error {
    CloudError::Request {
        op: format!("S3 {op} s3://{bucket}/{key}"),
        message: DisplayErrorContext(e).to_string(),
    }
    .into()
}

/// The bucket's versioning status (`Enabled`, `Suspended`; `None` if never set or unreadable).
/// An answer under another root element (moto's) is read for its `<Status>` too.
pub(crate) async fn versioning_status(s3: &aws_sdk_s3::Client, bucket: &str) -> Option<String> {
    match s3.get_bucket_versioning().bucket(bucket).send().await {
        Ok(v) => v.status().map(|s| s.as_str().to_owned()),
        Err(e) => e
            .raw_response()
            .filter(|r| r.status().as_u16() == 200)
            .and_then(|r| r.body().bytes())
            .and_then(|b| {
                let text = String::from_utf8_lossy(b);
                let start = text.find("<Status>")? + "<Status>".len();
                let end = text[start..].find("</Status>")? + start;
                Some(text[start..end].to_owned())
            }),
    }
}

/// The bucket's notification configuration; `None` for an empty one that an S3-compatible
/// server answers under another root element (moto does). The error is the service's word.
pub(crate) async fn notification_config(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
) -> std::result::Result<
    Option<aws_sdk_s3::operation::get_bucket_notification_configuration::GetBucketNotificationConfigurationOutput>,
    String,
>{
    match s3
        .get_bucket_notification_configuration()
        .bucket(bucket)
        .send()
        .await
    {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 200) => Ok(None),
        Err(e) => Err(brief(&e)),
    }
}

/// Whether a queue rule sends object-created events to `queue_arn`.
pub(crate) fn notifies(rule: &aws_sdk_s3::types::QueueConfiguration, queue_arn: &str) -> bool {
    rule.queue_arn() == queue_arn
        && rule
            .events()
            .iter()
            .any(|e| e.as_str().starts_with("s3:ObjectCreated:"))
}

/// An error in a line: the service's code and message, else the SDK's account of it.
pub(crate) fn brief<E>(e: &SdkError<E>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match (e.code(), e.message(), status(e)) {
        (Some(code), Some(message), _) => format!("{code}: {message}"),
        (Some(code), None, _) => code.to_owned(),
        // An answer without a body (a HEAD's): its status says it.
        (None, _, Some(403)) => "HTTP 403: access denied".to_owned(),
        (None, _, Some(404)) => "HTTP 404: not found".to_owned(),
        (None, _, Some(s)) => format!("HTTP {s}"),
        _ => DisplayErrorContext(e).to_string(),
    }
}

fn status<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

fn etag(e: Option<&str>) -> Option<String> {
    e.map(|e| e.trim_matches('"').to_owned())
}

impl S3 {
    pub(crate) fn new(client: aws_sdk_s3::Client) -> Self {
        S3 {
            client,
            tag_finished: false,
        }
    }

    /// Writes a finished run's documents with [`FINISHED_TAG`], for a lifecycle rule to
    /// expire them (the engine then needs s3:PutObjectTagging).
    pub(crate) fn tag_finished(mut self, on: bool) -> Self {
        self.tag_finished = on;
        self
    }

    /// The `x-amz-tagging` of a write of a run's document.
    fn tagging(&self, finished: bool) -> Option<String> {
        (self.tag_finished && finished).then(|| format!("{}={}", FINISHED_TAG.0, FINISHED_TAG.1))
    }

    /// HEAD, by version when there is one; `None` when the object (or version) is gone.
    pub(crate) async fn head(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<Head>> {
        match self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version.map(str::to_owned))
            .send()
            .await
        {
            Ok(h) => Ok(Some(Head {
                etag: etag(h.e_tag()),
                metadata: h
                    .metadata()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
            })),
            // A deleted object, a version that no longer exists (400 for a malformed one).
            Err(e) if matches!(status(&e), Some(404 | 400)) => Ok(None),
            Err(e) => Err(failed("HEAD", bucket, key, &e)),
        }
    }

    /// GET; the body and its ETag, `None` when gone.
    pub(crate) async fn get(&self, bucket: &str, key: &str) -> Result<Option<(Bytes, String)>> {
        match self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => {
                let tag = etag(o.e_tag()).unwrap_or_default();
                let body = o.body.collect().await.map_err(|e| CloudError::Request {
                    op: format!("S3 GET s3://{bucket}/{key}"),
                    message: e.to_string(),
                })?;
                Ok(Some((body.into_bytes(), tag)))
            }
            Err(e) if status(&e) == Some(404) || e.code() == Some("NoSuchKey") => Ok(None),
            Err(e) => Err(failed("GET", bucket, key, &e)),
        }
    }

    /// PUT with `If-None-Match: *` (`expect` is `None`) or `If-Match: expect`; `finished`
    /// tags the document of a finished run (when the bucket expires them).
    pub(crate) async fn put_if(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        expect: Option<&str>,
        finished: bool,
    ) -> Result<Written> {
        let mut put = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .set_tagging(self.tagging(finished))
            .body(ByteStream::from(body));
        put = match expect {
            None => put.if_none_match("*"),
            Some(tag) => put.if_match(format!("\"{tag}\"")),
        };
        match put.send().await {
            Ok(o) => Ok(Written::Done(etag(o.e_tag()).unwrap_or_default())),
            Err(e) if matches!(status(&e), Some(412 | 409)) => Ok(Written::Conflict),
            Err(e) if expect.is_some() && status(&e) == Some(404) => Ok(Written::Conflict),
            Err(e) => Err(failed("conditional PUT", bucket, key, &e)),
        }
    }

    /// A run's status document; `finished` tags it as [`S3::put_if`] does.
    pub(crate) async fn put_status(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        finished: bool,
    ) -> Result<()> {
        self.put_tagged(
            bucket,
            key,
            body,
            "application/json",
            self.tagging(finished),
        )
        .await
    }

    /// A plain PUT.
    pub(crate) async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<()> {
        self.put_tagged(bucket, key, body, content_type, None).await
    }

    async fn put_tagged(
        &self,
        bucket: &str,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        tagging: Option<String>,
    ) -> Result<()> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type(content_type)
            .set_tagging(tagging)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(drop)
            .map_err(|e| failed("PUT", bucket, key, &e))
    }

    /// Whether the bucket exists and these credentials reach it (HEAD bucket).
    pub(crate) async fn check_bucket(&self, bucket: &str) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map(drop)
            .map_err(|e| {
                let why = match status(&e) {
                    Some(404) => "it does not exist".to_owned(),
                    Some(403) => "access denied".to_owned(),
                    _ => brief(&e),
                };
                CloudError::Config(format!(
                    "the bucket `{bucket}` cannot be reached ({why}): check its name (LD_S3_BUCKET) and that the engine's AWS credentials may s3:ListBucket on it"
                ))
                .into()
            })
    }
}

#[async_trait::async_trait]
impl Bucket for S3 {
    async fn output(&self, bucket: &str, task_id: &str) -> Result<Option<Option<String>>> {
        let key = linedee::line_d::output_key(task_id);
        Ok(self
            .head(bucket, &key, None)
            .await?
            .and_then(|h| proof(task_id, &h.metadata)))
    }

    async fn body(&self, bucket: &str, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get(bucket, key).await?.map(|(body, _)| body))
    }

    async fn put_json(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
        self.put(bucket, key, body, "application/json").await
    }

    /// An S3 write is durable when answered.
    async fn durable(&self) -> Result<()> {
        Ok(())
    }

    async fn put_log(&self, bucket: &str, key: &str, log: LogBody) -> Result<()> {
        let body = match log {
            LogBody::Bytes(b) => b,
            LogBody::File(path) => {
                tokio::fs::read(&path)
                    .await
                    .map_err(|e| CloudError::Request {
                        op: format!("reading the log {}", path.display()),
                        message: e.to_string(),
                    })?
            }
        };
        self.put(bucket, key, body, "text/plain; charset=utf-8")
            .await
    }
}
