//! What `serve` needs from its surroundings: the AWS clients, the check that the bucket
//! notifies the queue, and the dyno runner's settings.

use std::time::Duration;

use crate::error::{CloudError, Result};
use crate::heroku::Secret;

/// Run tasks as Heroku one-off dynos of an app, through the Platform API, instead of as
/// processes of the replica's host.
///
/// ```
/// let dynos = linedee_engine::serve::Dynos::new("my-app", "hrku-s3cr3t").max_dynos(20);
/// assert!(!format!("{dynos:?}").contains("s3cr3t"));
/// ```
#[derive(Debug, Clone)]
pub struct Dynos {
    pub(super) app: String,
    pub(super) token: Secret,
    pub(super) api_url: String,
    pub(super) max_dynos: usize,
    pub(super) list_interval: Duration,
    pub(super) ttl_grace: Duration,
    pub(super) retry_base: Duration,
    pub(super) max_retries: u32,
}

impl Dynos {
    /// The dynos of `app`, created with `api_token` (a Heroku API key or OAuth token; it
    /// never reaches a log or an error message).
    pub fn new(app: impl Into<String>, api_token: impl Into<String>) -> Self {
        Dynos {
            app: app.into(),
            token: Secret::new(api_token),
            api_url: crate::heroku::DEFAULT_API_URL.to_owned(),
            max_dynos: 50,
            list_interval: Duration::from_secs(30),
            ttl_grace: Duration::from_secs(60),
            retry_base: Duration::from_secs(1),
            max_retries: 5,
        }
    }

    /// Added to a task's timeout for its dyno's `time_to_live`, Heroku's backstop that
    /// stops a dyno nobody stopped (default 60 s).
    pub fn ttl_grace(mut self, grace: Duration) -> Self {
        self.ttl_grace = grace;
        self
    }

    /// The first wait after a 429 or a 5xx from the API, doubled on each retry up to 60 s
    /// (default 1 s), and how many retries (default 5).
    pub fn retries(mut self, first_wait: Duration, retries: u32) -> Self {
        self.retry_base = first_wait;
        self.max_retries = retries;
        self
    }

    /// The Platform API's URL (default `https://api.heroku.com`).
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = url.into();
        self
    }

    /// At most this many one-off dynos of this replica at once (default 50, Heroku's
    /// per-app limit for Standard dynos; the limit is per replica).
    pub fn max_dynos(mut self, n: usize) -> Self {
        self.max_dynos = n.max(1);
        self
    }

    /// How often the replica lists the app's dynos to notice those that ended (default
    /// 30 s): one request per interval, whatever the number of dynos.
    pub fn list_interval(mut self, every: Duration) -> Self {
        self.list_interval = every;
        self
    }
}

/// The AWS clients from the standard credential chain and configuration (`AWS_*` variables,
/// profiles, instance or container roles). An endpoint override (`AWS_ENDPOINT_URL`,
/// `AWS_ENDPOINT_URL_S3`) turns on path-style S3 addressing, as S3-compatible stores need.
pub async fn aws_clients() -> (aws_sdk_s3::Client, aws_sdk_sqs::Client) {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let path_style = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    let s3 = aws_sdk_s3::config::Builder::from(&config)
        .force_path_style(path_style)
        .build();
    (
        aws_sdk_s3::Client::from_conf(s3),
        aws_sdk_sqs::Client::new(&config),
    )
}

/// The STS client (credentials rotation) from the standard credential chain and
/// configuration; `AWS_ENDPOINT_URL_STS` or `AWS_ENDPOINT_URL` point it elsewhere.
pub async fn sts_client() -> aws_sdk_sts::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    aws_sdk_sts::Client::new(&config)
}

/// Fails unless the bucket sends object-created events to the queue for every prefix the
/// engine needs (`cloud check`'s item, with its fix).
pub(super) async fn check_notification(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    queue_arn: &str,
    queue_url: &str,
) -> Result<()> {
    let item = super::check::notification(s3, bucket, queue_arn).await;
    if item.ok {
        return Ok(());
    }
    Err(CloudError::Config(format!(
        "the notification of bucket `{bucket}` to the queue {queue_url}: {}; fix: {} (see docs/serve.md, or run `linedee cloud setup`)",
        item.detail,
        item.fix.unwrap_or_default()
    ))
    .into())
}

/// This replica's name in records and answers: the dyno (`DYNO`) or the host, and the
/// process id.
pub(crate) fn replica_name() -> String {
    let host = std::env::var("DYNO")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "replica".to_owned());
    format!("{host}/{}", std::process::id())
}
