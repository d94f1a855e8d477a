//! The executor: triggers become runs, runs become task processes (protocol §5–§7).
//!
//! One tokio task drives each unfinished run, step by step. A task attempt holds a permit of
//! the concurrency semaphore (FIFO) while its process runs. Outputs are detected from the
//! store's object events, never by polling S3.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use linedee::metadata::{LD_CODE, LD_STATE, LD_TASK_ID};
use linedee::status::{RunState, TaskState};
use linedee::{LineD, Task, Workflow};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use crate::console::Console;
use crate::error::{Error, Result};
use crate::journal::{self, NewRun, Outcome, RunRow, TaskRow};
use crate::process::{self, Running};
use crate::retry::RetryPolicy;
use crate::store::{ObjectEvent, Store, Trigger, TriggerKind};

/// How long a stopped process group gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Shared state of the executor.
pub(crate) struct Executor {
    pub(crate) store: Store,
    pub(crate) app_dir: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) procfile: crate::engine::ProcfileSource,
    pub(crate) dotenv: Vec<(String, String)>,
    endpoint: std::sync::RwLock<String>,
    pub(crate) region: String,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) console: Console,
    pub(crate) retry: RetryPolicy,
    pub(crate) shutdown_grace: Duration,
    pub(crate) shutdown: CancellationToken,
    waiters: Mutex<HashMap<(String, String), Vec<Wake>>>,
    active: std::sync::Mutex<HashMap<String, CancellationToken>>,
    dynos: AtomicU64,
    pub(crate) tracker: tokio_util::task::TaskTracker,
}

/// Wakes an attempt waiting for its output.
type Wake = oneshot::Sender<()>;

/// How a task ended, for its step.
#[derive(Debug)]
enum TaskEnd {
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
        for run_id in self.db(|c| journal::unfinished_runs(c)).await? {
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
            self.publish(&run_id).await;
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
        self.db(move |c| journal::close_open_attempts(c, &id))
            .await?;
        self.publish(run_id).await;

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
        self.publish(run_id).await;
        Ok(())
    }

    /// The `ld_state` of a landed output (`Some(None)`: landed without state), or `None`.
    async fn landed(&self, bucket: &str, task_id: &str) -> Result<Option<Option<String>>> {
        let key = linedee::line_d::output_key(task_id);
        Ok(self
            .store
            .head_object(bucket, &key)
            .await?
            .filter(|m| m.metadata.get(LD_TASK_ID).map(String::as_str) == Some(task_id))
            .map(|m| {
                m.metadata
                    .get(LD_STATE)
                    .map(|s| linedee::metadata::decode_rfc2047(s).into_owned())
            }))
    }

