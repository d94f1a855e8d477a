//! From a queue message to the driver: which objects start runs, which are outputs, and the
//! run id of a trigger (its `ld_run_id`, or one derived from the event, so every replica that
//! receives a copy of the event agrees on it).

use std::sync::Arc;

use linedee::metadata::LD_RUN_ID;
use md5::{Digest, Md5};

use super::message::{self, Message, ObjectEvent};
use super::queue::Received;
use super::worker::{Applied, Worker};
use crate::error::{CloudError, Result};
use crate::machine::Event;
use crate::store::{ENGINE_PREFIX, trigger_kind};
use crate::triggers::Delivery;

/// The prefix of task outputs.
const OUT_PREFIX: &str = "out/";

impl Worker {
    /// Handles one message; `Ok` when it can be deleted.
    pub(crate) async fn handle(self: &Arc<Self>, msg: &Received) -> Result<()> {
        match message::parse(&msg.body) {
            Err(reason) => Err(CloudError::Request {
                op: format!("reading message {}", msg.id),
                message: reason,
            }
            .into()),
            Ok(Message::Test) => Ok(()),
            Ok(Message::Tick(tick)) => self.tick(&tick).await,
            Ok(Message::Objects(events)) => {
                for event in events.iter().filter(|e| e.created()) {
                    self.object(msg, event).await?;
                }
                Ok(())
            }
        }
    }

    /// A control request (cancel, retry): applied to the run, answered in the bucket.
    async fn control(
        self: &Arc<Self>,
        event: &ObjectEvent,
        run_id: &str,
        request_id: &str,
    ) -> Result<()> {
        use linedee::control::{Action, Answer, Request, answer_key};
        let Some((body, _)) = self.s3.get(&event.bucket, &event.key).await? else {
            return Ok(());
        };
        let answer = match serde_json::from_slice::<Request>(&body) {
            Err(e) => Answer {
                ok: false,
                error: Some(format!(
                    "{} is not a control request: {e} (expected {{\"action\": \"cancel\"}} or {{\"action\": \"retry\"}})",
                    event.key
                )),
            },
            Ok(request) => {
                let event = match request.action {
                    Action::Cancel => Event::CancelRequested,
                    Action::Retry => Event::RedriveRequested,
                };
                let mut refused = None;
                let applied = self
                    .transition(run_id, |machine, doc, now| {
                        refused = None;
                        match machine.handle(&mut doc.record, now, event.clone()) {
                            Ok(effects) => effects,
                            Err(r) => {
                                refused = Some(r);
                                Vec::new()
                            }
                        }
                    })
                    .await?;
                match (applied, refused) {
                    (Applied::NoRun, _) => Answer {
                        ok: false,
                        error: Some(format!(
                            "no run `{run_id}` in this bucket (a run just submitted exists once its trigger is taken in: try again)"
                        )),
                    },
                    (_, Some(r)) => Answer {
                        ok: false,
                        error: Some(crate::driver::refusal(run_id, r).to_string()),
                    },
                    (_, None) => Answer {
                        ok: true,
                        error: None,
                    },
                }
            }
        };
        tracing::info!(run_id, request_id, ok = answer.ok, error = ?answer.error, "control request answered");
        let body = serde_json::to_vec(&answer).unwrap_or_default();
        self.s3
            .put(
                &event.bucket,
                &answer_key(run_id, request_id),
                body,
                "application/json",
            )
            .await
    }

    /// `linedee cloud check`'s probe: answered beside it, if it is still there.
    async fn answer_probe(&self, event: &ObjectEvent, answer: &str) -> Result<()> {
        if self
            .s3
            .head(&event.bucket, &event.key, None)
            .await?
            .is_none()
        {
            return Ok(());
        }
        let body = serde_json::json!({"ok": true, "replica": super::setup::replica_name()});
        tracing::info!(key = %event.key, "answered a `linedee cloud check` probe");
        self.s3
            .put(
                &event.bucket,
                answer,
                body.to_string().into_bytes(),
                "application/json",
            )
            .await
    }

