//! Group commit: object writes that arrive while a batch is committing share the next SQLite
//! transaction, so many acknowledged writes cost one WAL fsync. Each write runs in its own
//! savepoint, so one failing (a precondition, a missing bucket) does not affect the others.
//!
//! Trigger acknowledgements (outbox marks) ride the same queue and transactions: a turn's
//! acknowledgement costs no thread and no commit of its own.
//!
//! One committer thread per store commits: a writer queues its write and waits for the answer
//! without holding a thread of its own (an async writer awaits it, a blocking one blocks on
//! it), and the committer takes everything queued at once. Only the committer waits for the
//! disk, so a burst of writers costs one thread wake per batch, not one pool thread each. The
//! thread holds the store weakly and ends when the store is dropped.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::Inner;
use super::index::{self, Committed, NewObject, Precondition};
use crate::{Error, Result, StoreError};

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
    /// Durable across power loss when answered (else durable with a later synced commit).
    synced: bool,
    reply: oneshot::Sender<Result<Done>>,
}

#[derive(Default)]
struct Waiting {
    writes: Vec<Pending>,
    /// The store is gone: nothing more is queued, and the committer ends.
    closed: bool,
}

/// Writes waiting for the committer.
#[derive(Default)]
pub(crate) struct Queue {
    waiting: Mutex<Waiting>,
    ready: Condvar,
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
        w.writes.push(p);
        // The committer sleeps only when nothing is queued: one wake per batch.
        if w.writes.len() == 1 {
            self.ready.notify_one();
        }
        None
    }

    /// Everything queued, once there is something; `None` once closed and drained.
    fn take(&self) -> Option<Vec<Pending>> {
        let mut w = self.lock();
        while w.writes.is_empty() && !w.closed {
            w = self
                .ready
                .wait(w)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if w.writes.is_empty() {
            return None;
        }
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
    /// Queues a write for the committer; the answer comes once it is committed (or refused).
    /// An unsynced write (`synced: false`) is durable against a crash of the process when
    /// answered and against power loss with the next synced commit, as in
    /// [`Inner::unsynced_on`]; a batch is synced when any of its writes must be. On failure the
    /// write's body files are removed.
    pub(crate) fn queue_commit(
        &self,
        obj: NewObject,
        cond: Precondition,
        synced: bool,
    ) -> impl std::future::Future<Output = Result<Committed>> + use<> {
        let answer = self.queue(Op::Write { obj, cond }, synced);
        async move { answer.await.map_err(|_| stopped())??.written() }
    }

    /// Queues the marks of consumed triggers, unsynced (as [`Inner::unsynced_on`]); the answer,
    /// how many were still pending, comes once they are committed.
    pub(crate) async fn queue_ack(&self, ids: Vec<i64>) -> Result<usize> {
        match self
            .queue(Op::Ack(ids), false)
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
        match self.queue(Op::Sync, true).await.map_err(|_| stopped())?? {
            Done::Synced => Ok(()),
            _ => Err(mismatched()),
        }
    }

    fn queue(&self, op: Op, synced: bool) -> oneshot::Receiver<Result<Done>> {
        let (reply, answer) = oneshot::channel();
        if let Some(p) = self.group.push(Pending { op, synced, reply }) {
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
        synced: bool,
    ) -> Result<Committed> {
        self.queue(Op::Write { obj, cond }, synced)
            .blocking_recv()
            .map_err(|_| stopped())??
            .written()
    }

    /// Commits a batch in one transaction (synced when any write must be) and answers each.
    fn commit_now(&self, batch: Vec<Pending>) {
        let mut db = self.db();
        if batch.iter().any(|p| p.synced) {
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
mod tests {
    use super::*;
    use crate::store::blobs::md5_hex;
    use crate::store::body::Body;
    use crate::store::{Store, StoreOptions};
    use std::time::Duration;

    /// A one-byte object (`x`) at `bkt/{key}`.
    fn one_byte(key: String, body: Body) -> NewObject {
        NewObject {
            bucket: "bkt".into(),
            key,
            body,
            size: 1,
            etag: md5_hex(b"x"),
            content_type: None,
            metadata: Default::default(),
        }
    }

    #[test]
    fn concurrent_writes_commit_independently() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            dir.path(),
            StoreOptions {
                default_bucket: Some("bkt".into()),
                fsync: false,
                ..StoreOptions::default()
            },
        )
        .expect("open");
        let inner = &*store.inner;
        let results: Vec<Result<Committed>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|i| {
                    s.spawn(move || {
                        let blob = inner.blobs.write_all(b"x").expect("blob");
                        let (key, cond) = if i % 2 == 0 {
                            ("same".to_owned(), Precondition::IfNoneMatchAny)
                        } else {
                            (format!("k{i}"), Precondition::None)
                        };
                        inner.commit_grouped(one_byte(key, Body::File(blob)), cond, true)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("join"))
                .collect()
        });
        let created_same = results.iter().step_by(2).filter(|r| r.is_ok()).count();
        assert_eq!(
            created_same, 1,
            "If-None-Match: * lets exactly one writer create the key"
        );
        assert!(results.iter().skip(1).step_by(2).all(Result::is_ok));
        let live = index::live_blobs(&inner.db()).expect("live");
        assert_eq!(live.len(), 9);
        assert_eq!(
            inner.blobs.sweep(&live).expect("sweep"),
            0,
            "refused writes left no body file"
        );
    }

    #[test]
    fn writers_queue_without_waiting_for_a_busy_index_and_are_all_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            dir.path(),
            StoreOptions {
                default_bucket: Some("bkt".into()),
                ..StoreOptions::default()
            },
        )
        .expect("open");
        let inner = &*store.inner;
        let obj = |key: String| one_byte(key, Body::Inline(bytes::Bytes::from_static(b"x")));
        let (answers, ack) = {
            // The index is busy (as during another batch's fsync): queuing does not wait.
            let _busy = inner.db();
            let writes = (0..8)
                .map(|i| {
                    let obj = obj(format!("k{i}"));
                    let cond = Precondition::None;
                    inner.queue(Op::Write { obj, cond }, true)
                })
                .collect::<Vec<_>>();
            // An acknowledgement (of no pending trigger here) queues the same way.
            (writes, inner.queue(Op::Ack(vec![1]), false))
        };
        for (i, answer) in answers.into_iter().enumerate() {
            let Ok(Ok(Done::Written(committed))) = answer.blocking_recv() else {
                panic!("write {i} was not committed");
            };
            assert_eq!(committed.meta.key, format!("k{i}"));
        }
        assert!(matches!(ack.blocking_recv(), Ok(Ok(Done::Acked(0)))));
        let listed: i64 = inner
            .db()
            .query_row(
                "SELECT count(*) FROM objects WHERE bucket = 'bkt'",
                [],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(listed, 8);
        drop(store);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unsynced_write_is_durable_with_the_next_synced_commit_or_one_of_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = |fsync| {
            Store::open(
                dir.path().join(if fsync { "on" } else { "off" }),
                StoreOptions {
                    default_bucket: Some("bkt".into()),
                    fsync,
                    ..StoreOptions::default()
                },
            )
            .expect("open")
        };
        let put = |store: &Store, key: &'static str, synced| {
            let store = store.clone();
            async move {
                store
                    .put_object_with("bkt", key, "x".into(), None, Default::default(), synced)
                    .await
                    .expect("put")
            }
        };
        let own_syncs = |store: &Store| -> i64 {
            store
                .inner
                .db()
                .query_row("SELECT coalesce(max(n), 0) FROM ld_durable", [], |r| {
                    r.get(0)
                })
                .expect("ld_durable")
        };
        let store = open(true);
        put(&store, "doc", false).await;
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.durable_within(Duration::from_secs(600)).await }
        });
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "not durable before a synced commit");
        // Another writer's synced commit covers it: no sync of its own.
        put(&store, "out", true).await;
        waiting.await.expect("task").expect("durable");
        assert_eq!(own_syncs(&store), 0);
        // None comes in time: one of its own.
        put(&store, "doc", false).await;
        store.durable_within(Duration::ZERO).await.expect("durable");
        assert_eq!(own_syncs(&store), 1);
        // Without fsync, a commit is as durable as it gets when answered.
        let store = open(false);
        put(&store, "doc", false).await;
        store.durable_within(Duration::ZERO).await.expect("durable");
        assert_eq!(own_syncs(&store), 0);
    }
}
