//! Credentials rotation, as the add-on does it: temporary AWS credentials scoped to the bucket
//! (STS `AssumeRole` with a session policy), written to the app's config vars through the
//! Heroku Platform API (`PATCH /apps/{app}/config-vars`), every interval.
//!
//! Any number of replicas may rotate: a rotation record in the bucket
//! (`{state prefix}rotation.json`), changed only by compare-and-swap as runs' states are,
//! says when the last rotation was and who holds the current one. A replica claims a rotation
//! with `If-Match` on the record it read (`If-None-Match: *` for the first), so two replicas
//! never both rotate; a claim holds for [`LEASE`], after which a replica that died mid-way is
//! taken over.
//!
//! The credentials live longer than the interval ([`Rotation::lifetime`]), so an app that
//! read the previous set keeps working until its next refresh.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::s3::{S3, Written};
use crate::error::{CloudError, Result};
use crate::heroku::{Api, HerokuConfig, Secret};

/// How long a claimed rotation holds before another replica may take it over.
pub const LEASE: Duration = Duration::from_secs(120);

/// STS's bounds on a role session's duration.
const MIN_LIFETIME: Duration = Duration::from_secs(900);
const MAX_LIFETIME: Duration = Duration::from_secs(43_200);

/// The margin the credentials must outlive the interval by.
const MIN_OVERLAP: Duration = Duration::from_secs(300);

/// The rotation record's JSON version.
const RECORD_VERSION: u32 = 1;

/// How to rotate: the role, the app, the interval and the credentials' lifetime.
///
/// ```
/// use std::time::Duration;
/// use linedee_engine::serve::Rotation;
///
/// let rotation = Rotation::new("arn:aws:iam::123456789012:role/ld-app", "my-app", "hrku-s3cr3t")
///     .interval(Duration::from_secs(6 * 3600));
/// assert_eq!(rotation.lifetime_of(), Duration::from_secs(12 * 3600));
/// assert!(!format!("{rotation:?}").contains("s3cr3t"));
/// ```
#[derive(Debug, Clone)]
pub struct Rotation {
    pub(super) role_arn: String,
    pub(super) app: String,
    pub(super) token: Secret,
    pub(super) api_url: String,
    pub(super) interval: Duration,
    pub(super) lifetime: Option<Duration>,
    pub(super) retry_base: Duration,
}

impl Rotation {
    /// Rotates into `app`'s config vars (with `api_token`, which never reaches a log or an
    /// error), minting credentials as the role `role_arn`. Every 6 hours by default.
    pub fn new(
        role_arn: impl Into<String>,
        app: impl Into<String>,
        api_token: impl Into<String>,
    ) -> Self {
        Rotation {
            role_arn: role_arn.into(),
            app: app.into(),
            token: Secret::new(api_token),
            api_url: crate::heroku::DEFAULT_API_URL.to_owned(),
            interval: Duration::from_secs(6 * 3600),
            lifetime: None,
            retry_base: Duration::from_secs(1),
        }
    }

    /// The Platform API's URL (default `https://api.heroku.com`).
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = url.into();
        self
    }

    /// How often the credentials are replaced (default 6 h).
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every;
        self
    }

    /// How long each set of credentials lives (default twice the interval, within STS's 15 min
    /// to 12 h; the role's maximum session duration must allow it). It must exceed the
    /// interval by at least 5 minutes, and should by the longest task's timeout: a task's
    /// dyno keeps the set it started with.
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = Some(lifetime);
        self
    }

    /// The first wait after a 429 or 5xx from the Heroku API (default 1 s).
    pub fn retry_base(mut self, wait: Duration) -> Self {
        self.retry_base = wait;
        self
    }

    /// The credentials' lifetime in force: the one set, else twice the interval within STS's
    /// bounds.
    pub fn lifetime_of(&self) -> Duration {
        self.lifetime.unwrap_or_else(|| {
            (self.interval * 2)
                .max(self.interval + MIN_OVERLAP)
                .clamp(MIN_LIFETIME, MAX_LIFETIME)
        })
    }

    /// Fails with what to change when the settings cannot work.
    pub(crate) fn validate(&self) -> Result<()> {
        let lifetime = self.lifetime_of();
        let fail = |m: String| Err(CloudError::Config(m).into());
        if !self.role_arn.starts_with("arn:") || !self.role_arn.contains(":role/") {
            return fail(format!(
                "the rotation role `{}` is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)",
                self.role_arn
            ));
        }
        if self.interval.is_zero() {
            return fail("the rotation interval must be more than 0 s".to_owned());
        }
        if !(MIN_LIFETIME..=MAX_LIFETIME).contains(&lifetime) {
            return fail(format!(
                "the credentials' lifetime ({} s) is outside what STS allows (900 s to 43200 s)",
                lifetime.as_secs()
            ));
        }
        if lifetime < self.interval + MIN_OVERLAP {
            return fail(format!(
                "the credentials' lifetime ({} s) must exceed the rotation interval ({} s) by at least {} s, so the previous set still works until apps refresh",
                lifetime.as_secs(),
                self.interval.as_secs(),
                MIN_OVERLAP.as_secs()
            ));
        }
        Ok(())
    }

    fn api(&self) -> Api {
        Api::new(
            &HerokuConfig::new(self.app.clone(), self.token.clone())
                .api_url(self.api_url.clone())
                .retry_base(self.retry_base),
        )
    }
}

