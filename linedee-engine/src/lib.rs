//! # linedee-engine
//!
//! line^d on one machine: an S3-compatible store on loopback that knows when a workflow is
//! triggered, the run state machine and a driver that runs the workflow's tasks as Procfile
//! processes, a durable SQLite journal, and a dashboard. `docs/architecture.md` draws the
//! machine, the driver and the traits between them.
//!
//! ```no_run
//! # async fn demo() -> linedee_engine::Result<()> {
//! let engine = linedee_engine::Engine::builder()
//!     .data_dir(".linedee")
//!     .app_dir(".")
//!     .concurrency(8)
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
//!     .await
//!     .map_err(linedee_engine::Error::Serve)?;
//! engine.run(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! ## Layout
//! - [`Engine`] / [`EngineBuilder`]: the store and the driver together; `run(listener,
//!   shutdown)`, cancel, redrive, run listings ([`RunFilter`]) and the [`Overview`] of a
//!   [`Window`] (aggregates in SQL, `stats`). The rest is internal:
//!   - `machine`: the run state machine, every rule of a run, with no I/O (events and the
//!     time in, effects out);
//!   - `driver`: the loop that feeds it and carries its effects out, and `intake`, which turns
//!     triggers into its inputs;
//!   - the traits the driver is given and their local implementations: `journal` (SQLite),
//!     `runner` and `local_runner` (process groups, with `process`, `escape`, which finds
//!     the processes that left an attempt's group, and `task_log`, an attempt's log, in
//!     memory while it is short and young), `triggers` (the store's
//!     outbox), `bucket` (status documents, logs, outputs: the store or `linedee::Client`);
//!     `exec` decides when a task's script needs no shell;
//!   - `heroku`: a runner that starts Heroku one-off dynos through the Platform API;
//!   - `publish`: the coalescing writer of status documents.
//! - [`store`]: the embedded S3 store. Object bodies live in files named by an id, the index
//!   and the trigger outbox in SQLite; it serves the S3 protocol (SigV4 required) and a
//!   Heroku-shaped config-vars endpoint, and pushes committed triggers and object writes to
//!   the engine in process.
//! - [`dashboard`]: the read-only web dashboard (cancel and retry need the local token).
//!   The store and the dashboard share one accept loop with graceful shutdown (`http`).
//! - [`serve`]: line^d on AWS (S3 + SQS), as stateless replicas: [`serve::Serve`].
//! - [`Procfile`], [`parse_dotenv`]: the app's process types and `.env`.
//! - [`Console`]: foreman-style task output. [`RetryPolicy`]: retries and backoff.
//! - [`Error`], [`Result`]: the crate's errors, one variant per concern: [`StoreError`],
//!   [`JournalError`], [`AppError`] (Procfile, `.env`, app directory), [`RunError`] (run
//!   control), [`HerokuError`] (the Heroku Platform API).

mod bucket;
mod console;
pub mod dashboard;
mod diagnostic;
mod driver;
mod engine;
mod error;
mod escape;
mod exec;
/// Not public API: invariants for the fuzz targets and their corpus replay test.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod heroku;
mod http;
mod intake;
mod journal;
mod local_runner;
mod machine;
mod process;
mod procfile;
mod publish;
mod retry;
mod run_filter;
mod runner;
pub mod serve;
mod start_queue;
mod stats;
pub mod store;
mod task_log;
mod triggers;
mod views;

pub use console::Console;
pub use engine::{Engine, EngineBuilder, local_log_path};
pub use error::{
    AppError, CloudError, Error, HerokuError, JournalError, Result, RunError, StoreError,
};
pub use procfile::{Procfile, parse_dotenv};
pub use retry::RetryPolicy;
pub use run_filter::RunFilter;
pub use stats::{Bucket, CmdStats, Counts, Overview, Percentiles, Series, Window};
pub use views::{AttemptRow, RunSummary};
