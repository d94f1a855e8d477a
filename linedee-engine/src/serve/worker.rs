//! The cloud driver: each message (a trigger, an output, a tick) and each runner report is
//! applied to the run's state by compare-and-swap, and the machine's effects are carried out
//! once the new state is written.
//!
//! A replica holds nothing another replica needs: a run's state, its armed timers and the
//! starts it asked for are in its state object, and its tick message carries it on. Whatever a
//! replica loses by dying (a start it did not make, an exit it did not report, a document it
//! did not write) the next tick repairs, on whichever replica receives it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linedee::status::Trigger;
use tokio_util::sync::CancellationToken;

use super::message::{ObjectEvent, Tick, tick_body};
use super::queue::{MAX_DELAY_S, Queue, Received};
use super::s3::{S3, Written};
use super::state::{Armed, Intent, StateDoc, States, TickState};
use crate::bucket;
use crate::error::{CloudError, Result};
use crate::machine::{Effect, Event, Machine, Millis, Timer, now_ms};
use crate::runner::Runner;
use crate::triggers::Delivery;

/// Compare-and-swap rounds before a transition gives up (its message comes back).
const CAS_ROUNDS: usize = 16;
/// Runs whose last state a replica keeps (beyond that, idle ones are dropped).
const CACHE_RUNS: usize = 4096;

/// How the driver paces ticks and repairs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    /// A running run's tick comes at least this often (liveness checks, lost effects).
    pub(crate) heartbeat: Duration,
    /// A start asked for this long ago and not granted is asked for again.
    pub(crate) start_grace: Duration,
    /// A tick overdue by this much is taken as lost, and a new one is sent.
    pub(crate) lost_tick: Duration,
}

fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

type Cached = Arc<tokio::sync::Mutex<Option<(StateDoc, String)>>>;

/// The driver's parts and the little it remembers (caches, and what it has in flight).
pub(crate) struct Worker {
    pub(crate) machine: Machine,
    pub(crate) states: States,
    pub(crate) s3: S3,
    pub(crate) queue: Queue,
    pub(crate) runner: Arc<dyn Runner>,
    pub(crate) pace: Pace,
    /// Per run: a lock (one transition at a time in this replica) and the last state seen.
    pub(super) runs: Mutex<HashMap<String, Cached>>,
    /// Starts this replica is making, by (task, attempt), with the token that withdraws them.
    pub(super) starting: Mutex<HashMap<(String, u32), CancellationToken>>,
    /// A hash of the status document this replica last wrote, per run.
    pub(super) written: Mutex<HashMap<String, u64>>,
    /// Runs whose final status document this replica wrote.
    pub(super) published_final: Mutex<HashSet<String>>,
    /// With the dyno runner: the app's Procfile, to name process types as Heroku knows them.
    pub(crate) dyno_commands: Option<crate::local_runner::ProcfileSource>,
    /// Attempts this replica started (for the dyno runner's requests per start).
    pub(crate) starts: std::sync::atomic::AtomicU64,
    /// The effects under way (awaited at shutdown).
    pub(super) tasks: tokio_util::task::TaskTracker,
    /// Status documents waiting to be written, by run, each with whether it is settled (final,
    /// its processes exited: written at once); a run in the map has a writer.
    pub(super) publishing: Mutex<HashMap<String, Option<(StatusDoc, bool)>>>,
}

/// A status document to write: its bucket and content.
pub(super) type StatusDoc = (String, linedee::RunStatus);

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a transition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applied {
    /// There is no such run.
    NoRun,
    /// The events changed nothing.
    Unchanged,
    /// The new state is written and its effects are under way.
    Changed,
}

