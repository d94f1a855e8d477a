//! The local runner: each attempt is a process group on this machine, started the way
//! `heroku local` starts a Procfile process (protocol §9), at most `concurrency` at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::console::Console;
use crate::error::{Error, Result};
use crate::process;
use crate::procfile::Procfile;
use crate::runner::{AttemptSpec, Exit, LogBody, OnExit, Runner, StartError};
use crate::store::Store;
use crate::task_log::{self, Captured};

/// How long a stopped process group gets between SIGTERM and SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(5);

/// Most logs of ended attempts held in memory until the driver stores them (each at most
/// [`task_log::SPILL_BYTES`]); past that, an ended attempt's log goes to its file.
const HELD_LOGS: usize = 256;

/// The `LD_*` variables that point a process (or an application) at the embedded store.
#[derive(Debug)]
pub(crate) struct StoreEnv {
    store: Store,
    endpoint: RwLock<String>,
}

impl StoreEnv {
    pub(crate) fn new(store: Store) -> Self {
        StoreEnv {
            store,
            endpoint: RwLock::new(String::new()),
        }
    }

    /// Sets the store's URL, known once its listener is bound.
    pub(crate) fn set_endpoint(&self, endpoint: &str) {
        *self
            .endpoint
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = endpoint.to_owned();
    }

    /// The variables for `bucket`. Reading the credentials may rotate them (a file write):
    /// async callers run this on the blocking pool.
    pub(crate) fn vars(&self, bucket: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("LD_S3_BUCKET".to_owned(), bucket.to_owned()),
            (
                "LD_S3_ENDPOINT".to_owned(),
                self.endpoint
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            ),
            ("LD_REGION".to_owned(), self.store.options().region.clone()),
        ];
        if let Ok(c) = self.store.credentials() {
            env.push(("LD_AWS_ACCESS_KEY_ID".to_owned(), c.access_key_id));
            env.push(("LD_AWS_SECRET_ACCESS_KEY".to_owned(), c.secret_access_key));
            env.push(("LD_AWS_SESSION_TOKEN".to_owned(), c.session_token));
        }
        env
    }
}

/// The local runner's parts, given by the engine's builder.
#[derive(Debug)]
pub(crate) struct LocalRunner {
    pub(crate) app_dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    procfile: ProcfileSource,
    dotenv: Vec<(String, String)>,
    console: Console,
    /// The embedded store's `LD_*` variables; `None` under `serve`, where a task inherits the
    /// engine's environment as a dyno gets the app's config vars.
    env: Option<Arc<StoreEnv>>,
    permits: Arc<Semaphore>,
    /// Foreman-style process numbers: `DYNO=run.N`, shown as `name.N`.
    dynos: AtomicU64,
    /// Running processes by reference, each with the token that stops it.
    procs: Mutex<HashMap<String, CancellationToken>>,
    idle: Notify,
    /// Logs of ended attempts that never went to a file, by task id and attempt, until the
    /// driver stores them ([`Runner::log`]). One that printed nothing is held too (empty), so
    /// storing it needs no look at the disk.
    ended: Mutex<HashMap<(String, u32), Vec<u8>>>,
}

