//! `GET /api/overview?window=` and the runs list's filters that the overview links to.

use http::StatusCode;

use super::respond::{self, Resp};
use super::routes::{State, engine_error};
use crate::{RunFilter, Window};

/// Longest title or trigger-key prefix searched for.
const MAX_PREFIX: usize = 1024;

/// `GET /api/overview?window=1h|24h|7d` (default `24h`): an [`Overview`](crate::Overview).
pub(super) async fn overview(state: &State, query: Option<&str>) -> Resp {
    let pairs = match respond::query_pairs(query) {
        Ok(p) => p,
        Err(e) => return respond::error(StatusCode::BAD_REQUEST, e),
    };
    let mut window = Window::Day;
    for (k, v) in &pairs {
        match k.as_str() {
            "window" => match v.parse() {
                Ok(w) => window = w,
                Err(e) => return respond::error(StatusCode::BAD_REQUEST, format!("window: {e}")),
            },
            other => {
                return respond::error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown query parameter `{other}`; expected window"),
                );
            }
        }
    }
    let engine = match &state.source {
        super::routes::Source::Engine(engine) => engine,
        super::routes::Source::Bucket(_) => {
            return respond::error(
                StatusCode::NOT_FOUND,
                "the overview needs the local engine's journal; this dashboard reads the bucket's status documents: see the runs list",
            );
        }
    };
    match engine.overview(window).await {
        Ok(o) => match serde_json::to_value(&o) {
            Ok(v) => respond::json(StatusCode::OK, &v),
            Err(e) => respond::error(StatusCode::INTERNAL_SERVER_ERROR, e),
        },
        Err(e) => engine_error(&e),
    }
}

/// Applies the runs list's `window`, `q` or `cmd` parameter to `filter` (empty values are
/// ignored, as a form sends them).
pub(super) fn refine(filter: &mut RunFilter, key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    match key {
        "window" => {
            let w: Window = value.parse().map_err(|e| format!("window: {e}"))?;
            filter.since_ms = Some(crate::machine::now_ms() - w.span_ms());
        }
        "q" if value.len() > MAX_PREFIX => {
            return Err(format!(
                "q: the prefix is {} bytes long; at most {MAX_PREFIX}",
                value.len()
            ));
        }
        "q" => filter.prefix = Some(value.to_owned()),
        "cmd" => filter.cmd = Some(value.to_owned()),
        other => return Err(format!("unknown filter `{other}`")),
    }
    Ok(())
}
