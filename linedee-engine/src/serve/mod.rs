//! `linedee serve`: line^d on AWS, as any number of identical, stateless replicas.
//!
//! S3 event notifications arrive on an SQS queue; each run's state is one S3 object changed
//! only by compare-and-swap (`If-None-Match: *` to create, `If-Match` to advance); the run's
//! timers live in that state and a delayed SQS message (its tick) carries it on. The run state
//! machine is the local engine's; only this driver differs. `docs/serve.md` has the design,
//! the deployment and the guarantees.
//!
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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::console::Console;
use crate::error::{CloudError, Result};
use crate::heroku::{HerokuConfig, HerokuRunner};
use crate::local_runner::{LocalRunner, ProcfileSource};
use crate::machine::Machine;
use crate::retry::RetryPolicy;
use crate::runner::Runner;

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

pub use check::{CheckItem, check, queue_policy};
pub use check_app::{HerokuApp, check_heroku};
pub use probe::{probe_permissions, round_trip};
pub use provision::{SetupStep, setup};
pub use retention::{MIN_RUN_DAYS, Retention};
pub use rotate::{LEASE, Rotated, Rotation, rotate_once, session_policy};
pub use setup::{Dynos, aws_clients, sts_client};

use queue::{LONG_POLL_S, Queue, Received};
use s3::S3;
use setup::check_notification;
use state::States;
use worker::{Pace, Worker};

/// How long a stopping replica waits for the effects under way.
const SETTLE: Duration = Duration::from_secs(30);

/// Settings of [`Serve`]: the bucket, the queue, the app, and the pace of ticks.
///
/// ```no_run
/// # async fn demo() -> linedee_engine::Result<()> {
/// let (s3, sqs) = linedee_engine::serve::aws_clients().await;
/// let serve = linedee_engine::serve::Serve::builder()
///     .bucket("my-ld-bucket")
///     .queue_url("https://sqs.us-east-1.amazonaws.com/123456789012/ld-events")
///     .clients(s3, sqs)
///     .app_dir(".")
///     .build()
///     .await?;
/// serve.run(async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
#[derive(Debug)]
pub struct ServeBuilder {
    bucket: Option<String>,
    queue_url: Option<String>,
    state_prefix: String,
    clients: Option<(aws_sdk_s3::Client, aws_sdk_sqs::Client)>,
    app_dir: PathBuf,
    data_dir: PathBuf,
    concurrency: usize,
    messages: usize,
    retry: RetryPolicy,
    heartbeat: Duration,
    start_grace: Duration,
    check_notification: bool,
    console: Console,
    dynos: Option<Dynos>,
    dead_letter_every: Duration,
    rotation: Option<(Rotation, Option<aws_sdk_sts::Client>)>,
}

impl Default for ServeBuilder {
    fn default() -> Self {
        ServeBuilder {
            bucket: None,
            queue_url: None,
            state_prefix: "ld/engine/".to_owned(),
            clients: None,
            app_dir: PathBuf::from("."),
            data_dir: PathBuf::from(".linedee/serve"),
            concurrency: 8,
            messages: 32,
            retry: RetryPolicy::default(),
            heartbeat: Duration::from_secs(60),
            start_grace: Duration::from_secs(300),
            check_notification: true,
            console: Console::stdout(),
            dynos: None,
            dead_letter_every: Duration::from_secs(60),
            rotation: None,
        }
    }
}

impl ServeBuilder {
    /// The bucket whose uploads start runs (required).
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// The SQS queue the bucket's event notifications go to (required).
    pub fn queue_url(mut self, url: impl Into<String>) -> Self {
        self.queue_url = Some(url.into());
        self
    }

