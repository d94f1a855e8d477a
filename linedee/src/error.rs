//! The one error type of the SDK.

use std::path::PathBuf;

use crate::validate::ValidationError;

/// A specialised `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the SDK.
///
/// Messages say what was wrong and what to do; they never contain a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A required environment variable is not set (or is empty).
    #[error("environment variable `{name}` is not set; {hint}")]
    MissingEnv {
        /// The variable's name.
        name: &'static str,
        /// What to do about it.
        hint: &'static str,
    },

    /// A client setting is missing or malformed.
    #[error("invalid client configuration: {0}")]
    Config(String),

    /// The text is not JSON at all.
    #[error("workflow is not valid JSON (line {line}, column {column}): {message}")]
    Json {
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column of the syntax error.
        column: usize,
        /// What the parser expected.
        message: String,
    },

    /// The workflow has one or more problems, each with its JSON path.
    #[error(transparent)]
    Invalid(#[from] ValidationError),

    /// User metadata is over S3's 2 KB budget.
    #[error("user metadata is {size} bytes, over the {limit}-byte limit of S3; {hint}")]
    MetadataTooLarge {
        /// UTF-8 bytes of every key plus value.
        size: usize,
        /// The limit, 2048.
        limit: usize,
        /// What to do about it.
        hint: &'static str,
    },

    /// A value could not be serialised to JSON.
    #[error("cannot serialise {what} to JSON")]
    Serialize {
        /// What was being serialised.
        what: &'static str,
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },

    /// Credentials could not be obtained from a provider.
    #[error("cannot get credentials from {provider}: {message}")]
    Credentials {
        /// Which provider failed.
        provider: String,
        /// Why, without any secret.
        message: String,
    },

    /// S3 answered with an error (after retries and one credential refresh).
    #[error("S3 {operation} on `{key}` failed: {message}")]
    S3 {
        /// The S3 operation, e.g. `PutObject`.
        operation: &'static str,
        /// The bucket key (or bucket name for bucket operations).
        key: String,
        /// The S3 error code, when the server sent one (`AccessDenied`, `NoSuchKey` …).
        code: Option<String>,
        /// The HTTP status, when a response arrived.
        status: Option<u16>,
        /// A readable explanation, including what to do for common codes.
        message: String,
    },

    /// The object does not exist.
    #[error("no object at `{key}` in bucket `{bucket}`")]
    NotFound {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
    },

    /// There is no status document for this run (yet).
    #[error("no run `{run_id}`: `ld/runs/{run_id}.json` does not exist in the bucket")]
    RunNotFound {
        /// The run id.
        run_id: String,
    },

    /// A document read from the bucket is not in the expected shape.
    #[error("`{key}` is not a valid {what}")]
    Malformed {
        /// Its key.
        key: String,
        /// What it should have been.
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// An output object does not carry the task id it should.
    #[error("`{key}` is not the output of task `{task_id}`: its `ld_task_id` is {found:?}")]
    OutputMismatch {
        /// The output key.
        key: String,
        /// The task id expected.
        task_id: String,
        /// The `ld_task_id` found, if any.
        found: Option<String>,
    },

    /// `Submission::wait` gave up before the run finished.
    #[error("run `{run_id}` did not finish within {waited:?} (last status: {last_status})")]
    WaitTimeout {
        /// The run id.
        run_id: String,
        /// How long we waited.
        waited: std::time::Duration,
        /// The last status seen (`unknown` if the status document never appeared).
        last_status: String,
    },

    /// A run id does not match `[0-9A-Za-z_-]{1,64}`.
    #[error("invalid run id {0:?}: expected 1 to 64 characters of [0-9A-Za-z_-]")]
    InvalidRunId(String),

    /// A local file could not be read or written.
    #[error("{action} `{}`", path.display())]
    Io {
        /// What we were doing (`cannot read`, `cannot create` …).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A stream body failed while being read.
    #[error("cannot read the upload body")]
    Body(#[source] std::io::Error),

    /// A stored or received state name is not one this version knows.
    #[error("unknown {what} state `{value}`: expected one of {expected}")]
    UnknownState {
        /// `run` or `task`.
        what: &'static str,
        /// The name that was read.
        value: String,
        /// The names this version knows.
        expected: &'static str,
    },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// The S3 error code, when this error came from S3.
    pub fn s3_code(&self) -> Option<&str> {
        match self {
            Error::S3 { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}
