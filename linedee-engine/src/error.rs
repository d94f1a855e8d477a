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
    /// A file of the app (Procfile, `.env`, app directory) could not be read.
    #[error("{action} {}", path.display())]
    File {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Procfile text is malformed.
    #[error("Procfile line {line}: {message}")]
    Procfile {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A Procfile on disk is malformed.
    #[error("{}:{line}: {message}", path.display())]
    ProcfileAt {
        /// The Procfile.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// `.env` text is malformed.
    #[error(".env line {line}: {message}")]
    Dotenv {
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A `.env` file on disk is malformed.
    #[error("{}:{line}: {message}", path.display())]
    DotenvAt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// There is no run with this id.
    #[error("no run `{0}`")]
    RunNotFound(String),
    /// The run already finished, so it cannot be cancelled.
    #[error("run `{run_id}` already finished ({status})")]
    RunFinished {
        /// The run.
        run_id: String,
        /// Its final status.
        status: String,
    },
    /// Only failed or cancelled runs can be retried.
    #[error("run `{run_id}` is {status}; only failed or cancelled runs can be retried")]
    NotRetryable {
        /// The run.
        run_id: String,
        /// Its status.
        status: String,
    },
    /// The run's workflow was invalid, so there is nothing to retry; fix it and submit again.
    #[error("run `{run_id}` has an invalid workflow; fix it and submit it again: {error}")]
    InvalidWorkflow {
        /// The run.
        run_id: String,
        /// The validation report.
        error: String,
    },
    /// A bucket reached through the SDK's client failed.
    #[error("the bucket failed")]
    Bucket(#[source] linedee::Error),
    /// The journal (where runs' records are kept) failed.
    #[error("the journal failed")]
    Journal(#[from] JournalError),
    /// An internal task of the engine failed.
    #[error("engine internal error: {0}")]
    Internal(String),
    /// A blocking store task was cancelled or panicked.
    #[error("a blocking store task did not complete")]
    Join(#[from] tokio::task::JoinError),
}

/// What went wrong in the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Its SQLite database failed.
    #[error("the journal's SQLite database failed")]
    Sqlite(#[source] rusqlite::Error),
    /// A blocking journal task was cancelled or panicked.
    #[error("a journal task did not complete: {0}")]
    Task(String),
    /// A stored run record is not one this version can read (edited by hand, damaged, or of
    /// another format version).
    #[error("the stored record of run `{run_id}` cannot be read: {reason}")]
    Unreadable {
        /// The run.
        run_id: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::File`].
    pub(crate) fn file(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::File {
            action,
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