impl LocalRunner {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        app_dir: PathBuf,
        data_dir: PathBuf,
        procfile: ProcfileSource,
        dotenv: Vec<(String, String)>,
        console: Console,
        env: Option<Arc<StoreEnv>>,
        concurrency: usize,
    ) -> Self {
        LocalRunner {
            app_dir,
            data_dir,
            procfile,
            dotenv,
            console,
            env,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dynos: AtomicU64::new(1),
            procs: Mutex::new(HashMap::new()),
            idle: Notify::new(),
            ended: Mutex::new(HashMap::new()),
        }
    }

    fn ended(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Vec<u8>>> {
        self.ended
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn procs(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancellationToken>> {
        self.procs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The process of an attempt: script, environment (protocol §2.5, §9) and log. Blocking
    /// (the store's credentials, the Procfile's modification time).
    fn process_spec(&self, spec: &AttemptSpec) -> process::Spec {
        // Later entries win: `.env`, then the options, then the reserved variables, so even
        // an option that slipped past validation cannot override `LD_*`, `DYNO` or `line_D`.
        let mut env = self.dotenv.clone();
        env.extend(
            spec.options
                .iter()
                .filter(|(k, _)| !linedee::validate::is_reserved_name(k))
                .cloned(),
        );
        if let Some(store_env) = &self.env {
            env.extend(store_env.vars(&spec.bucket));
        }
        let dyno = self.dynos.fetch_add(1, Ordering::Relaxed);
        env.push(("DYNO".into(), format!("run.{dyno}")));
        env.push((linedee::line_d::VAR.into(), spec.line_d.clone()));
        let label = spec.name.clone().unwrap_or_else(|| {
            spec.cmd
                .split_whitespace()
                .next()
                .unwrap_or("task")
                .to_owned()
        });
        process::Spec {
            script: self.procfile.current_blocking().resolve(&spec.cmd),
            env,
            cwd: self.app_dir.clone(),
            log_path: task_log::log_path(&self.data_dir, &spec.task_id, spec.attempt),
            label: format!("{label}.{dyno}"),
        }
    }

    /// Why a process that exited might have failed: its diagnostic line or last line of
    /// output (`captured`: what it printed), read only if the exit needs explaining; and at
    /// once, for a command not found (127), whether it is a process type gone from the
    /// Procfile. What it printed is kept for [`Runner::log`].
    async fn exit(&self, spec: &AttemptSpec, code: Option<i32>, captured: Captured) -> Exit {
        let log = self.keep_log(spec, captured);
        if code != Some(127) {
            return Exit {
                code,
                detail: None,
                log,
            };
        }
        let detail = Exit {
            code,
            detail: None,
            log,
        }
        .explained()
        .await;
        let detail = match self.procfile.current().await.not_a_type(&spec.cmd) {
            Some(note) => Some(match detail {
                Some(d) => format!("{d}; {note}"),
                None => note,
            }),
            None => detail,
        };
        Exit {
            code,
            detail,
            log: None,
        }
    }

    /// Holds what an ended attempt printed for [`Runner::log`] and says where it is, for
    /// explaining the exit. A log that went to its file stays there. When too many are held
    /// already, one held in memory is written to its file instead.
    fn keep_log(&self, spec: &AttemptSpec, captured: Captured) -> Option<LogBody> {
        let path = || task_log::log_path(&self.data_dir, &spec.task_id, spec.attempt);
        let bytes = match captured {
            Captured::File => return Some(LogBody::File(path())),
            Captured::Nothing => Vec::new(),
            Captured::Memory(bytes) => bytes,
        };
        let mut ended = self.ended();
        if ended.len() < HELD_LOGS {
            ended.insert((spec.task_id.clone(), spec.attempt), bytes.clone());
            return (!bytes.is_empty()).then_some(LogBody::Bytes(bytes));
        }
        drop(ended);
        if bytes.is_empty() {
            return None;
        }
        let written = task_log::create_log(&path()).and_then(|mut file| {
            use std::io::Write as _;
            file.write_all(&bytes)
        });
        match written {
            Ok(()) => Some(LogBody::File(path())),
            Err(e) => {
                tracing::warn!(task_id = spec.task_id, attempt = spec.attempt, error = %e, "cannot write a task log; it is not stored");
                Some(LogBody::Bytes(bytes))
            }
        }
    }
}

#[async_trait::async_trait]
impl Runner for Arc<LocalRunner> {
    async fn start(
        &self,
        spec: AttemptSpec,
        cancel: CancellationToken,
        on_exit: OnExit,
    ) -> Result<String, StartError> {
        let permit = tokio::select! {
            p = Arc::clone(&self.permits).acquire_owned() => p.map_err(|_| StartError::Cancelled)?,
            () = cancel.cancelled() => return Err(StartError::Cancelled),
        };
        // One trip to the blocking pool for everything the start reads or creates on disk,
        // and for the spawn itself, which blocks until the new process has called `exec`.
        // The process starts before the answer comes back.
        let (me, attempt) = (Arc::clone(self), spec.clone());
        let mut proc = tokio::task::spawn_blocking(move || {
            let pspec = me.process_spec(&attempt);
            process::prepare(&pspec)
                .and_then(|prepared| process::spawn(pspec, prepared, &me.console))
        })
        .await
        .map_err(|e| StartError::Failed(e.to_string()))?
        .map_err(|e| StartError::Failed(e.to_string()))?;
        // The process group id is what a later engine needs to stop a leftover group.
        let reference = match proc.pgid() {
            Some(pgid) => pgid.to_string(),
            None => format!("{}#{}", spec.task_id, spec.attempt),
        };
        let stop = CancellationToken::new();
        self.procs().insert(reference.clone(), stop.clone());
        let me = Arc::clone(self);
        let key = reference.clone();
        tokio::spawn(async move {
            let status = tokio::select! {
                s = proc.wait() => s.ok(),
                () = stop.cancelled() => proc.stop(KILL_GRACE).await.ok(),
            };
            drop(permit);
            let code = status.and_then(|s| s.code());
            on_exit(me.exit(&spec, code, proc.take_log()).await);
            let mut procs = me.procs();
            procs.remove(&key);
            if procs.is_empty() {
                me.idle.notify_waiters();
            }
        });
        Ok(reference)
    }

    async fn stop(&self, runner: &str) {
        if let Some(token) = self.procs().get(runner) {
            token.cancel();
        }
    }

    async fn stop_stale(&self, runner: &str, task_id: &str) {
        let Ok(pgid) = runner.parse::<i32>() else {
            return;
        };
        let task_id = task_id.to_owned();
        let _ =
            tokio::task::spawn_blocking(move || process::stop_stale_group(pgid, &task_id)).await;
    }

    async fn log(&self, task_id: &str, attempt: u32) -> Option<LogBody> {
        if let Some(bytes) = self.ended().remove(&(task_id.to_owned(), attempt)) {
            return Some(LogBody::Bytes(bytes));
        }
        let (dir, task_id) = (self.data_dir.clone(), task_id.to_owned());
        tokio::task::spawn_blocking(move || {
            let path = task_log::existing_log_path(&dir, &task_id, attempt);
            // An attempt that printed nothing has no file: its log is empty.
            match path.try_exists() {
                Ok(false) => LogBody::Bytes(Vec::new()),
                _ => LogBody::File(path),
            }
        })
        .await
        .ok()
    }

    async fn stop_all(&self) {
        loop {
            let idle = self.idle.notified();
            {
                let procs = self.procs();
                if procs.is_empty() {
                    return;
                }
                for token in procs.values() {
                    token.cancel();
                }
            }
            idle.await;
        }
    }
}

/// The Procfile, re-read when it changes on disk.
#[derive(Debug)]
pub(crate) struct ProcfileSource {
    path: PathBuf,
    cached: Arc<Mutex<(Option<SystemTime>, Arc<Procfile>)>>,
}

impl ProcfileSource {
    /// [`ProcfileSource::current`], on the calling thread (a blocking one).
    pub(crate) fn current_blocking(&self) -> Arc<Procfile> {
        reload(&self.path, &self.cached)
    }

    pub(crate) fn open(path: PathBuf) -> Result<Self> {
        let (mtime, procfile) = match std::fs::metadata(&path) {
            Ok(m) => (m.modified().ok(), Procfile::load(&path)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, Procfile::default()),
            Err(e) => return Err(Error::file("cannot read Procfile", &path, e)),
        };
        Ok(ProcfileSource {
            path,
            cached: Arc::new(Mutex::new((mtime, Arc::new(procfile)))),
        })
    }

    /// The current Procfile: re-read if its modification time changed (on the blocking pool,
    /// not a runtime thread). An invalid new version is refused (logged) and the previous one
    /// stays in use.
    pub(crate) async fn current(&self) -> Arc<Procfile> {
        let (path, cached) = (self.path.clone(), Arc::clone(&self.cached));
        let fallback = Arc::clone(&cached);
        tokio::task::spawn_blocking(move || reload(&path, &cached))
            .await
            .unwrap_or_else(|_| {
                Arc::clone(
                    &fallback
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .1,
                )
            })
    }
}

fn reload(path: &Path, cached: &Mutex<(Option<SystemTime>, Arc<Procfile>)>) -> Arc<Procfile> {
    let mut cached = cached
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mtime = std::fs::metadata(path).ok().and_then(|m| m.modified().ok());
    if mtime != cached.0 {
        cached.0 = mtime;
        match Procfile::load(path) {
            Ok(p) => {
                tracing::info!(path = %path.display(), "Procfile changed; using the new version");
                cached.1 = Arc::new(p);
            }
            Err(e) if mtime.is_none() => {
                tracing::warn!(error = %e, "Procfile removed; every cmd now runs as a command line");
                cached.1 = Arc::new(Procfile::default());
            }
            Err(e) => {
                tracing::error!(error = %e, "Procfile changed but is invalid; still using the previous version")
            }
        }
    }
    Arc::clone(&cached.1)
}
