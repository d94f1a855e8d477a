//! Group commit: object writes that arrive while a batch is committing share the next SQLite
//! transaction, so many acknowledged writes cost one WAL fsync. Each write runs in its own
//! savepoint, so one failing (a precondition, a missing bucket) does not affect the others.
//!
//! Trigger acknowledgements (outbox marks) ride the same queue and transactions: a turn's
//! acknowledgement costs no thread and no commit of its own.
//!
//! A write nobody waits on ([`Commit::Deferred`]: a task's log, a status document the run
//! is moving through) does not start a batch: it waits up to [`DEFER_WITHIN`] for one made for
//! another write and rides it, so that under load it costs no commit of its own.
//!
//! One committer thread per store commits: a writer queues its write and waits for the answer
//! without holding a thread of its own (an async writer awaits it, a blocking one blocks on
//! it), and the committer takes everything queued at once. Only the committer waits for the
//! disk, so a burst of writers costs one thread wake per batch, not one pool thread each. The
//! thread holds the store weakly and ends when the store is dropped.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::Inner;
use super::index::{self, Committed, NewObject, Precondition};
use crate::{Error, Result, StoreError};

/// Longest a [`Commit::Deferred`] write waits for a batch made for another write before the
/// committer makes one for it.
pub(crate) const DEFER_WITHIN: Duration = Duration::from_millis(20);

/// How a queued write is committed, and how durable it is when answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// In the next batch, synced: durable across power loss when answered.
    Synced,
    /// In the next batch, unsynced: durable against a crash of the process when answered, and
    /// against power loss with the next synced commit (see [`Inner::unsynced_on`]).
    Unsynced,
    /// Unsynced, and in no hurry: it waits up to [`DEFER_WITHIN`] for a batch that another
    /// write starts.
    Deferred,
}

/// What a queued change does.
enum Op {
    /// Writes an object, under its precondition.
    Write { obj: NewObject, cond: Precondition },
    /// Marks these triggers consumed.
    Ack(Vec<i64>),
    /// Nothing but a synced commit, for the writes before it (`ld_durable`'s row).
    Sync,
}

/// What a committed change did.
// Not boxed: the answer is moved once, into its reply's slot, and a box would cost every write
// an allocation.
#[allow(clippy::large_enum_variant)]
enum Done {
    Written(Committed),
    /// How many of the triggers were still pending.
    Acked(usize),
    Synced,
}

impl Done {
    fn written(self) -> Result<Committed> {
        match self {
            Done::Written(c) => Ok(c),
            _ => Err(mismatched()),
        }
    }
}

/// The committer answered a change with another kind's answer: a bug, never expected.
fn mismatched() -> Error {
    Error::Internal("group commit: a change was answered as another kind".into())
}

/// How far the committer's batches are: the number of the last committed, and of the last
/// whose commit was synced (its WAL fsync covers every commit before it). With fsync off, every
/// commit counts as synced: nothing more is to be had.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Commits {
    pub(crate) committed: u64,
    pub(crate) synced: u64,
}

struct Pending {
    op: Op,
    commit: Commit,
    reply: oneshot::Sender<Result<Done>>,
}

#[derive(Default)]
struct Waiting {
    writes: Vec<Pending>,
    /// How many of `writes` are not deferred: any starts a batch at once.
    urgent: usize,
    /// When the oldest deferred write of `writes` was queued.
    deferred_since: Option<Instant>,
    /// The store is gone: nothing more is queued, and the committer ends.
    closed: bool,
}

