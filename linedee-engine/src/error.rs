//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory of the store could not be read or written.
    #[error("store I/O failed on {}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The SQLite index failed.
    #[error("the store's SQLite index failed")]
    Sqlite(#[from] rusqlite::Error),
    /// The credentials file in the data directory does not parse.
    #[error("credentials file {} is not valid JSON of the expected shape", path.display())]
    CredentialsFile {
        /// The credentials file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored value in the index is not what this version expects.
    #[error("the store's index holds an unexpected value: {0}")]
    Corrupt(String),
    /// The bucket does not exist.
    #[error("no such bucket `{0}`")]
    NoSuchBucket(String),
    /// A bucket name is not a valid S3 bucket name.
    #[error(
        "invalid bucket name `{name}`: expected 3-63 characters of a-z, 0-9, `.` and `-`, starting and ending with a letter or digit"
    )]
    InvalidBucketName {
        /// The rejected name.
        name: String,
    },
    /// An object key is not a valid S3 key.
    #[error("invalid object key ({len} bytes): expected 1 to 1024 bytes of UTF-8")]
    InvalidKey {
        /// The key's length in bytes.
        len: usize,
    },
    /// User metadata is larger than S3 allows.
    #[error("user metadata is {size} bytes (keys plus values); the limit is {limit} bytes")]
    MetadataTooLarge {
        /// The metadata's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The multipart upload does not exist (or belongs to another key).
    #[error("no such multipart upload `{0}`")]
    NoSuchUpload(String),
    /// A multipart completion names a part that was not uploaded or has another ETag.
    #[error("invalid part: {0}")]
    InvalidPart(String),
    /// A multipart completion lists its parts out of ascending order.
    #[error("the parts of a multipart completion must be in ascending order")]
    InvalidPartOrder,
    /// A part other than the last is smaller than 5 MiB.
    #[error("part {part} is {size} bytes; every part but the last must be at least 5 MiB")]
    EntityTooSmall {
        /// The part number.
        part: i32,
        /// Its size.
        size: u64,
    },
    /// A conditional write (`If-None-Match: *`, `If-Match`) did not hold.
    #[error("precondition failed: {0}")]
    PreconditionFailed(&'static str),
    /// Serving failed: the listener could not be used.
    #[error("serving the store failed")]
    Serve(#[source] std::io::Error),
    /// A blocking store task was cancelled or panicked.
    #[error("a blocking store task did not complete")]
    Join(#[from] tokio::task::JoinError),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
