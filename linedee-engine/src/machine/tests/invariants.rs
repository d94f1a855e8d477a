//! The invariants: what the simulation checks after every call of the machine, and the
//! report of a broken one.

use std::fmt::Write as _;

use linedee::status::{RunState, TaskState};

use super::strip;
use super::world::{Sim, TaskInfo};
use crate::machine::io::StopReason;
use crate::machine::record::{Outcome, Wait};
use crate::machine::{Effect, Event, RunRecord};

impl Sim {
    // ---- reporting ----

    pub(super) fn fail(&self, what: &str) -> ! {
        let mut rec = String::new();
        let _ = writeln!(
            rec,
            "run {:?} ending {:?} halted {} error {:?}",
            self.run.status, self.run.ending, self.run.halted, self.run.error
        );
        for t in &self.run.tasks {
            let _ = writeln!(
                rec,
                "  {} {:?} wait {:?} failures {} attempts {:?}",
                t.task_id,
                t.status,
                t.wait,
                t.failures,
                t.attempts
                    .iter()
                    .map(|a| format!(
                        "#{} {:?} started {} exited {} stopping {} {:?}",
                        a.n,
                        a.outcome,
                        a.started_ms.is_some(),
                        a.exited,
                        a.stopping,
                        a.runner
                    ))
                    .collect::<Vec<_>>()
            );
        }
        panic!(
            "INVARIANT BROKEN: {what}\n\nrecord now:\n{rec}\nworld: {:?}\n\nevent log:\n{}",
            self.w, self.log
        );
    }

    pub(super) fn check(&self, ok: bool, what: &str) {
        if !ok {
            self.fail(what);
        }
    }

    pub(super) fn info(&self, task_id: &str) -> &TaskInfo {
        self.tasks
            .get(task_id)
            .unwrap_or_else(|| self.fail(&format!("no task {task_id}")))
    }

    pub(super) fn check_round_trip(&self) {
        let json = self.run.to_json();
        match RunRecord::from_json(&json) {
            Ok(back) => self.check(
                back == strip(&self.run),
                &format!("the record does not survive its JSON form: {json}"),
            ),
            Err(e) => self.fail(&format!(
                "the record's JSON does not read back: {e}: {json}"
            )),
        }
    }

