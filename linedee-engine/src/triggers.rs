//! Trigger sources: where a driver hears of trigger objects and of outputs landing.
//!
//! The local source is the embedded store's outbox (every committed trigger, durable until
//! acknowledged) and its object events; a cloud source is an SQS queue of S3 events.

use std::collections::BTreeMap;

use linedee::status::TriggerKind;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{Mutex, broadcast};

use crate::error::Result;
use crate::store::{self, ObjectEvent, Store, Trigger};

/// A trigger object, as delivered (possibly more than once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delivery {
    /// Deliveries with the same key are the same trigger.
    pub(crate) dedup: String,
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) etag: Option<String>,
    pub(crate) kind: TriggerKind,
    /// `ld_run_id` metadata, as written.
    pub(crate) run_id: Option<String>,
    /// The object's user metadata (keys lowercase).
    pub(crate) metadata: BTreeMap<String, String>,
}

/// What a trigger source tells the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A trigger object was written.
    Trigger(Delivery),
    /// An object under `out/` was written; `metadata` when the source carries it.
    Output {
        bucket: String,
        task_id: String,
        metadata: Option<BTreeMap<String, String>>,
    },
    /// Notices may have been missed: check every awaited output.
    Resync,
}

/// A source of notices.
#[async_trait::async_trait]
pub(crate) trait TriggerSource: Send + Sync + 'static {
    /// The next notice; `None` when the source has closed.
    async fn next(&self) -> Option<Notice>;
    /// These triggers' runs were created (or already existed): do not deliver them again.
    /// One call for a whole turn's deliveries, so a burst of triggers costs one write.
    async fn ack(&self, deliveries: &[Delivery]) -> Result<()>;
    /// Whether a trigger not yet acknowledged names `run_id` (`ld_run_id`): its run is about
    /// to exist, so a request for it waits rather than failing.
    async fn pending_run(&self, run_id: &str) -> Result<bool>;
}

/// The embedded store's outbox and object events.
pub(crate) struct Outbox {
    store: Store,
    state: Mutex<OutboxState>,
}

struct OutboxState {
    triggers: broadcast::Receiver<Trigger>,
    objects: broadcast::Receiver<ObjectEvent>,
    /// Triggers committed before the driver subscribed, delivered first.
    backlog: Option<std::vec::IntoIter<Trigger>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Outbox {
    /// Subscribes to the store; triggers still pending in its outbox come first.
    pub(crate) fn new(store: Store) -> Self {
        let state = OutboxState {
            triggers: store.subscribe_triggers(),
            objects: store.subscribe_objects(),
            backlog: None,
        };
        Outbox {
            store,
            state: Mutex::new(state),
        }
    }
}

fn delivery(t: Trigger) -> Delivery {
    Delivery {
        dedup: format!("outbox:{}", t.id),
        bucket: t.bucket,
        key: t.key,
        etag: Some(t.etag),
        kind: match t.kind {
            store::TriggerKind::LdCode => TriggerKind::LdCode,
            _ => TriggerKind::LdRun,
        },
        run_id: t.run_id,
        metadata: t.metadata,
    }
}

#[async_trait::async_trait]
impl TriggerSource for Outbox {
    async fn next(&self) -> Option<Notice> {
        let mut st = self.state.lock().await;
        loop {
            if st.backlog.is_none() {
                match self.store.pending_triggers().await {
                    Ok(pending) => st.backlog = Some(pending.into_iter()),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the trigger outbox");
                        st.backlog = Some(Vec::new().into_iter());
                    }
                }
            }
            if let Some(t) = st.backlog.as_mut().and_then(Iterator::next) {
                return Some(Notice::Trigger(delivery(t)));
            }
            let OutboxState {
                triggers, objects, ..
            } = &mut *st;
            let notice = tokio::select! {
                t = triggers.recv() => match t {
                    Ok(t) => Some(Notice::Trigger(delivery(t))),
                    // Missed some: read the outbox again.
                    Err(RecvError::Lagged(_)) => None,
                    Err(RecvError::Closed) => return None,
                },
                o = objects.recv() => match o {
                    Ok(ev) => match ev.key.strip_prefix("out/") {
                        Some(task_id) => Some(Notice::Output {
                            bucket: ev.bucket.clone(),
                            task_id: task_id.to_owned(),
                            metadata: Some(ev.metadata),
                        }),
                        None => continue,
                    },
                    Err(RecvError::Lagged(_)) => Some(Notice::Resync),
                    Err(RecvError::Closed) => return None,
                },
            };
            match notice {
                Some(n) => return Some(n),
                None => st.backlog = None,
            }
        }
    }

    async fn pending_run(&self, run_id: &str) -> Result<bool> {
        Ok(self
            .store
            .pending_triggers()
            .await?
            .iter()
            .any(|t| t.run_id.as_deref() == Some(run_id)))
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        let ids: Vec<i64> = deliveries
            .iter()
            .filter_map(|d| d.dedup.strip_prefix("outbox:")?.parse().ok())
            .collect();
        self.store.ack_triggers(ids).await?;
        Ok(())
    }
}
