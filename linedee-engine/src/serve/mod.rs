//! `linedee serve`: line^d on AWS, as any number of identical, stateless replicas.
//!
//! S3 event notifications arrive on an SQS queue; each run's state is one S3 object changed
//! only by compare-and-swap (`If-None-Match: *` to create, `If-Match` to advance); the run's
//! timers live in that state and a delayed SQS message (its tick) carries it on. The run state
//! machine is the local engine's; only this driver differs. `docs/serve.md` has the design,
//! the deployment and the guarantees.
//!
//! - `builder`: [`ServeBuilder`], the settings checked against AWS;
//! - `message`: the queue's bodies (S3 records, the test event, ticks);
//! - `consume`: which objects start runs or prove outputs, and trigger run ids;
//! - `worker`: the compare-and-swap transitions and the ticks' schedule; `effects` carries
//!   the machine's effects out; `tick` fires timers and repairs what a lost replica left;
//! - `dead`: dead letters end their run failed; `setup`: the AWS clients, the notification
//!   check, the dyno settings ([`Dynos`]); `check` (with `check_app` for the Heroku app) and
//!   `provision`: `linedee cloud check` and `setup` ([`check`], [`check_heroku`], [`setup`]);
//!   `probe`: the check's live items ([`probe_permissions`], [`round_trip`]); `retention`:
//!   the lifecycle rules ([`Retention`]);
//! - `rotate`: the app's AWS credentials, minted by STS and rotated into its config vars
//!   ([`Rotation`]);
//! - `state`, `s3`, `queue`: the state objects, S3 and SQS.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::heroku::HerokuRunner;

mod builder;
mod check;
mod check_app;
mod consume;
mod dead;
mod effects;
mod message;
mod probe;
mod provision;
mod queue;
mod retention;
mod rotate;
mod s3;
mod setup;
mod state;
mod tick;
mod worker;

pub use builder::ServeBuilder;
pub use check::{CheckItem, check, queue_policy};
pub use check_app::{HerokuApp, check_heroku};
pub use probe::{probe_permissions, round_trip};
pub use provision::{SetupStep, setup};
pub use retention::{MIN_RUN_DAYS, Retention};
pub use rotate::{LEASE, Rotated, Rotation, rotate_once, session_policy};
pub use setup::{Dynos, aws_clients, sts_client};

use queue::{LONG_POLL_S, Queue, Received};
use worker::Worker;

/// How long a stopping replica waits for the effects under way.
const SETTLE: Duration = Duration::from_secs(30);

/// A replica of line^d on AWS: consumes the queue until shut down.
#[derive(Debug)]
pub struct Serve {
    /// Rotates the app's credentials, when asked to.
    rotator: Option<rotate::Rotator>,
    /// The queue's dead-letter queue, when it has one.
    dead_letter: Option<Queue>,
    dead_letter_every: Duration,
    /// The dyno runner, when tasks run as dynos (its API request count is reported).
    heroku: Option<Arc<HerokuRunner>>,
    worker: Arc<Worker>,
    queue: Queue,
    visibility: Duration,
    messages: usize,
}

impl Serve {
    /// A builder with the defaults.
    pub fn builder() -> ServeBuilder {
        ServeBuilder::default()
    }

