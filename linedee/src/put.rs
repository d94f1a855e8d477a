//! Writing objects: [`Put`], single-request or multipart with bounded memory.

use std::collections::BTreeMap;
use std::pin::Pin;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::body::{Body, Inner};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::metadata;

/// A write of one object; see [`Client::put`].
#[derive(Debug)]
#[must_use = "a Put does nothing until `.send().await`"]
pub struct Put {
    client: Client,
    pub(crate) key: String,
    body: Body,
    content_type: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
}

/// What a successful write returns.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PutOutput {
    /// The key written.
    pub key: String,
    /// Its ETag, quotes included.
    pub etag: Option<String>,
    /// Whether it went multipart.
    pub multipart: bool,
}

impl Client {
    /// Starts a write of `body` to `key`. Bodies over the multipart threshold (16 MiB by
    /// default) are uploaded in parts; memory use stays about one part.
    ///
    /// ```no_run
    /// # async fn demo(client: linedee::Client) -> linedee::Result<()> {
    /// client
    ///     .put("etl/users.json", r#"[{"id":1}]"#)
    ///     .content_type("application/json")
    ///     .send()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn put(&self, key: impl Into<String>, body: impl Into<Body>) -> Put {
        Put {
            client: self.clone(),
            key: key.into(),
            body: body.into(),
            content_type: None,
            metadata: BTreeMap::new(),
        }
    }
}

impl Put {
    pub(crate) fn client_ref(&self) -> &Client {
        &self.client
    }

    /// Sets `Content-Type`.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Adds user metadata (the key is lowercased, as S3 stores it).
    pub fn metadata(mut self, key: impl AsRef<str>, value: impl Into<String>) -> Self {
        self.metadata
            .insert(key.as_ref().to_ascii_lowercase(), value.into());
        self
    }

    /// Sends it. User metadata over 2 KB is refused before anything is sent.
    pub async fn send(self) -> Result<PutOutput> {
        self.send_checked("keep user metadata small; put large data in the object body")
            .await
    }

    pub(crate) async fn send_checked(mut self, hint: &'static str) -> Result<PutOutput> {
        metadata::check_size_with_hint(&self.metadata, hint)?;
        let threshold = self.client.inner.multipart_threshold;
        let body = std::mem::replace(&mut self.body, Body::empty());
        let mut source = match body.0 {
            Inner::Bytes(b) if b.len() <= threshold => {
                return self.single(ByteSource::Bytes(b)).await;
            }
            Inner::Bytes(b) => PartSource::Bytes(b),
            // By value: a borrow of the body held across an await would make this future
            // `!Send` (a reader body is `Send` but not `Sync`), and uploads are spawned.
            Inner::Path(p) => {
                let meta = tokio::fs::metadata(&p)
                    .await
                    .map_err(|e| Error::io("cannot read", &p, e))?;
                if !meta.is_file() {
                    return Err(Error::io(
                        "cannot upload",
                        &p,
                        std::io::Error::other("not a regular file"),
                    ));
                }
                if meta.len() <= threshold as u64 {
                    return self.single(ByteSource::Path(p)).await;
                }
                let file = tokio::fs::File::open(&p)
                    .await
                    .map_err(|e| Error::io("cannot read", &p, e))?;
                PartSource::Reader(Box::pin(file))
            }
            Inner::Reader(r) => PartSource::Reader(r.into_inner()),
        };
        // A stream of unknown length: read up to the threshold first to see whether it fits.
        if let PartSource::Reader(r) = &mut source {
            let first = read_up_to(r.as_mut(), threshold + 1).await?;
            if first.len() <= threshold {
                return self.single(ByteSource::Bytes(first)).await;
            }
            source = PartSource::Prefixed(
                Some(first),
                std::mem::replace(r, Box::pin(tokio::io::empty())),
            );
        }
        self.multipart(source).await
    }

    async fn single(self, body: ByteSource) -> Result<PutOutput> {
        let inner = &self.client.inner;
        let meta = self.metadata.clone().into_iter().collect();
        let out = self
            .client
            .call("PutObject", &self.key, || {
                let meta = &meta;
                let body = &body;
                async {
                    let stream = body
                        .stream()
                        .await
                        .map_err(aws_sdk_s3::error::SdkError::construction_failure)?;
                    inner
                        .s3
                        .put_object()
                        .bucket(&inner.bucket)
                        .key(&self.key)
                        .set_content_type(self.content_type.clone())
                        .set_metadata(Some(std::collections::HashMap::clone(meta)))
                        .body(stream)
                        .send()
                        .await
                }
            })
            .await?;
        Ok(PutOutput {
            key: self.key,
            etag: out.e_tag().map(str::to_owned),
            multipart: false,
        })
    }

