//! Group commit: object writes that arrive while another is committing share its SQLite
//! transaction, so many acknowledged writes cost one WAL fsync. Each write runs in its own
//! savepoint, so one failing (a precondition, a missing bucket) does not affect the others.
//!
//! There is no committer thread: a writer queues its request, then takes the database lock;
//! whoever holds it commits everything queued so far (a "leader"), and every writer waits
//! for its own answer.

use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use super::Inner;
use super::index::{self, Committed, NewObject, Precondition};
use crate::{Error, Result, StoreError};

struct Pending {
    obj: NewObject,
    cond: Precondition,
    /// Durable across power loss when answered (else durable with a later synced commit).
    synced: bool,
    reply: SyncSender<Result<Committed>>,
}

/// Writes waiting for a leader.
#[derive(Default)]
pub(crate) struct Queue(Mutex<Vec<Pending>>);

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Vec<Pending>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn failed(what: &str, e: &rusqlite::Error) -> Error {
    Error::Internal(format!("group commit: {what} failed: {e}"))
}

impl Inner {
    /// Like [`Inner::commit`] without an extra step, batched with concurrent writes.
    /// Blocking. An unsynced write (`synced: false`) is durable against a crash of the
    /// process when it returns and against power loss with the next synced commit, as in
    /// [`Inner::unsynced`]; a batch is synced when any of its writes must be.
    pub(crate) fn commit_grouped(
        &self,
        obj: NewObject,
        cond: Precondition,
        synced: bool,
    ) -> Result<Committed> {
        let (reply, answer) = sync_channel(1);
        self.group.lock().push(Pending {
            obj,
            cond,
            synced,
            reply,
        });
        {
            let mut db = self.db();
            // The writer that held the lock before may have committed this write already:
            // then answer now, rather than lead the next batch and hold the answer back for
            // a whole commit.
            if let Ok(done) = answer.try_recv() {
                return done;
            }
            let batch = std::mem::take(&mut *self.group.lock());
            if batch.iter().any(|p| p.synced) {
                self.commit_batch(&mut db, batch);
            } else if !batch.is_empty() {
                // Should the setting fail, the batch's writers hear that it was not committed.
                let _ = self.unsynced_on(&mut db, |db| {
                    self.commit_batch(db, batch);
                    Ok(())
                });
            }
        }
        answer
            .recv()
            .map_err(|_| Error::Internal("group commit: the committing writer vanished".into()))?
    }

    fn commit_batch(&self, db: &mut Connection, batch: Vec<Pending>) {
        let mut results: Vec<Result<Committed>> = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<(), Error> {
            let mut tx = db.transaction().map_err(|e| failed("BEGIN", &e))?;
            for p in &batch {
                let mut sp = tx.savepoint().map_err(|e| failed("SAVEPOINT", &e))?;
                match index::write_object(&sp, &p.obj, &p.cond) {
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
        let mut replaced = Vec::new();
        for (i, p) in batch.into_iter().enumerate() {
            let result = match (
                &outcome,
                results
                    .get_mut(i)
                    .map(|r| std::mem::replace(r, Err(StoreError::InvalidPartOrder.into()))),
            ) {
                (Ok(()), Some(Ok(c))) => {
                    self.announce(&c);
                    replaced.extend(c.replaced.iter().cloned());
                    Ok(c)
                }
                (Ok(()), Some(Err(e))) => Err(e),
                (Err(e), _) => Err(Error::Internal(e.to_string())),
                (Ok(()), None) => Err(Error::Internal("group commit: write not attempted".into())),
            };
            if result.is_err() {
                self.discard(&p.obj.body);
            }
            let _ = p.reply.send(result);
        }
        for blob in &replaced {
            self.blobs.remove(blob);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::blobs::md5_hex;
    use crate::store::body::Body;
    use crate::store::{Store, StoreOptions};

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
                        let obj = NewObject {
                            bucket: "bkt".into(),
                            key,
                            body: Body::File(blob),
                            size: 1,
                            etag: md5_hex(b"x"),
                            content_type: None,
                            metadata: Default::default(),
                        };
                        inner.commit_grouped(obj, cond, true)
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
}
