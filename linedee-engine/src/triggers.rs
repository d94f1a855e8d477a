//! Trigger sources: where a driver hears of trigger objects and of outputs landing.
//!
//! The local source is the embedded store's outbox (every committed trigger, durable until
//! acknowledged) and its object events; a cloud source is an SQS queue of S3 events.

use std::collections::{BTreeMap, VecDeque};

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
    /// The run id the engine gives the run when the trigger names none (or names an invalid
    /// one): the same for every delivery of one write, so a delivery again after a power loss
    /// creates the same run.
    pub(crate) derived_run_id: String,
    /// It may have been delivered before, to an engine whose journal lost the run in a power
    /// loss: its run is created [`recovered`](crate::machine::RunRecord::recovered).
    pub(crate) redelivered: bool,
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
    /// A page of pending triggers read from the outbox, delivered before anything else.
    backlog: VecDeque<Trigger>,
    /// Reading the outbox page by page (at start, and after notices were missed): the
    /// highest id read so far.
    catching_up: Option<i64>,
    /// Reading what was pending when this outbox was made: a trigger read now may have been
    /// delivered to an engine before this one (one read after missed notices was not).
    starting: bool,
    /// Every trigger up to this id was delivered from the outbox: a notice of one is a
    /// duplicate. (Triggers get their ids in the order they are committed.)
    read_upto: i64,
}

/// Pending triggers read from the outbox at once: memory stays bounded however long it is.
const PAGE: usize = 256;

/// How many notices the store's channel holds before a slow reader misses some.
#[cfg(test)]
fn store_channel() -> usize {
    crate::store::CHANNEL
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
            backlog: VecDeque::new(),
            catching_up: Some(0),
            starting: true,
            read_upto: 0,
        };
        Outbox {
            store,
            state: Mutex::new(state),
        }
    }
}

/// `redelivered`: read from the outbox at start, so possibly delivered to an engine before.
fn delivery(t: Trigger, redelivered: bool) -> Delivery {
    Delivery {
        dedup: format!("outbox:{}", t.id),
        derived_run_id: derived_run_id(&t),
        redelivered,
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

/// A ULID for a trigger's run: its time is the trigger's commit, its random part a digest of
/// the outbox row (id, bucket, key, ETag), so that every delivery of one trigger names one run.
fn derived_run_id(t: &Trigger) -> String {
    use md5::Digest as _;
    let mut h = md5::Md5::new();
    for part in [t.id.to_string().as_str(), &t.bucket, &t.key, &t.etag] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let random = u128::from_be_bytes(h.finalize().into());
    let ms = u64::try_from(t.created_ms).unwrap_or(0);
    ulid::Ulid::from_parts(ms, random).to_string()
}

#[async_trait::async_trait]
impl TriggerSource for Outbox {
    async fn next(&self) -> Option<Notice> {
        let mut st = self.state.lock().await;
        loop {
            if let Some(t) = st.backlog.pop_front() {
                return Some(Notice::Trigger(delivery(t, st.starting)));
            }
            if let Some(after) = st.catching_up {
                match self.store.pending_triggers_after(after, PAGE).await {
                    Ok(page) if page.is_empty() => {
                        st.catching_up = None;
                        st.starting = false;
                    }
                    Ok(page) => {
                        let last = page.last().map_or(after, |t| t.id);
                        st.catching_up = Some(last);
                        st.read_upto = st.read_upto.max(last);
                        st.backlog.extend(page);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the trigger outbox");
                        st.catching_up = None;
                        st.starting = false;
                    }
                }
                continue;
            }
            let OutboxState {
                triggers,
                objects,
                read_upto,
                ..
            } = &mut *st;
            let notice = tokio::select! {
                t = triggers.recv() => match t {
                    // Already delivered from the outbox.
                    Ok(t) if t.id <= *read_upto => continue,
                    Ok(t) => Some(Notice::Trigger(delivery(t, false))),
                    // Missed some: read the outbox again, past what it gave before.
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
                None => st.catching_up = Some(st.read_upto),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    /// A store in `dir` with the bucket `ld-test`, unsynced.
    fn store_in(dir: &tempfile::TempDir) -> Store {
        let options = StoreOptions {
            default_bucket: Some("ld-test".into()),
            fsync: false,
            ..StoreOptions::default()
        };
        Store::open(dir.path(), options).expect("store")
    }

    async fn put_triggers(store: &Store, from: usize, n: usize) {
        for i in from..from + n {
            let metadata = [("ld_run".to_owned(), "true".to_owned())].into();
            store
                .put_object("ld-test", &format!("in/{i}"), "{}".into(), None, metadata)
                .await
                .expect("put a trigger");
        }
    }

    /// The keys of the next `n` triggers delivered, and whether each is `redelivered`.
    async fn next_keys(outbox: &Outbox, n: usize) -> (Vec<String>, Vec<bool>) {
        let (mut keys, mut again) = (Vec::with_capacity(n), Vec::with_capacity(n));
        while keys.len() < n {
            match outbox.next().await {
                Some(Notice::Trigger(d)) => {
                    keys.push(d.key);
                    again.push(d.redelivered);
                }
                Some(_) => {}
                None => panic!("the outbox closed"),
            }
        }
        (keys, again)
    }

    fn keys(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("in/{i}")).collect()
    }

    #[tokio::test]
    async fn a_trigger_read_from_the_outbox_is_redelivered_and_names_the_same_run_each_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_in(&dir);
        let first = Outbox::new(store.clone());
        // Caught up with an empty outbox: the next trigger is announced as it is committed.
        first.state.lock().await.catching_up = None;
        put_triggers(&store, 0, 2).await;
        let Some(Notice::Trigger(announced)) = first.next().await else {
            panic!("expected a trigger");
        };
        assert!(!announced.redelivered);
        assert!(linedee::metadata::is_valid_run_id(
            &announced.derived_run_id
        ));
        // Not acknowledged: a new engine reads both from the outbox, as possibly delivered
        // before, and derives the same run id for the same trigger.
        let again = Outbox::new(store.clone());
        let (Some(Notice::Trigger(a)), Some(Notice::Trigger(b))) =
            (again.next().await, again.next().await)
        else {
            panic!("expected two triggers");
        };
        assert!(a.redelivered && b.redelivered);
        assert_eq!(a.key, announced.key);
        assert_eq!(a.derived_run_id, announced.derived_run_id);
        assert_ne!(a.derived_run_id, b.derived_run_id);
    }

    #[tokio::test]
    async fn a_long_outbox_and_missed_notices_are_read_page_by_page_each_trigger_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store_in(&dir);
        // Pending before the outbox is read: more than a page.
        put_triggers(&store, 0, PAGE + 44).await;
        let outbox = Outbox::new(store.clone());
        let (read, again) = next_keys(&outbox, PAGE + 44).await;
        assert_eq!(read, keys(0..PAGE + 44));
        assert!(
            again.iter().all(|&a| a),
            "pending at start: possibly delivered before"
        );
        // More than the notice channel holds, while nobody reads: notices are missed, and
        // the outbox is read again from where it left off, with no trigger twice. (These were
        // committed before the start's reading of the outbox ended, so they count as possibly
        // delivered before: a needless output check, nothing worse.)
        let (from, n) = (PAGE + 44, super::store_channel() + 100);
        put_triggers(&store, from, n).await;
        assert_eq!(next_keys(&outbox, n).await.0, keys(from..from + n));
        // Then live notices again.
        put_triggers(&store, from + n, 1).await;
        assert_eq!(next_keys(&outbox, 1).await.0, keys(from + n..from + n + 1));
    }
}
