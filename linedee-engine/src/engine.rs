//! [`Engine`]: the store, the executor and the journal on one machine.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use linedee::status::{RunState, RunStatus};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::console::Console;
use crate::driver::{Driver, Parts};
use crate::error::{Error, Result, RunError};
use crate::journal::{Journal, SqliteJournal};
use crate::local_runner::{LocalRunner, ProcfileSource, StoreEnv};
use crate::machine::{Event, Machine};
use crate::procfile;
use crate::retry::RetryPolicy;
use crate::store::{Store, StoreOptions};
use crate::triggers::Outbox;

/// Builds an [`Engine`].
///
/// ```no_run
/// # async fn demo() -> linedee_engine::Result<()> {
/// let engine = linedee_engine::Engine::builder()
///     .data_dir(".linedee")
///     .app_dir(".")
///     .procfile("Procfile")
///     .concurrency(8)
///     .build()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(linedee_engine::Error::Serve)?;
/// engine.run(listener, async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
#[derive(Debug)]
#[must_use]
pub struct EngineBuilder {
    data_dir: PathBuf,
    app_dir: PathBuf,
    procfile: Option<PathBuf>,
    concurrency: usize,
    bucket: String,
    console: Console,
    retry: RetryPolicy,
    shutdown_grace: Duration,
    store: StoreOptions,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            data_dir: PathBuf::from(".linedee"),
            app_dir: PathBuf::from("."),
            procfile: None,
            concurrency: 8,
            bucket: "linedee-local".to_owned(),
            console: Console::stdout(),
            retry: RetryPolicy::default(),
            shutdown_grace: Duration::from_secs(10),
            store: StoreOptions::default(),
        }
    }
}

impl EngineBuilder {
    /// Where the store, the journal and the local logs live (default `.linedee`).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// The app's directory: task processes run there, and its `.env` is loaded (default `.`).
    pub fn app_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.app_dir = dir.into();
        self
    }

    /// The Procfile (default `<app_dir>/Procfile`; none is fine, then every `cmd` is a
    /// command line). Changes are picked up at each attempt; an invalid change is refused
    /// with a log line and the previous version stays in use.
    pub fn procfile(mut self, path: impl Into<PathBuf>) -> Self {
        self.procfile = Some(path.into());
        self
    }

    /// Most task processes at once (default 8). Runs beyond it wait, first come first served.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The bucket created at start and handed to applications (default `linedee-local`).
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = bucket.into();
        self
    }

    /// Where task output is echoed (default: stdout, foreman-style).
    pub fn console(mut self, console: Console) -> Self {
        self.console = console;
        self
    }

    /// The retry policy (default: 2 retries, 1 s doubling, capped at 30 s).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How long running attempts get to finish at shutdown (default 10 s).
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Options of the embedded store (durability, credential lifetime, region).
    pub fn store_options(mut self, options: StoreOptions) -> Self {
        self.store = options;
        self
    }

    /// Opens the store and the journal.
    pub fn build(self) -> Result<Engine> {
        let mut store_opts = self.store;
        store_opts.default_bucket = Some(self.bucket.clone());
        let fsync = store_opts.fsync;
        let store = Store::open(self.data_dir.join("store"), store_opts)?;
        let journal = SqliteJournal::open(&self.data_dir.join("journal.sqlite"), fsync)?;
        let procfile_path = self
            .procfile
            .unwrap_or_else(|| self.app_dir.join("Procfile"));
        let procfile = ProcfileSource::open(procfile_path)?;
        let dotenv = procfile::load_dotenv(&self.app_dir)?;
        let app_dir = std::fs::canonicalize(&self.app_dir)
            .map_err(|e| Error::file("cannot open app dir", &self.app_dir, e))?;
        let env = Arc::new(StoreEnv::new(store.clone()));
        let runner = Arc::new(LocalRunner::new(
            app_dir,
            self.data_dir.clone(),
            procfile,
            dotenv,
            self.console,
            Some(Arc::clone(&env)),
            self.concurrency,
        ));
        let driver = Driver::new(Parts {
            machine: Machine { retry: self.retry },
            journal: Arc::new(journal.clone()) as Arc<dyn Journal>,
            runner: Arc::new(Arc::clone(&runner)),
            bucket: Arc::new(store.clone()),
            triggers: Arc::new(Outbox::new(store.clone())),
            shutdown_grace: self.shutdown_grace,
            start_ahead: self.concurrency.max(1) * 2,
        });
        Ok(Engine {
            store,
            bucket: self.bucket,
            journal,
            runner,
            env,
            driver: Arc::new(driver),
        })
    }
}

/// line^d on one machine: serves the embedded store and runs the workflows written to it.
#[derive(Clone)]
pub struct Engine {
    store: Store,
    bucket: String,
    journal: SqliteJournal,
    runner: Arc<LocalRunner>,
    env: Arc<StoreEnv>,
    driver: Arc<Driver>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// A builder with the defaults.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The embedded store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The bucket applications use.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The `LD_*` variables applications need to reach this engine at `endpoint`
    /// (the URL of the listener given to [`run`](Self::run)).
    pub fn app_env(&self, endpoint: &str) -> Vec<(String, String)> {
        self.env.set_endpoint(endpoint);
        self.env.vars(&self.bucket)
    }

