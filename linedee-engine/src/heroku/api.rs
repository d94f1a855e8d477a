//! The Platform API client: every request carries the version-3 `Accept` header and the
//! bearer token; answers' `RateLimit-Remaining` and 429s pace the next requests; 429 and 5xx
//! are retried with exponential backoff; other errors fail at once with Heroku's `id` and
//! `message`. No error or log line holds the token or a log session's URL.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;

use super::{HerokuConfig, Secret};
use crate::error::{HerokuError, Result};

/// The media type of the Platform API's version 3.
pub(super) const ACCEPT: &str = "application/vnd.heroku+json; version=3";

/// The longest wait between retries, and after an answer that exhausted the rate limit.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How long one request (or a log session's download) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Dynos asked for per page of the list (Heroku's maximum).
const PAGE: &str = "id ..; max=1000";

/// Pages of the list followed at most (`Next-Range`).
const MAX_PAGES: usize = 10;

/// What the runner reads of a dyno object.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Dyno {
    /// The dyno's UUID.
    pub(super) id: String,
    /// `run.N`.
    pub(super) name: String,
    /// `starting`, `up`, `idle`, `crashed`, `down` or `complete`.
    #[serde(default)]
    pub(super) state: String,
}

impl Dyno {
    /// Whether the state says the dyno's process has ended.
    pub(super) fn ended(&self) -> bool {
        matches!(self.state.as_str(), "crashed" | "down" | "complete")
    }
}

/// Heroku's error body.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// The shared pace of requests: nothing is sent before `until`.
#[derive(Debug, Default)]
struct Throttle {
    until: Option<Instant>,
    /// Rate-limit hits in a row, for the exponential wait.
    level: u32,
}

/// A Platform API client for one app.
#[derive(Debug)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    app: String,
    token: Secret,
    retry_base: Duration,
    max_retries: u32,
    calls: AtomicU64,
    throttle: Mutex<Throttle>,
}

impl Api {
    pub(crate) fn new(config: &HerokuConfig) -> Self {
        Api {
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap_or_default(),
            base: config.api_url.trim_end_matches('/').to_owned(),
            app: config.app.clone(),
            token: config.token.clone(),
            retry_base: config.retry_base,
            max_retries: config.max_retries,
            calls: AtomicU64::new(0),
            throttle: Mutex::new(Throttle::default()),
        }
    }

