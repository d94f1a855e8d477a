//! The driver: one loop that feeds events to the [`Machine`] and carries its effects out
//! through the [`Journal`], the [`Runner`], the [`Bucket`] and the [`TriggerSource`].
//!
//! Each turn takes the inputs that are ready (a batch), applies them to the runs' records,
//! commits every created and changed record in one journal write, and only then carries out
//! the effects. Effects that take time (starting a process, a HEAD, a log upload) run as tasks
//! of their own and report back as inputs. The loop owns every record it holds in memory, so
//! nothing else mutates a run: cancel and retry are inputs like any other.
//!
//! `driver.rs` holds the loop and its turns; `driver/apply.rs` applies an input,
//! `driver/effects.rs` carries effects out, `driver/resume.rs` picks up where a previous
//! engine left off.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use linedee::Workflow;
use linedee::status::Trigger;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::bucket::Bucket;
use crate::error::{Error, Result, RunError};
use crate::intake;
use crate::journal::{Batch, Journal, NewRun, Resumable};
use crate::machine::{Effect, Event, Machine, Millis, Refused, RunRecord, Timer, now_ms};
use crate::publish::{Publisher, Snapshot};
use crate::runner::{AttemptSpec, Exit, Runner, start_event};
use crate::start_queue::StartQueue;
use crate::triggers::{Delivery, TriggerSource};

mod apply;
mod effects;
mod resume;

pub(crate) use effects::spec;

/// Most inputs applied in one turn (one journal transaction).
const BATCH: usize = 256;

/// Longest a turn's trigger acknowledgements wait for a journal sync made for something else
/// before making their own.
const ACK_SYNC_WITHIN: Duration = Duration::from_millis(500);

/// An input of the loop.
#[derive(Debug)]
pub(crate) enum Input {
    /// An event of a run.
    Event { run_id: String, event: Event },
    /// A trigger, with its run id and workflow resolved.
    Trigger {
        delivery: Delivery,
        run_id: String,
        workflow: std::result::Result<Workflow, String>,
    },
    /// Cancel or redrive, answered once the record is committed and the document written.
    Control {
        run_id: String,
        event: Event,
        reply: oneshot::Sender<Result<()>>,
    },
    /// A start that was withdrawn before it got its slot.
    StartWithdrawn { task_id: String, attempt: u32 },
    /// Output notices may have been missed: check every awaited output.
    Resync,
}

/// The parts a driver is given.
pub(crate) struct Parts {
    pub(crate) machine: Machine,
    pub(crate) journal: Arc<dyn Journal>,
    pub(crate) runner: Arc<dyn Runner>,
    pub(crate) bucket: Arc<dyn Bucket>,
    pub(crate) triggers: Arc<dyn TriggerSource>,
    pub(crate) shutdown_grace: Duration,
    /// How many starts may wait for a runner slot at once (a little more than the runner's
    /// slots, so a freed slot is taken at once); the rest wait in the driver's queue.
    pub(crate) start_ahead: usize,
}

/// The driver: its parts and the sending side of its loop's inputs.
pub(crate) struct Driver {
    parts: Parts,
    publisher: Arc<Publisher>,
    tx: mpsc::UnboundedSender<Input>,
    rx: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Input>>>,
    running: AtomicBool,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver").finish_non_exhaustive()
    }
}

/// What one turn decided and must carry out after the commit.
#[derive(Default)]
struct Turn {
    batch: Batch,
    /// Effects per run, in order.
    effects: Vec<(String, Vec<Effect>)>,
    /// Each `batch.create`'s delivery (acknowledged after the commit) and effects (carried out
    /// only if the run was created).
    created: Vec<(Delivery, Vec<Effect>)>,
    replies: Vec<Reply>,
    dirty: Vec<String>,
}

/// A control request's answer, sent once the turn is committed.
type Reply = (
    String,
    oneshot::Sender<Result<()>>,
    std::result::Result<(), Refused>,
);

