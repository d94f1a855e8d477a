//! The task side of linedee: what runs inside a task's process (a Heroku dyno, or a local
//! process started by the engine).
//!
//! A task app is a binary whose functions are marked [`#[ld_task]`](ld_task) and whose
//! `fn main` is [`main()`]:
//!
//! ```no_run
//! use linedee_task::{ld_task, Json, TaskContext};
//!
//! #[ld_task(machine = "standard-2x", timeout = 30)]
//! async fn process_image(ctx: TaskContext) -> anyhow::Result<Json<serde_json::Value>> {
//!     let path = std::env::temp_dir().join("input");
//!     let bytes = ctx.input().await?.save_to(&path).await?;
//!     Ok(Json(serde_json::json!({ "bytes": bytes })))
//! }
//!
//! fn main() {
//!     linedee_task::main()
//! }
//! ```
//!
//! `app process-image` then runs the task (the engine starts it with `line_D` set),
//! `app procfile` prints the Procfile lines, and `process_image::task()` is the
//! [`linedee::Task`] to put in a workflow.
//!
//! # The contract (protocol §2.4–2.6)
//! - [`TaskContext`] comes from `line_D` (only `task_id` is required, unknown fields are
//!   ignored) and the `LD_*` variables.
//! - Success is the output `out/{task_id}` with metadata `ld_task_id` and optionally
//!   `ld_state` (compact ASCII-only JSON, within S3's 2 KB of metadata). If the handler
//!   did not write it with [`TaskContext::output`], the runtime writes one from its `Ok`
//!   value ([`IntoOutput`]); it never writes twice. `no_output` tasks get no automatic
//!   output.
//! - Failure (an `Err` or a panic) prints one line `{"error_type":…,"error_message":…}` on
//!   stderr as its last line, writes no output, and exits with code 1. (An output the
//!   handler already sent itself stays: S3 has no undo, and the engine counts it.)
//! - The Procfile line of a task is `{name}: {bin} {name}`, `bin` defaulting to
//!   `target/release/{exe}` (see [`main()`]).
//!
//! # Layout
//! - `context`: [`TaskContext`]; `line_d`: parsing `line_D`
//! - `input`: [`Input`]; `output`: [`Output`], [`OutputBuilder`], [`Json`], [`IntoOutput`]
//! - `registry`: [`TaskDef`], [`TaskSpec`], [`tasks`]; `runtime`: running one task,
//!   [`Failure`]
//! - `cli`: [`main()`]; `procfile`: the Procfile lines
//! - `error`: [`Error`], [`Result`]

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cli;
mod context;
mod error;
mod input;
mod line_d;
mod output;
mod procfile;
mod registry;
mod runtime;

/// Not public API: invariants for the fuzz targets and their corpus replay test.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

pub use cli::main;
pub use context::{LINE_D, TaskContext};
pub use error::{Error, Result};
pub use input::Input;
/// Registers a function as a task of this app.
///
/// Put it on an `async fn` or a `fn` that takes `TaskContext` or `&TaskContext` and
/// returns `Result<T, E>`, where `T` is `()`, [`Json`] or [`Output`] (see [`IntoOutput`])
/// and `E` is any `std::error::Error + Send + Sync + 'static` (or `anyhow::Error`).
///
/// Arguments, all optional:
///
/// | key | value | default |
/// |---|---|---|
/// | `name = "…"` | the Procfile process type, `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$` | the function's name, `_` turned into `-` |
/// | `machine = "…"` | a Heroku dyno size, e.g. `"standard-2x"` | `basic` |
/// | `timeout = N` | seconds the engine waits for the output, 1..=86400 | 60 |
/// | `no_output` | success when the process starts; no automatic output | off |
/// | `retries = N` | retries after a failed attempt | the engine's (2) |
/// | `crate = "…"` | the path of this crate, if renamed (a path that resolves from any module: `::name` or `crate::…`) | `::linedee_task` |
///
/// Errors (a bad name, an unknown or duplicate key, a wrong signature, a non-`fn` item)
/// point at the offending token and list what is valid; the function is still emitted, so
/// nothing else breaks.
///
/// The function stays as it is and callable. Next to it, a module of the same name (the
/// function's visibility) holds `fn task() -> linedee::Task`: the task with its `cmd`
/// and these defaults, for the workflow builder. The registration itself sits in a
/// `const _: () = { … };` and goes through `inventory`. (A function and a module live in
/// different namespaces, so they share the name; another item called like the function in
/// the type namespace, e.g. a `mod` of that name, conflicts with the handle.)
///
/// ```no_run
/// use linedee_task::{ld_task, Json, TaskContext};
///
/// #[ld_task(name = "get-data", timeout = 30, retries = 1)]
/// async fn get_data(ctx: TaskContext) -> anyhow::Result<Json<Vec<String>>> {
///     let endpoint: String = ctx.require_option("endpoint")?;
///     Ok(Json(vec![endpoint]))
/// }
///
/// #[ld_task(no_output)]
/// fn ping(ctx: &TaskContext) -> Result<(), std::io::Error> {
///     println!("{}", ctx.task_id());
///     Ok(())
/// }
///
/// fn main() {
///     // The typed handle, for a workflow:
///     let task: linedee::Task = get_data::task().option("endpoint", "posts");
///     assert_eq!(task.cmd, "get-data");
///     linedee_task::main()
/// }
/// ```
pub use linedee_macros::ld_task;
pub use output::{IntoOutput, Json, LD_STATE, LD_TASK_ID, Output, OutputBuilder};
pub use registry::{Handler, HandlerFuture, HandlerResult, TaskDef, TaskSpec, tasks};
pub use runtime::Failure;

/// Not public API: what `#[ld_task]` generates code against.
#[doc(hidden)]
pub mod __private {
    pub use crate::context::TaskContext;
    pub use crate::registry::{Handler, HandlerFuture, HandlerResult, TaskDef, TaskSpec};
    pub use crate::runtime::{boxed, finish};
    pub use core::module_path;
    pub use core::option::Option;
    pub use inventory;
    pub use linedee::{Machine, Task};
}
