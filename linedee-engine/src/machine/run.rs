//! The rules: how each [`Event`] moves a [`RunRecord`] and which [`Effect`]s follow
//! (protocol §5 and §9, SPEC 2.6 and 2.7).

use linedee::Workflow;
use linedee::status::{RunState, TaskState, Trigger};

use super::io::{Effect, Event, Refused, StopReason, Timer};
use super::record::{
    AttemptRecord, Ending, FORMAT_VERSION, Millis, Outcome, RunRecord, TaskRecord, Wait,
};
use crate::retry::RetryPolicy;

/// The run state machine. It holds only configuration; each call takes a run's record, the
/// current time and one event, and returns what to do. It does no I/O and reads no clock.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Machine {
    /// Retries of a task that does not set `retries`, and the backoff between attempts.
    pub(crate) retry: RetryPolicy,
}

impl Machine {
    /// A new run for a trigger. An invalid workflow (`Err` with every problem) gives a run
    /// that is already `failed`.
    pub(crate) fn create(
        &self,
        run_id: &str,
        trigger: Trigger,
        workflow: Result<Workflow, String>,
        now: Millis,
    ) -> (RunRecord, Vec<Effect>) {
        let (workflow, status, error) = match workflow {
            Ok(wf) => (Some(wf), RunState::Queued, None),
            Err(e) => (None, RunState::Failed, Some(e)),
        };
        let tasks = workflow
            .iter()
            .flat_map(Workflow::tasks)
            .map(|(step, idx, _)| TaskRecord {
                task_id: linedee::line_d::task_id(run_id, step, idx),
                step,
                idx,
                status: TaskState::Pending,
                started_ms: None,
                finished_ms: None,
                exit_code: None,
                state: None,
                error: None,
                failures: 0,
                wait: None,
                attempts: Vec::new(),
            })
            .collect();
        let mut run = RunRecord {
            version: FORMAT_VERSION,
            run_id: run_id.to_owned(),
            trigger,
            workflow,
            status,
            error,
            created_ms: now,
            started_ms: None,
            finished_ms: status.is_finished().then_some(now),
            tasks,
            ending: None,
            halted: false,
        };
        let mut cx = Cx::new(self, &mut run, now);
        cx.changed = true;
        if status.is_finished() {
            cx.finished = Some(status);
        } else {
            cx.start_from_first_unfinished_step();
        }
        let effects = cx.effects();
        (run, effects)
    }

    /// Applies one event. Only control requests can be refused; any other event that no
    /// longer applies (a duplicate, a late timer, an exit already recorded) changes nothing.
    pub(crate) fn handle(
        &self,
        run: &mut RunRecord,
        now: Millis,
        event: Event,
    ) -> Result<Vec<Effect>, Refused> {
        let mut cx = Cx::new(self, run, now);
        match event {
            Event::Restarted => cx.restarted(),
            Event::AttemptStarted {
                task_id,
                attempt,
                runner,
            } => cx.started(&task_id, attempt, runner),
            Event::SpawnFailed {
                task_id,
                attempt,
                reason,
            } => cx.spawn_failed(&task_id, attempt, &reason),
            Event::Exited {
                task_id,
                attempt,
                code,
                detail,
            } => cx.exited(&task_id, attempt, code, detail.as_deref()),
            Event::OutputLanded { task_id, state } => cx.landed(&task_id, state),
            Event::OutputMissing { task_id } => cx.missing(&task_id),
            Event::TimerFired(timer) => cx.timer(timer),
            Event::CancelRequested => cx.cancel()?,
            Event::RedriveRequested => cx.redrive()?,
            Event::Halt => cx.halt(),
            Event::Interrupt => cx.interrupt(),
        }
        Ok(cx.effects())
    }
}

/// One call's working state.
struct Cx<'a> {
    m: &'a Machine,
    run: &'a mut RunRecord,
    now: Millis,
    out: Vec<Effect>,
    changed: bool,
    finished: Option<RunState>,
}

impl<'a> Cx<'a> {
    fn new(m: &'a Machine, run: &'a mut RunRecord, now: Millis) -> Self {
        Cx {
            m,
            run,
            now,
            out: Vec::new(),
            changed: false,
            finished: None,
        }
    }

    /// The effects, with one `Publish` when anything changed and `Finished` last.
    fn effects(mut self) -> Vec<Effect> {
        if self.changed {
            self.out.push(Effect::Publish);
        }
        if let Some(s) = self.finished {
            self.out.push(Effect::Finished(s));
        }
        self.out
    }

    fn find(&self, task_id: &str) -> Option<usize> {
        self.run.tasks.iter().position(|t| t.task_id == task_id)
    }

