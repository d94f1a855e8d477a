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
