//! What waits for the journal's next projection, and projecting it (the rows themselves are
//! `rows.rs`'s).
//!
//! A commit saves each changed record and marks its run in `ld_unprojected`; the record waits
//! here, with the runs' published marks, until the next projection writes them all in one
//! transaction: within [`PROJECT_WITHIN`], before any read, and at a graceful stop.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

use super::rows::{mark_published, marked, project};
use crate::machine::RunRecord;

/// How long a saved record or a published mark may wait for its projection. Readers do not
/// wait for it: they project first.
pub(crate) const PROJECT_WITHIN: Duration = Duration::from_millis(100);

/// What waits for the next projection. Its records change only under the writer's lock, so
/// their runs are exactly those marked in `ld_unprojected`.
#[derive(Debug, Default)]
pub(super) struct Projection {
    pending: Mutex<Pending>,
    /// A projection within [`PROJECT_WITHIN`] is scheduled.
    pub(super) scheduled: AtomicBool,
}

#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Each run's latest record.
    pub(super) records: HashMap<String, RunRecord>,
    /// Final statuses shown by runs' documents (run id, status), for
    /// [`super::Journal::published`].
    pub(super) published: Vec<(String, String)>,
}

impl Pending {
    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty() && self.published.is_empty()
    }
}

impl Projection {
    pub(super) fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Projects what is pending in one transaction. On an error it stays pending (the
    /// transaction rolls back, marks and all).
    pub(super) fn project_on(&self, c: &mut Connection) -> rusqlite::Result<()> {
        let Pending { records, published } = std::mem::take(&mut *self.pending());
        let done = (|| {
            let tx = c.transaction()?;
            project(&tx, records.values())?;
            mark_published(&tx, &published)?;
            tx.commit()
        })();
        if done.is_err() {
            let mut pending = self.pending();
            for (run_id, r) in records {
                pending.records.entry(run_id).or_insert(r);
            }
            pending.published.extend(published);
        }
        done
    }
}

/// Projects the runs a crash left marked unprojected, from their stored records. A record that
/// cannot be read keeps its earlier projection (resuming reports it).
pub(super) fn project_marked(c: &mut Connection) -> rusqlite::Result<()> {
    let records: Vec<RunRecord> = marked(c)?
        .into_iter()
        .filter_map(|(run_id, json)| match RunRecord::from_json(&json) {
            Ok(r) => Some(r),
            Err(reason) => {
                tracing::warn!(
                    run_id,
                    reason,
                    "cannot project a run whose record cannot be read"
                );
                None
            }
        })
        .collect();
    let tx = c.transaction()?;
    project(&tx, &records)?;
    tx.execute("DELETE FROM ld_unprojected", [])?;
    tx.commit()
}
