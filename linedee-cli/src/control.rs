//! `linedee cancel ID` and `linedee retry ID`: through the local engine's dashboard API
//! (`POST {LD_DASHBOARD_URL}/api/runs/{id}/cancel|retry`, bearer token from
//! `<dir>/dashboard-token`). A hosted line^d bucket has no such API.

use std::path::Path;
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
        return Err(exit::bad_input(format!(
            "`{action}` works only against a local engine: {DASHBOARD_URL_VAR} is not set and \
             {}/env does not exist; start `linedee local`, or pass --dir to its directory",
            dir.display()
        )));
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