    /// Platform API requests sent so far, retries included (log downloads are not counted:
    /// they do not spend the rate limit).
    pub(super) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// `POST /apps/{app}/dynos`: the new dyno.
    pub(super) async fn create(&self, body: &serde_json::Value) -> Result<Dyno> {
        let path = format!("/apps/{}/dynos", self.app);
        let (status, bytes) = self.send(Method::POST, &path, Some(body), None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self
                .status_error(&Method::POST, &path, status, &bytes)
                .into());
        }
        parse(&Method::POST, &path, &bytes)
    }

    /// `GET /apps/{app}/dynos`, following `Next-Range` for at most [`MAX_PAGES`] pages.
    pub(super) async fn list(&self) -> Result<Vec<Dyno>> {
        let path = format!("/apps/{}/dynos", self.app);
        let mut range = PAGE.to_owned();
        let mut dynos = Vec::new();
        for _ in 0..MAX_PAGES {
            let (status, bytes, next) = self.send_paged(&path, &range).await?;
            if status == StatusCode::NOT_FOUND {
                return Err(self
                    .status_error(&Method::GET, &path, status, &bytes)
                    .into());
            }
            dynos.extend(parse::<Vec<Dyno>>(&Method::GET, &path, &bytes)?);
            match next {
                Some(next) if status == StatusCode::PARTIAL_CONTENT => range = next,
                _ => break,
            }
        }
        Ok(dynos)
    }

    /// `POST /apps/{app}/dynos/{id}/actions/stop`. A dyno already gone (404) is no error.
    pub(super) async fn stop(&self, id: &str) -> Result<()> {
        let path = format!("/apps/{}/dynos/{id}/actions/stop", self.app);
        self.send(Method::POST, &path, Some(&serde_json::json!({})), None)
            .await
            .map(|_| ())
    }

    /// The last lines of `dyno`'s output: a log session, then its URL fetched (without the
    /// token: the URL carries its own signature).
    pub(super) async fn log(&self, dyno: &str) -> Result<Vec<u8>> {
        #[derive(Deserialize)]
        struct Session {
            logplex_url: String,
        }
        let path = format!("/apps/{}/log-sessions", self.app);
        let body = serde_json::json!({"dyno": dyno, "lines": 1500, "source": "app", "tail": false});
        let (status, bytes) = self.send(Method::POST, &path, Some(&body), None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self
                .status_error(&Method::POST, &path, status, &bytes)
                .into());
        }
        let session: Session = parse(&Method::POST, &path, &bytes)?;
        let request = "GET of the log session's URL".to_owned();
        let failed = |e: reqwest::Error| HerokuError::Request {
            request: request.clone(),
            source: e.without_url(),
        };
        let resp = self
            .http
            .get(&session.logplex_url)
            .send()
            .await
            .map_err(failed)?;
        if !resp.status().is_success() {
            return Err(HerokuError::Unexpected {
                request,
                reason: format!("HTTP {}", resp.status()),
            }
            .into());
        }
        Ok(resp.bytes().await.map_err(failed)?.to_vec())
    }

    /// `PATCH /apps/{app}/config-vars`: sets `vars` (a `null` unsets one). The answer (every
    /// config var) is not read: it holds secrets.
    pub(crate) async fn set_config_vars(&self, vars: &serde_json::Value) -> Result<()> {
        let path = format!("/apps/{}/config-vars", self.app);
        let (status, bytes) = self.send(Method::PATCH, &path, Some(vars), None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self
                .status_error(&Method::PATCH, &path, status, &bytes)
                .into());
        }
        Ok(())
    }

    /// `GET /apps/{app}/config-vars`: the string-valued ones; `None` when there is no such
    /// app. A malformed answer is an error that quotes none of it.
    pub(crate) async fn config_vars(&self) -> Result<Option<BTreeMap<String, String>>> {
        let path = format!("/apps/{}/config-vars", self.app);
        let (status, bytes) = self.send(Method::GET, &path, None, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
            .map_err(|_| HerokuError::Unexpected {
                request: format!("GET {path}"),
                reason: "the answer is not a JSON object".to_owned(),
            })?;
        Ok(Some(
            map.into_iter()
                .filter_map(|(k, v)| match v {
                    serde_json::Value::String(s) => Some((k, s)),
                    _ => None,
                })
                .collect(),
        ))
    }

    /// `GET /apps/{app}`: whether the app exists (and the token may see it).
    pub(crate) async fn app_exists(&self) -> Result<bool> {
        let path = format!("/apps/{}", self.app);
        let (status, _) = self.send(Method::GET, &path, None, None).await?;
        Ok(status != StatusCode::NOT_FOUND)
    }

    /// `GET /apps/{app}/formation`: the app's process types (its Procfile's, as released).
    pub(crate) async fn process_types(&self) -> Result<Vec<String>> {
        #[derive(Deserialize)]
        struct Formation {
            #[serde(rename = "type")]
            kind: String,
        }
        let path = format!("/apps/{}/formation", self.app);
        let (status, bytes) = self.send(Method::GET, &path, None, None).await?;
        if status == StatusCode::NOT_FOUND {
            return Err(self
                .status_error(&Method::GET, &path, status, &bytes)
                .into());
        }
        let formation: Vec<Formation> = parse(&Method::GET, &path, &bytes)?;
        Ok(formation.into_iter().map(|f| f.kind).collect())
    }

    fn status_error(
        &self,
        method: &Method,
        path: &str,
        status: StatusCode,
        body: &[u8],
    ) -> HerokuError {
        let err: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let mut message = err.message.unwrap_or_default();
        if let Some((cut, _)) = message.char_indices().nth(300) {
            message.truncate(cut);
        }
        HerokuError::Status {
            request: format!("{method} {path}"),
            status: status.as_u16(),
            id: err.id.unwrap_or_else(|| "unknown".to_owned()),
            message,
        }
    }

    /// A list page: the status, the body and the `Next-Range` header.
    async fn send_paged(
        &self,
        path: &str,
        range: &str,
    ) -> Result<(StatusCode, Vec<u8>, Option<String>)> {
        let mut next = None;
        let (status, bytes) = self
            .send(Method::GET, path, None, Some((range, &mut next)))
            .await?;
        Ok((status, bytes, next))
    }

    /// Sends a request, paced and retried. Returns a success's or a 404's status and body;
    /// any other answer is an error. `range` is a `Range` header to send, and where the
    /// answer's `Next-Range` goes.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        mut range: Option<(&str, &mut Option<String>)>,
    ) -> Result<(StatusCode, Vec<u8>)> {
        let url = format!("{}{path}", self.base);
        let request = || format!("{method} {path}");
        let mut attempt = 0;
        loop {
            self.wait_turn().await;
            let mut req = self
                .http
                .request(method.clone(), &url)
                .header(reqwest::header::ACCEPT, ACCEPT)
                .bearer_auth(self.token.expose());
            if let Some(body) = body {
                req = req.json(body);
            }
            if let Some((r, _)) = &range {
                req = req.header(reqwest::header::RANGE, *r);
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            let resp = match req.send().await {
                Ok(resp) => resp,
                // Not sent at all: safe to send again, even a create.
                Err(e) if e.is_connect() && attempt < self.max_retries => {
                    tokio::time::sleep(backoff(self.retry_base, attempt, None)).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => {
                    return Err(HerokuError::Request {
                        request: request(),
                        source: e.without_url(),
                    }
                    .into());
                }
            };
            let status = resp.status();
            let headers = resp.headers();
            let remaining = header_u64(headers, "ratelimit-remaining");
            let retry_after = header_u64(headers, "retry-after").map(Duration::from_secs);
            if let Some((_, next)) = &mut range {
                **next = headers
                    .get("next-range")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
            }
            self.pace(status, remaining, retry_after);
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| HerokuError::Request {
                    request: request(),
                    source: e.without_url(),
                })?
                .to_vec();
            if status.is_success() || status == StatusCode::NOT_FOUND {
                return Ok((status, bytes));
            }
            let retryable = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
            if !retryable || attempt >= self.max_retries {
                return Err(self.status_error(&method, path, status, &bytes).into());
            }
            tracing::warn!(
                request = %request(),
                status = status.as_u16(),
                attempt = attempt + 1,
                "the Heroku API asked to retry"
            );
            // A 429's wait is the shared pace (set above); a 5xx waits here.
            if status.is_server_error() {
                tokio::time::sleep(backoff(self.retry_base, attempt, retry_after)).await;
            }
            attempt += 1;
        }
    }

    /// Sets the shared pace from an answer: an exhausted rate limit (429, or
    /// `RateLimit-Remaining: 0`) holds every request back, longer on each hit in a row.
    fn pace(&self, status: StatusCode, remaining: Option<u64>, retry_after: Option<Duration>) {
        let mut t = self
            .throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if status == StatusCode::TOO_MANY_REQUESTS || remaining == Some(0) {
            let wait = backoff(self.retry_base, t.level, retry_after);
            t.level = t.level.saturating_add(1);
            t.until = Some(Instant::now() + wait);
            tracing::warn!(
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "the Heroku API rate limit is exhausted; waiting before the next request"
            );
        } else if remaining.is_some() {
            t.level = 0;
        }
    }

    /// Waits until the shared pace lets a request go (an answer that came in meanwhile may
    /// have pushed it back).
    async fn wait_turn(&self) {
        loop {
            let until = self
                .throttle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .until;
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }
}

/// The wait before retry `attempt` (0 for the first): `base` doubled per attempt, at most
/// [`MAX_BACKOFF`], and at least what `Retry-After` asked (at most [`MAX_RETRY_AFTER`]).
pub(super) fn backoff(base: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let exp = base
        .saturating_mul(2u32.saturating_pow(attempt.min(31)))
        .min(MAX_BACKOFF);
    match retry_after {
        Some(asked) => exp.max(asked.min(MAX_RETRY_AFTER)),
        None => exp,
    }
}

fn header_u64(headers: &reqwest::header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn parse<T: serde::de::DeserializeOwned>(method: &Method, path: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| {
        HerokuError::Unexpected {
            request: format!("{method} {path}"),
            reason: e.to_string(),
        }
        .into()
    })
}
