//! Runs one task: context, handler, panics, output, and the failure line (protocol §2.6).

use std::any::Any;
use std::error::Error as StdError;
use std::future::Future;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::FutureExt;

use crate::context::TaskContext;
use crate::error::Error;
use crate::output::IntoOutput;
use crate::registry::{Handler, HandlerFuture, HandlerResult, TaskDef};

/// Why a task failed, as printed on stderr: `{"error_type":…,"error_message":…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The error's type (`std::io::error::Error`, `anyhow::Error`, `panic` …).
    pub error_type: String,
    /// The error's message followed by its sources, joined with `: `.
    pub error_message: String,
}

impl Failure {
    /// A failure from any error, `type_name` naming its type.
    pub fn from_error(type_name: &str, err: &(dyn StdError + 'static)) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        Failure {
            error_type: type_name.to_owned(),
            error_message: message,
        }
    }

    /// The one JSON line, `{"error_type":…,"error_message":…}` in that order.
    pub fn to_json_line(&self) -> String {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            error_type: &'a str,
            error_message: &'a str,
        }
        let line = Line {
            error_type: &self.error_type,
            error_message: &self.error_message,
        };
        serde_json::to_string(&line).unwrap_or_else(|_| {
            r#"{"error_type":"linedee_task::Error","error_message":"unprintable"}"#.to_owned()
        })
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        Failure::from_error("linedee_task::Error", &err)
    }
}

/// Turns a handler's `Result<T, E>` into the runtime's form. Used by generated code.
pub fn finish<T, E>(result: Result<T, E>) -> HandlerResult
where
    T: IntoOutput,
    E: Into<Box<dyn StdError + Send + Sync + 'static>>,
{
    match result {
        Ok(value) => Ok(value.into_output()),
        Err(err) => {
            let type_name = std::any::type_name::<E>();
            let boxed: Box<dyn StdError + Send + Sync + 'static> = err.into();
            Err(Failure::from_error(type_name, &*boxed))
        }
    }
}

/// Boxes a handler's future. Used by generated code.
pub fn boxed(future: impl Future<Output = HandlerResult> + 'static) -> HandlerFuture {
    Box::pin(future)
}

/// The last panic on the task's thread, with its location, recorded by the panic hook.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Installs a hook that records panics of the handler's thread instead of printing them
/// (the failure line reports them); panics elsewhere still go to the log.
fn install_panic_hook() {
    let main = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        let message = match info.location() {
            Some(loc) => format!(
                "{} (at {}:{})",
                payload_text(info.payload()),
                loc.file(),
                loc.line()
            ),
            None => payload_text(info.payload()),
        };
        if std::thread::current().id() == main {
            if let Ok(mut slot) = LAST_PANIC.lock() {
                *slot = Some(message);
            }
        } else {
            let thread = std::thread::current();
            tracing::error!(thread = thread.name().unwrap_or("?"), "panic: {message}");
        }
    }));
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

fn panic_failure(payload: &(dyn Any + Send)) -> Failure {
    let recorded = LAST_PANIC.lock().ok().and_then(|mut slot| slot.take());
    Failure {
        error_type: "panic".to_owned(),
        error_message: recorded.unwrap_or_else(|| payload_text(payload)),
    }
}

/// Sets up tracing from `RUST_LOG` (default `info`), on stderr.
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs `def` in its own tokio runtime; prints the failure line and returns `false` on failure.
pub(crate) fn run(def: &TaskDef) -> bool {
    install_panic_hook();
    match run_inner(def) {
        Ok(()) => true,
        Err(failure) => {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "{}", failure.to_json_line());
            let _ = stderr.flush();
            false
        }
    }
}

fn run_inner(def: &TaskDef) -> Result<(), Failure> {
    let ctx = TaskContext::from_env().map_err(|err| match err {
        Error::MissingLineD { exe, .. } => Error::MissingLineD {
            exe,
            task: def.spec.name.to_owned(),
        },
        other => other,
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    tracing::info!(
        task = def.spec.name,
        task_id = ctx.task_id(),
        attempt = ctx.attempt(),
        "task starting"
    );
    let outcome = match def.handler {
        Handler::Async(f) => {
            let future = f(ctx.clone());
            rt.block_on(AssertUnwindSafe(future).catch_unwind())
        }
        Handler::Sync(f) => {
            let _guard = rt.enter();
            let handler_ctx = ctx.clone();
            std::panic::catch_unwind(AssertUnwindSafe(move || f(handler_ctx)))
        }
    };
    let result = match outcome {
        Ok(result) => result,
        Err(payload) => Err(panic_failure(&*payload)),
    };
    let output = result?;
    if ctx.output_written() {
        if !output.is_empty() {
            tracing::warn!(
                "the handler wrote its output and also returned one; it is not written twice"
            );
        }
    } else if def.spec.no_output && output.is_empty() {
        tracing::debug!("no_output task: no output written");
    } else {
        rt.block_on(output.write(&ctx))?;
    }
    rt.shutdown_timeout(Duration::from_secs(5));
    tracing::info!(
        task = def.spec.name,
        task_id = ctx.task_id(),
        "task succeeded"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn errors_become_one_json_line_with_their_chain() {
        let r: Result<(), Outer> = Err(Outer(std::io::Error::other("inner")));
        let failure = finish(r).unwrap_err();
        assert!(
            failure.error_type.ends_with("Outer"),
            "{}",
            failure.error_type
        );
        assert_eq!(failure.error_message, "outer: inner");
        let line = failure.to_json_line();
        assert!(!line.contains('\n'));
        assert!(line.starts_with(r#"{"error_type":""#), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["error_message"], "outer: inner");
    }

    #[test]
    fn string_errors_and_ok_values() {
        let r: Result<(), String> = Err("nope".into());
        let failure = finish(r).unwrap_err();
        assert_eq!(failure.error_type, "alloc::string::String");
        assert_eq!(failure.error_message, "nope");
        let ok: Result<crate::Json<u8>, std::io::Error> = Ok(crate::Json(1));
        assert!(!finish(ok).unwrap().is_empty());
        let unit: Result<(), std::io::Error> = Ok(());
        assert!(finish(unit).unwrap().is_empty());
    }
}
