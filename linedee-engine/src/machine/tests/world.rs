//! The simulated world around the machine: the engine's side of every effect kept as an
//! obligation (starts, processes, checks, timers), the driver that hands the machine one event
//! at a time, and what can happen next.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use linedee::status::RunState;

mod restarts;

use super::{RUN_ID, T0, WorkflowSpec, build, id, trigger};
use crate::machine::io::StopReason;
use crate::machine::{Effect, Event, Machine, Millis, Refused, RunRecord, Timer};

/// A task process, as the runner sees it.
#[derive(Debug, Clone)]
pub(super) struct Proc {
    pub(super) task_id: String,
    pub(super) attempt: u32,
    pub(super) runner: String,
    /// It wrote `out/{task_id}`.
    wrote: bool,
    /// The machine asked to stop it.
    pub(super) stop: Option<StopReason>,
}

#[derive(Debug, Default)]
pub(super) struct World {
    /// Starts asked for and not answered.
    starts: Vec<(String, u32)>,
    /// Starts withdrawn that the runner, racing the withdrawal, may still grant.
    withdrawn: Vec<(String, u32)>,
    /// Processes of this engine.
    pub(super) procs: Vec<Proc>,
    /// Processes an earlier engine started that still run: only `StopStale` ends them, and
    /// this engine never hears their exit.
    pub(super) stale: Vec<Proc>,
    /// Processes that died with an earlier engine, their exit never heard.
    ghosts: Vec<Proc>,
    /// Output checks asked for and not answered.
    checks: Vec<String>,
    /// Timers armed in this engine and not fired.
    timers: Vec<(Millis, Timer)>,
    /// Every timer ever armed (for late firings).
    old_timers: Vec<(Millis, Timer)>,
    /// The `out/{task_id}` objects that exist.
    outputs: BTreeSet<String>,
    /// Events from outside the engine delivered so far (for duplicates).
    history: Vec<Event>,
    halted: bool,
    next_runner: u32,
}

pub(super) struct TaskInfo {
    pub(super) step: usize,
    pub(super) retries: u32,
    no_output: bool,
}

/// The machine, its run, the world around them and what the checks remember.
pub(super) struct Sim {
    m: Machine,
    pub(super) run: RunRecord,
    now: Millis,
    pub(super) w: World,
    pub(super) tasks: BTreeMap<String, TaskInfo>,
    ids: Vec<String>,
    pub(super) log: String,
    calls: usize,
    /// `Finished` effects since creation or the last accepted redrive.
    pub(super) finished: usize,
    /// Tasks seen succeeded.
    pub(super) succeeded: BTreeSet<String>,
    /// Per task, the highest attempt number at the last accepted redrive.
    pub(super) base: BTreeMap<String, u32>,
    /// A cancel was accepted since creation or the last accepted redrive.
    pub(super) cancelled: bool,
    /// The journal: the record as of its last sync, and every record committed since, oldest
    /// first. A power loss keeps the synced one and any number of those after it.
    synced: RunRecord,
    unsynced: Vec<RunRecord>,
    /// Tasks seen succeeded whose success a power loss took out of the record: they must be
    /// found again from their outputs, never run again.
    pub(super) behind: BTreeSet<String>,
    /// A status document showed the run succeeded (and no cancel was accepted since): no other
    /// state may be published.
    pub(super) shown_succeeded: bool,
}

impl Sim {
    pub(super) fn new(spec: &WorkflowSpec) -> Sim {
        let m = Machine::default();
        let mut tasks = BTreeMap::new();
        let mut ids = Vec::new();
        for (s, step) in spec.iter().flatten().enumerate() {
            for (i, t) in step.iter().enumerate() {
                ids.push(id(s, i));
                tasks.insert(
                    id(s, i),
                    TaskInfo {
                        step: s,
                        retries: t.retries.unwrap_or(m.retry.retries),
                        no_output: t.no_output,
                    },
                );
            }
        }
        let (run, effects) = m.create(RUN_ID, trigger(), build(spec), false, T0);
        let mut sim = Sim {
            m,
            synced: run.clone(),
            unsynced: Vec::new(),
            behind: BTreeSet::new(),
            shown_succeeded: false,
            run,
            now: T0,
            w: World::default(),
            tasks,
            ids,
            log: String::new(),
            calls: 0,
            finished: 0,
            succeeded: BTreeSet::new(),
            base: BTreeMap::new(),
            cancelled: false,
        };
        let _ = writeln!(sim.log, "create {spec:?}\n    => {effects:?}");
        if spec.is_none() {
            sim.check(
                effects == [Effect::Publish, Effect::Finished(RunState::Failed)],
                "an invalid workflow gives a failed run, published and finished once",
            );
        } else {
            let first: Vec<Effect> = sim
                .ids
                .iter()
                .filter(|t| sim.tasks[*t].step == 0)
                .map(|t| Effect::StartAttempt {
                    task_id: t.clone(),
                    attempt: 1,
                })
                .chain([Effect::Publish])
                .collect();
            sim.check(effects == first, "a new run starts its first step");
        }
        sim.check_round_trip();
        let before = sim.run.clone();
        sim.check_call(&before, None, &effects);
        sim.apply(&effects);
        sim
    }

