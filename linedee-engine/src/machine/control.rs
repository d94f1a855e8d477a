//! The rules for ending and control: a run's final state and the stops it waits for, cancel,
//! redrive, shutdown (halt, interrupt) and resume after a restart.

use linedee::status::{RunState, TaskState};

use super::io::{Effect, Refused, StopReason, Timer};
use super::record::{Ending, Outcome, Wait};
use super::run::Cx;

impl Cx<'_> {
    /// Decides the run's final state: every task not done is cancelled and its process
    /// stopped; the run takes the state once those processes are gone.
    pub(super) fn end_run(&mut self, status: RunState, error: Option<String>) {
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

    pub(super) fn cancel_task(&mut self, i: usize) {
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

    pub(super) fn try_finalize(&mut self) {
        if self.run.ending.is_none() || self.run.stopping() {
            return;
        }
        if let Some(end) = self.run.ending.take() {
            // The document shows the run's end: nothing it showed before can be taken back.
            self.run.recovered = false;
            self.run.status = end.status;
            self.run.error = end.error;
            self.run.finished_ms = Some(self.now);
            self.finished = Some(end.status);
            self.changed = true;
        }
    }

    // ---- control ----

    pub(super) fn cancel(&mut self) -> Result<(), Refused> {
        if self.run.status.is_finished() {
            return Err(Refused::Finished(self.run.status));
        }
        if self.run.ending.is_none() {
            self.end_run(RunState::Cancelled, Some("cancelled on request".to_owned()));
        }
        Ok(())
    }

    pub(super) fn abandon(&mut self, reason: String) {
        if !self.run.status.is_finished() && self.run.ending.is_none() {
            self.end_run(RunState::Failed, Some(reason));
        }
    }

    pub(super) fn redrive(&mut self) -> Result<(), Refused> {
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

    pub(super) fn halt(&mut self) {
        self.run.halted = true;
        for i in 0..self.run.tasks.len() {
            self.withdraw_start(i, StopReason::Interrupted);
        }
    }

    pub(super) fn interrupt(&mut self) {
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
    pub(super) fn restarted(&mut self) {
        self.run.halted = false;
        let now = self.now;
        let mut timed_out = Vec::new();
        for i in 0..self.run.tasks.len() {
            let t = &mut self.run.tasks[i];
            // A start that was asked for and never granted is withdrawn, and asked for again
            // below under a new number: a runner that outlived the engine (a dyno created
            // after the crash) can then never be taken for the new attempt.
            if let Some(Wait::Slot { attempt }) = t.wait {
                if let Some(a) = t.attempt_mut(attempt).filter(|a| a.started_ms.is_none()) {
                    a.outcome = Some(Outcome::Interrupted);
                    a.finished_ms = Some(now);
                    a.error = Some("withdrawn before it started".to_owned());
                }
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
                Some(Wait::Check { .. }) => self.out.push(Effect::CheckOutput { task_id }),
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
        self.run.recovered = true;
        for i in 0..self.run.tasks.len() {
            let no_output = self.def(i).is_none_or(|d| d.no_output);
            let t = &mut self.run.tasks[i];
            t.check_first = !no_output && !t.is_final();
        }
        // A timeout whose stop had not completed: its failure counts now, unless its output
        // landed before the process stopped and the record missed it.
        for (i, n) in timed_out {
            let t = &mut self.run.tasks[i];
            if t.check_first && t.wait.is_none() {
                t.wait = Some(Wait::Check { failed: Some(n) });
                self.out.push(Effect::CheckOutput {
                    task_id: t.task_id.clone(),
                });
            } else {
                self.after_failure(i, n);
            }
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
