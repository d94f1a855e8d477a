//! The status publisher: writes `ld/runs/{run_id}.json` off the driver's critical path.
//!
//! The driver offers a snapshot of the document after each transition. Offers coalesce: while a
//! document is being written, later offers for the same run replace each other, and the next
//! write takes the newest. Writes happen one at a time, each choosing the newest snapshot it
//! knows of, so the document always converges on the run's latest state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use linedee::status::RunStatus;
use tokio::sync::Notify;

use crate::bucket::Bucket;
use crate::journal::Journal;

/// A status document as of one transition; `seq` orders the snapshots of all runs.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) seq: u64,
    pub(crate) doc: RunStatus,
}

/// Writes status documents, coalescing.
pub(crate) struct Publisher {
    bucket: Arc<dyn Bucket>,
    journal: Arc<dyn Journal>,
    pending: Mutex<HashMap<String, Snapshot>>,
    wake: Notify,
    writing: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(bucket: Arc<dyn Bucket>, journal: Arc<dyn Journal>) -> Self {
        Publisher {
            bucket,
            journal,
            pending: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Snapshot>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Schedules a snapshot to be written (replacing an older one not yet written).
    pub(crate) fn offer(&self, snapshot: Snapshot) {
        let mut pending = self.pending();
        let newer = pending
            .get(&snapshot.doc.run_id)
            .is_none_or(|p| p.seq < snapshot.seq);
        if newer {
            pending.insert(snapshot.doc.run_id.clone(), snapshot);
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// Writes the document before returning (for requests whose callers read it next): this
    /// snapshot, or a newer one offered meanwhile.
    pub(crate) async fn publish_now(&self, snapshot: Snapshot) {
        let _writing = self.writing.lock().await;
        let queued = self.pending().remove(&snapshot.doc.run_id);
        let newest = match queued {
            Some(q) if q.seq > snapshot.seq => q,
            _ => snapshot,
        };
        self.write(&newest).await;
    }

    /// Writes offered snapshots until `stop` is cancelled and nothing is left to write.
    pub(crate) async fn run(&self, stop: tokio_util::sync::CancellationToken) {
        loop {
            let wake = self.wake.notified();
            let written = {
                let _writing = self.writing.lock().await;
                let batch: Vec<Snapshot> = self.pending().drain().map(|(_, s)| s).collect();
                for s in &batch {
                    self.write(s).await;
                }
                !batch.is_empty()
            };
            if written {
                continue;
            }
            if stop.is_cancelled() {
                return;
            }
            tokio::select! {
                () = wake => {}
                () = stop.cancelled() => {}
            }
        }
    }

    async fn write(&self, s: &Snapshot) {
        let run_id = &s.doc.run_id;
        let body = match serde_json::to_vec(&s.doc) {
            Ok(body) => body,
            Err(e) => {
                // Never an empty or partial document, and never recorded as published.
                tracing::error!(run_id, error = %e, "cannot encode a status document; it is not written");
                return;
            }
        };
        let key = linedee::status::status_key(run_id);
        match self
            .bucket
            .put_json(&s.doc.trigger.bucket, &key, body)
            .await
        {
            Ok(()) if s.doc.status.is_finished() => {
                if let Err(e) = self.journal.published(run_id, s.doc.status.as_str()).await {
                    tracing::warn!(run_id, error = %e, "cannot record a published status");
                }
            }
            Ok(()) => {}
            Err(e) => tracing::error!(run_id, error = %e, "cannot publish a status document"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use bytes::Bytes;
    use linedee::status::{RunState, Trigger, TriggerKind};

    use super::*;
    use crate::error::{Error, Result};
    use crate::journal::{Batch, NewRun, SqliteJournal};
    use crate::machine::Machine;
    use crate::runner::LogBody;

    /// A bucket that keeps documents in memory, and refuses them while `fail` is set.
    #[derive(Default)]
    struct Documents {
        fail: AtomicBool,
        written: Mutex<Vec<(String, Vec<u8>)>>,
    }

    #[async_trait::async_trait]
    impl Bucket for Documents {
        async fn output(&self, _: &str, _: &str) -> Result<Option<Option<String>>> {
            Ok(None)
        }
        async fn body(&self, _: &str, _: &str) -> Result<Option<Bytes>> {
            Ok(None)
        }
        async fn put_json(&self, _: &str, key: &str, body: Vec<u8>) -> Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(Error::Internal("the bucket refused the write".to_owned()));
            }
            let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
            written.push((key.to_owned(), body));
            Ok(())
        }
        async fn put_log(&self, _: &str, _: &str, _: LogBody) -> Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_document_that_was_not_written_is_not_recorded_as_published() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal =
            Arc::new(SqliteJournal::open(&dir.path().join("j.sqlite"), false).expect("journal"));
        let trigger = Trigger {
            bucket: "b".to_owned(),
            key: "in/x".to_owned(),
            etag: None,
            kind: TriggerKind::LdRun,
        };
        let (record, _) = Machine::default().create("R1", trigger, Err("invalid".to_owned()), 1);
        assert_eq!(record.status, RunState::Failed);
        let batch = Batch {
            create: vec![NewRun {
                record: record.clone(),
                dedup: "d1".to_owned(),
            }],
            save: Vec::new(),
        };
        journal.commit(batch).await.expect("commit");
        let bucket = Arc::new(Documents::default());
        let publisher = Publisher::new(bucket.clone(), journal.clone());
        let snapshot = |seq| Snapshot {
            seq,
            doc: record.status_document(),
        };

        bucket.fail.store(true, Ordering::SeqCst);
        publisher.publish_now(snapshot(1)).await;
        assert_eq!(journal.unpublished().await.expect("unpublished"), ["R1"]);

        bucket.fail.store(false, Ordering::SeqCst);
        publisher.publish_now(snapshot(2)).await;
        assert!(journal.unpublished().await.expect("unpublished").is_empty());
        let written = bucket
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        assert_eq!(written.len(), 1);
        let (key, body) = &written[0];
        assert_eq!(key, "ld/runs/R1.json");
        let doc: linedee::RunStatus = serde_json::from_slice(body).expect("a whole document");
        assert_eq!((doc.run_id.as_str(), doc.status), ("R1", RunState::Failed));
    }
}
