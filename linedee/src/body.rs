//! [`Body`]: what an upload sends — bytes, a file or a stream.

use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;

use bytes::Bytes;
use tokio::io::AsyncRead;

/// An upload body. Files and streams are read part by part, so memory stays bounded.
///
/// ```
/// use linedee::Body;
/// let _ = Body::from("hello");
/// let _ = Body::from(vec![1u8, 2, 3]);
/// let _ = Body::from_path("example_img.jpg");
/// let _ = Body::from_reader(tokio::io::empty());
/// ```
pub struct Body(pub(crate) Inner);

pub(crate) enum Inner {
    Bytes(Bytes),
    Path(PathBuf),
    /// Wrapped so that a `Body` is `Sync` (the reader is only used through `&mut`): a future
    /// that borrows an upload across an await stays `Send`.
    Reader(sync_wrapper::SyncWrapper<Pin<Box<dyn AsyncRead + Send>>>),
}

impl Body {
    /// The contents of a file, read when the upload is sent.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        Body(Inner::Path(path.into()))
    }

    /// A stream of unknown length; large streams go multipart.
    pub fn from_reader(reader: impl AsyncRead + Send + 'static) -> Self {
        Body(Inner::Reader(sync_wrapper::SyncWrapper::new(Box::pin(
            reader,
        ))))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Body(Inner::Bytes(Bytes::new()))
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Bytes(b) => write!(f, "Body::Bytes({} bytes)", b.len()),
            Inner::Path(p) => write!(f, "Body::Path({})", p.display()),
            Inner::Reader(_) => f.write_str("Body::Reader"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body(Inner::Bytes(b))
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body(Inner::Bytes(v.into()))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body(Inner::Bytes(s.into()))
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body(Inner::Bytes(Bytes::from_static(s.as_bytes())))
    }
}

impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Self {
        Body(Inner::Bytes(Bytes::from_static(s)))
    }
}

impl From<()> for Body {
    fn from((): ()) -> Self {
        Body::empty()
    }
}