/// What a rotation attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rotated {
    /// This replica rotated: the new set's generation, access key id (not a secret) and
    /// expiry.
    Done {
        /// 1 for the first rotation of the bucket, then one more each time.
        generation: u64,
        /// The new access key id.
        access_key_id: String,
        /// When the new set stops working.
        expires_at: SystemTime,
    },
    /// The current set is younger than the interval; the next rotation is due then.
    NotDue {
        /// When the next rotation is due.
        next_at: SystemTime,
    },
    /// Another replica holds the rotation until then (or claimed it first just now).
    Busy {
        /// The replica that holds it.
        by: String,
        /// Until when its claim holds.
        until: SystemTime,
    },
}

/// The rotation record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    v: u32,
    generation: u64,
    /// `rotating` (claimed, until `lease_until_ms`) or `done`.
    state: String,
    by: String,
    #[serde(default)]
    lease_until_ms: u64,
    #[serde(default)]
    rotated_at_ms: u64,
    #[serde(default)]
    expires_at_ms: u64,
    #[serde(default)]
    access_key_id: String,
}

/// What to do, given the record read and the time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    Rotate,
    Wait(Rotated),
}

fn decide(record: Option<&Record>, now_ms: u64, interval: Duration) -> Decision {
    let Some(r) = record else {
        return Decision::Rotate;
    };
    if r.state == "rotating" && now_ms < r.lease_until_ms {
        return Decision::Wait(Rotated::Busy {
            by: r.by.clone(),
            until: at(r.lease_until_ms),
        });
    }
    let next = r.rotated_at_ms.saturating_add(millis(interval));
    if r.state == "done" && now_ms < next {
        return Decision::Wait(Rotated::NotDue { next_at: at(next) });
    }
    Decision::Rotate
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn ms_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0)
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The session policy: the minted credentials reach this bucket's objects and nothing else,
/// and cannot write the engine's own state (`ld/engine/`).
pub fn session_policy(bucket: &str, state_prefix: &str) -> serde_json::Value {
    let objects = format!("arn:aws:s3:::{bucket}/*");
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "LinedeeObjects",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:DeleteObject",
                    "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"
                ],
                "Resource": objects
            },
            {
                "Sid": "LinedeeBucket",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads"],
                "Resource": format!("arn:aws:s3:::{bucket}")
            },
            {
                "Sid": "LinedeeEngineStateIsTheEngines",
                "Effect": "Deny",
                "Action": ["s3:PutObject", "s3:DeleteObject"],
                "Resource": format!("arn:aws:s3:::{bucket}/{state_prefix}*")
            }
        ]
    })
}

/// Rotates through STS, the bucket and the Heroku API.
#[derive(Debug)]
pub(crate) struct Rotator {
    rotation: Rotation,
    api: Api,
    sts: aws_sdk_sts::Client,
    s3: S3,
    bucket: String,
    region: String,
    state_prefix: String,
    replica: String,
}

impl Rotator {
    pub(crate) fn new(
        rotation: Rotation,
        sts: aws_sdk_sts::Client,
        s3: &aws_sdk_s3::Client,
        bucket: &str,
        state_prefix: &str,
    ) -> Result<Self> {
        rotation.validate()?;
        let region = s3
            .config()
            .region()
            .map_or_else(|| "us-east-1".to_owned(), ToString::to_string);
        Ok(Rotator {
            api: rotation.api(),
            rotation,
            sts,
            s3: S3::new(s3.clone()),
            bucket: bucket.to_owned(),
            region,
            state_prefix: state_prefix.to_owned(),
            replica: super::setup::replica_name(),
        })
    }

