//! The task's output: `out/{task_id}` with `ld_task_id` and, optionally, `ld_state`.
//!
//! [`Output`] is a value (a body, a content type, a state) that a handler can return;
//! [`OutputBuilder`] (from [`TaskContext::output`]) writes one right away. Either way the
//! output is written once per task.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::pin::Pin;

use bytes::Bytes;
use serde::Serialize;
use tokio::io::AsyncRead;

use crate::context::TaskContext;
use crate::error::{Error, Result};

/// The metadata key proving which task an output belongs to.
pub const LD_TASK_ID: &str = "ld_task_id";
/// The metadata key of the task's small JSON state record.
pub const LD_STATE: &str = "ld_state";

/// A task's output: a body, a content type and an optional state.
///
/// Return it from a handler, or write it with [`TaskContext::output`]. Serialisation errors
/// (of a JSON body or the state) are kept and reported when the output is written.
///
/// ```
/// use linedee_task::Output;
/// let out = Output::json(&vec![1, 2, 3])
///     .state(&serde_json::json!({ "num_records": 3 }))
///     .content_type("application/json; charset=utf-8");
/// # let _ = out;
/// ```
#[must_use]
pub struct Output {
    body: OutputBody,
    content_type: Option<String>,
    state: Option<Result<String>>,
    error: Option<Error>,
}

enum OutputBody {
    Bytes(Bytes),
    File(PathBuf),
    Stream(Pin<Box<dyn AsyncRead + Send>>),
}

impl Output {
    /// An empty body (the output only proves the task succeeded).
    pub fn empty() -> Self {
        Output {
            body: OutputBody::Bytes(Bytes::new()),
            content_type: None,
            state: None,
            error: None,
        }
    }

    /// A JSON body, `application/json`.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        let mut out = Output::empty();
        match serde_json::to_vec(value) {
            Ok(json) => out.body = OutputBody::Bytes(json.into()),
            Err(source) => {
                out.error = Some(Error::Serialize {
                    what: "body",
                    source,
                })
            }
        }
        out.content_type("application/json")
    }

    /// A body of bytes (or a `String`), `application/octet-stream` unless set.
    pub fn bytes(body: impl Into<Bytes>) -> Self {
        let mut out = Output::empty();
        out.body = OutputBody::Bytes(body.into());
        out
    }

    /// The contents of a file, read when the output is written; large files go multipart.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        let mut out = Output::empty();
        out.body = OutputBody::File(path.into());
        out
    }

    /// A stream of unknown length, uploaded in parts with bounded memory.
    pub fn stream(reader: impl AsyncRead + Send + 'static) -> Self {
        let mut out = Output::empty();
        out.body = OutputBody::Stream(Box::pin(reader));
        out
    }

    /// Sets the content type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    /// Sets the state: any `Serialize`, written as compact ASCII-only JSON in `ld_state`.
    /// Together with `ld_task_id` it must fit S3's 2 KB of metadata.
    pub fn state<S: Serialize + ?Sized>(mut self, state: &S) -> Self {
        self.state = Some(
            linedee::metadata::ascii_json(state).map_err(|err| match err {
                linedee::Error::Serialize { source, .. } => Error::Serialize {
                    what: "state",
                    source,
                },
                other => Error::Sdk(other),
            }),
        );
        self
    }

    /// Is this an empty body without a state?
    pub(crate) fn is_empty(&self) -> bool {
        matches!(&self.body, OutputBody::Bytes(b) if b.is_empty()) && self.state.is_none()
    }

    /// Writes the output for `ctx`, once.
    pub(crate) async fn write(self, ctx: &TaskContext) -> Result<()> {
        let key = ctx.output_key();
        if !ctx.claim_output() {
            return Err(Error::OutputAlreadyWritten { key });
        }
        let result = self.put(ctx, &key).await;
        if result.is_err() {
            ctx.release_output();
        }
        result
    }

    async fn put(self, ctx: &TaskContext, key: &str) -> Result<()> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let mut metadata = BTreeMap::new();
        metadata.insert(LD_TASK_ID.to_owned(), ctx.task_id().to_owned());
        if let Some(state) = self.state {
            metadata.insert(LD_STATE.to_owned(), state?);
        }
        let size = linedee::metadata::size(&metadata);
        if size > linedee::metadata::LIMIT {
            return Err(Error::StateTooLarge {
                size,
                limit: linedee::metadata::LIMIT,
            });
        }
        let client = ctx.client()?;
        let (body, default_type) = match self.body {
            OutputBody::Bytes(b) if b.is_empty() => (linedee::Body::from(b), None),
            OutputBody::Bytes(b) => (linedee::Body::from(b), Some("application/octet-stream")),
            OutputBody::File(path) => (
                linedee::Body::from_path(path),
                Some("application/octet-stream"),
            ),
            OutputBody::Stream(reader) => (
                linedee::Body::from_reader(reader),
                Some("application/octet-stream"),
            ),
        };
        let mut put = client.put(key.to_owned(), body);
        if let Some(ct) = self.content_type.as_deref().or(default_type) {
            put = put.content_type(ct);
        }
        for (k, v) in metadata {
            put = put.metadata(k, v);
        }
        put.send().await?;
        tracing::info!(key, task_id = ctx.task_id(), "output written");
        Ok(())
    }
}

impl Default for Output {
    fn default() -> Self {
        Output::empty()
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = match &self.body {
            OutputBody::Bytes(b) => format!("{} bytes", b.len()),
            OutputBody::File(p) => format!("file {}", p.display()),
            OutputBody::Stream(_) => "stream".to_owned(),
        };
        f.debug_struct("Output")
            .field("body", &body)
            .field("content_type", &self.content_type)
            .field("state", &self.state.as_ref().map(|s| s.as_ref().ok()))
            .finish()
    }
}

