//! The rules: how each [`Event`] moves a [`RunRecord`] and which [`Effect`]s follow
//! (protocol §5 and §9, SPEC 2.6 and 2.7).

use linedee::Workflow;
use linedee::status::{RunState, TaskState, Trigger};

use super::io::{Effect, Event, Refused, StopReason, Timer};
use super::record::{AttemptRecord, FORMAT_VERSION, Millis, Outcome, RunRecord, TaskRecord, Wait};
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
    /// `recovered`: the trigger may have been delivered before, to an engine whose journal lost
    /// the run in a power loss (see [`RunRecord::recovered`]).
    pub(crate) fn create(
        &self,
        run_id: &str,
        trigger: Trigger,
        workflow: Result<Workflow, String>,
        recovered: bool,
        now: Millis,
    ) -> (RunRecord, Vec<Effect>) {
        let (workflow, status, error) = match workflow {
            Ok(wf) => (Some(wf), RunState::Queued, None),
            Err(e) => (None, RunState::Failed, Some(e)),
        };
        let tasks = workflow
            .iter()
            .flat_map(Workflow::tasks)
            .map(|(step, idx, def)| TaskRecord {
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
                check_first: recovered && !def.no_output,
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
            recovered: recovered && !status.is_finished(),
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
            Event::Abandon { reason } => cx.abandon(reason),
        }
        Ok(cx.effects())
    }
}

/// One call's working state; the rules are its methods (starting work here, outcomes in
/// `outcome.rs`, ending and control in `control.rs`).
pub(super) struct Cx<'a> {
    pub(super) m: &'a Machine,
    pub(super) run: &'a mut RunRecord,
    pub(super) now: Millis,
    pub(super) out: Vec<Effect>,
    pub(super) changed: bool,
    pub(super) finished: Option<RunState>,
}

impl<'a> Cx<'a> {
    pub(super) fn new(m: &'a Machine, run: &'a mut RunRecord, now: Millis) -> Self {
        Cx {
            m,
            run,
            now,
            out: Vec::new(),
            changed: false,
            finished: None,
        }
    }

    /// The effects, with one `Publish` when anything changed and `Finished` last. A recovered
    /// run that goes on publishes nothing (see [`RunRecord::recovered`]).
    pub(super) fn effects(mut self) -> Vec<Effect> {
        if self.changed && !(self.run.recovered && self.active()) {
            self.out.push(Effect::Publish);
        }
        if let Some(s) = self.finished {
            self.out.push(Effect::Finished(s));
        }
        self.out
    }

    pub(super) fn find(&self, task_id: &str) -> Option<usize> {
        self.run.tasks.iter().position(|t| t.task_id == task_id)
    }

    /// Whether the run still moves forward (not finished, not ending).
    pub(super) fn active(&self) -> bool {
        !self.run.status.is_finished() && self.run.ending.is_none()
    }

    pub(super) fn def(&self, i: usize) -> Option<&linedee::Task> {
        let t = &self.run.tasks[i];
        self.run.def(t.step, t.idx)
    }

    pub(super) fn stop(&mut self, i: usize, a: &AttemptRecord, reason: StopReason) {
        self.out.push(Effect::StopAttempt {
            task_id: self.run.tasks[i].task_id.clone(),
            attempt: a.n,
            runner: a.runner.clone(),
            reason,
        });
    }

    /// Withdraws a start that was asked for and not granted yet.
    pub(super) fn withdraw_start(&mut self, i: usize, reason: StopReason) {
        if let Some(Wait::Slot { attempt }) = self.run.tasks[i].wait {
            let now = self.now;
            let t = &mut self.run.tasks[i];
            t.wait = None;
            // The withdrawn attempt stays in the record, decided and never
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
    pub(super) fn start_from_first_unfinished_step(&mut self) {
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

    pub(super) fn start_step(&mut self, step: usize) {
        for i in 0..self.run.tasks.len() {
            let t = &self.run.tasks[i];
            if t.step == step && !t.is_final() && t.wait.is_none() {
                self.begin_task(i);
            }
        }
    }

    /// A task that ran before, or that the record may be behind on, checks for its output
    /// first; others ask for a slot.
    pub(super) fn begin_task(&mut self, i: usize) {
        let no_output = self.def(i).is_none_or(|d| d.no_output);
        let t = &mut self.run.tasks[i];
        // (With `withdraw_start`.) Attempts withdrawn before they started
        // stay in the record; only a task that ran has an output to check for.
        if (t.check_first || t.attempts.iter().any(|a| a.started_ms.is_some())) && !no_output {
            t.wait = Some(Wait::Check { failed: None });
            self.out.push(Effect::CheckOutput {
                task_id: t.task_id.clone(),
            });
            self.changed = true;
        } else {
            self.request_attempt(i);
        }
    }

    pub(super) fn request_attempt(&mut self, i: usize) {
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

    pub(super) fn mark_running(&mut self, i: usize) {
        let now = self.now;
        // A process runs that the record knows of: the document may show the run again.
        self.run.recovered = false;
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

    pub(super) fn started(&mut self, task_id: &str, attempt: u32, runner: String) {
        // A duplicate of the `AttemptStarted` already recorded (same
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

    pub(super) fn spawn_failed(&mut self, task_id: &str, attempt: u32, reason: &str) {
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
}

/// A deterministic jitter in `[0, 1)` for an attempt's backoff, so the machine needs no random
/// source: FNV-1a over the task id and the attempt number.
pub(super) fn jitter_unit(task_id: &str, attempt: u32) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in task_id.bytes().chain(attempt.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // The top 53 bits as a fraction.
    (h >> 11) as f64 / (1u64 << 53) as f64
}
