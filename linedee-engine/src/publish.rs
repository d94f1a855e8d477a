//! The status publisher: writes `ld/runs/{run_id}.json` off the driver's critical path.
//!
//! The driver offers a snapshot of the document after each transition. Offers coalesce: a
//! run has at most one pending snapshot, and a newer offer replaces it. A final status is
//! written at once when its run's processes have exited; a status the run is still moving
//! through waits [`SETTLE`] first, and so does a final status whose processes still run (a
//! task's output decides it, and the process exits just after, which adds its exit code to the
//! document). So a run that finishes within that time of starting has its document written
//! twice (queued, then its outcome with its exit codes) instead of once per transition. Up to
//! [`IN_FLIGHT`] documents of different runs are written at a time (so the store's group
//! commit can share one fsync among them); a run's own writes happen one after another, each
//! taking its newest snapshot, so its document always converges on its latest state and never
//! goes back to an older one. A `queued` status (a new run's first document, which tells a
//! follower the run exists) does not wait either.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use linedee::status::{RunState, RunStatus};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bucket::Bucket;
use crate::journal::Journal;

/// How long a document showing an unfinished status (or a final one whose processes still run)
/// waits before it is written, for a newer snapshot to replace it. Readers follow runs by
/// polling; this is well under their interval.
pub(crate) const SETTLE: Duration = Duration::from_millis(150);

/// Most documents written at once.
const IN_FLIGHT: usize = 8;

/// A status document as of one transition; `seq` orders the snapshots of all runs.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) seq: u64,
    pub(crate) doc: RunStatus,
    /// Some process of the run may still be running: its exit will change the document again.
    pub(crate) processes_running: bool,
    /// The run succeeded and every task proved it with an output
    /// ([`RunRecord::succeeded_by_outputs`](crate::machine::RunRecord::succeeded_by_outputs)).
    pub(crate) succeeded_by_outputs: bool,
}

/// A run's pending snapshot and when it is due.
struct Entry {
    snapshot: Snapshot,
    due: Instant,
}

#[derive(Default)]
struct Pending {
    runs: HashMap<String, Entry>,
    /// `runs` by due time, so that taking the due ones costs what is taken, not what waits (a
    /// long queue's `queued` documents can be tens of thousands).
    by_due: std::collections::BTreeSet<(Instant, String)>,
    /// Callers waiting for a run's document to show at least a given snapshot.
    waiting: HashMap<String, Vec<(u64, oneshot::Sender<()>)>>,
    /// The writing loop has ended: nothing more is written.
    closed: bool,
}