    fn key(&self) -> String {
        format!("{}rotation.json", self.state_prefix)
    }

    /// Rotates if due at `now` (or at once, when `force`) and no other replica holds the
    /// rotation.
    pub(crate) async fn rotate(&self, now: SystemTime, force: bool) -> Result<Rotated> {
        let key = self.key();
        let (record, etag) = match self.s3.get(&self.bucket, &key).await? {
            Some((body, etag)) => match serde_json::from_slice::<Record>(&body) {
                Ok(r) if r.v == RECORD_VERSION => (Some(r), Some(etag)),
                _ => {
                    tracing::warn!(key = %key, "the rotation record cannot be read; it is replaced");
                    (None, Some(etag))
                }
            },
            None => (None, None),
        };
        let now_ms = ms_of(now);
        match decide(record.as_ref(), now_ms, self.rotation.interval) {
            Decision::Wait(Rotated::NotDue { .. }) if force => {}
            Decision::Wait(w) => return Ok(w),
            Decision::Rotate => {}
        }
        let generation = record.as_ref().map_or(0, |r| r.generation) + 1;
        let claim = Record {
            v: RECORD_VERSION,
            generation,
            state: "rotating".to_owned(),
            by: self.replica.clone(),
            lease_until_ms: now_ms.saturating_add(millis(LEASE)),
            ..record.clone().unwrap_or_default()
        };
        let claimed = match self.write(&claim, etag.as_deref()).await? {
            Written::Done(tag) => tag,
            Written::Conflict => {
                // Another replica wrote first: read who, for the answer.
                let (by, until) = match self.s3.get(&self.bucket, &key).await? {
                    Some((body, _)) => serde_json::from_slice::<Record>(&body)
                        .map(|r| (r.by, at(r.lease_until_ms.max(r.rotated_at_ms))))
                        .unwrap_or_else(|_| ("another replica".to_owned(), now + LEASE)),
                    None => ("another replica".to_owned(), now + LEASE),
                };
                return Ok(Rotated::Busy { by, until });
            }
        };
        let minted = match self.mint_and_set(generation).await {
            Ok(minted) => minted,
            Err(e) => {
                // Give the claim back (the record as it was), so the next attempt, here or on
                // another replica, need not wait for the lease; the app keeps its set.
                let back = record.unwrap_or_else(|| Record {
                    v: RECORD_VERSION,
                    state: "rotating".to_owned(),
                    by: self.replica.clone(),
                    ..Record::default()
                });
                if let Err(w) = self.write(&back, Some(&claimed)).await {
                    tracing::warn!(error = %w, "cannot give a failed rotation's claim back; it lapses with its lease");
                }
                return Err(e);
            }
        };
        let rotated_at_ms = ms_of(SystemTime::now()).max(now_ms);
        let done = Record {
            state: "done".to_owned(),
            lease_until_ms: 0,
            rotated_at_ms,
            expires_at_ms: minted.expires_at_ms,
            access_key_id: minted.access_key_id.clone(),
            ..claim
        };
        if self.write(&done, Some(&claimed)).await? == Written::Conflict {
            // Our lease ran out and another replica took the rotation over: its set is the
            // one in the config vars now, or soon; both are valid.
            tracing::warn!(
                generation,
                "the rotation took longer than its lease; another replica took it over"
            );
        }
        Ok(Rotated::Done {
            generation,
            access_key_id: minted.access_key_id,
            expires_at: at(minted.expires_at_ms),
        })
    }

    /// Mints a set and writes it to the app's config vars.
    async fn mint_and_set(&self, generation: u64) -> Result<Minted> {
        let minted = self.assume(generation, self.rotation.lifetime_of()).await?;
        let vars = serde_json::json!({
            linedee::credentials::ACCESS_KEY_VAR: minted.access_key_id,
            linedee::credentials::SECRET_KEY_VAR: minted.secret.expose(),
            linedee::credentials::SESSION_TOKEN_VAR: minted.session_token.expose(),
            "LD_REGION": self.region,
            "LD_S3_BUCKET": self.bucket,
        });
        self.api.set_config_vars(&vars).await?;
        Ok(minted)
    }

