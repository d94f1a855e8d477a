//! # linedee
//!
//! Typed [line^d] workflows for Rust applications: build them, validate them, and start and
//! follow them on a line^d bucket — hosted, or the local engine (`linedee local`).
//!
//! ```no_run
//! # async fn demo() -> linedee::Result<()> {
//! use std::time::Duration;
//! use linedee::{Client, Machine, Task, Workflow};
//!
//! let wf = Workflow::new()
//!     .title("Process media files")
//!     .step(Task::new("process_image").machine(Machine::Basic).timeout(Duration::from_secs(30)));
//! let client = Client::from_env()?;
//! let run = client
//!     .upload("in/img/example_img.jpg", linedee::Body::from_path("example_img.jpg"))
//!     .workflow(&wf)
//!     .send()
//!     .await?;
//! let status = run.wait(Duration::from_secs(120)).await?;
//! println!("run {} {}", status.run_id, status.status);
//! # Ok(()) }
//! ```
//!
//! ## Layout
//! - [`workflow`]: [`Workflow`], [`Step`], [`Task`], [`TaskGroup`] and the builder;
//!   [`Machine`]; [`validate`] and the [`schema`].
//! - [`metadata`]: the S3 metadata rules (2 KB budget, ASCII JSON, RFC 2047).
//! - [`Client`]: the bucket — [`Client::submit`] (`ld_run`), [`Client::upload`] (`ld_code`),
//!   [`Client::put`], [`Client::get`], [`Client::run`], [`Client::task_output`],
//!   [`Client::export`]; multipart uploads send several parts at once (a file's read as
//!   they are sent) and exports download several objects at once
//!   ([`ClientBuilder::upload_concurrency`], [`ClientBuilder::download_concurrency`]).
//! - [`credentials`]: providers (environment, Heroku API, Heroku CLI, your own) and the
//!   refreshing cache.
//! - [`status`]: the run status document; [`line_d`]: the task environment.
//! - [`control`]: cancel and retry through the bucket, for runs served by `linedee serve`.
//!
//! [line^d]: https://elements.heroku.com/addons/line-d

pub mod control;
pub mod credentials;
pub mod line_d;
pub mod metadata;
pub mod status;
pub mod validate;
pub mod workflow;

/// Not public API: invariants for the fuzz targets and their corpus replay test.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

mod body;
mod builder;
mod client;
mod decode;
mod error;
mod export;
mod json;
mod machine;
mod object;
mod parts;
mod put;
mod request;
mod schema;
mod submission;

pub use body::Body;
pub use client::{
    BUCKET_VAR, Client, ClientBuilder, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_DOWNLOAD_CONCURRENCY, DEFAULT_REGION, DEFAULT_UPLOAD_CONCURRENCY,
    DOWNLOAD_CONCURRENCY_VAR, ENDPOINT_VAR, MIN_PART_SIZE, ObjectSummary, PART_SIZE_VAR,
    REGION_VAR, UPLOAD_CONCURRENCY_VAR,
};
pub use error::{Error, Result};
pub use export::{Export, ExportProgress, ExportReport};
pub use line_d::LineD;
pub use machine::{Machine, UnknownMachine};
pub use object::{Object, ObjectInfo};
pub use put::{Put, PutOutput};
pub use schema::{schema, schema_json};
pub use status::{RunState, RunStatus, TaskState};
pub use submission::{Submission, TaskOutput, Upload};
pub use validate::{Problem, ValidationError};
pub use workflow::{Step, Task, TaskGroup, Workflow};