    // ---- one call of the machine ----

    /// Hands one event to the machine, checks everything, and lets the world take on the
    /// effects.
    fn deliver(&mut self, ev: Event) {
        let before = self.run.clone();
        let res = self.m.handle(&mut self.run, self.now, ev.clone());
        self.calls += 1;
        let _ = writeln!(
            self.log,
            "#{} t+{} {ev:?}\n    => {res:?}",
            self.calls,
            self.now - T0
        );

        // Deterministic: the same event on the same record gives the same answer and record.
        let mut again = before.clone();
        let res2 = self.m.handle(&mut again, self.now, ev.clone());
        self.check(
            res2 == res && again == self.run,
            "handle is not deterministic",
        );
        self.check_round_trip();

        // Idempotent: the same event again at once (a redelivery) changes nothing; at most a
        // start that is not wanted is stopped again. (Not so `Restarted`: it re-asks for what
        // a new engine must redo.)
        if ev != Event::Restarted {
            let mut twice = self.run.clone();
            let res2 = self.m.handle(&mut twice, self.now, ev.clone());
            self.check(
                twice == self.run
                    && res2.iter().flatten().all(|e| {
                        matches!(
                            e,
                            Effect::StopAttempt {
                                reason: StopReason::Unwanted,
                                ..
                            }
                        )
                    }),
                &format!("{ev:?} again at once gives {res2:?} and changes the record"),
            );
        }

        // Refused only for control requests in the wrong state.
        let expected = match &ev {
            Event::CancelRequested if before.status.is_finished() => {
                Some(Refused::Finished(before.status))
            }
            Event::RedriveRequested
                if !matches!(before.status, RunState::Failed | RunState::Cancelled) =>
            {
                Some(Refused::NotRetryable(before.status))
            }
            Event::RedriveRequested if before.workflow.is_none() => Some(Refused::InvalidWorkflow(
                before.error.clone().unwrap_or_default(),
            )),
            _ => None,
        };
        match res {
            Err(refused) => {
                self.check(
                    expected.as_ref() == Some(&refused),
                    &format!("refused with {refused:?}, expected {expected:?}"),
                );
                self.check(before == self.run, "a refused request changed the record");
            }
            Ok(fx) => {
                self.check(
                    expected.is_none(),
                    &format!("accepted, but expected a refusal {expected:?}"),
                );
                self.check_call(&before, Some(&ev), &fx);
                self.apply(&fx);
                self.commit(&ev, &fx);
                if !matches!(
                    ev,
                    Event::Restarted | Event::Halt | Event::Interrupt | Event::TimerFired(_)
                ) {
                    self.w.history.push(ev);
                }
            }
        }
    }

    /// The journal commits the record after a call, and syncs where the driver does: before
    /// answering a control request, and before a final status document, unless the run
    /// succeeded by its outputs alone.
    fn commit(&mut self, ev: &Event, fx: &[Effect]) {
        let synced = matches!(ev, Event::CancelRequested | Event::RedriveRequested)
            || fx.iter().any(|e| {
                matches!(e, Effect::Finished(s) if *s != RunState::Succeeded || !self.run.succeeded_by_outputs())
            });
        if synced {
            self.synced = self.run.clone();
            self.unsynced.clear();
        } else {
            self.unsynced.push(self.run.clone());
        }
    }

