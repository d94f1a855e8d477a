//! The dashboard served by `linedee local`: an overview of activity, a runs list and a run
//! page (timeline, tasks, logs with a live tail), over a small JSON API. `linedee dashboard`
//! serves the same app for any bucket ([`serve_bucket`], `bucket.rs`), from its status
//! documents.
//!
//! Layout:
//! - [`serve`]: the entry point; binds nothing itself, serves the caller's listener.
//! - `routes.rs`: the routes and their handlers; `respond.rs`: responses, security headers,
//!   query parsing, the token check; `logs.rs`: reading a slice of an attempt's log;
//!   `overview.rs`: the overview's route and the runs list's filters.
//! - `assets/`: `index.html`, `app.js`, `overview.js` (the overview page, its SVG chart),
//!   `style.css`, embedded with `include_str!`, so users need no front-end build.
//!
//! Routes:
//! - `GET /`, `/app.js`, `/overview.js`, `/style.css`: the app (hash routing: `#/` the
//!   overview, `#/runs` the runs list, `#/runs/{id}` a run).
//! - `GET /api/overview?window=1h|24h|7d`: an [`Overview`](crate::Overview) (`overview.rs`).
//! - `GET /api/runs?status=&before=&limit=&window=&q=&cmd=`: `{"runs": [RunSummary…],
//!   "next": cursor|null}`, newest first, keyset-paginated (`before` is the `next` of the
//!   previous page); `window`, `q` (title or trigger-key prefix) and `cmd` narrow it as
//!   [`RunFilter`](crate::RunFilter) says.
//! - `GET /api/runs/{id}`: `{"run": RunStatus, "attempts": [AttemptRow…], "now_ms": …}`.
//! - `GET /api/logs/{task_id}/{attempt}?offset=N`: up to 64 KiB of the attempt's log from
//!   byte `offset`: `{"text": …, "offset": N, "next_offset": M, "size": S}`.
//! - `POST /api/runs/{id}/cancel`, `POST /api/runs/{id}/retry`: need
//!   `Authorization: Bearer <token>`; `{"ok": true}` or `{"error": …}`.
//!
//! Everything else is read-only. Errors are JSON `{"error": "…"}` with a 4xx/5xx status.

mod bucket;
mod logs;
mod overview;
mod respond;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::{Engine, Error, Result};

/// How long shutdown waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves the dashboard for `engine` on `listener` until `shutdown` completes, then lets
/// requests in flight finish (up to 5 s).
///
/// `token` is required (`Authorization: Bearer <token>`) by the two writing routes, cancel
/// and retry; it never appears in a response. The dashboard is meant for loopback: a
/// listener on another address is served, with a warning that the dashboard is exposed.
///
/// ```no_run
/// # async fn demo(engine: linedee_engine::Engine) -> linedee_engine::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await
///     .map_err(linedee_engine::Error::Serve)?;
/// let token = engine.store().dashboard_token();
/// linedee_engine::dashboard::serve(engine, listener, token, async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await
/// # }
/// ```
pub async fn serve(
    engine: Engine,
    listener: TcpListener,
    token: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_source(routes::Source::Engine(engine), listener, token, shutdown).await
}

/// Serves the dashboard for any bucket (`linedee dashboard`): runs from their status
/// documents (`ld/runs/`), logs from `ld/logs/`, cancel and retry as control requests that
/// the engine serving the bucket answers (`linedee serve`). The overview, which needs the
/// local engine's journal, answers 404; `token` guards cancel and retry as in [`serve`].
///
/// ```no_run
/// # async fn demo() -> linedee_engine::Result<()> {
/// let client = linedee::Client::from_env().map_err(linedee_engine::Error::Bucket)?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await
///     .map_err(linedee_engine::Error::Serve)?;
/// linedee_engine::dashboard::serve_bucket(client, listener, "a token".into(), async {
///     let _ = tokio::signal::ctrl_c().await;
/// })
/// .await
/// # }
/// ```
pub async fn serve_bucket(
    client: linedee::Client,
    listener: TcpListener,
    token: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let source = routes::Source::Bucket(bucket::BucketSource { client });
    serve_source(source, listener, token, shutdown).await
}

/// A new random token for cancel and retry (48 alphanumeric characters).
pub fn new_token() -> String {
    crate::store::random_token(48)
}

async fn serve_source(
    source: routes::Source,
    listener: TcpListener,
    token: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr().map_err(Error::Serve)?;
    let loopback = addr.ip().is_loopback();
    if !loopback {
        tracing::warn!(
            %addr,
            "the dashboard listens on a non-loopback address: anyone who can reach it can read \
             every run and its logs"
        );
    }
    let state = Arc::new(routes::State {
        source,
        token,
        loopback,
    });
    crate::http::serve("dashboard", listener, DRAIN, shutdown, move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, std::convert::Infallible>(routes::handle(&state, req).await) }
    })
    .await;
    Ok(())
}
