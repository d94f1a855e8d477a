//! Writing objects: [`Put`], single-request or multipart with bounded memory.

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;

use crate::body::{Body, Inner};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::metadata;
use crate::parts::{PartSource, read_up_to, upload_part};

/// A write of one object; see [`Client::put`].
#[derive(Debug)]
#[must_use = "a Put does nothing until `.send().await`"]
pub struct Put {
    client: Client,
    pub(crate) key: String,
    body: Body,
    content_type: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
    progress: Option<Progress>,
}

/// A progress callback: bytes written so far.
#[derive(Clone)]
struct Progress(std::sync::Arc<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress(..)")
    }
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
    /// default) are uploaded in parts, several at once
    /// ([`ClientBuilder::upload_concurrency`](crate::ClientBuilder::upload_concurrency)): a
    /// file's parts are read as they are sent; other bodies hold at most concurrency + 1
    /// parts in memory.
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
            progress: None,
        }
    }
}

impl Put {
    pub(crate) fn client_ref(&self) -> &Client {
        &self.client
    }

    /// Called with the bytes written so far: after each part of a multipart upload (in any
    /// order of parts, the total only grows), and once at the end of a single request.
    pub fn on_progress(mut self, f: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.progress = Some(Progress(std::sync::Arc::new(f)));
        self
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
                // Each part is read from the file as it is sent (and again on a retry): no
                // part is held in memory.
                PartSource::File {
                    path: std::sync::Arc::new(p),
                    len: meta.len(),
                    offset: 0,
                }
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
        if let Some(Progress(f)) = &self.progress {
            f(body.len().await);
        }
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

    /// Uploads the parts, up to the client's upload concurrency at once (each part a task of
    /// its own, so hashing and signing run on every core while the next part is read), then
    /// completes the upload. The first failure cancels the parts in flight.
    async fn upload_parts(
        &self,
        upload_id: &str,
        source: &mut PartSource,
    ) -> Result<Option<String>> {
        let inner = &self.client.inner;
        let mut in_flight = tokio::task::JoinSet::new();
        let mut parts = Vec::new();
        let mut number = 1;
        let mut read_all = false;
        let mut done = 0u64;
        loop {
            while !read_all && in_flight.len() < inner.upload_concurrency {
                let next = match source.next(inner.part_size).await {
                    Ok(next) => next,
                    Err(e) => {
                        in_flight.shutdown().await;
                        return Err(e);
                    }
                };
                match next {
                    Some(chunk) => {
                        in_flight.spawn(upload_part(
                            self.client.clone(),
                            self.key.clone(),
                            upload_id.to_owned(),
                            number,
                            chunk,
                        ));
                        number += 1;
                    }
                    None => read_all = true,
                }
            }
            match in_flight.join_next().await {
                Some(Ok(Ok((part, len)))) => {
                    parts.push(part);
                    done += len;
                    if let Some(Progress(f)) = &self.progress {
                        f(done);
                    }
                }
                Some(Ok(Err(e))) => {
                    // The parts still in flight are stopped before the upload is aborted.
                    in_flight.shutdown().await;
                    return Err(e);
                }
                Some(Err(join)) => match join.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    // Only this loop could cancel its tasks, and it does not.
                    Err(cancelled) => {
                        return Err(Error::S3 {
                            operation: "UploadPart",
                            key: self.key.clone(),
                            code: None,
                            status: None,
                            message: cancelled.to_string(),
                        });
                    }
                },
                None => break,
            }
        }
        parts.sort_by_key(|p: &CompletedPart| p.part_number());
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
    /// Its length (0 for a file that cannot be read any more).
    async fn len(&self) -> u64 {
        match self {
            ByteSource::Bytes(b) => b.len() as u64,
            ByteSource::Path(p) => tokio::fs::metadata(p).await.map_or(0, |m| m.len()),
        }
    }

    async fn stream(&self) -> Result<ByteStream, aws_smithy_types::byte_stream::error::Error> {
        match self {
            ByteSource::Bytes(b) => Ok(ByteStream::from(b.clone())),
            ByteSource::Path(p) => ByteStream::from_path(p).await,
        }
    }
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
