//! The line^d engine on one machine.
//!
//! Layout:
//! - [`store`]: the embedded S3 store. Object bodies live in files named by an id, the
//!   index and the trigger outbox in SQLite; it serves the S3 protocol (SigV4 required) and
//!   a Heroku-shaped config-vars endpoint, and pushes committed triggers and object writes
//!   to the engine in process.
//! - [`Error`], [`Result`]: the crate's errors.
//!
//! ```no_run
//! # async fn demo() -> linedee_engine::Result<()> {
//! use linedee_engine::store::{Store, StoreOptions};
//!
//! let store = Store::open("/tmp/linedee-data", StoreOptions::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await
//!     .map_err(linedee_engine::Error::Serve)?;
//! store.serve(listener, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```

mod attempt;
mod console;
pub mod dashboard;
pub mod dashboard;
mod diagnostic;
mod engine;
mod environment;
mod error;
mod executor;
mod journal;
mod process;
mod procfile;
mod publish;
mod retry;
pub mod store;

pub use console::Console;
pub use engine::{Engine, EngineBuilder};
pub use error::{Error, Result};
pub use journal::{AttemptRow, RunSummary};
pub use procfile::{Procfile, parse_dotenv};
pub use retry::RetryPolicy;