/// Writes status documents, coalescing.
pub(crate) struct Publisher {
    bucket: Arc<dyn Bucket>,
    journal: Arc<dyn Journal>,
    pending: Mutex<Pending>,
    wake: Notify,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

/// A written document: its run, the snapshot's seq, and its status when final.
type Written = (String, u64, Option<String>);

impl Publisher {
    pub(crate) fn new(bucket: Arc<dyn Bucket>, journal: Arc<dyn Journal>) -> Self {
        Publisher {
            bucket,
            journal,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Schedules a snapshot to be written (replacing an older one not yet written). A run's
    /// snapshots are offered in `seq` order.
    pub(crate) fn offer(&self, snapshot: Snapshot) {
        // A final status whose processes have all exited, and `queued` (a new run's first
        // document, which tells a follower the run exists), are written at once; a status the
        // run moves through settles, and so does a final one whose exit codes are still to come
        // (usually within milliseconds: its output decided it, and then it exits). Writing it
        // at once meant writing a run's final document twice, each after a journal sync.
        let status = snapshot.doc.status;
        let settled = status.is_finished() && !snapshot.processes_running;
        let due = if settled || status == RunState::Queued {
            Instant::now()
        } else {
            Instant::now() + SETTLE
        };
        self.pending().add(snapshot, due);
        self.wake.notify_one();
    }

    /// Schedules a snapshot to be written at once; the answer resolves once the document shows
    /// it or a newer one (for requests whose callers read the document next). Called in `seq`
    /// order with `offer`; awaiting the answer can happen anywhere.
    pub(crate) fn publish_now(&self, snapshot: Snapshot) -> impl Future<Output = ()> + use<> {
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending();
            if !pending.closed {
                let run_id = snapshot.doc.run_id.clone();
                let seq = snapshot.seq;
                pending.add(snapshot, Instant::now());
                pending.waiting.entry(run_id).or_default().push((seq, tx));
            }
        }
        self.wake.notify_one();
        async move {
            let _ = rx.await;
        }
    }

    /// Writes offered snapshots until `stop` is cancelled; then writes what is left, due or
    /// not, and returns.
    pub(crate) async fn run(&self, stop: CancellationToken) {
        let mut writing: JoinSet<Written> = JoinSet::new();
        let mut busy: HashSet<String> = HashSet::new();
        let mut stopping = false;
        loop {
            let wake = self.wake.notified();
            // Once stopping, everything pending is due: nothing waits past the shutdown.
            let horizon = Instant::now() + if stopping { SETTLE } else { Duration::ZERO };
            let (ready, next_due) =
                self.pending()
                    .take_due(horizon, &busy, IN_FLIGHT.saturating_sub(writing.len()));
            for snapshot in ready {
                busy.insert(snapshot.doc.run_id.clone());
                // Someone waits for a final document, or for one they asked for; nobody for a
                // status on the way, which the store may hold a moment to share a commit.
                let urgent = snapshot.doc.status.is_finished()
                    || self.pending().waiting.contains_key(&snapshot.doc.run_id);
                let (bucket, journal) = (Arc::clone(&self.bucket), Arc::clone(&self.journal));
                writing.spawn(async move {
                    let status = write(&*bucket, &*journal, &snapshot, urgent).await;
                    (snapshot.doc.run_id, snapshot.seq, status)
                });
            }
            if stopping && writing.is_empty() && next_due.is_none() {
                let mut pending = self.pending();
                pending.closed = true;
                pending.waiting.clear();
                return;
            }
            tokio::select! {
                Some(done) = writing.join_next() => {
                    let mut written = Vec::new();
                    let mut done = Some(done);
                    while let Some(d) = done.take().or_else(|| writing.try_join_next()) {
                        written.extend(d.ok());
                    }
                    // Marked before anyone waiting is answered: they may read the mark next.
                    let finished = written
                        .iter()
                        .filter_map(|(run_id, _, status)| Some((run_id.clone(), status.clone()?)))
                        .collect();
                    self.mark(finished).await;
                    let mut pending = self.pending();
                    for (run_id, seq, _) in written {
                        pending.answer(&run_id, seq);
                        busy.remove(&run_id);
                    }
                }
                () = wake => {}
                () = sleep_until(next_due), if !stopping => {}
                () = stop.cancelled(), if !stopping => stopping = true,
            }
        }
    }

    /// Records which final status the documents of these runs show, in one journal write.
    async fn mark(&self, finished: Vec<(String, String)>) {
        if finished.is_empty() {
            return;
        }
        if let Err(e) = self.journal.published(finished).await {
            tracing::warn!(error = %e, "cannot record published statuses");
        }
    }
}

impl Pending {
    /// Adds a run's newer snapshot, keeping the earlier due time: a stream of changes does
    /// not postpone a document forever.
    fn add(&mut self, snapshot: Snapshot, due: Instant) {
        if self.closed {
            return;
        }
        match self.runs.get_mut(&snapshot.doc.run_id) {
            Some(e) => {
                if due < e.due {
                    let run_id = snapshot.doc.run_id.clone();
                    self.by_due.remove(&(e.due, run_id.clone()));
                    self.by_due.insert((due, run_id));
                    e.due = due;
                }
                if snapshot.seq > e.snapshot.seq {
                    e.snapshot = snapshot;
                }
            }
            None => {
                let run_id = snapshot.doc.run_id.clone();
                self.by_due.insert((due, run_id.clone()));
                self.runs.insert(run_id, Entry { snapshot, due });
            }
        }
    }

