//! The executor: triggers become runs, runs become task processes (protocol §5–§7).
//!
//! One tokio task drives each unfinished run, step by step. A task attempt holds a permit of
//! the concurrency semaphore (FIFO) while its process runs. Outputs are detected from the
//! store's object events, never by polling S3.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use linedee::Workflow;
use linedee::metadata::LD_CODE;
use linedee::status::{RunState, TaskState};
use tokio::sync::{Mutex, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use crate::console::Console;
use crate::error::{Error, Result};
use crate::journal::{self, NewRun, TaskRow};
use crate::process;
use crate::retry::RetryPolicy;
use crate::store::{Store, Trigger, TriggerKind};

/// How long a stopped process group gets between SIGTERM and SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(5);

/// Shared state of the executor.
pub(crate) struct Executor {
    pub(crate) store: Store,
    pub(crate) app_dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) procfile: crate::engine::ProcfileSource,
    pub(crate) dotenv: Vec<(String, String)>,
    pub(crate) endpoint: std::sync::RwLock<String>,
    pub(crate) region: String,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) console: Console,
    pub(crate) retry: RetryPolicy,
    pub(crate) shutdown_grace: Duration,
    pub(crate) shutdown: CancellationToken,
    pub(crate) waiters: Mutex<HashMap<(String, String), Vec<Wake>>>,
    pub(crate) publisher: Arc<crate::publish::Publisher>,
    active: std::sync::Mutex<HashMap<String, CancellationToken>>,
    pub(crate) dynos: AtomicU64,
    pub(crate) tracker: tokio_util::task::TaskTracker,
}

/// Wakes an attempt waiting for its output.
type Wake = oneshot::Sender<()>;

/// How a task ended, for its step.
#[derive(Debug)]
pub(crate) enum TaskEnd {
    Succeeded,
    Failed(String),
    Cancelled,
    Interrupted,
}