    async fn object(self: &Arc<Self>, msg: &Received, event: &ObjectEvent) -> Result<()> {
        if let Some(task_id) = event.key.strip_prefix(OUT_PREFIX) {
            if !task_id.is_empty() {
                self.output(event, task_id).await?;
            }
            return Ok(());
        }
        if event.key.starts_with(ENGINE_PREFIX) {
            if let Some(answer) = super::probe::probe_answer_key(&event.key) {
                return self.answer_probe(event, &answer).await;
            }
            if let Some((run_id, request_id)) = linedee::control::parse_request_key(&event.key) {
                return self.control(event, run_id, request_id).await;
            }
            return Ok(());
        }
        // S3 events carry no metadata: HEAD the version the event is about.
        let Some(head) = self
            .s3
            .head(&event.bucket, &event.key, event.version_id.as_deref())
            .await?
        else {
            tracing::info!(
                bucket = %event.bucket,
                key = %event.key,
                version = ?event.version_id,
                "the object (or its version) was deleted before it could be read; no run"
            );
            return Ok(());
        };
        let Some(kind) = trigger_kind(&event.key, &head.metadata) else {
            return Ok(());
        };
        let kind = match kind {
            crate::store::TriggerKind::LdCode => linedee::status::TriggerKind::LdCode,
            _ => linedee::status::TriggerKind::LdRun,
        };
        let etag = head.etag.clone().or_else(|| event.etag.clone());
        let derived = derived_run_id(event, etag.as_deref());
        let delivery = Delivery {
            dedup: msg.id.clone(),
            derived_run_id: derived.clone(),
            // A run is created here with a conditional S3 write, durable when answered: no
            // journal can have lost it.
            redelivered: false,
            bucket: event.bucket.clone(),
            key: event.key.clone(),
            etag: etag.clone(),
            kind,
            run_id: head.metadata.get(LD_RUN_ID).cloned(),
            metadata: head.metadata,
        };
        let (run_id, workflow) = match delivery.run_id.as_deref() {
            Some(id) if linedee::metadata::is_valid_run_id(id) => (
                id.to_owned(),
                crate::intake::workflow_of(&self.s3, &delivery).await,
            ),
            Some(bad) => (
                derived,
                Err(format!(
                    "metadata ld_run_id {bad:?} is invalid: expected 1 to 64 characters of [0-9A-Za-z_-]"
                )),
            ),
            None => (
                derived,
                crate::intake::workflow_of(&self.s3, &delivery).await,
            ),
        };
        self.create(msg, &delivery, &run_id, workflow)
            .await
            .map(drop)
    }
}

/// A run id from the event: the same for every copy of one write (bucket, key, and the version
/// id, else the ETag and the sequencer).
pub(crate) fn derived_run_id(event: &ObjectEvent, etag: Option<&str>) -> String {
    let mut h = Md5::new();
    for part in [
        event.bucket.as_str(),
        event.key.as_str(),
        event.version_id.as_deref().unwrap_or(""),
        etag.unwrap_or(""),
        event.sequencer.as_deref().unwrap_or(""),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(version: Option<&str>, sequencer: Option<&str>) -> ObjectEvent {
        ObjectEvent {
            bucket: "b".into(),
            key: "in/a".into(),
            name: "ObjectCreated:Put".into(),
            etag: Some("e".into()),
            version_id: version.map(str::to_owned),
            sequencer: sequencer.map(str::to_owned),
        }
    }

    #[test]
    fn derived_run_ids_are_stable_valid_and_distinct_per_write() {
        let a = derived_run_id(&event(Some("v1"), Some("01")), Some("e"));
        assert_eq!(a, derived_run_id(&event(Some("v1"), Some("01")), Some("e")));
        assert!(linedee::metadata::is_valid_run_id(&a), "{a}");
        assert_ne!(a, derived_run_id(&event(Some("v2"), Some("02")), Some("e")));
        assert_ne!(
            derived_run_id(&event(None, Some("01")), Some("e")),
            derived_run_id(&event(None, Some("02")), Some("e"))
        );
    }
}
