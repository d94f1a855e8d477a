//! [`Input`]: the object that started the run, streamed or saved with bounded memory.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::io::AsyncRead;

use crate::context::TaskContext;
use crate::error::{Error, Result};

/// The trigger object of the run (for `ld_code`, the media or data file), opened for reading.
///
/// Obtained with [`TaskContext::input`]. The body is not read until you ask:
/// [`into_reader`](Self::into_reader) streams it and [`save_to`](Self::save_to) copies it to
/// a file, both in bounded memory; [`bytes`](Self::bytes) loads it whole (for small inputs).
pub struct Input {
    key: String,
    object: linedee::Object,
}

impl Input {
    pub(crate) async fn fetch(ctx: &TaskContext) -> Result<Self> {
        let key = ctx.trigger_key().ok_or(Error::NoInput)?.to_owned();
        let object = ctx.client()?.get(&key).await?;
        if let (Some(expected), Some(found)) = (ctx.line_d().trigger_etag.as_deref(), object.etag())
            && unquote(expected) != unquote(found)
        {
            return Err(Error::InputChanged {
                key,
                expected: unquote(expected).to_owned(),
                found: unquote(found).to_owned(),
            });
        }
        Ok(Input { key, object })
    }

    /// The object's key, `line_D`'s `trigger_key`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The object's user metadata (keys lowercase, values decoded).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        self.object.metadata()
    }

    /// The object's content type, if it has one.
    pub fn content_type(&self) -> Option<&str> {
        self.object.content_type()
    }

    /// The object's size in bytes, when S3 said.
    pub fn content_length(&self) -> Option<u64> {
        self.object.content_length()
    }

    /// The body as a stream.
    pub fn into_reader(self) -> impl AsyncRead + Send + Unpin {
        self.object.into_reader()
    }

    /// Writes the body to `path` (created or truncated); returns the number of bytes.
    pub async fn save_to(self, path: impl AsRef<Path>) -> Result<u64> {
        Ok(self.object.save_to(path.as_ref()).await?)
    }

    /// The whole body in memory. Prefer [`into_reader`](Self::into_reader) or
    /// [`save_to`](Self::save_to) for anything large.
    pub async fn bytes(self) -> Result<bytes::Bytes> {
        Ok(self.object.bytes().await?)
    }
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("key", &self.key)
            .field("content_type", &self.content_type())
            .field("content_length", &self.content_length())
            .finish_non_exhaustive()
    }
}

/// ETags compare without their quotes (`"abc"` and `abc` are the same).
fn unquote(etag: &str) -> &str {
    etag.trim().trim_matches('"')
}