    /// The checks of one accepted call, `before` being the record before it.
    pub(super) fn check_call(&mut self, before: &RunRecord, ev: Option<&Event>, fx: &[Effect]) {
        let after = self.run.clone();
        let going_on = !after.status.is_finished() && after.ending.is_none();
        if strip(before) != strip(&after) && !(after.recovered && going_on) {
            self.check(
                fx.contains(&Effect::Publish),
                "the record changed but no Publish followed",
            );
        }
        // A cancel is the user's word, and only the cloud driver abandons a run (its journal
        // is S3, which loses nothing to a power loss).
        if matches!(ev, Some(Event::CancelRequested | Event::Abandon { .. })) {
            self.shown_succeeded = false;
        }
        if fx.contains(&Effect::Publish) {
            self.check(
                !self.shown_succeeded || after.status == RunState::Succeeded,
                &format!(
                    "the run was shown succeeded, and {:?} is published now",
                    after.status
                ),
            );
            self.shown_succeeded |= after.status == RunState::Succeeded;
        }
        self.check(
            fx.iter().filter(|e| **e == Effect::Publish).count() <= 1,
            "more than one Publish in a call",
        );

        if ev == Some(&Event::RedriveRequested) {
            // 6. Redrive keeps succeeded tasks and their outputs.
            for t in before
                .tasks
                .iter()
                .filter(|t| t.status == TaskState::Succeeded)
            {
                let now = after.task(&t.task_id);
                self.check(
                    now.is_some_and(|n| n.status == TaskState::Succeeded && n.state == t.state),
                    &format!("redrive lost the success of {}", t.task_id),
                );
            }
            self.finished = 0;
            self.cancelled = false;
            for t in &before.tasks {
                let top = t.attempts.iter().map(|a| a.n).max().unwrap_or(0);
                self.base.insert(t.task_id.clone(), top);
            }
        }
        if ev == Some(&Event::CancelRequested) {
            self.cancelled = true;
        }
        // An abandoned run that was going on ends failed, with the reason.
        if let Some(Event::Abandon { reason }) = ev
            && !before.status.is_finished()
            && before.ending.is_none()
        {
            let failed = after.status == RunState::Failed
                || after
                    .ending
                    .as_ref()
                    .is_some_and(|e| e.status == RunState::Failed);
            let why = after
                .error
                .as_ref()
                .or(after.ending.as_ref().and_then(|e| e.error.as_ref()));
            self.check(
                failed && why == Some(reason),
                "an abandoned run does not end failed with the reason",
            );
        }

        // 2. Exactly once per drive.
        let fin: Vec<RunState> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Finished(s) => Some(*s),
                _ => None,
            })
            .collect();
        self.check(fin.len() <= 1, "more than one Finished in a call");
        if let Some(&s) = fin.first() {
            self.check(
                fx.last() == Some(&Effect::Finished(s)),
                "Finished is not the last effect",
            );
            self.check(s == after.status, "Finished does not name the run's state");
            if s == RunState::Succeeded {
                self.check(
                    after.tasks.iter().all(|t| t.status == TaskState::Succeeded),
                    "the run succeeded with a task that did not",
                );
            }
            // 5. Every process the machine asked to stop has exited (the world applies this
            // call's effects later: these stops were asked for by earlier calls).
            if let Some(p) = self
                .w
                .procs
                .iter()
                .find(|p| matches!(p.stop, Some(r) if r != StopReason::Unwanted))
            {
                self.fail(&format!(
                    "the run finished while {} attempt {} ({}) is still being stopped",
                    p.task_id, p.attempt, p.runner
                ));
            }
            self.check(!after.stopping(), "finished while stopping");
        }
        self.finished += fin.len();
        self.check(self.finished <= 1, "the run finished twice in one drive");
        self.check(
            after.status.is_finished() == (self.finished == 1),
            "the run's state disagrees with the Finished effects",
        );
        self.check(
            !(after.ending.is_some() && after.status.is_finished()),
            "finished and still ending",
        );
        if after.status.is_finished() {
            self.check(
                after.tasks.iter().all(|t| t.is_final()),
                "a finished run has a task that is not final",
            );
        }

        for (k, e) in fx.iter().enumerate() {
            match e {
                Effect::StartAttempt { task_id, attempt } => {
                    let step = self.info(task_id).step;
                    let task = after.task(task_id);
                    // 1. and 6.
                    self.check(
                        !self.succeeded.contains(task_id)
                            && task.is_some_and(|t| t.status != TaskState::Succeeded),
                        &format!("succeeded task {task_id} started again"),
                    );
                    // 5.
                    self.check(
                        !self.cancelled,
                        &format!("{task_id} started after a cancel"),
                    );
                    self.check(!after.halted, "started while halted");
                    self.check(
                        task.is_some_and(|t| {
                            !t.attempts.iter().any(|a| a.live() && a.outcome.is_none())
                        }),
                        &format!("{task_id} started again while an attempt is undecided"),
                    );
                    let top = before
                        .task(task_id)
                        .and_then(|t| {
                            t.attempts
                                .iter()
                                .filter(|a| a.started_ms.is_some())
                                .map(|a| a.n)
                                .max()
                        })
                        .unwrap_or(0);
                    self.check(
                        *attempt > top,
                        &format!("attempt {attempt} of {task_id} does not follow {top}"),
                    );
                    self.check(
                        after
                            .tasks
                            .iter()
                            .filter(|t| t.step < step)
                            .all(|t| t.status == TaskState::Succeeded && t.wait.is_none()),
                        &format!("{task_id} started before the steps before it ended"),
                    );
                    let withdrawn = fx[k + 1..].iter().any(|l| {
                        matches!(l, Effect::StopAttempt { task_id: t, attempt: a, runner: None, .. }
                            if t == task_id && a == attempt)
                    });
                    self.check(
                        withdrawn
                            || task
                                .is_some_and(|t| t.wait == Some(Wait::Slot { attempt: *attempt })),
                        &format!("start of {task_id} attempt {attempt} not awaited"),
                    );
                }
                Effect::StopAttempt {
                    task_id,
                    attempt,
                    runner: Some(r),
                    ..
                } => {
                    let counted = after.task(task_id).and_then(|t| {
                        t.attempts
                            .iter()
                            .find(|a| a.n == *attempt && a.runner.as_deref() == Some(r))
                    });
                    self.check(
                        !counted.is_some_and(|a| a.live() && !a.stopping),
                        &format!(
                            "asked to stop {task_id} attempt {attempt} ({r}) while still waiting on it"
                        ),
                    );
                }
                Effect::StopAttempt {
                    task_id,
                    attempt,
                    runner: None,
                    ..
                } => {
                    self.check(
                        after
                            .task(task_id)
                            .is_none_or(|t| t.wait != Some(Wait::Slot { attempt: *attempt })),
                        &format!("withdrew the start of {task_id} attempt {attempt} yet awaits it"),
                    );
                }
                Effect::StoreLog { task_id, attempt } => {
                    let a = after
                        .task(task_id)
                        .and_then(|t| t.attempts.iter().find(|a| a.n == *attempt));
                    self.check(
                        a.is_some_and(|a| a.started_ms.is_some() && a.exited),
                        &format!("log of {task_id} attempt {attempt}, which has not ended"),
                    );
                }
                _ => {}
            }
        }

        // 4. A task failing for good stops its siblings, in the same call. (On a restart the
        // processes of the engine before are stopped as stale ones, checked below, and the
        // starts it asked for died with it.)
        let restart = ev == Some(&Event::Restarted);
        for t in after.tasks.iter().filter(|t| t.status == TaskState::Failed) {
            if before
                .task(&t.task_id)
                .is_some_and(|b| b.status == TaskState::Failed)
            {
                continue;
            }
            for s in after
                .tasks
                .iter()
                .filter(|s| s.step == t.step && s.task_id != t.task_id)
            {
                let Some(b) = before.task(&s.task_id) else {
                    continue;
                };
                for a in b
                    .attempts
                    .iter()
                    .filter(|a| !restart && a.live() && a.outcome.is_none())
                {
                    self.check(
                        fx.iter().any(|e| {
                            matches!(e, Effect::StopAttempt { task_id, attempt, .. }
                            if *task_id == s.task_id && *attempt == a.n)
                        }),
                        &format!(
                            "{} failed for good but sibling {} attempt {} was not stopped",
                            t.task_id, s.task_id, a.n
                        ),
                    );
                }
                if let Some(Wait::Slot { attempt }) = b.wait.filter(|_| !restart) {
                    self.check(
                        fx.iter().any(|e| matches!(e, Effect::StopAttempt { task_id, attempt: n, runner: None, .. }
                            if *task_id == s.task_id && *n == attempt)),
                        &format!(
                            "{} failed for good but the start of sibling {} was not withdrawn",
                            t.task_id, s.task_id
                        ),
                    );
                }
                self.check(
                    matches!(s.status, TaskState::Succeeded | TaskState::Cancelled),
                    &format!(
                        "{} failed for good but sibling {} is {:?}",
                        t.task_id, s.task_id, s.status
                    ),
                );
            }
            self.check(
                after.status == RunState::Failed
                    || after
                        .ending
                        .as_ref()
                        .is_some_and(|e| e.status == RunState::Failed),
                &format!("{} failed for good but the run does not fail", t.task_id),
            );
        }

        if restart {
            for (t, a) in before
                .tasks
                .iter()
                .flat_map(|t| t.attempts.iter().map(move |a| (t, a)))
                .filter(|(_, a)| a.live())
            {
                let stopped = fx.iter().any(|e| {
                    matches!(e, Effect::StopStale { task_id, attempt, runner }
                        if *task_id == t.task_id && *attempt == a.n && a.runner.as_ref() == Some(runner))
                });
                self.check(
                    stopped,
                    &format!(
                        "restart did not stop {} attempt {} as stale",
                        t.task_id, a.n
                    ),
                );
            }
            for p in &self.w.stale {
                let known = before
                    .task(&p.task_id)
                    .and_then(|t| t.attempts.iter().find(|a| a.n == p.attempt))
                    .is_some_and(|a| a.live() && a.runner.as_deref() == Some(p.runner.as_str()));
                let stopped = fx.iter().any(|e| {
                    matches!(e, Effect::StopStale { task_id, attempt, runner }
                        if *task_id == p.task_id && *attempt == p.attempt && *runner == p.runner)
                });
                self.check(
                    !known || stopped,
                    &format!("restart left stale process {} running", p.runner),
                );
            }
            self.check(
                !after.has_live_processes(),
                "after a restart the record still has live processes",
            );
        }

        self.check_record(&after);
    }

    /// What must hold of the record after every call.
    fn check_record(&mut self, r: &RunRecord) {
        for t in &r.tasks {
            let info = self.info(&t.task_id);
            // 3.
            let undecided = t
                .attempts
                .iter()
                .filter(|a| a.live() && a.outcome.is_none())
                .count();
            self.check(
                undecided <= 1,
                &format!("{} has {undecided} undecided live attempts", t.task_id),
            );
            let base = self.base.get(&t.task_id).copied().unwrap_or(0);
            let failures = t
                .attempts
                .iter()
                .filter(|a| {
                    a.n > base && matches!(a.outcome, Some(Outcome::Failed | Outcome::TimedOut))
                })
                .count();
            self.check(
                failures <= info.retries as usize + 1,
                &format!(
                    "{} failed {failures} attempts in one drive with {} retries",
                    t.task_id, info.retries
                ),
            );
            let mut ns: Vec<u32> = t.attempts.iter().map(|a| a.n).collect();
            ns.dedup();
            self.check(
                ns.len() == t.attempts.len() && t.attempts.windows(2).all(|w| w[0].n < w[1].n),
                &format!("{} has attempt numbers out of order", t.task_id),
            );
            // 1. and 6. (A task whose success a power loss took back is found again.)
            if t.status == TaskState::Succeeded {
                self.behind.remove(&t.task_id);
            }
            self.check(
                !self.succeeded.contains(&t.task_id)
                    || t.status == TaskState::Succeeded
                    || self.behind.contains(&t.task_id),
                &format!("{} succeeded, and is {:?} now", t.task_id, t.status),
            );
            // 5.
            self.check(
                !self.cancelled || undecided == 0,
                &format!("{} has an undecided attempt after a cancel", t.task_id),
            );
            // A run that ended, or is ending, leaves no attempt undecided.
            self.check(
                !(r.status.is_finished() || r.ending.is_some()) || undecided == 0,
                &format!("{} has an undecided attempt in a run that ended", t.task_id),
            );
            // The record and the world agree on what runs.
            for a in t.attempts.iter().filter(|a| a.live()) {
                self.check(
                    a.runner
                        .as_ref()
                        .is_some_and(|r| self.w.procs.iter().any(|p| p.runner == *r)),
                    &format!(
                        "{} attempt {} is live, but no process of this engine runs it",
                        t.task_id, a.n
                    ),
                );
            }
        }
        for t in r.tasks.iter().filter(|t| t.status == TaskState::Succeeded) {
            self.succeeded.insert(t.task_id.clone());
        }
    }
}