impl Worker {
    pub(crate) fn new(
        machine: Machine,
        states: States,
        s3: S3,
        queue: Queue,
        runner: Arc<dyn Runner>,
        pace: Pace,
    ) -> Self {
        Worker {
            machine,
            states,
            s3,
            queue,
            runner,
            pace,
            runs: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashMap::new()),
            published_final: Mutex::new(HashSet::new()),
            written: Mutex::new(HashMap::new()),
            tasks: tokio_util::task::TaskTracker::new(),
            dyno_commands: None,
            starts: std::sync::atomic::AtomicU64::new(0),
            publishing: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn cached(&self, run_id: &str) -> Cached {
        let mut runs = lock(&self.runs);
        if runs.len() >= CACHE_RUNS {
            // Runs no one is working on go (their state is read again when needed).
            runs.retain(|_, cell| Arc::strong_count(cell) > 1);
        }
        Arc::clone(runs.entry(run_id.to_owned()).or_default())
    }

    pub(super) fn forget(&self, run_id: &str) {
        lock(&self.runs).remove(run_id);
        lock(&self.published_final).remove(run_id);
        lock(&self.written).remove(run_id);
    }

    /// Applies events to a run by compare-and-swap, then carries out the effects.
    pub(crate) async fn apply(
        self: &Arc<Self>,
        run_id: &str,
        events: Vec<Event>,
    ) -> Result<Applied> {
        self.transition(run_id, |machine, doc, now| {
            let mut effects = Vec::new();
            for event in &events {
                // A refusal (cancel of a finished run) changes nothing.
                if let Ok(e) = machine.handle(&mut doc.record, now, event.clone()) {
                    effects.extend(e);
                }
            }
            effects
        })
        .await
    }

    /// The compare-and-swap loop: read (or take the cached state), change, write with
    /// `If-Match`; on a conflict read again and change again.
    pub(crate) async fn transition<F>(
        self: &Arc<Self>,
        run_id: &str,
        mut change: F,
    ) -> Result<Applied>
    where
        F: FnMut(&Machine, &mut StateDoc, Millis) -> Vec<Effect>,
    {
        let cell = self.cached(run_id);
        let mut cached = cell.lock().await;
        for _ in 0..CAS_ROUNDS {
            let (doc, etag) = match cached.take() {
                Some(c) => c,
                None => match self.states.load(run_id).await? {
                    Some(c) => c,
                    None => return Ok(Applied::NoRun),
                },
            };
            let now = now_ms();
            let mut next = doc.clone();
            let effects = change(&self.machine, &mut next, now);
            self.bookkeep(&mut next, &effects, now);
            if next == doc {
                *cached = Some((doc, etag));
                return Ok(Applied::Unchanged);
            }
            // The tick is sent before the state that names it is written: a state never names
            // a tick that does not exist (a crash in between leaves a tick the state does not
            // name, which is dropped when it comes).
            if let Some(tick) = self.schedule(&doc, &mut next, now) {
                self.send_tick(&tick).await?;
            }
            match self.states.save(&next, &etag).await? {
                Written::Done(etag) => {
                    *cached = Some((next.clone(), etag));
                    drop(cached);
                    self.carry_out(&next.record, effects);
                    return Ok(Applied::Changed);
                }
                Written::Conflict => {
                    tracing::debug!(run_id, "state changed under us; reading it again");
                }
            }
        }
        Err(CloudError::Request {
            op: format!("saving the state of run {run_id}"),
            message: format!("it changed under {CAS_ROUNDS} attempts in a row"),
        }
        .into())
    }

    /// Keeps the driver's part of the state current: timers armed, starts asked for.
    fn bookkeep(&self, doc: &mut StateDoc, effects: &[Effect], now: Millis) {
        for e in effects {
            match e {
                Effect::ArmTimer { at, timer } if !doc.timers.iter().any(|a| &a.timer == timer) => {
                    doc.timers.push(Armed {
                        at: *at,
                        timer: timer.clone(),
                    });
                }
                Effect::StartAttempt { task_id, attempt } => {
                    doc.starts.retain(|i| &i.task_id != task_id);
                    doc.starts.push(Intent {
                        task_id: task_id.clone(),
                        attempt: *attempt,
                        at: now,
                    });
                }
                _ => {}
            }
        }
        let r = &doc.record;
        doc.starts.retain(|i| {
            r.task(&i.task_id)
                .is_some_and(|t| t.wait == Some(crate::machine::Wait::Slot { attempt: i.attempt }))
        });
        doc.timers.retain(|a| timer_pending(r, &a.timer));
    }

    /// Decides the run's tick after a change: a new one when there is none, when it is lost,
    /// or when something is due before it.
    fn schedule(&self, before: &StateDoc, doc: &mut StateDoc, now: Millis) -> Option<Tick> {
        let finished = doc.record.status.is_finished() && !doc.record.has_live_processes();
        let current = before.tick;
        let lost = |t: &TickState| t.due_ms + ms(self.pace.lost_tick) < now;
        // The processing of a tick clears it (`doc.tick = None`) to chain the next one.
        let live = doc.tick.filter(|t| !lost(t));
        let next_id = current
            .map_or(1, |t| t.id + 1)
            .max(doc.tick.map_or(0, |t| t.id));
        if finished {
            // The last tick only rewrites the final document if it was lost: the current tick
            // can be it.
            if let Some(t) = live {
                doc.tick = Some(TickState { last: true, ..t });
                return None;
            }
            let t = TickState {
                id: next_id,
                due_ms: now + ms(self.pace.heartbeat),
                last: true,
            };
            doc.tick = Some(t);
            return Some(t.message(&doc.record.run_id));
        }
        let mut want = now + ms(self.pace.heartbeat);
        for a in &doc.timers {
            want = want.min(a.at);
        }
        for i in &doc.starts {
            want = want.min(i.at + ms(self.pace.start_grace));
        }
        if let Some(t) = live
            && !t.last
            && t.due_ms <= want + 1000
        {
            return None;
        }
        let t = TickState {
            id: next_id,
            due_ms: want.max(now),
            last: false,
        };
        doc.tick = Some(t);
        Some(t.message(&doc.record.run_id))
    }

    pub(crate) async fn send_tick(&self, tick: &Tick) -> Result<()> {
        let delay_s = delay_s(tick.due_ms, now_ms());
        tracing::debug!(run_id = %tick.run_id, tick = tick.tick, delay_s, "tick sent");
        self.queue.send(tick_body(tick), delay_s).await
    }

    /// Creates a run from a trigger; `false` when it already existed (a duplicate event).
    pub(crate) async fn create(
        self: &Arc<Self>,
        msg: &Received,
        delivery: &Delivery,
        run_id: &str,
        workflow: std::result::Result<linedee::Workflow, String>,
    ) -> Result<bool> {
        let trigger = Trigger {
            bucket: delivery.bucket.clone(),
            key: delivery.key.clone(),
            etag: delivery.etag.clone(),
            kind: delivery.kind,
        };
        let now = now_ms();
        let (record, effects) = self.machine.create(run_id, trigger, workflow, false, now);
        let mut doc = StateDoc::new(&msg.id, record);
        self.bookkeep(&mut doc, &effects, now);
        let tick = self.schedule(&doc.clone(), &mut doc, now);
        let cell = self.cached(run_id);
        let mut cached = cell.lock().await;
        match self.states.create(&doc).await? {
            Written::Done(etag) => {
                *cached = Some((doc.clone(), etag));
                drop(cached);
                tracing::info!(run_id, key = %delivery.key, "run created");
                self.carry_out(&doc.record, effects);
                // Sent after the create (a duplicate event sends nothing), while the first
                // starts are under way; a crash before it is sent is repaired when this
                // message comes back (below).
                if let Some(t) = &tick {
                    self.send_tick(t).await?;
                }
                Ok(true)
            }
            Written::Conflict => {
                *cached = None;
                drop(cached);
                // Our own create, redelivered after a crash before its tick was sent: send it.
                if let Some((existing, _)) = self.states.load(run_id).await?
                    && existing.creator == msg.id
                    && let Some(t) = existing.tick
                {
                    self.send_tick(&t.message(run_id)).await?;
                }
                tracing::info!(run_id, key = %delivery.key, "trigger ignored: the run already exists");
                Ok(false)
            }
        }
    }

    /// An object landed under `out/`: the task's proof, when its `ld_task_id` matches.
    pub(crate) async fn output(self: &Arc<Self>, event: &ObjectEvent, task_id: &str) -> Result<()> {
        let Some(head) = self
            .s3
            .head(&event.bucket, &event.key, event.version_id.as_deref())
            .await?
        else {
            return Ok(());
        };
        let Some(state) = bucket::proof(task_id, &head.metadata) else {
            tracing::debug!(task_id, "an object under out/ is not the task's proof");
            return Ok(());
        };
        let run_id = crate::intake::run_of(task_id).to_owned();
        let landed = Event::OutputLanded {
            task_id: task_id.to_owned(),
            state,
        };
        self.apply(&run_id, vec![landed]).await.map(drop)
    }
}

/// The queue delay of a message due at `due_ms`: whole seconds, at most SQS's 900; a tick due
/// later arrives early and is sent on (`tick.rs`).
pub(crate) fn delay_s(due_ms: Millis, now: Millis) -> i64 {
    (((due_ms - now).max(0) + 999) / 1000).min(MAX_DELAY_S)
}

impl TickState {
    pub(crate) fn message(self, run_id: &str) -> Tick {
        Tick {
            run_id: run_id.to_owned(),
            tick: self.id,
            due_ms: self.due_ms,
        }
    }
}

/// Whether an armed timer can still matter (the machine ignores the others anyway).
fn timer_pending(r: &crate::machine::RunRecord, timer: &Timer) -> bool {
    use crate::machine::Wait;
    let Some(t) = r.task(timer.task_id()) else {
        return false;
    };
    match timer {
        Timer::Timeout { attempt, .. } => t
            .attempts
            .iter()
            .any(|a| a.n == *attempt && a.outcome.is_none()),
        Timer::Backoff { after, .. } => {
            matches!(t.wait, Some(Wait::Backoff { after: a, .. }) if a == *after)
        }
        Timer::Pause { .. } => matches!(t.wait, Some(Wait::Pause { .. })),
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