    async fn multipart(self, mut source: PartSource) -> Result<PutOutput> {
        let inner = &self.client.inner;
        let meta: std::collections::HashMap<String, String> =
            self.metadata.clone().into_iter().collect();
        let created = self
            .client
            .call("CreateMultipartUpload", &self.key, || {
                inner
                    .s3
                    .create_multipart_upload()
                    .bucket(&inner.bucket)
                    .key(&self.key)
                    .set_content_type(self.content_type.clone())
                    .set_metadata(Some(meta.clone()))
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .send()
            })
            .await?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| Error::S3 {
                operation: "CreateMultipartUpload",
                key: self.key.clone(),
                code: None,
                status: None,
                message: "the server returned no upload id".into(),
            })?
            .to_owned();
        let result = self.upload_parts(&upload_id, &mut source).await;
        match result {
            Ok(etag) => Ok(PutOutput {
                key: self.key,
                etag,
                multipart: true,
            }),
            Err(e) => {
                // Nothing becomes visible without Complete; Abort frees the stored parts.
                let aborted = self
                    .client
                    .call("AbortMultipartUpload", &self.key, || {
                        inner
                            .s3
                            .abort_multipart_upload()
                            .bucket(&inner.bucket)
                            .key(&self.key)
                            .upload_id(&upload_id)
                            .send()
                    })
                    .await;
                if let Err(abort) = aborted {
                    tracing::warn!(key = %self.key, error = %abort, "could not abort a failed multipart upload");
                }
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        upload_id: &str,
        source: &mut PartSource,
    ) -> Result<Option<String>> {
        let inner = &self.client.inner;
        let mut parts = Vec::new();
        let mut number = 1;
        while let Some(chunk) = source.next(inner.part_size).await? {
            let out = self
                .client
                .call("UploadPart", &self.key, || {
                    inner
                        .s3
                        .upload_part()
                        .bucket(&inner.bucket)
                        .key(&self.key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .checksum_algorithm(ChecksumAlgorithm::Crc32)
                        .body(ByteStream::from(chunk.clone()))
                        .send()
                })
                .await?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                    .build(),
            );
            number += 1;
        }
        let completed = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        let out = self
            .client
            .call("CompleteMultipartUpload", &self.key, || {
                inner
                    .s3
                    .complete_multipart_upload()
                    .bucket(&inner.bucket)
                    .key(&self.key)
                    .upload_id(upload_id)
                    .multipart_upload(completed.clone())
                    .send()
            })
            .await?;
        Ok(out.e_tag().map(str::to_owned))
    }
}

/// A body for a single PutObject; re-creatable so the request can be retried.
enum ByteSource {
    Bytes(Bytes),
    Path(std::path::PathBuf),
}

impl ByteSource {
    async fn stream(&self) -> Result<ByteStream, aws_smithy_types::byte_stream::error::Error> {
        match self {
            ByteSource::Bytes(b) => Ok(ByteStream::from(b.clone())),
            ByteSource::Path(p) => ByteStream::from_path(p).await,
        }
    }
}

enum PartSource {
    Bytes(Bytes),
    Reader(Pin<Box<dyn AsyncRead + Send>>),
    Prefixed(Option<Bytes>, Pin<Box<dyn AsyncRead + Send>>),
}

impl PartSource {
    /// The next part of at most `size` bytes (every part but the last is exactly `size`).
    async fn next(&mut self, size: usize) -> Result<Option<Bytes>> {
        match self {
            PartSource::Bytes(b) if b.is_empty() => Ok(None),
            PartSource::Bytes(b) => Ok(Some(b.split_to(size.min(b.len())))),
            PartSource::Reader(r) => {
                let chunk = read_up_to(r.as_mut(), size).await?;
                Ok((!chunk.is_empty()).then_some(chunk))
            }
            PartSource::Prefixed(prefix, r) => {
                let mut buf = BytesMut::with_capacity(size);
                if let Some(mut p) = prefix.take() {
                    if p.len() > size {
                        let rest = p.split_off(size);
                        *prefix = Some(rest);
                        return Ok(Some(p));
                    }
                    buf.extend_from_slice(&p);
                }
                let more = read_up_to(r.as_mut(), size - buf.len()).await?;
                buf.extend_from_slice(&more);
                Ok((!buf.is_empty()).then(|| buf.freeze()))
            }
        }
    }
}

/// Reads until `limit` bytes or the end of the stream.
async fn read_up_to(mut r: Pin<&mut (dyn AsyncRead + Send)>, limit: usize) -> Result<Bytes> {
    let mut buf = BytesMut::with_capacity(limit.min(8 * 1024 * 1024));
    while buf.len() < limit {
        let want = (limit - buf.len()).min(256 * 1024);
        let mut chunk = (&mut r).take(want as u64);
        let n = chunk.read_buf(&mut buf).await.map_err(Error::Body)?;
        if n == 0 {
            break;
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use crate::{Body, Client};

    fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}

    /// Uploads are spawned onto runtimes (`tokio::spawn` needs a `Send` future) whatever the
    /// body: bytes, a file or a reader.
    #[test]
    fn an_upload_future_is_send_for_every_kind_of_body() {
        let client = Client::builder()
            .bucket("b")
            .endpoint("http://127.0.0.1:9")
            .credentials_provider(crate::credentials::StaticProvider::new(
                crate::credentials::Credentials::new("a", "s", None, None),
            ))
            .build()
            .expect("client");
        spawnable(client.put("k", Body::from(vec![1u8])).send());
        spawnable(client.put("k", Body::from_path("/nonexistent")).send());
        spawnable(
            client
                .put("k", Body::from_reader(tokio::io::empty()))
                .send(),
        );
    }
}
