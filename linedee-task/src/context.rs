//! [`TaskContext`]: who this task is (`line_D`), its options, its S3 client.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use linedee::{Client, LineD};

use crate::error::{Error, Result};
use crate::input::Input;
use crate::output::OutputBuilder;

/// The variable holding the task's identity (protocol §2.4).
pub const LINE_D: &str = "line_D";

/// Everything a running task knows about itself.
///
/// Built by the runtime from the environment (`line_D`, the options, the `LD_*` variables)
/// and handed to the `#[ld_task]` function. Cheap to clone: clones share one state, so the
/// runtime knows whether the task has written its output itself.
///
/// ```no_run
/// use linedee_task::{ld_task, TaskContext};
///
/// #[ld_task(timeout = 30)]
/// async fn resize(ctx: TaskContext) -> anyhow::Result<()> {
///     let dir = ctx.option("dir").unwrap_or_else(|| "out".into());
///     let width: u32 = ctx.option_as("width")?.unwrap_or(640);
///     let input = ctx.input().await?;
///     let n = input.save_to(format!("/tmp/{}", ctx.task_id())).await?;
///     ctx.output()
///         .json(&serde_json::json!({ "dir": dir, "width": width }))
///         .state(&serde_json::json!({ "bytes": n }))
///         .send()
///         .await?;
///     Ok(())
/// }
/// # fn main() {}
/// ```
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<Inner>,
}

struct Inner {
    line_d: LineD,
    client: OnceLock<Client>,
    output_written: AtomicBool,
}

impl TaskContext {
    /// Reads `line_D` from the environment.
    ///
    /// Fails, without panicking, when `line_D` is missing (the error explains that the
    /// program is meant to be started by the engine and how to run it by hand), not JSON,
    /// or has a field of the wrong type (the error names the field).
    pub fn from_env() -> Result<Self> {
        match std::env::var_os(LINE_D) {
            None => Err(Error::MissingLineD {
                exe: exe_name(),
                task: "<task>".to_owned(),
            }),
            Some(raw) => Self::from_line_d(&raw.to_string_lossy()),
        }
    }

    /// Parses `raw` as the text of `line_D` (for tests, and for running a task by hand).
    pub fn from_line_d(raw: &str) -> Result<Self> {
        Ok(Self::new(crate::line_d::parse(raw)?))
    }

    /// A context for an already parsed `line_D`.
    pub fn new(line_d: LineD) -> Self {
        TaskContext {
            inner: Arc::new(Inner {
                line_d,
                client: OnceLock::new(),
                output_written: AtomicBool::new(false),
            }),
        }
    }

    /// Uses `client` instead of one built from the `LD_*` variables.
    pub fn with_client(self, client: Client) -> Self {
        // A fresh context has no client yet; if one was already built, keep it.
        let _ = self.inner.client.set(client);
        self
    }

    /// The parsed `line_D`.
    pub fn line_d(&self) -> &LineD {
        &self.inner.line_d
    }

    /// The task id, `{run_id}.{step}.{task}`: the same for every attempt.
    pub fn task_id(&self) -> &str {
        &self.inner.line_d.task_id
    }

    /// The run id: `line_D`'s `run_id`, else the part of the task id before `.{step}.{task}`.
    pub fn run_id(&self) -> Option<&str> {
        if let Some(id) = self.inner.line_d.run_id.as_deref() {
            return Some(id);
        }
        let mut parts = self.task_id().rsplitn(3, '.');
        let (task, step, run) = (parts.next()?, parts.next()?, parts.next()?);
        let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (numeric(task) && numeric(step) && !run.is_empty()).then_some(run)
    }

    /// The attempt, 1 for the first (also when `line_D` does not say).
    pub fn attempt(&self) -> u32 {
        self.inner.line_d.attempt.unwrap_or(1)
    }

    /// The key of the object that started the run (the input of an `ld_code` run).
    pub fn trigger_key(&self) -> Option<&str> {
        self.inner.line_d.trigger_key.as_deref()
    }

    /// Where the output goes: `line_D`'s `output_key`, else `out/{task_id}`.
    pub fn output_key(&self) -> String {
        self.inner.line_d.output_key()
    }