    /// Whether the run still moves forward (not finished, not ending).
    fn active(&self) -> bool {
        !self.run.status.is_finished() && self.run.ending.is_none()
    }

    fn def(&self, i: usize) -> Option<&linedee::Task> {
        let t = &self.run.tasks[i];
        self.run.def(t.step, t.idx)
    }

    fn stop(&mut self, i: usize, a: &AttemptRecord, reason: StopReason) {
        self.out.push(Effect::StopAttempt {
            task_id: self.run.tasks[i].task_id.clone(),
            attempt: a.n,
            runner: a.runner.clone(),
            reason,
        });
    }

    /// Withdraws a start that was asked for and not granted yet.
    fn withdraw_start(&mut self, i: usize, reason: StopReason) {
        if let Some(Wait::Slot { attempt }) = self.run.tasks[i].wait {
            let now = self.now;
            let t = &mut self.run.tasks[i];
            t.wait = None;
            // FIX (property tests): the withdrawn attempt stays in the record, decided and never
            // started, so that its number is not handed out again. Removing it let a redrive
            // ask for the same attempt number; a start that raced the withdrawal then came back
            // as that new attempt's `AttemptStarted`, and the exit of the other process of the
            // same number as its `Exited` (the run finished, or retried, while one still ran).
            if let Some(a) = t.attempt_mut(attempt) {
                a.outcome = Some(match reason {
                    StopReason::Interrupted => Outcome::Interrupted,
                    _ => Outcome::Cancelled,
                });
                a.finished_ms = Some(now);
                a.error = Some("withdrawn before it started".to_owned());
                let a = a.clone();
                self.stop(i, &a, reason);
            }
            self.changed = true;
        }
    }

    // ---- starting work ----

    /// Starts the first step that has work left (at creation, redrive and restart).
    fn start_from_first_unfinished_step(&mut self) {
        let pending = self
            .run
            .tasks
            .iter()
            .find(|t| {
                t.status != TaskState::Succeeded || matches!(t.wait, Some(Wait::Pause { .. }))
            })
            .map(|t| t.step);
        match pending {
            Some(step) => self.start_step(step),
            None => self.end_run(RunState::Succeeded, None),
        }
    }

    fn start_step(&mut self, step: usize) {
        for i in 0..self.run.tasks.len() {
            let t = &self.run.tasks[i];
            if t.step == step && !t.is_final() && t.wait.is_none() {
                self.begin_task(i);
            }
        }
    }

    /// A task that ran before checks for its output first; others ask for a slot.
    fn begin_task(&mut self, i: usize) {
        let no_output = self.def(i).is_none_or(|d| d.no_output);
        let t = &mut self.run.tasks[i];
        // FIX (property tests, with `withdraw_start`): attempts withdrawn before they started
        // stay in the record; only a task that ran has an output to check for.
        if t.attempts.iter().any(|a| a.started_ms.is_some()) && !no_output {
            t.wait = Some(Wait::Check);
            self.out.push(Effect::CheckOutput {
                task_id: t.task_id.clone(),
            });
            self.changed = true;
        } else {
            self.request_attempt(i);
        }
    }

    fn request_attempt(&mut self, i: usize) {
        if self.run.halted || !self.active() {
            return;
        }
        let t = &mut self.run.tasks[i];
        let n = t.attempts.last().map_or(1, |a| a.n + 1);
        t.attempts.push(AttemptRecord {
            n,
            runner: None,
            started_ms: None,
            finished_ms: None,
            outcome: None,
            exit_code: None,
            error: None,
            exited: false,
            stopping: false,
        });
        t.wait = Some(Wait::Slot { attempt: n });
        self.out.push(Effect::StartAttempt {
            task_id: t.task_id.clone(),
            attempt: n,
        });
        self.changed = true;
    }

    fn mark_running(&mut self, i: usize) {
        let now = self.now;
        let t = &mut self.run.tasks[i];
        t.status = TaskState::Running;
        t.started_ms.get_or_insert(now);
        t.exit_code = None;
        t.error = None;
        if self.run.status == RunState::Queued {
            self.run.status = RunState::Running;
        }
        self.run.started_ms.get_or_insert(now);
    }

