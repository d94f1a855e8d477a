//! The routes: the embedded app and the JSON API.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use linedee::status::RunState;
use serde_json::json;

use super::logs;
use super::respond::{self, Resp};
use crate::{Engine, Error, RunError};

/// Where the dashboard reads runs.
pub(crate) enum Source {
    /// The local engine: its journal and log files.
    Engine(Engine),
    /// Any bucket: its status documents and stored logs (`linedee dashboard`).
    Bucket(super::bucket::BucketSource),
}

/// What every request needs.
pub(crate) struct State {
    pub(crate) source: Source,
    pub(crate) token: String,
    /// The listener is on loopback, so `Host` must name loopback too.
    pub(crate) loopback: bool,
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");
const OVERVIEW_JS: &str = include_str!("assets/overview.js");

/// Runs per page when the request does not say.
const DEFAULT_LIMIT: usize = 50;
/// Most runs per page.
const MAX_LIMIT: usize = 500;

/// Routes a request.
pub(crate) async fn handle<B>(state: &State, req: Request<B>) -> Resp {
    if state.loopback && !respond::loopback_host(req.headers()) {
        return respond::error(
            StatusCode::MISDIRECTED_REQUEST,
            "the dashboard answers only to loopback host names (127.0.0.1, localhost, [::1])",
        );
    }
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    let post = req.method() == Method::POST;
    match segments.as_slice() {
        [""] | ["index.html"] => asset(get, "text/html; charset=utf-8", INDEX_HTML),
        ["app.js"] => asset(get, "text/javascript; charset=utf-8", APP_JS),
        ["style.css"] => asset(get, "text/css; charset=utf-8", STYLE_CSS),
        ["overview.js"] => asset(get, "text/javascript; charset=utf-8", OVERVIEW_JS),
        ["api", "overview"] if get => super::overview::overview(state, query.as_deref()).await,
        ["api", "runs"] if get => runs(state, query.as_deref()).await,
        ["api", "runs", id] if get => run(state, id).await,
        ["api", "runs", id, action @ ("cancel" | "retry")] if post => {
            act(state, req.headers(), id, action).await
        }
        ["api", "logs", task_id, attempt] if get => {
            log(state, task_id, attempt, query.as_deref()).await
        }
        ["api", "runs" | "overview"] | ["api", "runs", _] | ["api", "logs", _, _] => {
            respond::method_not_allowed("GET")
        }
        ["api", "runs", _, "cancel" | "retry"] => respond::method_not_allowed("POST"),
        _ => respond::error(StatusCode::NOT_FOUND, format!("no route `{path}`")),
    }
}

fn asset(get: bool, content_type: &'static str, body: &'static str) -> Resp {
    if !get {
        return respond::method_not_allowed("GET");
    }
    respond::with_body(
        StatusCode::OK,
        content_type,
        Bytes::from_static(body.as_bytes()),
    )
}

fn parse_state(s: &str) -> Option<RunState> {
    [
        RunState::Queued,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
}

/// `GET /api/runs?status=&before=&limit=&window=&q=&cmd=`.
async fn runs(state: &State, query: Option<&str>) -> Resp {
    let pairs = match respond::query_pairs(query) {
        Ok(p) => p,
        Err(e) => return respond::error(StatusCode::BAD_REQUEST, e),
    };
    let (mut status, mut before, mut limit) = (None, None, DEFAULT_LIMIT);
    let mut filter = crate::RunFilter::default();
    for (k, v) in &pairs {
        match k.as_str() {
            "window" | "q" | "cmd" => {
                if let Err(e) = super::overview::refine(&mut filter, k, v) {
                    return respond::error(StatusCode::BAD_REQUEST, e);
                }
            }
            "status" if v.is_empty() => {}
            "status" => match parse_state(v) {
                Some(s) => status = Some(s),
                None => {
                    return respond::error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "status: `{v}` is not a run status; expected queued, running, \
                             succeeded, failed or cancelled"
                        ),
                    );
                }
            },
            "before" if v.is_empty() => {}
            "before" => match v.parse::<i64>() {
                Ok(n) if n > 0 => before = Some(n),
                _ => {
                    return respond::error(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "before: `{v}` is not a cursor; expected the `next` of a previous page"
                        ),
                    );
                }
            },
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => {
                    return respond::error(
                        StatusCode::BAD_REQUEST,
                        format!("limit: `{v}` is not a number from 1 to {MAX_LIMIT}"),
                    );
                }
            },
            other => {
                return respond::error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown query parameter `{other}`; expected status, before, limit, \
                         window, q, cmd"
                    ),
                );
            }
        }
    }
    filter.status = status;
    let found = match &state.source {
        Source::Engine(engine) => engine.find_runs(filter, before, limit).await,
        Source::Bucket(bucket) => bucket.runs(&filter, before, limit).await,
    };
    match found {
        Ok((runs, next)) => respond::json(StatusCode::OK, &json!({ "runs": runs, "next": next })),
        Err(e) => engine_error(&e),
    }
}

fn bad_run_id(id: &str) -> Option<Resp> {
    (!linedee::metadata::is_valid_run_id(id)).then(|| {
        respond::error(
            StatusCode::BAD_REQUEST,
            format!("`{id}` is not a run id; expected 1 to 64 of 0-9, A-Z, a-z, `_`, `-`"),
        )
    })
}

