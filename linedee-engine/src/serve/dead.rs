//! Dead letters: messages that kept failing and were moved to the queue's dead-letter queue.
//! Each is tried once more (the failure may have passed); if it still fails, the run it is
//! about ends `failed`, with the reason, rather than being left running. A dead letter that
//! names no run (a body that is no event) stays in the dead-letter queue for its owner.

use std::sync::Arc;

use linedee::status::{Trigger, TriggerKind};

use super::message::{self, Message};
use super::queue::Received;
use super::s3::Written;
use super::state::StateDoc;
use super::worker::Worker;
use crate::error::{CloudError, Error, Result};
use crate::machine::{Event, now_ms};

impl Worker {
    /// Handles a dead letter; `true` when it can be deleted from the dead-letter queue.
    pub(crate) async fn dead_letter(self: &Arc<Self>, msg: &Received) -> Result<bool> {
        let error = match self.handle(msg).await {
            Ok(()) => return Ok(true),
            Err(e) => e,
        };
        let reason = format!(
            "the engine gave up on this run: a message about it failed {} times and went to the dead-letter queue ({error})",
            msg.receives
        );
        let runs: Vec<String> = match message::parse(&msg.body) {
            Ok(Message::Tick(t)) => vec![t.run_id],
            Ok(Message::Objects(events)) => events
                .iter()
                .filter_map(|e| e.key.strip_prefix("out/"))
                .map(|task_id| crate::intake::run_of(task_id).to_owned())
                .chain(events.iter().filter_map(|e| {
                    linedee::control::parse_request_key(&e.key).map(|(r, _)| r.to_owned())
                }))
                .collect(),
            _ => Vec::new(),
        };
        if runs.is_empty() {
            tracing::error!(
                message_id = %msg.id,
                error = %error,
                "a dead letter that names no run stays in the dead-letter queue"
            );
            return Ok(false);
        }
        for run_id in runs {
            tracing::error!(run_id, reason, "the run is marked failed");
            self.abandon(&run_id, &reason).await?;
        }
        Ok(true)
    }

    /// Ends a run `failed` with `reason`; a state that cannot be read is replaced by a failed
    /// one (its trigger unknown), so the run's status document says why.
    async fn abandon(self: &Arc<Self>, run_id: &str, reason: &str) -> Result<()> {
        let event = Event::Abandon {
            reason: reason.to_owned(),
        };
        match self.apply(run_id, vec![event]).await {
            Ok(_) => Ok(()),
            Err(Error::Cloud(CloudError::State { .. })) => {
                let Some(etag) = self.states.raw(run_id).await? else {
                    return Ok(());
                };
                let bucket = self.states.bucket().to_owned();
                let trigger = Trigger {
                    bucket,
                    key: String::new(),
                    etag: None,
                    kind: TriggerKind::LdRun,
                };
                let (record, _) =
                    self.machine
                        .create(run_id, trigger, Err(reason.to_owned()), false, now_ms());
                let doc = StateDoc::new("dead-letter", record);
                if self.states.save(&doc, &etag).await? == Written::Conflict {
                    return Err(CloudError::State {
                        run_id: run_id.to_owned(),
                        bucket: self.states.bucket().to_owned(),
                        key: self.states.key(run_id),
                        reason: "it changed while it was being replaced".to_owned(),
                    }
                    .into());
                }
                self.forget(run_id);
                self.publish(&doc.record);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