    /// Takes up to `room` snapshots due by `horizon` of runs not being written; returns them
    /// and the earliest due time of the rest.
    fn take_due(
        &mut self,
        horizon: Instant,
        busy: &HashSet<String>,
        room: usize,
    ) -> (Vec<Snapshot>, Option<Instant>) {
        let mut taken = Vec::new();
        let mut next = None;
        // In due order, past the few runs being written.
        for (due, run_id) in self.by_due.iter().filter(|(_, id)| !busy.contains(id)) {
            if *due <= horizon && taken.len() < room {
                taken.push((*due, run_id.clone()));
            } else {
                next = Some(*due);
                break;
            }
        }
        let ready = taken
            .into_iter()
            .filter_map(|key| {
                self.by_due.remove(&key);
                self.runs.remove(&key.1)
            })
            .map(|e| e.snapshot)
            .collect();
        (ready, next)
    }

    /// A run's snapshot `seq` was written (or failed to be): answers those who waited for it
    /// or an older one.
    fn answer(&mut self, run_id: &str, seq: u64) {
        if let Some(waiters) = self.waiting.get_mut(run_id) {
            let (answered, rest): (Vec<_>, Vec<_>) =
                waiters.drain(..).partition(|(wanted, _)| *wanted <= seq);
            for (_, tx) in answered {
                let _ = tx.send(());
            }
            if rest.is_empty() {
                self.waiting.remove(run_id);
            } else {
                *waiters = rest;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes one document; returns its status when it is final and was written durably. A final
/// status is written once the journal has it durably: a document never shows an outcome that a
/// power loss could take back. A run that succeeded by its outputs alone needs no journal sync:
/// the outputs are durable before the document can be (the store keeps its writes in order),
/// and a restart finds each of them again before it runs any task of a run the journal has
/// behind (`RunRecord::recovered`), so the run ends succeeded again without running anything,
/// and no other document replaces this one meanwhile. The document itself is then not synced
/// on its own: it becomes
/// durable with the store's next synced write (someone else's, usually within milliseconds
/// under load), and only then is it returned, to be marked published. Until the mark, a
/// restart writes it again, so a power loss in between loses nothing. A document nobody waits
/// for (not `urgent`) is written with [`Bucket::put_json_deferred`].
async fn write(
    bucket: &dyn Bucket,
    journal: &dyn Journal,
    s: &Snapshot,
    urgent: bool,
) -> Option<String> {
    let run_id = &s.doc.run_id;
    if s.doc.status.is_finished()
        && !s.succeeded_by_outputs
        && let Err(e) = journal.sync().await
    {
        tracing::error!(run_id, error = %e, "cannot sync the journal; the final status document is written at the next start");
        return None;
    }
    let body = match serde_json::to_vec(&s.doc) {
        Ok(body) => body,
        Err(e) => {
            // Never an empty or partial document, and never recorded as published.
            tracing::error!(run_id, error = %e, "cannot encode a status document; it is not written");
            return None;
        }
    };
    let key = linedee::status::status_key(run_id);
    let written = if urgent {
        bucket.put_json(&s.doc.trigger.bucket, &key, body).await
    } else {
        bucket
            .put_json_deferred(&s.doc.trigger.bucket, &key, body)
            .await
    };
    if let Err(e) = written {
        tracing::error!(run_id, error = %e, "cannot publish a status document");
        return None;
    }
    // A status on the way is replaced by the next one: it needs no wait.
    if !s.doc.status.is_finished() {
        return None;
    }
    match bucket.durable().await {
        Ok(()) => Some(s.doc.status.as_str().to_owned()),
        Err(e) => {
            tracing::error!(run_id, error = %e, "cannot make a final status document durable; it is written again at the next start");
            None
        }
    }
}

#[cfg(test)]
#[path = "publish_tests.rs"]
mod tests;