/// `GET /api/runs/{id}`.
async fn run(state: &State, id: &str) -> Resp {
    if let Some(resp) = bad_run_id(id) {
        return resp;
    }
    let (status, attempts) = match &state.source {
        Source::Engine(engine) => {
            let status = match engine.status(id).await {
                Ok(s) => s,
                Err(e) => return engine_error(&e),
            };
            match engine.attempts(id).await {
                Ok(a) => (status, a),
                Err(e) => return engine_error(&e),
            }
        }
        // The bucket has the status document only.
        Source::Bucket(bucket) => match bucket.status(id).await {
            Ok(s) => (s, Vec::new()),
            Err(e) => return engine_error(&e),
        },
    };
    let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
    respond::json(
        StatusCode::OK,
        &json!({ "run": status, "attempts": attempts, "now_ms": now_ms as i64 }),
    )
}

/// `POST /api/runs/{id}/cancel|retry`.
async fn act(state: &State, headers: &http::HeaderMap, id: &str, action: &str) -> Resp {
    if !respond::authorized(headers, &state.token) {
        return respond::error(
            StatusCode::UNAUTHORIZED,
            "cancel and retry need `Authorization: Bearer <token>`; the token is in \
             <data dir>/dashboard-token",
        );
    }
    if let Some(resp) = bad_run_id(id) {
        return resp;
    }
    let result = match &state.source {
        Source::Engine(engine) if action == "cancel" => engine.cancel(id).await,
        Source::Engine(engine) => engine.retry(id).await,
        Source::Bucket(bucket) => {
            let action = if action == "cancel" {
                linedee::control::Action::Cancel
            } else {
                linedee::control::Action::Retry
            };
            match bucket.control(id, action).await {
                // The serving engine refused, saying why.
                Err(Error::Internal(reason)) => {
                    return respond::error(StatusCode::CONFLICT, reason);
                }
                other => other,
            }
        }
    };
    match result {
        Ok(()) => respond::json(StatusCode::OK, &json!({ "ok": true, "run_id": id })),
        Err(e) => engine_error(&e),
    }
}

/// `GET /api/logs/{task_id}/{attempt}?offset=N`.
async fn log(state: &State, task_id: &str, attempt: &str, query: Option<&str>) -> Resp {
    if !logs::valid_task_id(task_id) {
        return respond::error(
            StatusCode::BAD_REQUEST,
            format!("`{task_id}` is not a task id; expected {{run_id}}.{{step}}.{{task}}"),
        );
    }
    let Some(attempt) = logs::parse_attempt(attempt) else {
        return respond::error(
            StatusCode::BAD_REQUEST,
            format!("`{attempt}` is not an attempt number; expected 1 or more"),
        );
    };
    let mut offset = 0;
    match respond::query_pairs(query) {
        Ok(pairs) => {
            for (k, v) in pairs {
                match (k.as_str(), v.parse::<u64>()) {
                    ("offset", Ok(n)) => offset = n,
                    ("offset", Err(_)) => {
                        return respond::error(
                            StatusCode::BAD_REQUEST,
                            format!("offset: `{v}` is not a byte offset (0 or more)"),
                        );
                    }
                    (other, _) => {
                        return respond::error(
                            StatusCode::BAD_REQUEST,
                            format!("unknown query parameter `{other}`; expected offset"),
                        );
                    }
                }
            }
        }
        Err(e) => return respond::error(StatusCode::BAD_REQUEST, e),
    }
    let read = match &state.source {
        Source::Engine(engine) => {
            // A file read: on the blocking pool, not a runtime thread.
            let path = engine.log_path(task_id, attempt);
            match tokio::task::spawn_blocking(move || logs::read(&path, offset))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
            {
                // No local file: the attempt printed nothing (yet), its output is still in
                // memory (its first second, up to 64 KiB), or its file is gone. Once it ended,
                // its stored log has what it printed.
                Ok(None) => stored_log(engine, task_id, attempt, offset).await,
                read => read,
            }
        }
        Source::Bucket(bucket) => bucket
            .log(task_id, attempt, offset)
            .await
            .map_err(|e| std::io::Error::other(e.to_string())),
    };
    match read {
        Ok(Some(slice)) => respond::json(StatusCode::OK, &json!(slice)),
        Ok(None) => respond::error(
            StatusCode::NOT_FOUND,
            format!("no log for attempt {attempt} of task `{task_id}`"),
        ),
        Err(e) => {
            tracing::warn!(error = %e, task_id, attempt, "dashboard: reading a log failed");
            respond::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the log of attempt {attempt} of task `{task_id}` failed"),
            )
        }
    }
}

/// An attempt's log as the engine stored it in its bucket when the attempt ended, for an
/// attempt with no local file (it printed nothing, or ended before its output left memory:
/// at most 64 KiB, one slice). Read only when it fits one slice: a stored log is read whole,
/// and a large one whose file is gone stays unserved, as before.
async fn stored_log(
    engine: &crate::Engine,
    task_id: &str,
    attempt: u32,
    offset: u64,
) -> std::io::Result<Option<logs::Slice>> {
    let (store, bucket) = (engine.store(), engine.bucket());
    let key = linedee::status::log_key(task_id, attempt);
    match store.head_object(bucket, &key).await {
        Ok(Some(meta)) if meta.size <= logs::CHUNK => {}
        Ok(_) => return Ok(None),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    }
    match store.get_object(bucket, &key).await {
        Ok(stored) => Ok(stored.map(|(_, body)| logs::slice(&body, offset))),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

/// The engine's message, with the status that fits.
pub(super) fn engine_error(e: &Error) -> Resp {
    let status = match e {
        Error::Run(RunError::NotFound(_)) => StatusCode::NOT_FOUND,
        Error::Run(
            RunError::Finished { .. }
            | RunError::NotRetryable { .. }
            | RunError::InvalidWorkflow { .. },
        ) => StatusCode::CONFLICT,
        _ => {
            tracing::error!(error = %e, "dashboard: engine request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    respond::error(status, e)
}
