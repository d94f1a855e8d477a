//! Exit codes, the error classes that choose them, and how errors are printed.

use std::fmt;

/// Success.
pub(crate) const OK: u8 = 0;
/// The run failed or was cancelled (with `--wait` / `--watch`), or another failure.
pub(crate) const FAILURE: u8 = 1;
/// Usage error or bad input.
pub(crate) const BAD_INPUT: u8 = 2;
/// An unknown run, task, attempt or log.
pub(crate) const NOT_FOUND: u8 = 3;
/// The store or the dashboard cannot be reached.
pub(crate) const UNREACHABLE: u8 = 4;

/// An error with a chosen exit code; its message says what to do.
#[derive(Debug)]
pub(crate) struct Coded {
    code: u8,
    message: String,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// Bad input (exit 2).
pub(crate) fn bad_input(message: impl Into<String>) -> anyhow::Error {
    coded(BAD_INPUT, message)
}

/// Not found (exit 3).
pub(crate) fn not_found(message: impl Into<String>) -> anyhow::Error {
    coded(NOT_FOUND, message)
}

/// Cannot reach the store or the dashboard (exit 4).
pub(crate) fn unreachable(message: impl Into<String>) -> anyhow::Error {
    coded(UNREACHABLE, message)
}

fn coded(code: u8, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        message: message.into(),
    })
}

/// The exit code for an error: the first [`Coded`] or SDK error in its chain decides.
pub(crate) fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.code;
        }
        if let Some(e) = cause.downcast_ref::<linedee::Error>() {
            return sdk_code(e);
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return BAD_INPUT;
        }
    }
    FAILURE
}

fn sdk_code(e: &linedee::Error) -> u8 {
    use linedee::Error as E;
    match e {
        E::Json { .. } | E::Invalid(_) | E::InvalidRunId(_) | E::MetadataTooLarge { .. } => {
            BAD_INPUT
        }
        E::Io { .. } | E::Body(_) => BAD_INPUT,
        E::NotFound { .. } | E::RunNotFound { .. } => NOT_FOUND,
        E::MissingEnv { .. } | E::Config(_) | E::Credentials { .. } => UNREACHABLE,
        // No response at all, or the store refused the credentials or the bucket.
        E::S3 { status: None, .. } => UNREACHABLE,
        E::S3 {
            code: Some(code), ..
        } if matches!(
            code.as_str(),
            "AccessDenied"
                | "NoSuchBucket"
                | "InvalidAccessKeyId"
                | "ExpiredToken"
                | "SignatureDoesNotMatch"
        ) =>
        {
            UNREACHABLE
        }
        _ => FAILURE,
    }
}

/// Prints an error to stderr: `error: ` and its causes on one line, never a backtrace. A
/// multi-line message (every problem of a workflow) keeps its lines.
pub(crate) fn report(e: &anyhow::Error) {
    eprintln!("error: {e:#}");
}
