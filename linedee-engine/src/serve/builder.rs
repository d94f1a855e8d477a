//! [`ServeBuilder`]: a replica's settings, checked against AWS when it is built.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::queue::Queue;
use super::s3::S3;
use super::setup::{check_notification, sts_client};
use super::state::States;
use super::worker::{Pace, Worker};
use super::{Dynos, Rotation, Serve, aws_clients, retention, rotate};
use crate::console::Console;
use crate::error::{CloudError, Result};
use crate::heroku::{HerokuConfig, HerokuRunner};
use crate::local_runner::{LocalRunner, ProcfileSource};
use crate::machine::Machine;
use crate::retry::RetryPolicy;
use crate::runner::Runner;

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
