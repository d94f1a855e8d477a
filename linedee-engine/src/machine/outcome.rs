//! The rules for outcomes: an exit, an output landing, a timer; retries and backoff; a step
//! completing.

use linedee::status::{RunState, TaskState};

use super::io::{Effect, StopReason, Timer};
use super::record::{Outcome, Wait};
use super::run::{Cx, jitter_unit};

impl Cx<'_> {
    pub(super) fn exited(
        &mut self,
        task_id: &str,
        attempt: u32,
        code: Option<i32>,
        detail: Option<&str>,
    ) {
        let Some(i) = self.find(task_id) else { return };
        let now = self.now;
        let t = &mut self.run.tasks[i];
        let is_last = t.last().is_some_and(|a| a.n == attempt);
        let Some(a) = t.attempt_mut(attempt).filter(|a| a.live()) else {
            return;
        };
        a.exited = true;
        a.exit_code = a.exit_code.or(code);
        let outcome = a.outcome;
        if outcome.is_none() {
            let how = code.map_or("was killed by a signal".to_owned(), |c| {
                format!("exited with code {c}")
            });
            a.outcome = Some(Outcome::Failed);
            a.finished_ms = Some(now);
            a.error = Some(match detail {
                Some(d) => format!("{how} without writing out/{task_id}: {d}"),
                None => format!("{how} without writing out/{task_id}"),
            });
        }
        if is_last {
            t.exit_code = code.or(t.exit_code);
        }
        self.changed = true;
        self.out.push(Effect::StoreLog {
            task_id: task_id.to_owned(),
            attempt,
        });
        match outcome {
            // Exited without its output, or its timeout's stop completed: retry or fail.
            None | Some(Outcome::TimedOut) => self.after_failure(i, attempt),
            _ => {}
        }
        self.try_finalize();
    }

    /// A failed attempt whose process is gone: back off and retry, or fail the task and the run.
    pub(super) fn after_failure(&mut self, i: usize, attempt: u32) {
        let now = self.now;
        let retries = self
            .def(i)
            .and_then(|d| d.retries)
            .unwrap_or(self.m.retry.retries);
        let active = self.active();
        let t = &mut self.run.tasks[i];
        if t.is_final() || t.wait.is_some() || !active {
            return; // decided meanwhile (its output landed, or the run ended)
        }
        let Some(a) = t.attempts.iter().find(|a| a.n == attempt) else {
            return;
        };
        t.error.clone_from(&a.error);
        if a.exit_code.is_some() {
            t.exit_code = a.exit_code;
        }
        t.failures += 1;
        if t.failures <= retries {
            let unit = jitter_unit(&t.task_id, attempt);
            let delay = self.m.retry.delay_at(t.failures, unit);
            let until =
                now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2));
            t.wait = Some(Wait::Backoff {
                after: attempt,
                until,
            });
            let task_id = t.task_id.clone();
            self.out.push(Effect::ArmTimer {
                at: until,
                timer: Timer::Backoff {
                    task_id,
                    after: attempt,
                },
            });
        } else {
            t.status = TaskState::Failed;
            t.finished_ms = Some(now);
            let reason = format!(
                "task {} failed: {}",
                t.task_id,
                t.error.as_deref().unwrap_or("it failed")
            );
            self.end_run(RunState::Failed, Some(reason));
        }
        self.changed = true;
    }

    pub(super) fn landed(&mut self, task_id: &str, state: Option<String>) {
        let Some(i) = self.find(task_id) else { return };
        let no_output = self.def(i).is_none_or(|d| d.no_output);
        if no_output || self.run.tasks[i].is_final() || !self.active() {
            return;
        }
        // An output of a task whose step has not been reached yet (it
        // can only come from elsewhere) decides nothing. Taking it made `advance` leave from
        // that step: later steps started while earlier ones ran, or the run ended `succeeded`
        // with the tasks of earlier steps cancelled.
        let reached = self
            .run
            .tasks
            .iter()
            .find(|t| t.status != TaskState::Succeeded || t.wait.is_some())
            .is_none_or(|t| self.run.tasks[i].step <= t.step);
        if !reached {
            return;
        }
        self.withdraw_start(i, StopReason::Unwanted);
        let now = self.now;
        let t = &mut self.run.tasks[i];
        t.wait = None;
        t.check_first = false;
        if let Some(a) = t
            .attempts
            .iter_mut()
            .find(|a| a.outcome.is_none() && a.started_ms.is_some())
        {
            a.outcome = Some(Outcome::Succeeded);
            a.finished_ms = Some(now);
        }
        self.changed = true;
        self.task_succeeded(i, state);
    }

    pub(super) fn task_succeeded(&mut self, i: usize, state: Option<String>) {
        let now = self.now;
        let wait_for = self.def(i).map_or(0, |d| d.wait_for);
        let t = &mut self.run.tasks[i];
        t.status = TaskState::Succeeded;
        t.error = None;
        t.finished_ms = Some(now);
        if state.is_some() {
            t.state = state;
        }
        if wait_for > 0 {
            let until = now.saturating_add(i64::try_from(wait_for).unwrap_or(0) * 1000);
            t.wait = Some(Wait::Pause { until });
            self.out.push(Effect::ArmTimer {
                at: until,
                timer: Timer::Pause {
                    task_id: t.task_id.clone(),
                },
            });
        }
        let step = t.step;
        self.advance(step);
    }

    /// Starts the next step (or ends the run) once every task of `step` succeeded and paused.
    pub(super) fn advance(&mut self, step: usize) {
        if !self.active() {
            return;
        }
        let done = self
            .run
            .tasks
            .iter()
            .filter(|t| t.step == step)
            .all(|t| t.status == TaskState::Succeeded && t.wait.is_none());
        if !done {
            return;
        }
        if self.run.tasks.iter().any(|t| t.step > step) {
            self.start_step(step + 1);
        } else {
            self.end_run(RunState::Succeeded, None);
        }
    }

    pub(super) fn missing(&mut self, task_id: &str) {
        if let Some(i) = self.find(task_id)
            && let Some(Wait::Check { failed }) = self.run.tasks[i].wait
        {
            self.run.tasks[i].wait = None;
            self.run.tasks[i].check_first = false;
            self.changed = true;
            match failed {
                Some(attempt) => self.after_failure(i, attempt),
                None => self.request_attempt(i),
            }
        }
    }

    pub(super) fn timer(&mut self, timer: Timer) {
        let Some(i) = self.find(timer.task_id()) else {
            return;
        };
        match timer {
            Timer::Timeout { task_id, attempt } => {
                let timeout = self.def(i).map_or(0, |d| d.timeout);
                let now = self.now;
                let t = &mut self.run.tasks[i];
                let Some(a) = t
                    .attempt_mut(attempt)
                    .filter(|a| a.outcome.is_none() && a.live())
                else {
                    return;
                };
                a.outcome = Some(Outcome::TimedOut);
                a.finished_ms = Some(now);
                a.error = Some(format!(
                    "timed out: no out/{task_id} within {timeout} s; its process group was stopped"
                ));
                a.stopping = true;
                let a = a.clone();
                self.changed = true;
                self.stop(i, &a, StopReason::TimedOut);
            }
            Timer::Backoff { after, .. } => {
                if matches!(self.run.tasks[i].wait, Some(Wait::Backoff { after: a, .. }) if a == after)
                {
                    self.run.tasks[i].wait = None;
                    self.changed = true;
                    // A later attempt may have run and been lost with the record's end.
                    if self.run.tasks[i].check_first {
                        self.begin_task(i);
                    } else {
                        self.request_attempt(i);
                    }
                }
            }
            Timer::Pause { .. } => {
                if matches!(self.run.tasks[i].wait, Some(Wait::Pause { .. })) {
                    self.run.tasks[i].wait = None;
                    self.changed = true;
                    let step = self.run.tasks[i].step;
                    self.advance(step);
                }
            }
        }
    }
}
