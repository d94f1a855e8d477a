//! The one error type of the task runtime.

use std::path::PathBuf;

/// A specialised `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the task runtime.
///
/// Messages say what was wrong, where, and what was expected; they never contain a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `line_D` is not set: the program was not started by the engine.
    #[error(
        "`line_D` is not set: `{exe}` is a linedee task app, meant to be started by the \
         linedee engine (or line^d), which passes the task's identity in `line_D`. To run a \
         task by hand, set it and your store's `LD_*` variables yourself, e.g. \
         `line_D='{{\"task_id\":\"manual.0.0\"}}' {exe} {task}` (`{exe} list` shows the tasks)"
    )]
    MissingLineD {
        /// The program's name, for the example command line.
        exe: String,
        /// The task's name, or `<task>`.
        task: String,
    },

    /// `line_D` is not JSON at all.
    #[error("`line_D` is not valid JSON (line {line}, column {column}): {message}")]
    LineDSyntax {
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column of the syntax error.
        column: usize,
        /// What the parser expected.
        message: String,
    },

    /// `line_D` is JSON, but one of its fields is missing or has the wrong type.
    #[error("`line_D` field `{field}`: expected {expected}, found {found}")]
    LineDField {
        /// The field's JSON path, e.g. `attempt` or `options.dir`; `$` for the whole value.
        field: String,
        /// What the field should hold.
        expected: &'static str,
        /// What it holds (or `nothing`).
        found: String,
    },

    /// An option the task needs is not set.
    #[error("option `{name}` is not set: add `{name}=…` to the task's `options`")]
    MissingOption {
        /// The option's name.
        name: String,
    },

    /// An option's value does not parse as the requested type.
    #[error("option `{name}` = {value:?} is not a valid {expected}: {message}")]
    InvalidOption {
        /// The option's name.
        name: String,
        /// Its value.
        value: String,
        /// The type asked for.
        expected: &'static str,
        /// The parser's message.
        message: String,
    },

    /// The run has no trigger object to read.
    #[error(
        "this task has no input: `line_D` has no `trigger_key` (input is the object that \
         started the run, e.g. the media file of an `ld_code` trigger)"
    )]
    NoInput,

    /// The trigger object was replaced after the run started.
    #[error(
        "the input `{key}` changed since the run started: its ETag is now \"{found}\", the \
         run was started by ETag \"{expected}\""
    )]
    InputChanged {
        /// The trigger key.
        key: String,
        /// The ETag in `line_D`, without quotes.
        expected: String,
        /// The ETag found now, without quotes.
        found: String,
    },

    /// The output was already written by this task.
    #[error("the output `{key}` was already written by this task; a task writes it once")]
    OutputAlreadyWritten {
        /// The output key.
        key: String,
    },

    /// `ld_task_id` plus `ld_state` do not fit S3's metadata budget.
    #[error(
        "the output's metadata (`ld_task_id` and `ld_state`) is {size} bytes, over S3's \
         {limit}-byte limit: keep the state small and put data in the output body"
    )]
    StateTooLarge {
        /// UTF-8 bytes of every key plus value.
        size: usize,
        /// The limit, 2048.
        limit: usize,
    },

    /// A value could not be serialised to JSON.
    #[error("cannot serialise the output {what} to JSON")]
    Serialize {
        /// `body` or `state`.
        what: &'static str,
        /// The serialiser's error.
        #[source]
        source: serde_json::Error,
    },

    /// A local file could not be read or written.
    #[error("{action} `{}`", path.display())]
    Io {
        /// What we were doing (`cannot read` …).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The tokio runtime could not be started.
    #[error("cannot start the tokio runtime")]
    Runtime(#[source] std::io::Error),

    /// An error of the linedee SDK (S3, credentials, metadata).
    #[error(transparent)]
    Sdk(#[from] linedee::Error),
}
