//! Reading objects: [`Object`] and [`Client::get`] / [`Client::head`].

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::client::Client;
use crate::error::{Error, Result};

/// An object's metadata, from a HEAD or a GET.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// The key.
    pub key: String,
    /// User metadata, keys lowercase, RFC 2047 values decoded.
    pub metadata: BTreeMap<String, String>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// Size in bytes.
    pub content_length: Option<u64>,
    /// ETag, quotes included.
    pub etag: Option<String>,
}

/// An object being read: its metadata and a streaming body.
#[derive(Debug)]
pub struct Object {
    info: ObjectInfo,
    body: ByteStream,
}

impl Object {
    /// Its metadata.
    pub fn info(&self) -> &ObjectInfo {
        &self.info
    }

    /// User metadata (decoded).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.info.metadata
    }

    /// `Content-Type`.
    pub fn content_type(&self) -> Option<&str> {
        self.info.content_type.as_deref()
    }

    /// Size in bytes.
    pub fn content_length(&self) -> Option<u64> {
        self.info.content_length
    }

    /// ETag, quotes included.
    pub fn etag(&self) -> Option<&str> {
        self.info.etag.as_deref()
    }

    /// The body as a stream.
    pub fn into_reader(self) -> impl AsyncRead + Send + Unpin {
        self.body.into_async_read()
    }

    /// The whole body in memory. Prefer [`save_to`](Self::save_to) for large objects.
    pub async fn bytes(self) -> Result<Bytes> {
        self.body
            .collect()
            .await
            .map(|d| d.into_bytes())
            .map_err(|e| Error::Body(std::io::Error::other(e)))
    }

    /// Streams the body to `path` (through a temporary file renamed at the end, so a partial
    /// file is never left at `path`). Returns the bytes written.
    pub async fn save_to(self, path: impl AsRef<Path>) -> Result<u64> {
        let path = path.as_ref();
        let tmp = temp_sibling(path);
        let result = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| Error::io("cannot create", &tmp, e))?;
            let mut reader = self.body.into_async_read();
            let n = tokio::io::copy(&mut reader, &mut file)
                .await
                .map_err(|e| Error::io("cannot write", &tmp, e))?;
            file.flush()
                .await
                .map_err(|e| Error::io("cannot write", &tmp, e))?;
            file.sync_all()
                .await
                .map_err(|e| Error::io("cannot sync", &tmp, e))?;
            tokio::fs::rename(&tmp, path)
                .await
                .map_err(|e| Error::io("cannot rename into", path, e))?;
            Ok(n)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

pub(crate) fn temp_sibling(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.part", ulid::Ulid::new()))
}

impl Client {
    /// Reads an object. A missing key is [`Error::NotFound`].
    pub async fn get(&self, key: &str) -> Result<Object> {
        let s3 = &self.inner.s3;
        let out = self
            .call("GetObject", key, || {
                s3.get_object().bucket(&self.inner.bucket).key(key).send()
            })
            .await?;
        let info = ObjectInfo {
            key: key.to_owned(),
            metadata: Client::user_metadata(out.metadata()),
            content_type: out.content_type().map(str::to_owned),
            content_length: out.content_length().and_then(|l| u64::try_from(l).ok()),
            etag: out.e_tag().map(str::to_owned),
        };
        Ok(Object {
            info,
            body: out.body,
        })
    }

    /// Reads an object's metadata. A missing key is [`Error::NotFound`].
    pub async fn head(&self, key: &str) -> Result<ObjectInfo> {
        let s3 = &self.inner.s3;
        let out = self
            .call("HeadObject", key, || {
                s3.head_object().bucket(&self.inner.bucket).key(key).send()
            })
            .await?;
        Ok(ObjectInfo {
            key: key.to_owned(),
            metadata: Client::user_metadata(out.metadata()),
            content_type: out.content_type().map(str::to_owned),
            content_length: out.content_length().and_then(|l| u64::try_from(l).ok()),
            etag: out.e_tag().map(str::to_owned),
        })
    }
}
