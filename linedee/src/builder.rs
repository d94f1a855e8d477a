//! [`ClientBuilder`]: the bucket, where it is, credentials, retries, timeouts and the
//! transfer settings of a [`Client`].

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, IdentityCache, Region};
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;

use crate::client::{Client, DEFAULT_REGION, Inner};
use crate::credentials::{CredentialsCache, ProvideCredentials, SdkBridge};
use crate::error::{Error, Result};

/// Builds a [`Client`]: bucket, region, endpoint and credential provider.
///
/// ```
/// use linedee::credentials::{Credentials, StaticProvider};
///
/// let client = linedee::Client::builder()
///     .bucket("ld-private-example")
///     .endpoint("http://127.0.0.1:9000")
///     .credentials_provider(StaticProvider::new(Credentials::new("AKID", "secret", None, None)))
///     .build()
///     .unwrap();
/// assert_eq!(client.bucket(), "ld-private-example");
/// ```
#[derive(Debug, Default)]
#[must_use]
pub struct ClientBuilder {
    bucket: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    credentials: Option<CredentialsCache>,
    max_attempts: Option<u32>,
    initial_backoff: Option<Duration>,
    multipart_threshold: Option<usize>,
    part_size: Option<usize>,
    upload_concurrency: Option<usize>,
    download_concurrency: Option<usize>,
    attempt_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
}

/// Smallest multipart part S3 accepts (except the last).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// `LD_UPLOAD_CONCURRENCY`: [`ClientBuilder::upload_concurrency`] for [`Client::from_env`].
pub const UPLOAD_CONCURRENCY_VAR: &str = "LD_UPLOAD_CONCURRENCY";
/// `LD_DOWNLOAD_CONCURRENCY`: [`ClientBuilder::download_concurrency`] for [`Client::from_env`].
pub const DOWNLOAD_CONCURRENCY_VAR: &str = "LD_DOWNLOAD_CONCURRENCY";
/// `LD_PART_SIZE`: [`ClientBuilder::part_size`] in bytes, for [`Client::from_env`].
pub const PART_SIZE_VAR: &str = "LD_PART_SIZE";

/// Parts of one multipart upload in flight at once by default; see
/// [`ClientBuilder::upload_concurrency`].
pub const DEFAULT_UPLOAD_CONCURRENCY: usize = 8;

/// Objects an export downloads at once by default; see
/// [`ClientBuilder::download_concurrency`].
pub const DEFAULT_DOWNLOAD_CONCURRENCY: usize = 16;