    async fn write(&self, record: &Record, expect: Option<&str>) -> Result<Written> {
        let body = serde_json::to_vec(record).unwrap_or_default();
        self.s3
            .put_if(&self.bucket, &self.key(), body, expect, false)
            .await
    }

    async fn assume(&self, generation: u64, lifetime: Duration) -> Result<Minted> {
        let policy = session_policy(&self.bucket, &self.state_prefix).to_string();
        let out = self
            .sts
            .assume_role()
            .role_arn(&self.rotation.role_arn)
            .role_session_name(format!("linedee-{generation}"))
            .policy(policy)
            .duration_seconds(i32::try_from(lifetime.as_secs()).unwrap_or(43_200))
            .send()
            .await
            .map_err(|e| CloudError::Request {
                op: format!("STS AssumeRole {}", self.rotation.role_arn),
                message: super::s3::brief(&e),
            })?;
        let creds = out.credentials().ok_or_else(|| CloudError::Request {
            op: format!("STS AssumeRole {}", self.rotation.role_arn),
            message: "the answer has no credentials".to_owned(),
        })?;
        // STS's expiry; the lifetime asked for if the answer's cannot be read.
        let expires_at_ms = creds
            .expiration()
            .to_millis()
            .ok()
            .and_then(|ms| u64::try_from(ms).ok())
            .filter(|ms| *ms > 0)
            .unwrap_or_else(|| ms_of(SystemTime::now()).saturating_add(millis(lifetime)));
        Ok(Minted {
            access_key_id: creds.access_key_id().to_owned(),
            secret: Secret::new(creds.secret_access_key()),
            session_token: Secret::new(creds.session_token()),
            expires_at_ms,
        })
    }

    /// Rotates whenever due until `stop`: the replica's background duty.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let retry = self.rotation.interval.min(Duration::from_secs(60));
        loop {
            let now = SystemTime::now();
            let wait = match self.rotate(now, false).await {
                Ok(Rotated::Done {
                    generation,
                    access_key_id,
                    expires_at,
                }) => {
                    tracing::info!(
                        generation,
                        access_key_id = %access_key_id,
                        expires_in_s = expires_at.duration_since(now).map_or(0, |d| d.as_secs()),
                        app = %self.rotation.app,
                        "rotated the app's AWS credentials into its config vars"
                    );
                    self.rotation.interval
                }
                Ok(Rotated::NotDue { next_at }) => next_at.duration_since(now).unwrap_or_default(),
                Ok(Rotated::Busy { until, .. }) => until.duration_since(now).unwrap_or_default(),
                Err(e) => {
                    tracing::error!(error = %e, retry_in_s = retry.as_secs(), "cannot rotate the app's AWS credentials");
                    retry
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
            }
        }
    }
}

/// Rotates once, now if due (or at once when `force`), unless another replica holds the
/// rotation: `linedee cloud rotate`, for a scheduler instead of `serve --rotate-credentials`.
/// `state_prefix` is the engine's (`ld/engine/`), where the rotation record lives.
///
/// ```no_run
/// # async fn demo() -> linedee_engine::Result<()> {
/// use linedee_engine::serve::{Rotated, Rotation, aws_clients, sts_client};
/// let (s3, _) = aws_clients().await;
/// let rotation = Rotation::new("arn:aws:iam::123456789012:role/ld-app", "my-app", "hrku-token");
/// match linedee_engine::serve::rotate_once(rotation, &s3, sts_client().await, "my-ld-bucket", "ld/engine/", false).await? {
///     Rotated::Done { generation, .. } => println!("rotated: generation {generation}"),
///     other => println!("nothing to do: {other:?}"),
/// }
/// # Ok(()) }
/// ```
pub async fn rotate_once(
    rotation: Rotation,
    s3: &aws_sdk_s3::Client,
    sts: aws_sdk_sts::Client,
    bucket: &str,
    state_prefix: &str,
    force: bool,
) -> Result<Rotated> {
    Rotator::new(rotation, sts, s3, bucket, state_prefix)?
        .rotate(SystemTime::now(), force)
        .await
}

/// A minted set. Its `Debug` shows no secret.
#[derive(Debug)]
struct Minted {
    access_key_id: String,
    secret: Secret,
    session_token: Secret,
    expires_at_ms: u64,
}

#[cfg(test)]
mod tests;