    /// Serves the store on `listener` and runs workflows until `shutdown` completes; then stops
    /// taking triggers, gives running attempts the grace period, and journals the rest so that
    /// the next start resumes them.
    pub async fn run(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<()> {
        let addr = listener.local_addr().map_err(Error::Serve)?;
        self.env.set_endpoint(&format!("http://{addr}"));
        let token = CancellationToken::new();
        let store_stop = CancellationToken::new();
        let serve = {
            let stop = store_stop.clone();
            let store = self.store.clone();
            tokio::spawn(async move {
                store
                    .serve(listener, async move { stop.cancelled().await })
                    .await
            })
        };
        let mut driver = tokio::spawn(Arc::clone(&self.driver).run(token.clone()));
        // The driver ends on its own only on an error it cannot go past (the journal cannot
        // be written): the engine then stops too, saying why, rather than serving the store
        // while no run moves. A restart resumes from the last committed state.
        let ended = tokio::select! {
            ended = &mut driver => Some(ended),
            () = shutdown => None,
        };
        let ended = match ended {
            Some(ended) => ended,
            None => {
                token.cancel();
                driver.await
            }
        };
        let result =
            ended.map_err(|e| Error::Internal(format!("the engine's driver failed: {e}")))?;
        if let Err(e) = &result {
            tracing::error!(error = %e, "the engine stopped: {e}");
        }
        store_stop.cancel();
        let served = serve
            .await
            .map_err(|e| Error::Internal(format!("store task failed: {e}")))?;
        result.and(served)
    }

    /// Stops a run that has not finished: its processes are stopped and it ends `cancelled`
    /// once they have exited. When it returns, the cancel is journaled and the run's status
    /// document rewritten.
    pub async fn cancel(&self, run_id: &str) -> Result<()> {
        self.driver.control(run_id, Event::CancelRequested).await
    }

    /// Redrives a failed or cancelled run from its first unfinished step; succeeded tasks keep
    /// their outputs and are not run again. When it returns, the run's status document
    /// (`ld/runs/{run_id}.json`) already shows it queued.
    pub async fn retry(&self, run_id: &str) -> Result<()> {
        self.driver.control(run_id, Event::RedriveRequested).await
    }

    /// A run's status, from the journal.
    pub async fn status(&self, run_id: &str) -> Result<RunStatus> {
        self.journal
            .load(run_id)
            .await?
            .map(|r| r.status_document())
            .ok_or_else(|| RunError::NotFound(run_id.to_owned()).into())
    }

    /// Runs, newest first: optionally only those with `status`, and only those older than the
    /// cursor `before` (from a previous page). Returns the page and the next cursor.
    pub async fn runs(
        &self,
        status: Option<RunState>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<crate::views::RunSummary>, Option<i64>)> {
        let status = status.map(|s| s.as_str().to_owned());
        let rows = self
            .journal
            .read(move |c| crate::views::list_runs(c, status.as_deref(), before, limit))
            .await?;
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|(seq, _)| *seq))
            .flatten();
        Ok((rows.into_iter().map(|(_, r)| r).collect(), next))
    }

    /// Runs matching `filter` (status, time window, title or trigger-key prefix, `cmd`),
    /// newest first, older than the cursor `before`. Returns the page and the next cursor.
    pub async fn find_runs(
        &self,
        filter: crate::RunFilter,
        before: Option<i64>,
        limit: usize,
    ) -> Result<(Vec<crate::views::RunSummary>, Option<i64>)> {
        if !filter.is_refined() {
            return self.runs(filter.status, before, limit).await;
        }
        let rows = self
            .journal
            .read(move |c| crate::run_filter::list(c, &filter, before, limit))
            .await?;
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|(seq, _)| *seq))
            .flatten();
        Ok((rows.into_iter().map(|(_, r)| r).collect(), next))
    }

    /// Activity over `window`, ending now: run counts, the queue's depth, durations, runs per
    /// interval and per-`cmd` figures, aggregated by the journal's SQLite.
    pub async fn overview(&self, window: crate::Window) -> Result<crate::Overview> {
        let now = crate::machine::now_ms();
        self.journal
            .read(move |c| crate::stats::overview(c, window, now))
            .await
    }

    /// The attempts of a run, for a timeline.
    pub async fn attempts(&self, run_id: &str) -> Result<Vec<crate::views::AttemptRow>> {
        let id = run_id.to_owned();
        self.journal
            .read(move |c| crate::views::attempts(c, &id))
            .await
    }

    /// The local log file of an attempt; it grows while the attempt runs. Every attempt's log
    /// is in the store as `ld/logs/{task_id}/{attempt}.log` once the attempt ends, but only
    /// one that printed for longer than a second, or more than 64 KiB, has a local file: a
    /// shorter one is held in memory until it is stored. See [`local_log_path`].
    pub fn log_path(&self, task_id: &str, attempt: u32) -> PathBuf {
        local_log_path(&self.runner.data_dir, task_id, attempt)
    }
}

/// The local log file of an attempt in an engine's data directory (`--dir`):
/// `logs/{task_id}.{attempt}.log`, or `logs/{task_id}/{attempt}.log` where an earlier engine
/// wrote it there.
pub fn local_log_path(data_dir: &std::path::Path, task_id: &str, attempt: u32) -> PathBuf {
    crate::task_log::existing_log_path(data_dir, task_id, attempt)
}