    fn started(&mut self, task_id: &str, attempt: u32, runner: String) {
        // FIX (property tests): a duplicate of the `AttemptStarted` already recorded (same
        // attempt, same runner) changes nothing. Answering it with the `Unwanted` stop below
        // killed the very process the attempt was waiting on, and its exit then counted as a
        // failure.
        if self.find(task_id).is_some_and(|i| {
            self.run.tasks[i]
                .attempts
                .iter()
                .any(|a| a.n == attempt && a.runner.as_deref() == Some(runner.as_str()))
        }) {
            return;
        }
        let wanted = self.find(task_id).filter(|&i| {
            self.run.tasks[i].wait == Some(Wait::Slot { attempt }) && !self.run.halted
        });
        let Some(i) = wanted else {
            // Granted after its task was decided (or the engine began to stop): not wanted.
            self.out.push(Effect::StopAttempt {
                task_id: task_id.to_owned(),
                attempt,
                runner: Some(runner),
                reason: StopReason::Unwanted,
            });
            return;
        };
        self.changed = true;
        self.mark_running(i);
        let now = self.now;
        let (no_output, timeout) = self
            .def(i)
            .map_or((false, 60), |d| (d.no_output, d.timeout));
        let t = &mut self.run.tasks[i];
        t.wait = None;
        let Some(a) = t.attempt_mut(attempt) else {
            return;
        };
        a.started_ms = Some(now);
        a.runner = Some(runner);
        if no_output {
            a.outcome = Some(Outcome::Succeeded);
            a.finished_ms = Some(now);
            self.task_succeeded(i, None);
        } else {
            let at = now.saturating_add(i64::try_from(timeout).unwrap_or(i64::MAX / 2000) * 1000);
            self.out.push(Effect::ArmTimer {
                at,
                timer: Timer::Timeout {
                    task_id: task_id.to_owned(),
                    attempt,
                },
            });
        }
    }

    fn spawn_failed(&mut self, task_id: &str, attempt: u32, reason: &str) {
        let Some(i) = self
            .find(task_id)
            .filter(|&i| self.run.tasks[i].wait == Some(Wait::Slot { attempt }))
        else {
            return;
        };
        self.changed = true;
        self.mark_running(i);
        let now = self.now;
        let t = &mut self.run.tasks[i];
        t.wait = None;
        if let Some(a) = t.attempt_mut(attempt) {
            a.started_ms = Some(now);
            a.finished_ms = Some(now);
            a.exited = true;
            a.outcome = Some(Outcome::Failed);
            a.error = Some(format!("cannot start the process: {reason}"));
        }
        self.after_failure(i, attempt);
    }

    // ---- outcomes ----