/// How long one HTTP attempt may take by default; see [`ClientBuilder::attempt_timeout`].
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long connecting may take by default; see [`ClientBuilder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

impl ClientBuilder {
    /// The bucket (`LD_S3_BUCKET`). Required.
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// The region (`LD_REGION`, default `us-east-1`).
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// An S3-compatible endpoint (`LD_S3_ENDPOINT`), addressed path-style. Absent: AWS.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Where credentials come from; they are cached with [`CredentialsCache`]'s defaults.
    pub fn credentials_provider(mut self, provider: impl ProvideCredentials + 'static) -> Self {
        self.credentials = Some(CredentialsCache::new(provider));
        self
    }

    /// A cache with custom timings (or shared with another client).
    pub fn credentials_cache(mut self, cache: CredentialsCache) -> Self {
        self.credentials = Some(cache);
        self
    }

    /// Attempts per request for throttling and transient errors (default 3).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// First retry backoff (default 1 s, doubling, with jitter).
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = Some(backoff);
        self
    }

    /// How long one HTTP attempt may take, from sending the request (its body included) to
    /// receiving the whole response, except a download's body, which streams (default
    /// [`DEFAULT_ATTEMPT_TIMEOUT`], 5 minutes). A server slower than this fails the attempt;
    /// it is retried like any transient error (see [`max_attempts`](Self::max_attempts)), and
    /// when retries run out the error says the server did not answer in time. Keep it well
    /// above the time one part (or one single-request body) takes to send.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// How long opening a connection may take (default [`DEFAULT_CONNECT_TIMEOUT`], 3.1 s, as
    /// the AWS SDK).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Bodies larger than this go multipart (default 16 MiB).
    pub fn multipart_threshold(mut self, bytes: usize) -> Self {
        self.multipart_threshold = Some(bytes);
        self
    }

    /// Size of each multipart part, at least 5 MiB (default 8 MiB). Memory use of an upload is
    /// about one part.
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part_size = Some(bytes);
        self
    }

    /// Parts of one multipart upload in flight at once (default
    /// [`DEFAULT_UPLOAD_CONCURRENCY`], at least 1). The memory this costs depends on the body:
    /// a file ([`Body::from_path`](crate::Body::from_path)) is read part by part as it is
    /// sent, so no part is held in memory; a body from a reader (or bytes) holds at most this
    /// many parts plus the one being read: (concurrency + 1) × part size, 72 MiB with the
    /// defaults, whatever the size of the body.
    pub fn upload_concurrency(mut self, parts: usize) -> Self {
        self.upload_concurrency = Some(parts.max(1));
        self
    }

    /// Applies the transfer settings `lookup` finds: [`UPLOAD_CONCURRENCY_VAR`],
    /// [`DOWNLOAD_CONCURRENCY_VAR`] and [`PART_SIZE_VAR`] (as [`Client::from_env`] reads
    /// them). A value that is not a whole number above 0 is an error that names it.
    ///
    /// ```
    /// let builder = linedee::Client::builder()
    ///     .transfer_settings(|name| (name == "LD_UPLOAD_CONCURRENCY").then(|| "2".to_owned()))
    ///     .unwrap();
    /// let err = linedee::Client::builder()
    ///     .transfer_settings(|name| (name == "LD_PART_SIZE").then(|| "8MiB".to_owned()))
    ///     .unwrap_err();
    /// assert!(err.to_string().ends_with(r#"LD_PART_SIZE="8MiB" is not a whole number above 0"#));
    /// # let _ = builder;
    /// ```
    pub fn transfer_settings(mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let knob = |name: &'static str| -> Result<Option<usize>> {
            lookup(name)
                .filter(|v| !v.is_empty())
                .map(|v| match v.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(Error::Config(format!(
                        "{name}={v:?} is not a whole number above 0"
                    ))),
                })
                .transpose()
        };
        if let Some(n) = knob(UPLOAD_CONCURRENCY_VAR)? {
            self = self.upload_concurrency(n);
        }
        if let Some(n) = knob(DOWNLOAD_CONCURRENCY_VAR)? {
            self = self.download_concurrency(n);
        }
        if let Some(n) = knob(PART_SIZE_VAR)? {
            self = self.part_size(n);
        }
        Ok(self)
    }

    /// Objects [`Client::export`] downloads at once (default
    /// [`DEFAULT_DOWNLOAD_CONCURRENCY`], at least 1). Each streams to its file, so memory
    /// stays a few buffers per download.
    pub fn download_concurrency(mut self, objects: usize) -> Self {
        self.download_concurrency = Some(objects.max(1));
        self
    }

    /// Builds the client. Fails if the bucket or credentials are missing.
    pub fn build(self) -> Result<Client> {
        let bucket = self.bucket.filter(|b| !b.is_empty()).ok_or_else(|| {
            Error::Config("no bucket set: call `.bucket(..)` or set LD_S3_BUCKET".into())
        })?;
        let credentials = self.credentials.ok_or_else(|| {
            Error::Config("no credentials provider set: call `.credentials_provider(..)`".into())
        })?;
        let part_size = self.part_size.unwrap_or(8 * 1024 * 1024);
        if part_size < MIN_PART_SIZE {
            return Err(Error::Config(format!(
                "part size {part_size} is below S3's minimum of {MIN_PART_SIZE} bytes"
            )));
        }
        let region = self.region.unwrap_or_else(|| DEFAULT_REGION.to_owned());
        let retry = RetryConfig::standard()
            .with_max_attempts(self.max_attempts.unwrap_or(3))
            .with_initial_backoff(self.initial_backoff.unwrap_or(Duration::from_secs(1)));
        let attempt_timeout = self.attempt_timeout.unwrap_or(DEFAULT_ATTEMPT_TIMEOUT);
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
            .operation_attempt_timeout(attempt_timeout)
            .build();
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .credentials_provider(SdkBridge(credentials.clone()))
            .identity_cache(IdentityCache::no_cache())
            .retry_config(retry)
            .timeout_config(timeouts);
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(Error::Config(format!(
                    "endpoint {endpoint:?} is not an http:// or https:// URL"
                )));
            }
            config = config
                .endpoint_url(endpoint.trim_end_matches('/'))
                .force_path_style(true);
        }
        Ok(Client {
            inner: Arc::new(Inner {
                s3: aws_sdk_s3::Client::from_conf(config.build()),
                bucket,
                region,
                endpoint: self.endpoint,
                credentials,
                multipart_threshold: self.multipart_threshold.unwrap_or(16 * 1024 * 1024).max(1),
                part_size,
                upload_concurrency: self
                    .upload_concurrency
                    .unwrap_or(DEFAULT_UPLOAD_CONCURRENCY),
                download_concurrency: self
                    .download_concurrency
                    .unwrap_or(DEFAULT_DOWNLOAD_CONCURRENCY),
                attempt_timeout,
            }),
        })
    }
}
