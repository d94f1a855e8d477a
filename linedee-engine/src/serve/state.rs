//! A run's state in S3: one small JSON object per run, changed only by compare-and-swap.
//!
//! The object holds the machine's [`RunRecord`] and what the driver needs to carry the run on
//! from any replica: the timers the machine armed, the starts it asked for (so a start lost
//! with a replica is asked for again), and the run's live tick. It is created with
//! `If-None-Match: *` (only one replica creates a run) and rewritten with `If-Match: <ETag>`
//! (a replica that read an older state cannot overwrite a newer one).

use serde::{Deserialize, Serialize};

use super::s3::{S3, Written};
use crate::error::{CloudError, Result};
use crate::machine::{Millis, RunRecord, Timer};

/// The version of [`StateDoc`]'s JSON this build writes and reads.
pub(crate) const STATE_VERSION: u32 = 1;

/// A run's state object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StateDoc {
    pub(crate) version: u32,
    /// The delivery that created the run (the SQS message id).
    pub(crate) creator: String,
    pub(crate) record: RunRecord,
    /// The run's live tick: the one tick message that carries it on.
    #[serde(default)]
    pub(crate) tick: Option<TickState>,
    /// Timers armed and not yet fired.
    #[serde(default)]
    pub(crate) timers: Vec<Armed>,
    /// Starts asked for and not yet granted, with when they were (last) asked for.
    #[serde(default)]
    pub(crate) starts: Vec<Intent>,
}

/// The run's live tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TickState {
    pub(crate) id: u64,
    pub(crate) due_ms: Millis,
    /// The run is finished: this tick only rewrites the final status document if it was lost,
    /// and chains no other.
    #[serde(default)]
    pub(crate) last: bool,
}

/// An armed timer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Armed {
    pub(crate) at: Millis,
    #[serde(flatten)]
    pub(crate) timer: Timer,
}

/// A start that was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Intent {
    pub(crate) task_id: String,
    pub(crate) attempt: u32,
    pub(crate) at: Millis,
}

impl StateDoc {
    pub(crate) fn new(creator: &str, record: RunRecord) -> Self {
        StateDoc {
            version: STATE_VERSION,
            creator: creator.to_owned(),
            record,
            tick: None,
            timers: Vec::new(),
            starts: Vec::new(),
        }
    }
}

/// Where runs' states live: `s3://{bucket}/{prefix}runs/{run_id}.json`.
#[derive(Debug, Clone)]
pub(crate) struct States {
    s3: S3,
    bucket: String,
    prefix: String,
}

impl States {
    pub(crate) fn new(s3: S3, bucket: String, prefix: String) -> Self {
        States { s3, bucket, prefix }
    }

    /// The bucket the states are in.
    pub(crate) fn bucket(&self) -> &str {
        &self.bucket
    }

    /// A state that cannot be read, as it is, with its ETag (to replace it).
    pub(crate) async fn raw(&self, run_id: &str) -> Result<Option<String>> {
        match self.s3.get(&self.bucket, &self.key(run_id)).await? {
            Some((body, etag)) => newer(run_id, &body).map(|()| Some(etag)),
            None => Ok(None),
        }
    }

    pub(crate) fn key(&self, run_id: &str) -> String {
        format!("{}runs/{run_id}.json", self.prefix)
    }

    /// Creates a run's state; `Written::Conflict` when the run already exists.
    pub(crate) async fn create(&self, doc: &StateDoc) -> Result<Written> {
        let key = self.key(&doc.record.run_id);
        let finished = doc.record.status.is_finished();
        self.s3
            .put_if(&self.bucket, &key, encode(doc), None, finished)
            .await
    }

    /// Reads a run's state and its ETag; `None` when there is no such run.
    pub(crate) async fn load(&self, run_id: &str) -> Result<Option<(StateDoc, String)>> {
        let key = self.key(run_id);
        let Some((body, etag)) = self.s3.get(&self.bucket, &key).await? else {
            return Ok(None);
        };
        let unreadable = |reason: String| CloudError::State {
            run_id: run_id.to_owned(),
            bucket: self.bucket.clone(),
            key: key.clone(),
            reason,
        };
        newer(run_id, &body)?;
        let doc: StateDoc = serde_json::from_slice(&body)
            .map_err(|e| unreadable(format!("not a run state of this engine: {e}")))?;
        if doc.version != STATE_VERSION {
            return Err(unreadable(format!(
                "version {} (this engine reads version {STATE_VERSION})",
                doc.version
            ))
            .into());
        }
        if doc.record.run_id != run_id {
            return Err(unreadable(format!(
                "it holds run {:?}, not {run_id:?}",
                doc.record.run_id
            ))
            .into());
        }
        Ok(Some((doc, etag)))
    }

    /// Rewrites a run's state if it is still at `etag`.
    pub(crate) async fn save(&self, doc: &StateDoc, etag: &str) -> Result<Written> {
        let key = self.key(&doc.record.run_id);
        let finished = doc.record.status.is_finished();
        self.s3
            .put_if(&self.bucket, &key, encode(doc), Some(etag), finished)
            .await
    }
}

/// Fails with [`CloudError::NewerState`] when `body` is a newer engine's state: an older
/// replica leaves it alone, and never replaces it.
fn newer(run_id: &str, body: &[u8]) -> Result<()> {
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    match serde_json::from_slice::<Versioned>(body) {
        Ok(v) if v.version > STATE_VERSION => Err(CloudError::NewerState {
            run_id: run_id.to_owned(),
            version: v.version,
            reads: STATE_VERSION,
        }
        .into()),
        _ => Ok(()),
    }
}

fn encode(doc: &StateDoc) -> Vec<u8> {
    // A record always serialises (strings, numbers and the workflow, itself from JSON).
    serde_json::to_vec(doc).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_engines_state_is_named_and_others_pass() {
        let err = newer("R1", br#"{"version": 2, "anything": "new"}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("written by a newer linedee (state version 2; this replica reads 1)"),
            "{err}"
        );
        assert!(newer("R1", br#"{"version": 1}"#).is_ok());
        // Unreadable bodies are `load`'s to name.
        assert!(newer("R1", b"not json").is_ok());
    }
}
