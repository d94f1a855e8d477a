//! What the executor writes to and hears from the store: status documents (written by a
//! background publisher, off the tasks' critical path), attempt logs, and output signals.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::{Notify, oneshot};

use crate::executor::Executor;
use crate::journal::{self, RunRow};
use crate::process;
use crate::store::{ObjectEvent, Store};

/// Runs whose status document must be rewritten. Marking is cheap and coalesces: however many
/// transitions happen while a document is being written, the next write renders the latest.
///
/// One document is written at a time (`writing`), each rendered from the journal as it is
/// then: whichever write lands last shows the latest state, so a document written at once
/// ([`Executor::publish_now`]) and one from the background loop cannot leave a stale one behind.
#[derive(Debug, Default)]
pub(crate) struct Publisher {
    dirty: Mutex<HashSet<String>>,
    wake: Notify,
    writing: tokio::sync::Mutex<()>,
}

impl Publisher {
    /// Schedules `ld/runs/{run_id}.json` to be rewritten from the journal.
    pub(crate) fn mark(&self, run_id: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(run_id.to_owned());
        self.wake.notify_one();
    }

    fn take(&self) -> Vec<String> {
        let mut dirty = self
            .dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        dirty.drain().collect()
    }

    /// Takes `run_id` off the pending writes (it is about to be written).
    fn unmark(&self, run_id: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(run_id);
    }
}

impl Executor {
    /// Schedules `ld/runs/{run_id}.json` to be rewritten from the journal.
    pub(crate) fn publish(&self, run_id: &str) {
        self.publisher.mark(run_id);
    }

    /// Rewrites `ld/runs/{run_id}.json` from the journal before returning, for requests (retry,
    /// cancel) whose callers read the document next and must not see the state before them.
    pub(crate) async fn publish_now(&self, run_id: &str) {
        let _writing = self.publisher.writing.lock().await;
        self.publisher.unmark(run_id);
        self.render_and_write(run_id).await;
    }

    /// The publisher's loop: writes dirty documents until `stop` and nothing is left.
    pub(crate) async fn publish_loop(&self, stop: tokio_util::sync::CancellationToken) {
        loop {
            let batch = self.publisher.take();
            if batch.is_empty() {
                if stop.is_cancelled() {
                    return;
                }
                tokio::select! {
                    _ = self.publisher.wake.notified() => {}
                    _ = stop.cancelled() => {}
                }
                continue;
            }
            for run_id in batch {
                self.write_status(&run_id).await;
            }
        }
    }

    /// Writes one status document, one at a time with [`publish_now`](Self::publish_now).
    async fn write_status(&self, run_id: &str) {
        let _writing = self.publisher.writing.lock().await;
        self.render_and_write(run_id).await;
    }

    /// Renders and writes one status document, and records which status it shows so that a
    /// restart can rewrite documents a crash left behind.
    async fn render_and_write(&self, run_id: &str) {
        let id = run_id.to_owned();
        let doc = match self.db(move |c| crate::views::render(c, &id)).await {
            Ok(Some(doc)) => doc,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(run_id, error = %e, "cannot render a status document");
                return;
            }
        };
        let body = serde_json::to_vec(&doc).unwrap_or_default();
        let key = linedee::status::status_key(run_id);
        let written = self
            .store
            .put_object(
                &doc.trigger.bucket,
                &key,
                body.into(),
                Some("application/json"),
                Default::default(),
            )
            .await;
        match written {
            Ok(_) => {
                let (id, status) = (run_id.to_owned(), doc.status);
                if let Err(e) = self
                    .db(move |c| journal::set_published(c, &id, status))
                    .await
                {
                    tracing::warn!(run_id, error = %e, "cannot record a published status");
                }
            }
            Err(e) => tracing::error!(run_id, error = %e, "cannot publish a status document"),
        }
    }

    pub(crate) async fn publish_log(&self, run: &RunRow, task_id: &str, attempt: u32) {
        upload_log(&self.store, &self.data_dir, &run.bucket, task_id, attempt).await;
    }

    /// A receiver that fires when `out/{task_id}` may have landed in `bucket`.
    pub(crate) async fn wait_output(&self, bucket: &str, task_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .await
            .entry((bucket.to_owned(), task_id.to_owned()))
            .or_default()
            .push(tx);
        rx
    }

    /// Wakes the attempts waiting for this object, if it is an output.
    pub(crate) async fn object_written(&self, ev: &ObjectEvent) {
        let Some(task_id) = ev.key.strip_prefix("out/") else {
            return;
        };
        if let Some(senders) = self
            .waiters
            .lock()
            .await
            .remove(&(ev.bucket.clone(), task_id.to_owned()))
        {
            for tx in senders {
                let _ = tx.send(());
            }
        }
    }

    /// Wakes every waiting attempt (after missed events); each checks its output itself.
    pub(crate) async fn wake_all(&self) {
        for (_, senders) in self.waiters.lock().await.drain() {
            for tx in senders {
                let _ = tx.send(());
            }
        }
    }
}

/// Copies an attempt's local log to `ld/logs/{task_id}/{attempt}.log`.
pub(crate) async fn upload_log(
    store: &Store,
    data_dir: &std::path::Path,
    bucket: &str,
    task_id: &str,
    attempt: u32,
) {
    let path = process::log_path(data_dir, task_id, attempt);
    let key = linedee::status::log_key(task_id, attempt);
    if let Err(e) = store
        .put_file(bucket, &key, &path, Some("text/plain; charset=utf-8"))
        .await
    {
        tracing::warn!(task_id, attempt, error = %e, "cannot store a task log");
    }
}