impl Executor {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        store: Store,
        app_dir: PathBuf,
        data_dir: PathBuf,
        procfile: crate::engine::ProcfileSource,
        dotenv: Vec<(String, String)>,
        concurrency: usize,
        console: Console,
        retry: RetryPolicy,
        shutdown_grace: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        let region = store.options().region.clone();
        Executor {
            store,
            app_dir,
            data_dir,
            procfile,
            dotenv,
            endpoint: std::sync::RwLock::new(String::new()),
            region,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            console,
            retry,
            shutdown_grace,
            shutdown,
            waiters: Mutex::new(HashMap::new()),
            publisher: Default::default(),
            active: std::sync::Mutex::new(HashMap::new()),
            dynos: AtomicU64::new(1),
            tracker: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Runs a closure on the journal's connection, off the async threads.
    pub(crate) async fn db<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&mut store.db()))
            .await
            .map_err(|e| Error::Internal(format!("journal task failed: {e}")))?
    }

    /// Resumes unfinished runs, takes pending triggers, then follows new ones until shutdown.
    pub(crate) async fn run(self: Arc<Self>) -> Result<()> {
        let mut triggers = self.store.subscribe_triggers();
        let mut objects = self.store.subscribe_objects();
        self.db(|c| journal::init(c)).await?;
        let stop_publisher = tokio_util::sync::CancellationToken::new();
        let publisher = {
            let (me, stop) = (Arc::clone(&self), stop_publisher.clone());
            tokio::spawn(async move { me.publish_loop(stop).await })
        };
        // Documents a crash left behind (the journal moved on, the document did not).
        for run_id in self.db(|c| journal::unpublished(c)).await? {
            self.publish(&run_id);
        }
        for run_id in self.db(|c| journal::unfinished_runs(c)).await? {
            // Their documents may lag the journal too; rewritten once, then driven.
            self.publish(&run_id);
            self.spawn_drive(run_id);
        }
        let me = Arc::clone(&self);
        let watcher = tokio::spawn(async move {
            loop {
                match objects.recv().await {
                    Ok(ev) => me.object_written(&ev).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => me.wake_all().await,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        for t in self.store.pending_triggers().await? {
            self.intake(t).await;
        }
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                t = triggers.recv() => match t {
                    Ok(t) => self.intake(t).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        for t in self.store.pending_triggers().await? {
                            self.intake(t).await;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        self.tracker.close();
        self.tracker.wait().await;
        watcher.abort();
        stop_publisher.cancel();
        publisher
            .await
            .map_err(|e| Error::Internal(format!("status publisher failed: {e}")))?;
        Ok(())
    }

    /// A committed trigger becomes a run (or a failed run, when its workflow is invalid).
    async fn intake(self: &Arc<Self>, t: Trigger) {
        if let Err(e) = self.try_intake(t).await {
            tracing::error!(error = %e, "cannot take a trigger; it stays pending and is retried at restart");
        }
    }

    async fn try_intake(self: &Arc<Self>, t: Trigger) -> Result<()> {
        let (run_id, id_problem) = match t.run_id.as_deref() {
            Some(id) if linedee::metadata::is_valid_run_id(id) => (id.to_owned(), None),
            Some(bad) => (
                linedee::metadata::new_run_id(),
                Some(format!(
                    "metadata ld_run_id {bad:?} is invalid: expected 1 to 64 characters of [0-9A-Za-z_-]"
                )),
            ),
            None => (linedee::metadata::new_run_id(), None),
        };
        let workflow = match id_problem {
            Some(p) => Err(p),
            None => self.workflow_of(&t).await,
        };
        let created = {
            let t = t.clone();
            let run_id = run_id.clone();
            self.db(move |c| {
                let wf = workflow.as_ref().map_err(Clone::clone);
                journal::create_run(
                    c,
                    &NewRun {
                        run_id: &run_id,
                        trigger: &t,
                        workflow: wf,
                    },
                )
            })
            .await?
        };
        if created {
            tracing::info!(run_id, key = %t.key, "run created");
            self.publish(&run_id);
            self.spawn_drive(run_id);
        } else {
            tracing::info!(run_id, key = %t.key, "trigger ignored: the run already exists");
        }
        Ok(())
    }

    async fn workflow_of(&self, t: &Trigger) -> std::result::Result<Workflow, String> {
        let text = match t.kind {
            TriggerKind::LdCode => match t.metadata.get(LD_CODE) {
                Some(v) => linedee::metadata::decode_rfc2047(v).into_owned(),
                None => return Err("the trigger has no `ld_code` metadata".to_owned()),
            },
            _ => match self.store.get_object(&t.bucket, &t.key).await {
                Ok(Some((_, body))) => match String::from_utf8(body.to_vec()) {
                    Ok(s) => s,
                    Err(_) => {
                        return Err(format!("the body of `{}` is not UTF-8 JSON text", t.key));
                    }
                },
                Ok(None) => {
                    return Err(format!(
                        "`{}` was deleted before its workflow could be read",
                        t.key
                    ));
                }
                Err(e) => return Err(format!("cannot read `{}`: {e}", t.key)),
            },
        };
        Workflow::parse(&text).map_err(|e| e.to_string())
    }

    pub(crate) fn spawn_drive(self: &Arc<Self>, run_id: String) {
        let me = Arc::clone(self);
        let token = self.shutdown.child_token();
        self.active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(run_id.clone(), token.clone());
        self.tracker.spawn(async move {
            if let Err(e) = me.drive(&run_id, &token).await {
                tracing::error!(run_id, error = %e, "run stopped by an engine error; it resumes at restart");
            }
            me.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&run_id);
        });
    }

    /// Asks a run to stop. Returns `false` when it is not active.
    pub(crate) fn cancel(&self, run_id: &str) -> bool {
        let active = self
            .active
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match active.get(run_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    async fn drive(self: &Arc<Self>, run_id: &str, cancel: &CancellationToken) -> Result<()> {
        let id = run_id.to_owned();
        let Some(run) = self.db(move |c| journal::run(c, &id)).await? else {
            return Ok(());
        };
        if run.status.is_finished() {
            return Ok(());
        }
        let Some(wf) = run.workflow.clone() else {
            return Ok(());
        };
        let wf = &wf;
        // Processes of attempts that were in flight when an engine died are stopped first.
        let id = run_id.to_owned();
        let stale = self.db(move |c| journal::open_attempts(c, &id)).await?;
        for (task_id, pgid) in &stale {
            process::stop_stale_group(*pgid, task_id);
        }
        let id = run_id.to_owned();
        let closed = self
            .db(move |c| journal::close_open_attempts(c, &id))
            .await?;
        // Otherwise nothing changed since the document was last written (at intake, at retry,
        // or at the restart that resumes the run).
        if closed > 0 {
            self.publish(run_id);
        }

        for (s, step) in wf.run.iter().enumerate() {
            let id = run_id.to_owned();
            let rows: Vec<TaskRow> = self
                .db(move |c| journal::tasks(c, &id))
                .await?
                .into_iter()
                .filter(|t| t.step == s)
                .collect();
            let group = cancel.child_token();
            let mut pending: FuturesUnordered<_> = rows
                .iter()
                .filter(|t| t.status != TaskState::Succeeded)
                .filter_map(|t| step.tasks().get(t.idx).map(|def| (t, def)))
                .map(|(t, def)| {
                    let group = group.clone();
                    let run = &run;
                    async move {
                        (
                            t.task_id.clone(),
                            self.run_task(run, wf, t, def, group).await,
                        )
                    }
                })
                .collect();
            let mut failure: Option<String> = None;
            let mut interrupted = false;
            while let Some((task_id, end)) = pending.next().await {
                match end? {
                    TaskEnd::Succeeded | TaskEnd::Cancelled => {}
                    TaskEnd::Interrupted => interrupted = true,
                    TaskEnd::Failed(reason) => {
                        if failure.is_none() {
                            failure = Some(format!("task {task_id} failed: {reason}"));
                            group.cancel();
                        }
                    }
                }
            }
            drop(pending);
            if interrupted
                || (self.shutdown.is_cancelled() && failure.is_none() && !cancel.is_cancelled())
            {
                return Ok(()); // journaled as is; resumed at restart
            }
            if cancel.is_cancelled() && !self.shutdown.is_cancelled() {
                return self
                    .finish(run_id, RunState::Cancelled, Some("cancelled on request"))
                    .await;
            }
            if let Some(reason) = failure {
                return self.finish(run_id, RunState::Failed, Some(&reason)).await;
            }
        }
        self.finish(run_id, RunState::Succeeded, None).await
    }

    async fn finish(&self, run_id: &str, state: RunState, error: Option<&str>) -> Result<()> {
        let (id, error) = (run_id.to_owned(), error.map(str::to_owned));
        self.db(move |c| {
            journal::reset_tasks(
                c,
                &id,
                &[TaskState::Pending, TaskState::Running],
                TaskState::Cancelled,
            )?;
            journal::set_run_status(c, &id, state, error.as_deref())
        })
        .await?;
        tracing::info!(run_id, status = %state, "run finished");
        self.publish(run_id);
        Ok(())
    }
}