    /// How long the engine waits for the output, when `line_D` says.
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.line_d.timeout.map(Duration::from_secs)
    }

    /// An option's value: `line_D`'s `options`, else the environment variable of that name
    /// (the engine sets both; line^d sets the variable).
    pub fn option(&self, name: &str) -> Option<String> {
        if let Some(v) = self.inner.line_d.options.get(name) {
            return Some(v.clone());
        }
        std::env::var(name).ok()
    }

    /// An option parsed as `T`; `Ok(None)` when it is not set, an error naming the option,
    /// its value and the type when it does not parse.
    pub fn option_as<T>(&self, name: &str) -> Result<Option<T>>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let Some(value) = self.option(name) else {
            return Ok(None);
        };
        match value.trim().parse::<T>() {
            Ok(v) => Ok(Some(v)),
            Err(err) => Err(Error::InvalidOption {
                name: name.to_owned(),
                value,
                expected: short_type_name::<T>(),
                message: err.to_string(),
            }),
        }
    }

    /// Like [`option_as`](Self::option_as), but a missing option is an error too.
    pub fn require_option<T>(&self, name: &str) -> Result<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.option_as(name)?.ok_or_else(|| Error::MissingOption {
            name: name.to_owned(),
        })
    }

    /// The SDK client, built on first use from the `LD_*` variables (`LD_S3_ENDPOINT`
    /// included; a missing one is an error naming it). Its credentials go through the SDK's
    /// refreshing cache: re-read ahead of expiry and when S3 says a token expired, so long
    /// tasks survive a rotation.
    pub fn client(&self) -> Result<&Client> {
        if let Some(client) = self.inner.client.get() {
            return Ok(client);
        }
        let client = Client::from_env()?;
        Ok(self.inner.client.get_or_init(|| client))
    }

    /// The input: the object that started the run, read from S3.
    ///
    /// For an `ld_code` run this is the media or data file the workflow was attached to.
    /// Stream it with [`Input::into_reader`] or save it with [`Input::save_to`]: neither
    /// holds the object in memory.
    pub async fn input(&self) -> Result<Input> {
        Input::fetch(self).await
    }

    /// A builder for this task's output, `out/{task_id}` with `ld_task_id` (and `ld_state`).
    pub fn output(&self) -> OutputBuilder {
        OutputBuilder::new(self.clone())
    }

    /// Has this task written its output already?
    pub fn output_written(&self) -> bool {
        self.inner.output_written.load(Ordering::SeqCst)
    }

    /// Marks the output as being written; false if it already was.
    pub(crate) fn claim_output(&self) -> bool {
        self.inner
            .output_written
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Undoes [`claim_output`](Self::claim_output) after a failed write.
    pub(crate) fn release_output(&self) {
        self.inner.output_written.store(false, Ordering::SeqCst);
    }

    /// Runs `future` to completion from a synchronous (`fn`) task.
    ///
    /// Sync tasks run on the runtime's thread outside of any `async` code, so they can
    /// wait for `input()` or `output().send()` with this.
    ///
    /// # Panics
    /// When called from `async` code (use `.await` there), as tokio's `block_on` does.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        tokio::runtime::Handle::current().block_on(future)
    }
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The client is left out: nothing secret goes to a log.
        f.debug_struct("TaskContext")
            .field("line_d", &self.inner.line_d)
            .field("output_written", &self.output_written())
            .finish_non_exhaustive()
    }
}

/// `u32` for `u32`, `PathBuf` for `std::path::PathBuf`.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    match full.find('<') {
        Some(_) => full,
        None => full.rsplit("::").next().unwrap_or(full),
    }
}

/// The program's file name, for messages and the Procfile.
pub(crate) fn exe_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| {
            std::env::args_os().next().and_then(|a| {
                std::path::Path::new(&a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
        })
        .unwrap_or_else(|| "app".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(raw: &str) -> TaskContext {
        TaskContext::from_line_d(raw).unwrap()
    }

    #[test]
    fn accessors_and_defaults() {
        let c = ctx(r#"{"task_id":"01J.1.0","options":{"dir":"out","width":"640"}}"#);
        assert_eq!(c.task_id(), "01J.1.0");
        assert_eq!(c.run_id(), Some("01J"));
        assert_eq!(c.attempt(), 1);
        assert_eq!(c.output_key(), "out/01J.1.0");
        assert_eq!(c.trigger_key(), None);
        assert_eq!(c.option("dir").as_deref(), Some("out"));
        assert_eq!(c.option_as::<u32>("width").unwrap(), Some(640));
        assert_eq!(c.option_as::<u32>("ld_task_test_unset").unwrap(), None);
        let c = ctx(r#"{"task_id":"manual","run_id":"R","attempt":3}"#);
        assert_eq!(c.run_id(), Some("R"));
        assert_eq!(c.attempt(), 3);
        assert_eq!(ctx(r#"{"task_id":"manual"}"#).run_id(), None);
    }

    #[test]
    fn typed_options_fail_clearly() {
        let c = ctx(r#"{"task_id":"t","options":{"width":"wide"}}"#);
        assert_eq!(
            c.option_as::<u32>("width").unwrap_err().to_string(),
            "option `width` = \"wide\" is not a valid u32: invalid digit found in string"
        );
        assert_eq!(
            c.require_option::<String>("ld_task_test_unset")
                .unwrap_err()
                .to_string(),
            "option `ld_task_test_unset` is not set: add `ld_task_test_unset=…` to the task's \
             `options`"
        );
    }

    #[test]
    fn output_is_claimed_once() {
        let c = ctx(r#"{"task_id":"t"}"#);
        let other = c.clone();
        assert!(c.claim_output());
        assert!(other.output_written());
        assert!(!other.claim_output());
        c.release_output();
        assert!(!c.output_written());
    }
}