    async fn run_task(
        &self,
        run: &RunRow,
        wf: &Workflow,
        row: &TaskRow,
        def: &Task,
        cancel: CancellationToken,
    ) -> Result<TaskEnd> {
        let task_id = row.task_id.clone();
        if !def.no_output
            && let Some(state) = self.landed(&run.bucket, &task_id).await?
        {
            let id = task_id.clone();
            self.db(move |c| journal::task_found_done(c, &id, state.as_deref()))
                .await?;
            self.publish(&run.run_id).await;
            return Ok(TaskEnd::Succeeded);
        }
        let max_attempts = 1 + def.retries.unwrap_or(self.retry.retries);
        let mut failures = 0u32;
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&self.permits).acquire_owned() => p.map_err(|_| Error::Internal("semaphore closed".into()))?,
                _ = cancel.cancelled() => return self.cancel_task(&run.run_id, &task_id, None).await,
            };
            let mut waiter = self.wait_output(&run.bucket, &task_id).await;
            let (id, rid) = (task_id.clone(), run.run_id.clone());
            let attempt = self
                .db(move |c| {
                    journal::set_run_status(c, &rid, RunState::Running, None)?;
                    journal::start_attempt(c, &id, None)
                })
                .await?;
            let spec = self.spec(run, wf, row, def, attempt);
            let mut proc = match process::spawn(spec, &self.console).await {
                Ok(p) => p,
                Err(e) => {
                    let reason = format!("cannot start the process: {e}");
                    match self
                        .fail_attempt(
                            run,
                            &task_id,
                            attempt,
                            None,
                            &reason,
                            failures + 1 >= max_attempts,
                        )
                        .await?
                    {
                        Some(end) => return Ok(end),
                        None => {
                            failures += 1;
                            drop(permit);
                            if !self.backoff(failures, &cancel).await {
                                return self.cancel_task(&run.run_id, &task_id, None).await;
                            }
                            continue;
                        }
                    }
                }
            };
            let (id, pgid) = (task_id.clone(), proc.pgid());
            self.db(move |c| journal::set_attempt_pgid(c, &id, attempt, pgid))
                .await?;
            self.publish(&run.run_id).await;

            if def.no_output {
                self.succeed(run, &task_id, attempt, None, None).await?;
                self.finish_in_background(run, &task_id, attempt, proc, permit);
                self.pause(def, &cancel).await;
                return Ok(TaskEnd::Succeeded);
            }

            let deadline = tokio::time::sleep(def.timeout_duration());
            tokio::pin!(deadline);
            enum Event {
                Landed(Option<String>),
                Exited(Option<i32>),
                TimedOut,
                Cancelled,
                Shutdown,
            }
            let event = loop {
                tokio::select! {
                    _ = &mut waiter => match self.landed(&run.bucket, &task_id).await? {
                        Some(state) => break Event::Landed(state),
                        None => waiter = self.wait_output(&run.bucket, &task_id).await,
                    },
                    status = proc.wait() => {
                        let code = status.ok().and_then(|s| s.code());
                        match self.landed(&run.bucket, &task_id).await? {
                            Some(state) => {
                                self.succeed(run, &task_id, attempt, state.as_deref(), code).await?;
                                self.publish_log(run, &task_id, attempt).await;
                                drop(permit);
                                self.pause(def, &cancel).await;
                                return Ok(TaskEnd::Succeeded);
                            }
                            None => break Event::Exited(code),
                        }
                    }
                    _ = &mut deadline => break Event::TimedOut,
                    _ = cancel.cancelled() => break Event::Cancelled,
                    _ = self.shutdown.cancelled() => break Event::Shutdown,
                }
            };
            let (reason, code) = match event {
                Event::Landed(state) => {
                    self.succeed(run, &task_id, attempt, state.as_deref(), None)
                        .await?;
                    self.finish_in_background(run, &task_id, attempt, proc, permit);
                    self.pause(def, &cancel).await;
                    return Ok(TaskEnd::Succeeded);
                }
                Event::Exited(code) => {
                    let log = process::log_path(&self.data_dir, &task_id, attempt);
                    let detail = crate::diagnostic::from_log(&log).await;
                    let how = code.map_or("was killed by a signal".to_owned(), |c| {
                        format!("exited with code {c}")
                    });
                    let reason = match detail {
                        Some(d) => format!("{how} without writing out/{task_id}: {d}"),
                        None => format!("{how} without writing out/{task_id}"),
                    };
                    (reason, code)
                }
                Event::TimedOut => {
                    let status = proc.stop(KILL_GRACE).await.ok();
                    (
                        format!(
                            "timed out: no out/{task_id} within {} s; its process group was stopped",
                            def.timeout
                        ),
                        status.and_then(|s| s.code()),
                    )
                }
                Event::Cancelled => {
                    let status = proc.stop(KILL_GRACE).await.ok();
                    self.publish_log(run, &task_id, attempt).await;
                    return self
                        .cancel_task(
                            &run.run_id,
                            &task_id,
                            Some((attempt, status.and_then(|s| s.code()))),
                        )
                        .await;
                }
                Event::Shutdown => return self.interrupt(run, &task_id, attempt, proc, def).await,
            };
            self.publish_log(run, &task_id, attempt).await;
            drop(permit);
            let last = failures + 1 >= max_attempts;
            if let Some(end) = self
                .fail_attempt(run, &task_id, attempt, code, &reason, last)
                .await?
            {
                return Ok(end);
            }
            failures += 1;
            if !self.backoff(failures, &cancel).await {
                return self.cancel_task(&run.run_id, &task_id, None).await;
            }
        }
    }

    /// Records a failed attempt; returns the task's end when it was the last one.
    async fn fail_attempt(
        &self,
        run: &RunRow,
        task_id: &str,
        attempt: u32,
        code: Option<i32>,
        reason: &str,
        last: bool,
    ) -> Result<Option<TaskEnd>> {
        let outcome = if reason.starts_with("timed out") {
            Outcome::TimedOut
        } else {
            Outcome::Failed
        };
        let state = if last {
            TaskState::Failed
        } else {
            TaskState::Running
        };
        let (id, r) = (task_id.to_owned(), reason.to_owned());
        self.db(move |c| journal::finish_attempt(c, &id, attempt, outcome, code, Some(&r), state))
            .await?;
        tracing::warn!(task_id, attempt, reason, "attempt failed");
        self.publish(&run.run_id).await;
        Ok(last.then(|| TaskEnd::Failed(reason.to_owned())))
    }

    async fn succeed(
        &self,
        run: &RunRow,
        task_id: &str,
        attempt: u32,
        state: Option<&str>,
        code: Option<i32>,
    ) -> Result<()> {
        let (id, state) = (task_id.to_owned(), state.map(str::to_owned));
        self.db(move |c| {
            journal::finish_attempt(
                c,
                &id,
                attempt,
                Outcome::Succeeded,
                code,
                None,
                TaskState::Succeeded,
            )?;
            journal::set_task_state(c, &id, state.as_deref())
        })
        .await?;
        self.publish(&run.run_id).await;
        Ok(())
    }

    async fn cancel_task(
        &self,
        run_id: &str,
        task_id: &str,
        attempt: Option<(u32, Option<i32>)>,
    ) -> Result<TaskEnd> {
        if self.shutdown.is_cancelled() && attempt.is_none() {
            return Ok(TaskEnd::Interrupted);
        }
        let id = task_id.to_owned();
        self.db(move |c| match attempt {
            Some((a, code)) => journal::finish_attempt(
                c,
                &id,
                a,
                Outcome::Cancelled,
                code,
                Some("cancelled"),
                TaskState::Cancelled,
            ),
            None => journal::reset_tasks_one(c, &id, TaskState::Cancelled),
        })
        .await?;
        self.publish(run_id).await;
        Ok(TaskEnd::Cancelled)
    }

    /// The engine is stopping: the attempt gets the grace period to finish, then its group is
    /// stopped and it is journaled as interrupted, to start again (attempt + 1) on resume.
    async fn interrupt(
        &self,
        run: &RunRow,
        task_id: &str,
        attempt: u32,
        mut proc: Running,
        def: &Task,
    ) -> Result<TaskEnd> {
        let exited = tokio::time::timeout(self.shutdown_grace, proc.wait())
            .await
            .ok();
        if !def.no_output
            && let Some(state) = self.landed(&run.bucket, task_id).await?
        {
            let code = exited.and_then(|s| s.ok()).and_then(|s| s.code());
            if code.is_none() {
                let _ = proc.stop(KILL_GRACE).await;
            }
            self.succeed(run, task_id, attempt, state.as_deref(), code)
                .await?;
            self.publish_log(run, task_id, attempt).await;
            return Ok(TaskEnd::Succeeded);
        }
        if exited.is_none() {
            let _ = proc.stop(KILL_GRACE).await;
        }
        let id = task_id.to_owned();
        self.db(move |c| {
            journal::finish_attempt(
                c,
                &id,
                attempt,
                Outcome::Interrupted,
                None,
                Some("engine stopped"),
                TaskState::Running,
            )
        })
        .await?;
        self.publish_log(run, task_id, attempt).await;
        Ok(TaskEnd::Interrupted)
    }

    /// Lets a process whose attempt is decided run on; records its exit code and log when it
    /// ends, keeping its concurrency permit until then.
    fn finish_in_background(
        &self,
        run: &RunRow,
        task_id: &str,
        attempt: u32,
        mut proc: Running,
        permit: OwnedSemaphorePermit,
    ) {
        let store = self.store.clone();
        let (task_id, run) = (task_id.to_owned(), run.clone());
        let data_dir = self.data_dir.clone();
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            let status = tokio::select! {
                s = proc.wait() => s.ok(),
                _ = shutdown.cancelled() => proc.stop(KILL_GRACE).await.ok(),
            };
            drop(permit);
            let code = status.and_then(|s| s.code());
            let id = task_id.clone();
            let db = store.clone();
            let _ = tokio::task::spawn_blocking(move || {
                journal::set_exit_code(&db.db(), &id, attempt, code)
            })
            .await;
            crate::executor::upload_log(&store, &data_dir, &run.bucket, &task_id, attempt).await;
        });
    }

    async fn pause(&self, def: &Task, cancel: &CancellationToken) {
        if def.wait_for > 0 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(def.wait_for)) => {}
                _ = cancel.cancelled() => {}
            }
        }
    }

    /// Sleeps before the next attempt; `false` when cancelled meanwhile.
    async fn backoff(&self, failures: u32, cancel: &CancellationToken) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(self.retry.delay(failures)) => true,
            _ = cancel.cancelled() => false,
        }
    }

    /// The process of an attempt: script, environment (protocol §2.5) and log.
    fn spec(
        &self,
        run: &RunRow,
        wf: &Workflow,
        row: &TaskRow,
        def: &Task,
        attempt: u32,
    ) -> process::Spec {
        let mut line_d = LineD::new(row.task_id.clone());
        line_d.run_id = Some(run.run_id.clone());
        line_d.attempt = Some(attempt);
        line_d.workflow_title = wf.title.clone();
        line_d.task_name = def.name.clone();
        line_d.cmd = Some(def.cmd.clone());
        line_d.machine = Some(def.machine.as_str().to_owned());
        line_d.timeout = Some(def.timeout);
        line_d.options = def
            .option_pairs()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        line_d.bucket = Some(run.bucket.clone());
        line_d.trigger_key = Some(run.trigger_key.clone());
        line_d.trigger_etag = run.trigger_etag.clone();
        line_d.output_key = Some(linedee::line_d::output_key(&row.task_id));

        let mut env = self.dotenv.clone();
        env.extend(self.store_env(&run.bucket));
        env.push((
            "DYNO".into(),
            format!("run.{}", self.dynos.fetch_add(1, Ordering::Relaxed)),
        ));
        env.extend(
            def.option_pairs()
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        env.push((linedee::line_d::VAR.into(), line_d.to_json()));
        let label = def.name.clone().unwrap_or_else(|| {
            def.cmd
                .split_whitespace()
                .next()
                .unwrap_or("task")
                .to_owned()
        });
        process::Spec {
            script: self.procfile.current().resolve(&def.cmd),
            env,
            cwd: self.app_dir.clone(),
            log_path: process::log_path(&self.data_dir, &row.task_id, attempt),
            label: format!("{label}.{}", row.step * 100 + row.idx + 1),
        }
    }

    /// Sets the store's URL, known once its listener is bound.
    pub(crate) fn set_endpoint(&self, endpoint: &str) {
        *self
            .endpoint
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = endpoint.to_owned();
    }

    /// The `LD_*` variables that point a process at the embedded store.
    pub(crate) fn store_env(&self, bucket: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("LD_S3_BUCKET".to_owned(), bucket.to_owned()),
            (
                "LD_S3_ENDPOINT".to_owned(),
                self.endpoint
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            ),
            ("LD_REGION".to_owned(), self.region.clone()),
        ];
        if let Ok(c) = self.store.credentials() {
            env.push(("LD_AWS_ACCESS_KEY_ID".to_owned(), c.access_key_id));
            env.push(("LD_AWS_SECRET_ACCESS_KEY".to_owned(), c.secret_access_key));
            env.push(("LD_AWS_SESSION_TOKEN".to_owned(), c.session_token));
        }
        env
    }

    async fn publish_log(&self, run: &RunRow, task_id: &str, attempt: u32) {
        upload_log(&self.store, &self.data_dir, &run.bucket, task_id, attempt).await;
    }

    /// Rewrites `ld/runs/{run_id}.json` from the journal.
    pub(crate) async fn publish(&self, run_id: &str) {
        let id = run_id.to_owned();
        let doc = match self.db(move |c| journal::render(c, &id)).await {
            Ok(Some(doc)) => doc,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(run_id, error = %e, "cannot render a status document");
                return;
            }
        };
        let body = serde_json::to_vec(&doc).unwrap_or_default();
        let key = linedee::status::status_key(run_id);
        if let Err(e) = self
            .store
            .put_object(
                &doc.trigger.bucket,
                &key,
                body.into(),
                Some("application/json"),
                Default::default(),
            )
            .await
        {
            tracing::error!(run_id, error = %e, "cannot publish a status document");
        }
    }

    /// A receiver that fires when `out/{task_id}` may have landed in `bucket`.
    async fn wait_output(&self, bucket: &str, task_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .await
            .entry((bucket.to_owned(), task_id.to_owned()))
            .or_default()
            .push(tx);
        rx
    }

    async fn object_written(&self, ev: &ObjectEvent) {
        let Some(task_id) = ev.key.strip_prefix("out/") else {
            return;
        };
        if let Some(senders) = self
            .waiters
            .lock()
            .await
            .remove(&(ev.bucket.clone(), task_id.to_owned()))
        {
            for tx in senders {
                let _ = tx.send(());
            }
        }
    }

    async fn wake_all(&self) {
        for (_, senders) in self.waiters.lock().await.drain() {
            for tx in senders {
                let _ = tx.send(());
            }
        }
    }
}

/// Copies an attempt's local log to `ld/logs/{task_id}/{attempt}.log`.
pub(crate) async fn upload_log(
    store: &Store,
    data_dir: &std::path::Path,
    bucket: &str,
    task_id: &str,
    attempt: u32,
) {
    let path = process::log_path(data_dir, task_id, attempt);
    let key = linedee::status::log_key(task_id, attempt);
    if let Err(e) = store
        .put_file(bucket, &key, &path, Some("text/plain; charset=utf-8"))
        .await
    {
        tracing::warn!(task_id, attempt, error = %e, "cannot store a task log");
    }
}