    /// Consumes the queue until `shutdown` completes, then lets the messages in hand finish.
    /// Processes the local runner started are stopped; dynos go on (another replica carries
    /// their runs on).
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let stop = CancellationToken::new();
        let rotation = self
            .rotator
            .take()
            .map(|r| tokio::spawn(r.run(stop.clone())));
        let dead_letters = self.dead_letter.clone().map(|dlq| {
            let (worker, stop, every) = (
                Arc::clone(&self.worker),
                stop.clone(),
                self.dead_letter_every,
            );
            tokio::spawn(dead_letters(worker, dlq, every, stop))
        });
        let slots = Arc::new(Semaphore::new(self.messages));
        let mut failures = 0u32;
        tokio::pin!(shutdown);
        loop {
            let free = slots.available_permits().min(10);
            let received = tokio::select! {
                () = &mut shutdown => break,
                r = self.receive(free, &slots) => r,
            };
            let batch = match received {
                Ok(batch) => {
                    failures = 0;
                    batch
                }
                Err(e) => {
                    failures += 1;
                    let wait = Duration::from_millis(200 * 2u64.pow(failures.min(7)));
                    tracing::error!(error = %e, retry_in = ?wait, "cannot receive from the queue");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(wait) => continue,
                    }
                }
            };
            for msg in batch {
                let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                    break;
                };
                let (worker, queue, visibility) = (
                    Arc::clone(&self.worker),
                    self.queue.clone(),
                    self.visibility,
                );
                tokio::spawn(async move {
                    process(&worker, &queue, visibility, msg).await;
                    drop(permit);
                });
            }
        }
        stop.cancel();
        for task in [dead_letters, rotation].into_iter().flatten() {
            let _ = task.await;
        }
        // The messages in hand finish (each is short: effects run on their own).
        let _ = slots
            .acquire_many(u32::try_from(self.messages).unwrap_or(u32::MAX))
            .await;
        // Processes this replica started are stopped; their exits are recorded before the
        // replica returns (bounded: a state that cannot be written is the next tick's work).
        self.worker.runner.stop_all().await;
        self.worker.tasks.close();
        if tokio::time::timeout(SETTLE, self.worker.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("effects still under way at shutdown are left to the runs' ticks");
        }
        if let Some(h) = &self.heroku {
            let (requests, starts) = (
                h.calls(),
                self.worker
                    .starts
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
            tracing::info!(
                requests,
                starts,
                per_start = format!("{:.1}", requests as f64 / starts.max(1) as f64),
                "Heroku Platform API requests made by this replica, and per dyno started"
            );
        }
        Ok(())
    }

    async fn receive(&self, free: usize, slots: &Arc<Semaphore>) -> Result<Vec<Received>> {
        if free == 0 {
            // Every slot busy: wait for one before asking for more.
            drop(Arc::clone(slots).acquire_owned().await);
            return Ok(Vec::new());
        }
        self.queue
            .receive(i32::try_from(free).unwrap_or(10), LONG_POLL_S)
            .await
    }
}

/// Looks at the dead-letter queue every `every` until `stop`.
async fn dead_letters(worker: Arc<Worker>, dlq: Queue, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let batch = match dlq.receive(10, 0).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the dead-letter queue");
                continue;
            }
        };
        for msg in batch {
            match worker.dead_letter(&msg).await {
                Ok(true) => {
                    if let Err(e) = dlq.delete(&msg.receipt).await {
                        tracing::warn!(message_id = %msg.id, error = %e, "cannot delete a dead letter");
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(message_id = %msg.id, error = %e, "a dead letter cannot be handled");
                }
            }
        }
    }
}

/// Handles a message, keeping it invisible while it is worked on; deletes it once handled.
async fn process(worker: &Arc<Worker>, queue: &Queue, visibility: Duration, msg: Received) {
    let extend = async {
        let half = (visibility / 2).max(Duration::from_secs(1));
        loop {
            tokio::time::sleep(half).await;
            let secs = i32::try_from(visibility.as_secs()).unwrap_or(30);
            if let Err(e) = queue.extend(&msg.receipt, secs).await {
                tracing::warn!(message_id = %msg.id, error = %e, "cannot extend a message's visibility");
            }
        }
    };
    let handled = tokio::select! {
        r = worker.handle(&msg) => r,
        () = extend => return,
    };
    match handled {
        Ok(()) => {
            if let Err(e) = queue.delete(&msg.receipt).await {
                tracing::warn!(message_id = %msg.id, error = %e, "cannot delete a handled message; handling it again is harmless");
            }
        }
        Err(e) => tracing::error!(
            message_id = %msg.id,
            receives = msg.receives,
            error = %e,
            "a message was not handled; it comes back after the visibility timeout, and goes to the dead-letter queue after the queue's maximum receives"
        ),
    }
}