/// Writes waiting for the committer.
pub(crate) struct Queue {
    waiting: Mutex<Waiting>,
    ready: Condvar,
    /// [`DEFER_WITHIN`], but for tests.
    defer_within: Duration,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            waiting: Mutex::default(),
            ready: Condvar::new(),
            defer_within: DEFER_WITHIN,
        }
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a write; gives it back when the store is closing.
    fn push(&self, p: Pending) -> Option<Pending> {
        let mut w = self.lock();
        if w.closed {
            return Some(p);
        }
        // The committer sleeps until something is urgent (one wake per batch), or, with only
        // deferred writes queued, until the oldest has waited long enough: the first of them
        // wakes it to set that deadline.
        let wake = if p.commit == Commit::Deferred {
            w.deferred_since.get_or_insert_with(Instant::now);
            w.writes.is_empty()
        } else {
            w.urgent += 1;
            w.urgent == 1
        };
        w.writes.push(p);
        if wake {
            self.ready.notify_one();
        }
        None
    }

    /// Everything queued, once something is urgent or a deferred write has waited
    /// [`DEFER_WITHIN`]; `None` once closed and drained.
    fn take(&self) -> Option<Vec<Pending>> {
        let mut w = self.lock();
        while w.urgent == 0 && !w.closed {
            let wait = w
                .deferred_since
                .map(|since| self.defer_within.saturating_sub(since.elapsed()));
            w = match wait {
                None => self
                    .ready
                    .wait(w)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(left) if left.is_zero() => break,
                Some(left) => {
                    self.ready
                        .wait_timeout(w, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
        if w.writes.is_empty() {
            return None;
        }
        w.urgent = 0;
        w.deferred_since = None;
        Some(std::mem::take(&mut w.writes))
    }

    /// Ends the committer once it has answered what is queued.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

/// Starts the committer of `inner`'s writes.
pub(crate) fn start(queue: Arc<Queue>, inner: Weak<Inner>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("ld-store-commit".to_owned())
        .spawn(move || {
            while let Some(batch) = queue.take() {
                match inner.upgrade() {
                    // A panic fails its batch (each writer's answer is dropped, which it hears
                    // as an error), not the writes that come after.
                    Some(inner) => {
                        let commit = std::panic::AssertUnwindSafe(|| inner.commit_now(batch));
                        if std::panic::catch_unwind(commit).is_err() {
                            tracing::error!("the store's committer failed a batch of writes");
                        }
                    }
                    None => {
                        for p in batch {
                            let _ = p.reply.send(Err(gone()));
                        }
                    }
                }
            }
        })
        .map(drop)
}

fn gone() -> Error {
    Error::Internal("group commit: the store was closed before the write was committed".into())
}

/// The committer dropped a change unanswered (a panic while committing its batch).
fn stopped() -> Error {
    Error::Internal("group commit: the committer stopped before answering".into())
}

fn failed(what: &str, e: &rusqlite::Error) -> Error {
    Error::Internal(format!("group commit: {what} failed: {e}"))
}

impl Inner {
    /// Queues a write for the committer; the answer comes once it is committed (or refused),
    /// as durable as `commit` says. A batch is synced when any of its writes must be. On
    /// failure the write's body files are removed.
    pub(crate) fn queue_commit(
        &self,
        obj: NewObject,
        cond: Precondition,
        commit: Commit,
    ) -> impl std::future::Future<Output = Result<Committed>> + use<> {
        let answer = self.queue(Op::Write { obj, cond }, commit);
        async move { answer.await.map_err(|_| stopped())??.written() }
    }

    /// Queues the marks of consumed triggers, unsynced (as [`Inner::unsynced_on`]); the answer,
    /// how many were still pending, comes once they are committed.
    pub(crate) async fn queue_ack(&self, ids: Vec<i64>) -> Result<usize> {
        match self
            .queue(Op::Ack(ids), Commit::Unsynced)
            .await
            .map_err(|_| stopped())??
        {
            Done::Acked(n) => Ok(n),
            _ => Err(mismatched()),
        }
    }

    /// Queues a synced commit of nothing but `ld_durable`'s row; answered once it is synced,
    /// and with it every commit before.
    pub(crate) async fn queue_sync(&self) -> Result<()> {
        match self
            .queue(Op::Sync, Commit::Synced)
            .await
            .map_err(|_| stopped())??
        {
            Done::Synced => Ok(()),
            _ => Err(mismatched()),
        }
    }

    fn queue(&self, op: Op, commit: Commit) -> oneshot::Receiver<Result<Done>> {
        let (reply, answer) = oneshot::channel();
        if let Some(p) = self.group.push(Pending { op, commit, reply }) {
            self.discard_op(&p.op);
            let _ = p.reply.send(Err(gone()));
        }
        answer
    }

    /// Removes the body files of a write that was not committed.
    fn discard_op(&self, op: &Op) {
        if let Op::Write { obj, .. } = op {
            self.discard(&obj.body);
        }
    }

    /// [`Inner::queue_commit`], waiting for the answer on the calling (blocking) thread.
    pub(crate) fn commit_grouped(
        &self,
        obj: NewObject,
        cond: Precondition,
        commit: Commit,
    ) -> Result<Committed> {
        self.queue(Op::Write { obj, cond }, commit)
            .blocking_recv()
            .map_err(|_| stopped())??
            .written()
    }

    /// Commits a batch in one transaction (synced when any write must be) and answers each.
    fn commit_now(&self, batch: Vec<Pending>) {
        let mut db = self.db();
        if batch.iter().any(|p| p.commit == Commit::Synced) {
            self.commit_batch(&mut db, batch, true);
        } else {
            let mut batch = Some(batch);
            let set = self.unsynced_on(&mut db, |db| {
                if let Some(batch) = batch.take() {
                    self.commit_batch(db, batch, false);
                }
                Ok(())
            });
            // The setting failed before the batch ran: its writers hear it was not committed.
            if let (Err(e), Some(batch)) = (set, batch) {
                for p in batch {
                    self.discard_op(&p.op);
                    let _ = p.reply.send(Err(Error::Internal(e.to_string())));
                }
            }
        }
    }

    /// Commits `batch` in one transaction (`synced`: at `synchronous=FULL`) and answers each
    /// change, after counting the commit in [`Commits`].
    fn commit_batch(&self, db: &mut Connection, batch: Vec<Pending>, synced: bool) {
        let mut results: Vec<Result<Done>> = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<(), Error> {
            let mut tx = db.transaction().map_err(|e| failed("BEGIN", &e))?;
            for p in &batch {
                let mut sp = tx.savepoint().map_err(|e| failed("SAVEPOINT", &e))?;
                let done = match &p.op {
                    Op::Write { obj, cond } => {
                        index::write_object(&sp, obj, cond).map(Done::Written)
                    }
                    Op::Ack(ids) => super::outbox::mark_acked(&sp, ids).map(Done::Acked),
                    Op::Sync => sp
                        .execute(
                            "INSERT INTO ld_durable (id, n) VALUES (1, 1)
                             ON CONFLICT (id) DO UPDATE SET n = n + 1",
                            [],
                        )
                        .map(|_| Done::Synced)
                        .map_err(Error::from),
                };
                match done {
                    Ok(c) => {
                        sp.commit().map_err(|e| failed("RELEASE", &e))?;
                        results.push(Ok(c));
                    }
                    Err(e) => {
                        sp.rollback().map_err(|e| failed("ROLLBACK TO", &e))?;
                        drop(sp);
                        results.push(Err(e));
                    }
                }
            }
            tx.commit().map_err(|e| failed("COMMIT", &e))
        })();
        // Counted before anyone is answered: a writer may ask next whether its write is
        // durable.
        if outcome.is_ok() {
            let synced = synced || !self.options.fsync;
            self.commits.send_modify(|c| {
                c.committed += 1;
                if synced {
                    c.synced = c.committed;
                }
            });
        }
        let mut replaced = Vec::new();
        let mut answers = Vec::with_capacity(batch.len());
        for (i, p) in batch.into_iter().enumerate() {
            let result = match (
                &outcome,
                results
                    .get_mut(i)
                    .map(|r| std::mem::replace(r, Err(StoreError::InvalidPartOrder.into()))),
            ) {
                (Ok(()), Some(Ok(Done::Written(c)))) => {
                    self.announce(&c);
                    replaced.extend(c.replaced.iter().cloned());
                    Ok(Done::Written(c))
                }
                (Ok(()), Some(Ok(acked))) => Ok(acked),
                (Ok(()), Some(Err(e))) => Err(e),
                (Err(e), _) => Err(Error::Internal(e.to_string())),
                (Ok(()), None) => Err(Error::Internal("group commit: write not attempted".into())),
            };
            if result.is_err() {
                self.discard_op(&p.op);
            }
            answers.push((p.reply, result));
        }
        // Answered once the bodies they replaced are gone, so an overwrite leaves no file.
        for blob in &replaced {
            self.blobs.remove(blob);
        }
        for (reply, result) in answers {
            let _ = reply.send(result);
        }
    }
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