/// A control request waiting for its run to exist.
type Deferred = (Event, oneshot::Sender<Result<()>>);

/// The loop's own state.
#[derive(Default)]
struct State {
    runs: HashMap<String, RunRecord>,
    timers: BTreeMap<(Millis, u64), (String, Timer)>,
    timer_seq: u64,
    snapshot_seq: u64,
    /// Starts handed to the runner, waiting for a slot or starting, by (task, attempt):
    /// cancelling withdraws them.
    starting: HashMap<(String, u32), CancellationToken>,
    /// Starts not yet handed to the runner, oldest first.
    queue: StartQueue,
    /// The engine is shutting down: runs loaded from the journal start nothing new either.
    halted: bool,
    /// Control requests for runs whose trigger is pending, applied once the run exists.
    deferred: HashMap<String, Vec<Deferred>>,
}

impl Driver {
    pub(crate) fn new(parts: Parts) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let publisher = Arc::new(Publisher::new(
            Arc::clone(&parts.bucket),
            Arc::clone(&parts.journal),
        ));
        Driver {
            parts,
            publisher,
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            running: AtomicBool::new(false),
        }
    }

    /// Cancels or redrives a run; returns once its record is committed and its status
    /// document rewritten.
    pub(crate) async fn control(&self, run_id: &str, event: Event) -> Result<()> {
        if !self.running.load(Ordering::Acquire) {
            return Err(Error::Internal(
                "the engine is not running, so it cannot cancel or retry a run".to_owned(),
            ));
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Input::Control {
                run_id: run_id.to_owned(),
                event,
                reply,
            })
            .map_err(|_| Error::Internal("the engine has stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| Error::Internal("the engine stopped before answering".to_owned()))?
    }

    /// Resumes unfinished runs, then takes triggers and events until `shutdown`; then starts
    /// nothing new, gives running attempts the grace period, and interrupts the rest.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) -> Result<()> {
        let Some(mut rx) = self
            .rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        else {
            return Err(Error::Internal("the engine is already running".to_owned()));
        };
        self.running.store(true, Ordering::Release);
        let stop_publisher = CancellationToken::new();
        let publisher = {
            let (p, stop) = (Arc::clone(&self.publisher), stop_publisher.clone());
            tokio::spawn(async move { p.run(stop).await })
        };
        let mut st = State::default();
        let result = self.drive(&mut st, &mut rx, shutdown).await;
        self.running.store(false, Ordering::Release);
        self.parts.runner.stop_all().await;
        stop_publisher.cancel();
        let _ = publisher.await;
        // The publisher's last marks and the last records' listings are written now, so the
        // next start neither projects them again nor rewrites those runs' documents.
        if let Err(e) = self.parts.journal.flush().await {
            tracing::warn!(error = %e, "cannot write the journal's listings at shutdown; the next start writes them");
        }
        result
    }

    async fn drive(
        &self,
        st: &mut State,
        rx: &mut mpsc::UnboundedReceiver<Input>,
        shutdown: CancellationToken,
    ) -> Result<()> {
        self.resume(st).await?;
        let intake = tokio::spawn(intake::run(
            Arc::clone(&self.parts.triggers),
            Arc::clone(&self.parts.bucket),
            self.tx.clone(),
        ));
        let mut halting: Option<tokio::time::Instant> = None;
        let mut interrupted = false;
        loop {
            let next_timer = st.timers.keys().next().map(|(at, _)| *at);
            let mut inputs: Vec<Input> = Vec::new();
            tokio::select! {
                biased;
                () = shutdown.cancelled(), if halting.is_none() => {
                    tracing::info!("shutting down: no new runs; running attempts get {:?}", self.parts.shutdown_grace);
                    intake.abort();
                    halting = Some(tokio::time::Instant::now() + self.parts.shutdown_grace);
                    st.halted = true;
                    inputs.extend(self.all_runs(st, Event::Halt));
                }
                () = sleep_until(halting), if halting.is_some() && !interrupted => {
                    interrupted = true;
                    inputs.extend(self.all_runs(st, Event::Interrupt));
                    let runner = Arc::clone(&self.parts.runner);
                    tokio::spawn(async move { runner.stop_all().await });
                }
                input = rx.recv() => {
                    inputs.extend(input);
                    while inputs.len() < BATCH {
                        match rx.try_recv() {
                            Ok(i) => inputs.push(i),
                            Err(_) => break,
                        }
                    }
                }
                () = sleep_until_ms(next_timer), if next_timer.is_some() && halting.is_none() => {
                    let now = now_ms();
                    while let Some(entry) = st.timers.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        let (run_id, timer) = entry.remove();
                        inputs.push(Input::Event { run_id, event: Event::TimerFired(timer) });
                    }
                }
            }
            self.turn(st, inputs).await?;
            if halting.is_some()
                && st.starting.is_empty()
                && st.runs.values().all(|r| !r.has_live_processes())
            {
                return Ok(());
            }
        }
    }

    fn all_runs(&self, st: &State, event: Event) -> Vec<Input> {
        st.runs
            .keys()
            .map(|run_id| Input::Event {
                run_id: run_id.clone(),
                event: event.clone(),
            })
            .collect()
    }

    /// One turn: apply the inputs, commit, then carry out the effects and answer requests.
    async fn turn(&self, st: &mut State, inputs: Vec<Input>) -> Result<()> {
        if inputs.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut turn = Turn::default();
        for input in inputs {
            self.apply(st, &mut turn, now, input).await;
        }
        for run_id in &turn.dirty {
            if let Some(r) = st.runs.get(run_id) {
                turn.batch.save.push(r.clone());
            }
        }
        let records: Vec<RunRecord> = turn.batch.create.iter().map(|n| n.record.clone()).collect();
        let created = self
            .parts
            .journal
            .commit(std::mem::take(&mut turn.batch))
            .await?;
        let mut effects = Vec::new();
        let mut delivered = Vec::with_capacity(turn.created.len());
        for ((record, was_created), (delivery, run_effects)) in
            records.into_iter().zip(created).zip(turn.created)
        {
            let run_id = record.run_id.clone();
            // Requests that waited for this run go in now that it exists (created by this
            // delivery or an earlier one).
            for (event, reply) in st.deferred.remove(&run_id).unwrap_or_default() {
                let run_id = run_id.clone();
                let _ = self.tx.send(Input::Control {
                    run_id,
                    event,
                    reply,
                });
            }
            if was_created {
                tracing::info!(run_id, key = %delivery.key, "run created");
                st.runs.insert(run_id.clone(), record);
                effects.push((run_id, run_effects));
            } else {
                tracing::info!(run_id, key = %delivery.key, "trigger ignored: the run already exists");
            }
            delivered.push(delivery);
        }
        if !delivered.is_empty() {
            let (triggers, journal) = (
                Arc::clone(&self.parts.triggers),
                Arc::clone(&self.parts.journal),
            );
            tokio::spawn(async move {
                // Acknowledged only once the runs' creation survives power loss: until then
                // the triggers are what would bring the runs back. An acknowledgement can
                // wait, so it rides a sync made for something else when one comes soon.
                if let Err(e) = journal.sync_soon(ACK_SYNC_WITHIN).await {
                    tracing::warn!(error = %e, "cannot sync the journal; the triggers are delivered again at the next start and ignored");
                    return;
                }
                if let Err(e) = triggers.ack(&delivered).await {
                    tracing::warn!(error = %e, "cannot acknowledge triggers; they are delivered again and ignored");
                }
            });
        }
        effects.extend(turn.effects.into_iter().filter(|(_, e)| !e.is_empty()));
        self.carry_out(st, effects);
        for (run_id, reply, outcome) in turn.replies {
            let answer = outcome.map_err(|refused| refusal(&run_id, refused));
            st.snapshot_seq += 1;
            let written = st.runs.get(&run_id).filter(|_| answer.is_ok()).map(|r| {
                self.publisher
                    .publish_now(self.snapshot(st.snapshot_seq, r))
            });
            let journal = Arc::clone(&self.parts.journal);
            tokio::spawn(async move {
                // The request is answered once its outcome survives power loss.
                let answer = match answer {
                    Ok(()) => journal.sync().await,
                    refused => refused,
                };
                if let Some(written) = written {
                    written.await;
                }
                let _ = reply.send(answer);
            });
        }
        self.hand_out(st).await;
        // Records are dropped from memory (the journal has them, committed) when no process of
        // theirs runs or is being started: finished runs, and runs that wait for a slot, a
        // timer or an output check. A later event loads the record again.
        let starting: std::collections::HashSet<&str> = st
            .starting
            .keys()
            .map(|(task_id, _)| intake::run_of(task_id))
            .collect();
        st.runs.retain(|run_id, r| {
            r.has_live_processes() || r.ending.is_some() || starting.contains(run_id.as_str())
        });
        Ok(())
    }

    /// Hands queued starts to the runner, oldest first, while fewer than
    /// [`Parts::start_ahead`] are with it; loads a run's record when it is not in memory.
    async fn hand_out(&self, st: &mut State) {
        while !st.halted && st.starting.len() < self.parts.start_ahead {
            let Some((task_id, attempt)) = st.queue.pop() else {
                return;
            };
            let run_id = intake::run_of(&task_id).to_owned();
            if !st.runs.contains_key(&run_id) {
                match self.parts.journal.load(&run_id).await {
                    Ok(Some(r)) => {
                        st.runs.insert(run_id.clone(), r);
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        // The run's next event (a restart at the latest) asks again.
                        tracing::error!(run_id, error = %e, "cannot load a run to start its attempt");
                        continue;
                    }
                }
            }
            let Some(run) = st.runs.get(&run_id) else {
                continue;
            };
            // Only an attempt the record still waits a slot for.
            let wanted = run.task(&task_id).is_some_and(|t| {
                matches!(t.wait, Some(crate::machine::Wait::Slot { attempt: a }) if a == attempt)
            });
            let Some(spec) = spec(run, &task_id, attempt).filter(|_| wanted) else {
                continue;
            };
            let no_output = run
                .task(&task_id)
                .and_then(|t| run.def(t.step, t.idx))
                .is_some_and(|d| d.no_output);
            let bucket = run.trigger.bucket.clone();
            let cancel = CancellationToken::new();
            st.starting
                .insert((task_id.to_string(), attempt), cancel.clone());
            self.start(&run_id, &bucket, spec, no_output, cancel);
        }
    }

    fn snapshot(&self, seq: u64, r: &RunRecord) -> Snapshot {
        Snapshot {
            seq,
            doc: r.status_document(),
            processes_running: r.has_live_processes(),
            succeeded_by_outputs: r.succeeded_by_outputs(),
        }
    }

    fn offer(&self, st: &mut State, r: &RunRecord) {
        st.snapshot_seq += 1;
        self.publisher.offer(self.snapshot(st.snapshot_seq, r));
    }
}

pub(crate) fn refusal(run_id: &str, refused: Refused) -> Error {
    let run_id = run_id.to_owned();
    let refused = match refused {
        Refused::Finished(status) => RunError::Finished {
            run_id,
            status: status.to_string(),
        },
        Refused::NotRetryable(status) => RunError::NotRetryable {
            run_id,
            status: status.to_string(),
        },
        Refused::InvalidWorkflow(error) => RunError::InvalidWorkflow { run_id, error },
    };
    refused.into()
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until a wall-clock time in ms since the epoch.
async fn sleep_until_ms(at: Option<Millis>) {
    match at {
        Some(at) => {
            let ms = u64::try_from(at.saturating_sub(now_ms())).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
