//! The crate's error type: one variant per concern, each wrapping that concern's enum.

use std::path::PathBuf;

/// Everything that can go wrong in the engine, by concern.
///
/// The concern variants are transparent: an error displays (and reports its source) as the
/// concern's enum does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The embedded store failed or refused a request.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The journal (where runs' records are kept) failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The app's files (Procfile, `.env`, app directory) could not be read or are malformed.
    #[error(transparent)]
    App(#[from] AppError),
    /// A request to control a run (cancel, retry) was refused.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The Heroku Platform API (one-off dynos) failed or refused a request.
    #[error(transparent)]
    Heroku(#[from] HerokuError),
    /// Serving failed: the listener could not be used.
    #[error("serving the store failed")]
    Serve(#[source] std::io::Error),
    /// A bucket reached through the SDK's client failed.
    #[error("the bucket failed")]
    Bucket(#[source] linedee::Error),
    /// `serve` failed: an AWS request, a setting, or a run's stored state.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// An internal task of the engine failed.
    #[error("engine internal error: {0}")]
    Internal(String),
}

/// What went wrong in `serve` (line^d on AWS S3 and SQS).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudError {
    /// An S3 or SQS request failed (after the SDK's retries).
    #[error("{op} failed: {message}")]
    Request {
        /// The operation and what it was on.
        op: String,
        /// What the service or the connection said.
        message: String,
    },
    /// A setting is missing or wrong; the message says what to fix.
    #[error("{0}")]
    Config(String),
    /// A run's state was written by a newer engine: this replica leaves it alone (it is
    /// never replaced, even from the dead-letter queue); upgrade the replica.
    #[error(
        "the state of run {run_id} was written by a newer linedee (state version {version}; this replica reads {reads}): upgrade this replica"
    )]
    NewerState {
        /// The run.
        run_id: String,
        /// The state's version.
        version: u32,
        /// The version this build reads.
        reads: u32,
    },
    /// A run's stored state object cannot be read (it was edited, or written by another
    /// version).
    #[error("the state of run {run_id} (s3://{bucket}/{key}) cannot be read: {reason}")]
    State {
        /// The run.
        run_id: String,
        /// The state bucket.
        bucket: String,
        /// The state object's key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// What went wrong in the embedded store: its files, its SQLite index, or a request it refuses
/// (the refusals map to S3 error codes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
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

/// What went wrong with the app's files: its Procfile, its `.env` and its directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
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
}

/// Why a request to control a run (cancel, retry) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// There is no run with this id.
    #[error("no run `{0}`")]
    NotFound(String),
    /// The run already finished, so it cannot be cancelled.
    #[error("run `{run_id}` already finished ({status})")]
    Finished {
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
}

/// What went wrong talking to the Heroku Platform API. No variant holds the API token, and
/// none holds a log session's URL (it carries a signature).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HerokuError {
    /// Heroku answered with an error status (after the retries, for 429 and 5xx).
    #[error("Heroku answered {status} ({id}) to {request}: {message}")]
    Status {
        /// The request, e.g. `POST /apps/my-app/dynos`.
        request: String,
        /// The HTTP status.
        status: u16,
        /// Heroku's error `id`, e.g. `unauthorized` or `rate_limit` (`unknown` when absent).
        id: String,
        /// Heroku's error `message` (empty when absent).
        message: String,
    },
    /// The request could not be sent or its answer not read (the error holds no URL).
    #[error("{request} to the Heroku API failed")]
    Request {
        /// The request, e.g. `GET /apps/my-app/dynos`.
        request: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The answer is not the JSON this version expects.
    #[error("{request}: unexpected answer from the Heroku API: {reason}")]
    Unexpected {
        /// The request.
        request: String,
        /// What is wrong with the answer.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The store's SQLite index failed: a [`StoreError::Sqlite`], so `?` works in store code.
/// The journal's SQLite errors are [`JournalError::Sqlite`], converted explicitly.
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Self::Store(StoreError::Sqlite(e))
    }
}

/// A blocking store task did not complete: a [`StoreError::Join`].
impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Store(StoreError::Join(e))
    }
}

impl Error {
    /// An [`AppError::File`].
    pub(crate) fn file(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::App(AppError::File {
            action,
            path: path.into(),
            source,
        })
    }

    /// A [`StoreError::Io`] for `path`.
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Store(StoreError::Io { path, source })
    }

    /// A [`StoreError::Corrupt`]: a stored value is not what this version expects.
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        Self::Store(StoreError::Corrupt(what.into()))
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn concern_variants_display_and_source_as_their_enum() {
        let e = Error::file(
            "cannot read Procfile",
            "app/Procfile",
            std::io::Error::other("denied"),
        );
        assert_eq!(e.to_string(), "cannot read Procfile app/Procfile");
        assert_eq!(
            e.source().map(ToString::to_string).as_deref(),
            Some("denied")
        );

        let e = Error::from(RunError::NotFound("r1".to_owned()));
        assert_eq!(e.to_string(), "no run `r1`");
        assert!(e.source().is_none());
    }

    #[test]
    fn sqlite_errors_convert_to_the_store_concern() {
        let e = Error::from(rusqlite::Error::InvalidQuery);
        assert!(matches!(e, Error::Store(StoreError::Sqlite(_))), "{e:?}");
        assert_eq!(e.to_string(), "the store's SQLite index failed");
        assert!(e.source().is_some());
    }
}