    /// The world takes on the effects of a call.
    fn apply(&mut self, fx: &[Effect]) {
        let w = &mut self.w;
        for e in fx {
            match e {
                Effect::CheckOutput { task_id } => w.checks.push(task_id.clone()),
                Effect::StartAttempt { task_id, attempt } => {
                    w.starts.push((task_id.clone(), *attempt));
                }
                Effect::StopAttempt {
                    task_id,
                    attempt,
                    runner: None,
                    ..
                } => {
                    if let Some(i) = w
                        .starts
                        .iter()
                        .position(|(t, a)| t == task_id && a == attempt)
                    {
                        let s = w.starts.remove(i);
                        w.withdrawn.push(s);
                    }
                }
                Effect::StopAttempt {
                    runner: Some(r),
                    reason,
                    ..
                } => {
                    if let Some(p) = w.procs.iter_mut().find(|p| p.runner == *r) {
                        p.stop.get_or_insert(*reason);
                    } else {
                        w.stale.retain(|p| p.runner != *r);
                    }
                }
                Effect::StopStale {
                    task_id,
                    attempt,
                    runner,
                } => w.stale.retain(|p| {
                    !(p.runner == *runner && p.task_id == *task_id && p.attempt == *attempt)
                }),
                Effect::ArmTimer { at, timer } => {
                    w.timers.push((*at, timer.clone()));
                    w.old_timers.push((*at, timer.clone()));
                }
                Effect::StoreLog { .. } | Effect::Publish | Effect::Finished(_) => {}
            }
        }
    }

    // ---- what can happen ----

    fn grant(&mut self, i: usize) {
        let (task_id, attempt) = self.w.starts.remove(i);
        self.spawn(task_id, attempt);
    }

    fn spawn(&mut self, task_id: String, attempt: u32) {
        self.w.next_runner += 1;
        let runner = format!("pg{}", self.w.next_runner);
        self.w.procs.push(Proc {
            task_id: task_id.clone(),
            attempt,
            runner: runner.clone(),
            wrote: false,
            stop: None,
        });
        self.deliver(Event::AttemptStarted {
            task_id,
            attempt,
            runner,
        });
    }

    fn spawn_fail(&mut self, i: usize) {
        let (task_id, attempt) = self.w.starts.remove(i);
        self.deliver(Event::SpawnFailed {
            task_id,
            attempt,
            reason: "No such file or directory".to_owned(),
        });
    }

    /// Process `i` writes its output (or exits, when it already did).
    fn write(&mut self, i: usize, stale: bool) {
        let p = if stale {
            &mut self.w.stale[i]
        } else {
            &mut self.w.procs[i]
        };
        if p.wrote && !stale {
            return self.exit(i, 0);
        }
        p.wrote = true;
        let (task_id, runner) = (p.task_id.clone(), p.runner.clone());
        self.w.outputs.insert(task_id.clone());
        self.deliver(Event::OutputLanded {
            task_id,
            state: Some(format!("{{\"by\":\"{runner}\"}}")),
        });
    }

    fn exit(&mut self, i: usize, how: u16) {
        let p = self.w.procs.remove(i);
        let code = if p.wrote {
            Some(0)
        } else if p.stop.is_some() || how & 1 == 1 {
            None
        } else {
            Some(1)
        };
        let detail = (!p.wrote && how & 2 == 2).then(|| "ValueError: boom".to_owned());
        self.deliver(Event::Exited {
            task_id: p.task_id,
            attempt: p.attempt,
            code,
            detail,
        });
    }

    fn fire(&mut self, at: Millis, timer: Timer) {
        self.now = self.now.max(at);
        self.deliver(Event::TimerFired(timer));
    }

    fn answer_check(&mut self, i: usize) {
        let task_id = self.w.checks.remove(i);
        if self.w.outputs.contains(&task_id) {
            self.deliver(Event::OutputLanded {
                task_id,
                state: Some("{\"found\":true}".to_owned()),
            });
        } else {
            self.deliver(Event::OutputMissing { task_id });
        }
    }