    fn exited(&mut self, task_id: &str, attempt: u32, code: Option<i32>, detail: Option<&str>) {
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
    fn after_failure(&mut self, i: usize, attempt: u32) {
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

    fn landed(&mut self, task_id: &str, state: Option<String>) {
        let Some(i) = self.find(task_id) else { return };
        let no_output = self.def(i).is_none_or(|d| d.no_output);
        if no_output || self.run.tasks[i].is_final() || !self.active() {
            return;
        }
        // FIX (property tests): an output of a task whose step has not been reached yet (it
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

    fn task_succeeded(&mut self, i: usize, state: Option<String>) {
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
    fn advance(&mut self, step: usize) {
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

    fn missing(&mut self, task_id: &str) {
        if let Some(i) = self.find(task_id)
            && self.run.tasks[i].wait == Some(Wait::Check)
        {
            self.run.tasks[i].wait = None;
            self.changed = true;
            self.request_attempt(i);
        }
    }

    fn timer(&mut self, timer: Timer) {
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
                    self.request_attempt(i);
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

    // ---- ending ----

    /// Decides the run's final state: every task not done is cancelled and its process
    /// stopped; the run takes the state once those processes are gone.
    fn end_run(&mut self, status: RunState, error: Option<String>) {
        if !self.active() {
            return;
        }
        for i in 0..self.run.tasks.len() {
            if !self.run.tasks[i].is_final() {
                self.cancel_task(i);
            }
        }
        self.run.ending = Some(Ending { status, error });
        self.changed = true;
        self.try_finalize();
    }

    fn cancel_task(&mut self, i: usize) {
        self.withdraw_start(i, StopReason::Cancelled);
        let now = self.now;
        let t = &mut self.run.tasks[i];
        t.wait = None;
        t.status = TaskState::Cancelled;
        t.finished_ms = Some(now);
        let mut stops = Vec::new();
        for a in t
            .attempts
            .iter_mut()
            .filter(|a| a.live() && a.outcome.is_none())
        {
            a.outcome = Some(Outcome::Cancelled);
            a.finished_ms = Some(now);
            a.error = Some("cancelled".to_owned());
            a.stopping = true;
            stops.push(a.clone());
        }
        for a in &stops {
            self.stop(i, a, StopReason::Cancelled);
        }
        self.changed = true;
    }

    fn try_finalize(&mut self) {
        if self.run.ending.is_none() || self.run.stopping() {
            return;
        }
        if let Some(end) = self.run.ending.take() {
            self.run.status = end.status;
            self.run.error = end.error;
            self.run.finished_ms = Some(self.now);
            self.finished = Some(end.status);
            self.changed = true;
        }
    }

    // ---- control ----

    fn cancel(&mut self) -> Result<(), Refused> {
        if self.run.status.is_finished() {
            return Err(Refused::Finished(self.run.status));
        }
        if self.run.ending.is_none() {
            self.end_run(RunState::Cancelled, Some("cancelled on request".to_owned()));
        }
        Ok(())
    }

    fn redrive(&mut self) -> Result<(), Refused> {
        if !matches!(self.run.status, RunState::Failed | RunState::Cancelled) {
            return Err(Refused::NotRetryable(self.run.status));
        }
        if self.run.workflow.is_none() {
            return Err(Refused::InvalidWorkflow(
                self.run.error.clone().unwrap_or_default(),
            ));
        }
        for t in &mut self.run.tasks {
            if matches!(t.status, TaskState::Failed | TaskState::Cancelled) {
                t.status = TaskState::Pending;
                t.finished_ms = None;
                t.failures = 0;
                t.wait = None;
            }
        }
        self.run.status = RunState::Queued;
        self.run.error = None;
        self.run.finished_ms = None;
        self.changed = true;
        self.start_from_first_unfinished_step();
        Ok(())
    }

    fn halt(&mut self) {
        self.run.halted = true;
        for i in 0..self.run.tasks.len() {
            self.withdraw_start(i, StopReason::Interrupted);
        }
    }

    fn interrupt(&mut self) {
        self.halt();
        let now = self.now;
        for i in 0..self.run.tasks.len() {
            let mut stops = Vec::new();
            for a in self.run.tasks[i]
                .attempts
                .iter_mut()
                .filter(|a| a.live() && a.outcome.is_none())
            {
                a.outcome = Some(Outcome::Interrupted);
                a.finished_ms = Some(now);
                a.error = Some("engine stopped".to_owned());
                a.stopping = true;
                stops.push(a.clone());
            }
            for a in &stops {
                self.changed = true;
                self.stop(i, a, StopReason::Interrupted);
            }
        }
    }

    /// Resumes after the engine (re)started: processes recorded as live are stopped if they
    /// still run that attempt, and the run carries on from its record.
    fn restarted(&mut self) {
        self.run.halted = false;
        let now = self.now;
        let mut timed_out = Vec::new();
        for i in 0..self.run.tasks.len() {
            let t = &mut self.run.tasks[i];
            // A start that was asked for and never granted is asked for again below.
            if let Some(Wait::Slot { attempt }) = t.wait {
                t.attempts
                    .retain(|a| a.n != attempt || a.started_ms.is_some());
                t.wait = None;
            }
            let task_id = t.task_id.clone();
            for a in t.attempts.iter_mut().filter(|a| a.live()) {
                a.exited = true;
                if a.outcome.is_none() {
                    a.outcome = Some(Outcome::Interrupted);
                    a.finished_ms = Some(now);
                    a.error = Some("engine stopped".to_owned());
                }
                if a.outcome == Some(Outcome::TimedOut) {
                    timed_out.push((i, a.n));
                }
                if let Some(runner) = a.runner.clone() {
                    self.out.push(Effect::StopStale {
                        task_id: task_id.clone(),
                        attempt: a.n,
                        runner,
                    });
                }
                self.out.push(Effect::StoreLog {
                    task_id: task_id.clone(),
                    attempt: a.n,
                });
            }
            match t.wait {
                Some(Wait::Backoff { after, until }) => self.out.push(Effect::ArmTimer {
                    at: until,
                    timer: Timer::Backoff { task_id, after },
                }),
                Some(Wait::Pause { until }) => self.out.push(Effect::ArmTimer {
                    at: until,
                    timer: Timer::Pause { task_id },
                }),
                Some(Wait::Check) => self.out.push(Effect::CheckOutput { task_id }),
                Some(Wait::Slot { .. }) | None => {}
            }
        }
        self.changed = true;
        if self.run.status.is_finished() {
            return;
        }
        if self.run.ending.is_some() {
            self.try_finalize();
            return;
        }
        // A timeout whose stop had not completed: its failure counts now.
        for (i, n) in timed_out {
            self.after_failure(i, n);
        }
        if !self.active() {
            return;
        }
        let step = self
            .run
            .tasks
            .iter()
            .find(|t| t.status != TaskState::Succeeded || t.wait.is_some())
            .map(|t| t.step);
        match step {
            Some(step) => self.start_step(step),
            None => self.end_run(RunState::Succeeded, None),
        }
    }
}

/// A deterministic jitter in `[0, 1)` for an attempt's backoff, so the machine needs no random
/// source: FNV-1a over the task id and the attempt number.
fn jitter_unit(task_id: &str, attempt: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in task_id.bytes().chain(attempt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // The top 53 bits as a fraction.
    (h >> 11) as f64 / (1u64 << 53) as f64
}
