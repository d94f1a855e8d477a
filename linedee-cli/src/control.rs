//! `linedee cancel ID` and `linedee retry ID`: through the local engine's dashboard API
//! (`POST {LD_DASHBOARD_URL}/api/runs/{id}/cancel|retry`, bearer token from
//! `<dir>/dashboard-token`) when one is configured; otherwise through the bucket, to the
//! engine that serves it (`linedee serve`: a request object under `ld/control/`, answered
//! beside it).

use std::path::Path;

use anyhow::Context;
use std::time::{Duration, Instant};

use crate::env::{Config, DASHBOARD_URL_VAR};
use crate::exit;
use crate::local::TOKEN_FILE;

/// `linedee cancel ID`.
pub(crate) async fn cancel(config: &Config, dir: &Path, run_id: &str) -> anyhow::Result<u8> {
    post(config, dir, run_id, "cancel").await?;
    // The engine stops the processes, then writes the status document: wait for it.
    let client = config.client()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = crate::runs::fetch(&client, run_id).await?;
        if status.status.is_finished() {
            println!("run {run_id} {}", status.status);
            return Ok(exit::OK);
        }
        if Instant::now() >= deadline {
            println!(
                "run {run_id}: cancel requested; it is still {}",
                status.status
            );
            return Ok(exit::OK);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `linedee retry ID`.
pub(crate) async fn retry(config: &Config, dir: &Path, run_id: &str) -> anyhow::Result<u8> {
    post(config, dir, run_id, "retry").await?;
    println!("run {run_id} redriven from its first unfinished step");
    println!("follow it with: linedee run {run_id} --watch");
    Ok(exit::OK)
}

async fn post(config: &Config, dir: &Path, run_id: &str, action: &str) -> anyhow::Result<()> {
    if !linedee::metadata::is_valid_run_id(run_id) {
        return Err(exit::bad_input(format!(
            "invalid run id {run_id:?}: expected 1 to 64 characters of [0-9A-Za-z_-]"
        )));
    }
    let Some(base) = config.get(DASHBOARD_URL_VAR) else {
        // No local engine: ask the engine serving the bucket (`linedee serve`).
        return through_bucket(config, run_id, action).await;
    };
    let token_path = dir.join(TOKEN_FILE);
    let token = match std::env::var("LINEDEE_DASHBOARD_TOKEN") {
        Ok(t) if !t.is_empty() => t,
        _ => std::fs::read_to_string(&token_path)
            .map_err(|e| {
                exit::bad_input(format!(
                    "cannot read the dashboard token {}: {e}; pass --dir to the directory of the running `linedee local`",
                    token_path.display()
                ))
            })?
            .trim()
            .to_owned(),
    };
    let url = format!("{}/api/runs/{run_id}/{action}", base.trim_end_matches('/'));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let response = http
        .post(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| {
            exit::unreachable(format!(
                "cannot reach the local dashboard at {base} ({}); is `linedee local` running?",
                root_cause(&e)
            ))
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    let reason = error_text(&body).unwrap_or_else(|| status.to_string());
    Err(match status.as_u16() {
        401 | 403 => exit::unreachable(format!(
            "the dashboard at {base} refused the token from {} ({reason}); is that dir the one of the running `linedee local`?",
            token_path.display()
        )),
        404 => exit::not_found(format!(
            "no run `{run_id}` on the local engine at {base} ({reason}); list the runs with `linedee runs`"
        )),
        400 | 409 | 422 => exit::bad_input(format!("cannot {action} run {run_id}: {reason}")),
        _ => anyhow::anyhow!("the dashboard answered {status} to {action} run {run_id}: {reason}"),
    })
}

/// How long a served bucket's engine has to answer a control request.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// Cancel or retry through the bucket (protocol §10): writes the request, waits for the
/// engine's answer.
async fn through_bucket(config: &Config, run_id: &str, action: &str) -> anyhow::Result<()> {
    use linedee::control::{Action, Answer, Request, answer_key, request_key};
    let client = config.client().with_context(|| {
        format!(
            "`{action}` needs a local engine ({DASHBOARD_URL_VAR}, from `linedee local`'s dir: pass --dir) or a bucket served by `linedee serve` (the LD_* variables)"
        )
    })?;
    let request = Request {
        action: if action == "cancel" {
            Action::Cancel
        } else {
            Action::Retry
        },
    };
    let request_id = linedee::metadata::new_run_id();
    client
        .put(
            request_key(run_id, &request_id),
            serde_json::to_vec(&request)?,
        )
        .content_type("application/json")
        .send()
        .await
        .with_context(|| format!("cannot write the {action} request to the bucket"))?;
    let deadline = Instant::now() + ANSWER_WITHIN;
    let key = answer_key(run_id, &request_id);
    loop {
        match client.get(&key).await {
            Ok(object) => {
                let body = object.bytes().await?;
                let answer: Answer = serde_json::from_slice(&body)
                    .map_err(|e| anyhow::anyhow!("the engine's answer {key} is not valid: {e}"))?;
                if answer.ok {
                    return Ok(());
                }
                let reason = answer.error.unwrap_or_else(|| "refused".to_owned());
                return Err(if reason.starts_with("no run") {
                    exit::not_found(reason)
                } else {
                    exit::bad_input(format!("cannot {action} run {run_id}: {reason}"))
                });
            }
            Err(linedee::Error::NotFound { .. }) => {}
            Err(e) => return Err(anyhow::Error::new(e).context("cannot read the engine's answer")),
        }
        if Instant::now() >= deadline {
            return Err(exit::unreachable(format!(
                "no engine answered the {action} request for run {run_id} within {}s: \
                 this needs `linedee serve` running for the bucket (or `linedee local`, with \
                 {DASHBOARD_URL_VAR} set), and the bucket's notification must include ld/control/",
                ANSWER_WITHIN.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client for the local engine's dashboard API.
pub(crate) fn dashboard_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// `GET {base}{path}` on the local engine's dashboard: the body of a 2xx answer, or an error
/// naming the request and the reason (an engine that cannot be reached exits as unreachable).
pub(crate) async fn dashboard_get(
    http: &reqwest::Client,
    base: &str,
    path: &str,
) -> anyhow::Result<String> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let response = http.get(&url).send().await.map_err(|e| {
        exit::unreachable(format!(
            "cannot reach the local dashboard at {base} ({}); is `linedee local` running?",
            root_cause(&e)
        ))
    })?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let reason = error_text(&body).unwrap_or_else(|| status.to_string());
        let what = path.split('?').next().unwrap_or(path);
        anyhow::bail!("the dashboard at {base} answered {status} to GET {what}: {reason}");
    }
    Ok(body)
}

/// The error message of a JSON error body (`{"error": "..."}` or `{"message": "..."}`), or a
/// short plain-text body.
pub(crate) fn error_text(body: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        for field in ["error", "message", "detail"] {
            match v.get(field) {
                Some(serde_json::Value::String(s)) => return Some(s.clone()),
                Some(serde_json::Value::Object(o)) => {
                    if let Some(serde_json::Value::String(s)) = o.get("message") {
                        return Some(s.clone());
                    }
                }
                _ => {}
            }
        }
    }
    let t = body.trim();
    (!t.is_empty() && t.len() <= 300 && !t.starts_with('<')).then(|| t.to_owned())
}

pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_their_message() {
        assert_eq!(
            error_text(r#"{"error":"run `x` already finished (succeeded)"}"#).as_deref(),
            Some("run `x` already finished (succeeded)")
        );
        assert_eq!(
            error_text(r#"{"error":{"message":"nope"}}"#).as_deref(),
            Some("nope")
        );
        assert_eq!(error_text("plain reason").as_deref(), Some("plain reason"));
        assert_eq!(error_text("<html>…</html>"), None);
    }
}