    /// One random step: `kind` picks what happens, `idx` which obligation and how.
    pub(super) fn step(&mut self, kind: u8, idx: u16) {
        self.now += 1 + Millis::from(idx % 700);
        let i = usize::from(idx);
        let w = &self.w;
        match kind % 40 {
            0..=5 if !w.starts.is_empty() => self.grant(i % w.starts.len()),
            6 if !w.starts.is_empty() => self.spawn_fail(i % w.starts.len()),
            7..=11 if !w.procs.is_empty() => self.write(i % w.procs.len(), false),
            12..=15 if !w.procs.is_empty() => self.exit(i % w.procs.len(), idx >> 8),
            16..=20 if !w.timers.is_empty() => {
                let (at, timer) = self.w.timers.remove(i % w.timers.len());
                self.fire(at, timer);
            }
            21..=23 if !w.checks.is_empty() => self.answer_check(i % w.checks.len()),
            24 | 25 if !w.history.is_empty() => {
                // Mostly one of the last few events (a redelivery), else any.
                let n = w.history.len();
                let k = if idx & 0x8000 == 0 {
                    n - 1 - i % n.min(6)
                } else {
                    i % n
                };
                let ev = w.history[k].clone();
                let _ = writeln!(self.log, "-- duplicate:");
                self.deliver(ev);
            }
            26 if !w.old_timers.is_empty() => {
                let (at, timer) = w.old_timers[i % w.old_timers.len()].clone();
                let _ = writeln!(self.log, "-- late timer:");
                self.fire(at, timer);
            }
            27 if !w.ghosts.is_empty() => {
                let p = w.ghosts[i % w.ghosts.len()].clone();
                let _ = writeln!(self.log, "-- late exit of a lost process:");
                self.deliver(Event::Exited {
                    task_id: p.task_id,
                    attempt: p.attempt,
                    code: Some(1),
                    detail: None,
                });
            }
            28 if !self.ids.is_empty() => {
                let task_id = self.ids[i % self.ids.len()].clone();
                self.w.outputs.insert(task_id.clone());
                let _ = writeln!(self.log, "-- output out of the blue:");
                self.deliver(Event::OutputLanded {
                    task_id,
                    state: Some("{\"blue\":true}".to_owned()),
                });
            }
            29 | 30 => {
                self.deliver(Event::CancelRequested);
            }
            31 | 32 => {
                self.deliver(Event::RedriveRequested);
            }
            33 if idx & 0x8000 == 0 => self.crash(idx),
            33 => self.power_loss(idx),
            34 => self.halt(),
            35 => {
                self.halt();
                self.deliver(Event::Interrupt);
            }
            36 => self.graceful(idx),
            37 if !w.withdrawn.is_empty() => {
                let (task_id, attempt) = self.w.withdrawn.remove(i % w.withdrawn.len());
                let _ = writeln!(self.log, "-- a withdrawn start is granted anyway:");
                self.spawn(task_id, attempt);
            }
            38 if !w.stale.is_empty() => {
                let _ = writeln!(self.log, "-- a stale process writes its output:");
                self.write(i % w.stale.len(), true);
            }
            39 if idx.is_multiple_of(4) => {
                self.deliver(Event::Abandon {
                    reason: "its messages keep failing".to_owned(),
                });
            }
            _ => {}
        }
    }

    /// Answers every obligation fairly, so that the run ends: starts are granted, processes
    /// write their output and exit, checks are answered, timers fire.
    pub(super) fn drain(&mut self) {
        let _ = writeln!(self.log, "-- drain");
        for _ in 0..1000 {
            if self.w.halted {
                self.crash(0);
                continue;
            }
            self.now += 10;
            let w = &self.w;
            if let Some(i) = w.procs.iter().position(|p| p.stop.is_some()) {
                self.exit(i, 1);
            } else if !w.checks.is_empty() {
                self.answer_check(0);
            } else if !w.starts.is_empty() {
                self.grant(0);
            } else if let Some(i) = w
                .procs
                .iter()
                .position(|p| !p.wrote && !self.tasks[&p.task_id].no_output)
            {
                self.write(i, false);
            } else if !w.procs.is_empty() {
                self.exit(0, 0);
            } else if let Some(i) = (0..w.timers.len()).min_by_key(|&i| w.timers[i].0) {
                let (at, timer) = self.w.timers.remove(i);
                self.fire(at, timer);
            } else {
                break;
            }
        }
        let w = &self.w;
        self.check(
            w.starts.is_empty() && w.procs.is_empty() && w.checks.is_empty() && w.timers.is_empty(),
            "the drain did not settle",
        );
        self.check(
            self.run.status.is_finished(),
            "the run did not reach a final state",
        );
        self.check(self.finished == 1, "the run did not finish exactly once");
        self.check(
            !self.shown_succeeded || self.run.status == RunState::Succeeded,
            "the run was shown succeeded and ended otherwise",
        );
        self.check(
            !self.run.has_live_processes(),
            "the run ended with live processes",
        );
    }
}