/// Writes the task's output now: `ctx.output().json(&v).state(&s).send().await?`.
///
/// The body defaults to empty. After a successful `send` the runtime does not write
/// another output from the handler's return value.
#[must_use = "the output is only written by `.send().await`"]
pub struct OutputBuilder {
    ctx: TaskContext,
    output: Output,
}

impl OutputBuilder {
    pub(crate) fn new(ctx: TaskContext) -> Self {
        OutputBuilder {
            ctx,
            output: Output::empty(),
        }
    }

    fn body(mut self, new: Output) -> Self {
        self.output.body = new.body;
        if new.content_type.is_some() {
            self.output.content_type = new.content_type;
        }
        if new.error.is_some() {
            self.output.error = new.error;
        }
        self
    }

    /// A JSON body, `application/json` unless set.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Self {
        self.body(Output::json(value))
    }

    /// A body of bytes.
    pub fn bytes(self, body: impl Into<Bytes>) -> Self {
        self.body(Output::bytes(body))
    }

    /// The contents of a file; large files go multipart.
    pub fn file(self, path: impl Into<PathBuf>) -> Self {
        self.body(Output::file(path))
    }

    /// A stream, uploaded in parts with bounded memory.
    pub fn stream(self, reader: impl AsyncRead + Send + 'static) -> Self {
        self.body(Output::stream(reader))
    }

    /// Sets the content type.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.output = self.output.content_type(content_type);
        self
    }

    /// Sets the state (see [`Output::state`]).
    pub fn state<S: Serialize + ?Sized>(mut self, state: &S) -> Self {
        self.output = self.output.state(state);
        self
    }

    /// Writes `out/{task_id}`. Fails if the output was already written, if the state does
    /// not fit the 2 KB metadata budget, or if S3 fails; on failure it can be sent again.
    pub async fn send(self) -> Result<()> {
        self.output.write(&self.ctx).await
    }
}

impl fmt::Debug for OutputBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputBuilder")
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

/// A JSON body as a handler's return value: `Ok(Json(records))`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Json<T>(pub T);

/// What a handler's `Ok` value turns into when the runtime writes the output.
///
/// `()` gives an empty body, [`Json`] a JSON body, and an [`Output`] is used as it is.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a task's output",
    label = "the `Ok` value of a task",
    note = "return `Ok(())` (empty body), `Ok(Json(value))` (a JSON body) or `Ok(Output::…)`"
)]
pub trait IntoOutput {
    /// The output to write.
    fn into_output(self) -> Output;
}

impl IntoOutput for () {
    fn into_output(self) -> Output {
        Output::empty()
    }
}

impl<T: Serialize> IntoOutput for Json<T> {
    fn into_output(self) -> Output {
        Output::json(&self.0)
    }
}

impl IntoOutput for Output {
    fn into_output(self) -> Output {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> TaskContext {
        TaskContext::from_line_d(r#"{"task_id":"R.0.0"}"#).unwrap()
    }

    fn write_now(output: Output, ctx: &TaskContext) -> Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(output.write(ctx))
    }

    #[test]
    fn state_is_compact_ascii_json() {
        let out = Output::empty().state(&serde_json::json!({ "city": "Zürich", "n": 1 }));
        let state = out.state.unwrap().unwrap();
        assert_eq!(state, r#"{"city":"Z\u00fcrich","n":1}"#);
    }

    #[test]
    fn an_oversized_state_fails_before_any_request_and_can_be_retried() {
        let ctx = ctx();
        let big = "x".repeat(linedee::metadata::LIMIT);
        let err = write_now(Output::empty().state(&big), &ctx).unwrap_err();
        assert!(
            matches!(err, Error::StateTooLarge { size, limit: 2048 } if size == 2048 + 2 + 10 + 8 + 5)
        );
        assert!(
            err.to_string().contains("over S3's 2048-byte limit"),
            "{err}"
        );
        assert!(!ctx.output_written(), "a failed write does not count");
    }

    #[test]
    fn serialisation_errors_name_the_part() {
        let bad: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let err = write_now(Output::empty().state(&bad), &ctx()).unwrap_err();
        assert_eq!(err.to_string(), "cannot serialise the output state to JSON");
        let err = write_now(Output::json(&bad), &ctx()).unwrap_err();
        assert_eq!(err.to_string(), "cannot serialise the output body to JSON");
    }

    #[test]
    fn a_second_write_is_refused() {
        let ctx = ctx();
        assert!(ctx.claim_output());
        let err = write_now(Output::empty(), &ctx).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the output `out/R.0.0` was already written by this task; a task writes it once"
        );
    }

    #[test]
    fn return_values_become_outputs() {
        assert!(().into_output().is_empty());
        let json = Json(vec![1]).into_output();
        assert_eq!(json.content_type.as_deref(), Some("application/json"));
        assert!(matches!(&json.body, OutputBody::Bytes(b) if b.as_ref() == b"[1]"));
        let own = Output::bytes("x").content_type("text/plain").into_output();
        assert_eq!(own.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn the_builder_keeps_state_and_type_across_bodies() {
        let b = ctx()
            .output()
            .state(&1)
            .content_type("text/csv")
            .bytes("a,b\n");
        assert_eq!(b.output.content_type.as_deref(), Some("text/csv"));
        assert_eq!(
            b.output.state.as_ref().map(|s| s.as_deref().ok()),
            Some(Some("1"))
        );
        let b = b.json(&[1]);
        assert_eq!(b.output.content_type.as_deref(), Some("application/json"));
    }
}
