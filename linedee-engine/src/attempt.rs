//! One task of a run: its attempts, from spawn to success, failure, timeout or cancel.

use std::sync::Arc;
use std::time::Duration;

use linedee::metadata::{LD_STATE, LD_TASK_ID};
use linedee::status::{RunState, TaskState};
use linedee::{Task, Workflow};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::executor::{Executor, KILL_GRACE, TaskEnd};
use crate::journal::{self, Outcome, RunRow, TaskRow};
use crate::process::{self, Running};

/// How an attempt ended.
enum Attempted {
    /// It decided the task: succeeded, cancelled or interrupted.
    Ended(TaskEnd),
    /// It failed; the task may try again.
    Failed(Failure),
}

/// A failed attempt, as the journal records it.
struct Failure {
    attempt: u32,
    outcome: Outcome,
    reason: String,
    code: Option<i32>,
}

impl Executor {
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

    pub(crate) async fn run_task(
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
            self.publish(&run.run_id);
            return Ok(TaskEnd::Succeeded);
        }
        let max_attempts = 1 + def.retries.unwrap_or(self.retry.retries);
        let mut failures = 0u32;
        loop {
            let permit = tokio::select! {
                p = Arc::clone(&self.permits).acquire_owned() => p.map_err(|_| Error::Internal("semaphore closed".into()))?,
                _ = cancel.cancelled() => return self.cancel_task(&run.run_id, &task_id, None).await,
            };
            let failure = match self.attempt(run, wf, row, def, &cancel, permit).await? {
                Attempted::Ended(end) => return Ok(end),
                Attempted::Failed(failure) => failure,
            };
            let last = failures + 1 >= max_attempts;
            if let Some(end) = self.fail_attempt(run, &task_id, failure, last).await? {
                return Ok(end);
            }
            failures += 1;
            if !self.backoff(failures, &cancel).await {
                return self.cancel_task(&run.run_id, &task_id, None).await;
            }
        }
    }

    /// One attempt, holding `permit` (a slot of the engine's concurrency) until it is decided.
    async fn attempt(
        &self,
        run: &RunRow,
        wf: &Workflow,
        row: &TaskRow,
        def: &Task,
        cancel: &CancellationToken,
        permit: OwnedSemaphorePermit,
    ) -> Result<Attempted> {
        let task_id = row.task_id.clone();
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
                return Ok(Attempted::Failed(Failure {
                    attempt,
                    outcome: Outcome::Failed,
                    reason: format!("cannot start the process: {e}"),
                    code: None,
                }));
            }
        };
        let (id, pgid) = (task_id.clone(), proc.pgid());
        self.db(move |c| journal::set_attempt_pgid(c, &id, attempt, pgid))
            .await?;
        self.publish(&run.run_id);

        if def.no_output {
            self.succeed(run, &task_id, attempt, None, None).await?;
            self.finish_in_background(run, &task_id, attempt, proc, permit);
            self.pause(def, cancel).await;
            return Ok(Attempted::Ended(TaskEnd::Succeeded));
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
                            self.pause(def, cancel).await;
                            return Ok(Attempted::Ended(TaskEnd::Succeeded));
                        }
                        None => break Event::Exited(code),
                    }
                }
                _ = &mut deadline => break Event::TimedOut,
                _ = cancel.cancelled() => break Event::Cancelled,
                _ = self.shutdown.cancelled() => break Event::Shutdown,
            }
        };
        let (outcome, reason, code) = match event {
            Event::Landed(state) => {
                self.succeed(run, &task_id, attempt, state.as_deref(), None)
                    .await?;
                self.finish_in_background(run, &task_id, attempt, proc, permit);
                self.pause(def, cancel).await;
                return Ok(Attempted::Ended(TaskEnd::Succeeded));
            }
            Event::Exited(code) => (
                Outcome::Failed,
                self.exit_reason(def, &task_id, attempt, code).await,
                code,
            ),
            Event::TimedOut => {
                let status = proc.stop(KILL_GRACE).await.ok();
                (
                    Outcome::TimedOut,
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
                let end = self
                    .cancel_task(
                        &run.run_id,
                        &task_id,
                        Some((attempt, status.and_then(|s| s.code()))),
                    )
                    .await?;
                return Ok(Attempted::Ended(end));
            }
            Event::Shutdown => {
                let end = self.interrupt(run, &task_id, attempt, proc, def).await?;
                return Ok(Attempted::Ended(end));
            }
        };
        self.publish_log(run, &task_id, attempt).await;
        Ok(Attempted::Failed(Failure {
            attempt,
            outcome,
            reason,
            code,
        }))
    }

    /// Why an attempt whose process exited without writing its output failed: the exit code,
    /// the end of its log, and whether a missing command is a process type gone from the
    /// Procfile.
    async fn exit_reason(
        &self,
        def: &Task,
        task_id: &str,
        attempt: u32,
        code: Option<i32>,
    ) -> String {
        let log = process::log_path(&self.data_dir, task_id, attempt);
        let detail = crate::diagnostic::from_log(&log).await;
        let how = code.map_or("was killed by a signal".to_owned(), |c| {
            format!("exited with code {c}")
        });
        let mut reason = match detail {
            Some(d) => format!("{how} without writing out/{task_id}: {d}"),
            None => format!("{how} without writing out/{task_id}"),
        };
        // 127: command not found; say when that is a process type gone missing.
        if code == Some(127)
            && let Some(note) = self.procfile.current().not_a_type(&def.cmd)
        {
            reason.push_str("; ");
            reason.push_str(&note);
        }
        reason
    }

    /// Records a failed attempt; returns the task's end when it was the last one.
    async fn fail_attempt(
        &self,
        run: &RunRow,
        task_id: &str,
        failure: Failure,
        last: bool,
    ) -> Result<Option<TaskEnd>> {
        let state = if last {
            TaskState::Failed
        } else {
            TaskState::Running
        };
        let Failure {
            attempt,
            outcome,
            reason,
            code,
        } = failure;
        let (id, r) = (task_id.to_owned(), reason.clone());
        self.db(move |c| journal::finish_attempt(c, &id, attempt, outcome, code, Some(&r), state))
            .await?;
        tracing::warn!(task_id, attempt, reason, "attempt failed");
        self.publish(&run.run_id);
        Ok(last.then_some(TaskEnd::Failed(reason)))
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
        self.publish(&run.run_id);
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
        self.publish(run_id);
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
        let publisher = Arc::clone(&self.publisher);
        self.tracker.spawn(async move {
            let status = tokio::select! {
                s = proc.wait() => s.ok(),
                _ = shutdown.cancelled() => proc.stop(KILL_GRACE).await.ok(),
            };
            drop(permit);
            let code = status.and_then(|s| s.code());
            let id = task_id.clone();
            let db = store.clone();
            let recorded = tokio::task::spawn_blocking(move || {
                journal::set_exit_code(&db.db(), &id, attempt, code)
            })
            .await;
            if matches!(recorded, Ok(Ok(_))) {
                // The status document shows the exit code too, not only the journal.
                publisher.mark(&run.run_id);
            }
            crate::publish::upload_log(&store, &data_dir, &run.bucket, &task_id, attempt).await;
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
}
