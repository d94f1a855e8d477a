//! A [`Runner`](crate::runner::Runner) that starts each attempt as a Heroku one-off dyno
//! through the Platform API (`POST /apps/{app}/dynos`), and learns that it ended from one
//! shared, periodic `GET /apps/{app}/dynos` (Heroku gives no exit code: the task's output
//! object is the proof of success).
//!
//! - `api`: the HTTP client: headers, the rate limit (`RateLimit-Remaining`, 429) and retries.
//! - `api` also reads the app, its process types and config vars, and sets config vars
//!   (`serve`'s rotation and `cloud check`).
//! - `runner`: [`HerokuRunner`]: slots, the tracked dynos, the poll loop, logs.

mod api;
mod runner;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub(crate) use api::Api;
pub(crate) use runner::HerokuRunner;

/// The Platform API's default URL.
pub(crate) const DEFAULT_API_URL: &str = "https://api.heroku.com";

/// The longest `time_to_live` Heroku accepts, in seconds.
const MAX_TIME_TO_LIVE: u64 = 86_400;

/// A secret string (the API token): its `Debug` shows no part of it, and it has no `Display`.
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(** redacted **)")
    }
}

/// How a [`HerokuRunner`] reaches Heroku: the app, the token and the budgets.
#[derive(Debug, Clone)]
pub(crate) struct HerokuConfig {
    /// The Platform API's URL, without a trailing slash ([`DEFAULT_API_URL`]).
    api_url: String,
    /// The app whose dynos run the tasks (its name or id).
    app: String,
    /// The API token (`Authorization: Bearer`).
    token: Secret,
    /// At most this many one-off dynos of this runner at once (default 50, Heroku's
    /// per-app limit for Standard dynos).
    max_dynos: usize,
    /// One shared `GET /apps/{app}/dynos` per interval (default 30 s).
    list_interval: Duration,
    /// Added to the task's timeout for the dyno's `time_to_live` (default 60 s).
    ttl_grace: Duration,
    /// The first wait after a 429 or a 5xx, doubled on each retry, capped at 60 s
    /// (default 1 s).
    retry_base: Duration,
    /// Retries of a request answered 429 or 5xx (default 5).
    max_retries: u32,
}

impl HerokuConfig {
    /// The defaults for `app`, authenticating with `token`.
    pub(crate) fn new(app: impl Into<String>, token: Secret) -> Self {
        HerokuConfig {
            api_url: DEFAULT_API_URL.to_owned(),
            app: app.into(),
            token,
            max_dynos: 50,
            list_interval: Duration::from_secs(30),
            ttl_grace: Duration::from_secs(60),
            retry_base: Duration::from_secs(1),
            max_retries: 5,
        }
    }

    /// Another Platform API URL (a test server).
    pub(crate) fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = url.into().trim_end_matches('/').to_owned();
        self
    }

    /// The cap on concurrent one-off dynos (at least 1).
    pub(crate) fn max_dynos(mut self, n: usize) -> Self {
        self.max_dynos = n.max(1);
        self
    }

    /// The interval of the shared dyno list.
    pub(crate) fn list_interval(mut self, interval: Duration) -> Self {
        self.list_interval = interval;
        self
    }

    /// The margin added to the task's timeout for `time_to_live`.
    pub(crate) fn ttl_grace(mut self, grace: Duration) -> Self {
        self.ttl_grace = grace;
        self
    }

    /// The backoff base for 429 and 5xx answers.
    pub(crate) fn retry_base(mut self, base: Duration) -> Self {
        self.retry_base = base;
        self
    }

    /// How many times a request answered 429 or 5xx is retried.
    pub(crate) fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The dyno's `time_to_live` for a task with `timeout` seconds: the timeout plus the
    /// grace, at most Heroku's maximum.
    fn time_to_live(&self, timeout: u64) -> u64 {
        timeout
            .saturating_add(self.ttl_grace.as_secs())
            .min(MAX_TIME_TO_LIVE)
    }
}

/// Heroku's size name for a linedee machine (`standard-2x` → `Standard-2X`,
/// `performance-l-ram` → `Performance-L-RAM`), or `None` for an unknown machine.
fn heroku_size(machine: &str) -> Option<String> {
    let machine: linedee::Machine = machine.parse().ok()?;
    let mut parts = machine.as_str().split('-');
    let family = parts.next()?;
    let mut size: String = family
        .chars()
        .take(1)
        .flat_map(char::to_uppercase)
        .chain(family.chars().skip(1))
        .collect();
    for part in parts {
        size.push('-');
        size.push_str(&part.to_uppercase());
    }
    Some(size)
}

/// `e` and its sources, `: `-separated, for a message that stands alone (a start failure, a
/// log line).
pub(crate) fn report(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Whether `key` is a name Heroku takes in a dyno's `env` (`^\w+$`).
fn valid_env_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `id` may stand in a URL path as a dyno's id or name (letters, digits, `.`, `-`,
/// `_`): a runner reference read back from a record is not trusted to be one.
fn valid_dyno_ref(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}