    /// Where runs' state objects go in the bucket (default `ld/engine/`).
    pub fn state_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.state_prefix = prefix.into();
        self
    }

    /// The S3 and SQS clients ([`aws_clients`] reads the standard AWS configuration).
    pub fn clients(mut self, s3: aws_sdk_s3::Client, sqs: aws_sdk_sqs::Client) -> Self {
        self.clients = Some((s3, sqs));
        self
    }

    /// The app (its `Procfile` and `.env`), for the local runner (default `.`).
    pub fn app_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.app_dir = dir.into();
        self
    }

    /// Where the local runner keeps attempts' logs before storing them (default
    /// `.linedee/serve`).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// Processes the local runner runs at once (default 8).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Retries and backoff of failed attempts.
    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How often a running run's tick comes at least (default 60 s): it notices processes
    /// that are gone and repairs what a lost replica left undone.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// After how long a start that was asked for and never reported is asked for again
    /// (default 300 s).
    pub fn start_grace(mut self, grace: Duration) -> Self {
        self.start_grace = grace;
        self
    }

    /// Whether `build` checks that the bucket notifies the queue (default on; S3-compatible
    /// stores without notifications need it off, with events sent to the queue otherwise).
    pub fn check_notification(mut self, check: bool) -> Self {
        self.check_notification = check;
        self
    }

    /// How often the replica looks at the dead-letter queue (default 60 s): a message there
    /// is tried once more, and the run it is about ends `failed` with the reason if it still
    /// fails.
    pub fn dead_letter_every(mut self, every: Duration) -> Self {
        self.dead_letter_every = every;
        self
    }

    /// Run tasks as one-off dynos (default: processes of this host, from the app directory).
    pub fn dynos(mut self, dynos: Dynos) -> Self {
        self.dynos = Some(dynos);
        self
    }

    /// Rotate the app's AWS credentials into its config vars, as the add-on does: one
    /// replica at a time, every [`Rotation::interval`]. `sts` is the STS client to mint them
    /// with (default: [`sts_client`]).
    pub fn rotate(mut self, rotation: Rotation, sts: Option<aws_sdk_sts::Client>) -> Self {
        self.rotation = Some((rotation, sts));
        self
    }

    /// Where task output goes (default: this process's stdout, foreman-style).
    pub fn console(mut self, console: Console) -> Self {
        self.console = console;
        self
    }

    /// Checks the settings against AWS: the bucket and the queue are reachable, and the
    /// bucket's notification goes to the queue. A wrong setting fails with what to fix.
    pub async fn build(self) -> Result<Serve> {
        let missing = |what: &str, var: &str| {
            CloudError::Config(format!("{what} is not set: pass it, or set {var}"))
        };
        let bucket = self
            .bucket
            .clone()
            .ok_or_else(|| missing("the bucket", "LD_S3_BUCKET"))?;
        let queue_url = self
            .queue_url
            .clone()
            .ok_or_else(|| missing("the queue", "LD_SQS_QUEUE_URL"))?;
        let (s3_client, sqs_client) = match self.clients.clone() {
            Some(c) => c,
            None => aws_clients().await,
        };
        let tag_finished = retention::expires_finished_runs(&s3_client, &bucket).await;
        if tag_finished {
            tracing::info!("the bucket expires finished runs: their documents are written tagged");
        }
        let s3 = S3::new(s3_client.clone()).tag_finished(tag_finished);
        let queue = Queue::new(sqs_client, queue_url);
        s3.check_bucket(&bucket).await?;
        let info = queue.check().await?;
        if self.check_notification {
            check_notification(&s3_client, &bucket, &info.arn, queue.url()).await?;
        }
        let dead_letter = match &info.dead_letter {
            Some((arn, max)) => {
                tracing::info!(dead_letter = %arn, max_receives = max, "the queue has a dead-letter queue");
                Some(queue.of_arn(arn).await?)
            }
            None => {
                tracing::warn!(queue = %queue.url(), "the queue has no dead-letter queue: a message that keeps failing comes back forever; add a redrive policy (docs/serve.md)");
                None
            }
        };
        let (runner, heroku) = match &self.dynos {
            Some(d) => {
                let config = HerokuConfig::new(d.app.clone(), d.token.clone())
                    .api_url(d.api_url.clone())
                    .max_dynos(d.max_dynos)
                    .list_interval(d.list_interval)
                    .ttl_grace(d.ttl_grace)
                    .retry_base(d.retry_base)
                    .max_retries(d.max_retries);
                let heroku = Arc::new(HerokuRunner::new(config));
                (Arc::clone(&heroku) as Arc<dyn Runner>, Some(heroku))
            }
            None => (self.local_runner()?, None),
        };
        let visibility = Duration::from_secs(info.visibility_s.max(1));
        let pace = Pace {
            heartbeat: self.heartbeat,
            start_grace: self.start_grace,
            lost_tick: visibility + self.heartbeat,
        };
        let rotator = match self.rotation.clone() {
            Some((rotation, sts)) => {
                let sts = match sts {
                    Some(sts) => sts,
                    None => sts_client().await,
                };
                Some(rotate::Rotator::new(
                    rotation,
                    sts,
                    &s3_client,
                    &bucket,
                    &self.state_prefix,
                )?)
            }
            None => None,
        };
        let states = States::new(s3.clone(), bucket.clone(), self.state_prefix.clone());
        let mut worker = Worker::new(
            Machine { retry: self.retry },
            states,
            s3,
            queue.clone(),
            runner,
            pace,
        );
        if heroku.is_some() {
            worker.dyno_commands = Some(ProcfileSource::open(self.app_dir.join("Procfile"))?);
        }
        Ok(Serve {
            rotator,
            dead_letter,
            dead_letter_every: self.dead_letter_every,
            heroku,
            worker: Arc::new(worker),
            queue,
            visibility,
            messages: self.messages,
        })
    }

    fn local_runner(&self) -> Result<Arc<dyn Runner>> {
        let procfile = ProcfileSource::open(self.app_dir.join("Procfile"))?;
        let dotenv = crate::procfile::load_dotenv(&self.app_dir)?;
        let app_dir = std::fs::canonicalize(&self.app_dir)
            .map_err(|e| crate::Error::file("cannot open app dir", &self.app_dir, e))?;
        std::fs::create_dir_all(&self.data_dir)
            .map_err(|e| crate::Error::file("cannot create the data dir", &self.data_dir, e))?;
        let runner = Arc::new(LocalRunner::new(
            app_dir,
            self.data_dir.clone(),
            procfile,
            dotenv,
            self.console.clone(),
            None,
            self.concurrency,
        ));
        Ok(Arc::new(runner))
    }
}

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
