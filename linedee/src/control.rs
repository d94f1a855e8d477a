//! Cancel and retry through the bucket, for runs served by `linedee serve` (protocol §10).
//!
//! A request is a small JSON object written to `ld/control/{run_id}/{request_id}.json`; the
//! engine answers it in `ld/control/{run_id}/{request_id}.answer.json`. Only the bucket's
//! credentials are needed, so `linedee cancel` works with the `LD_*` variables alone.
//!
//! ```
//! use linedee::control::{Action, Request, answer_key, request_key};
//!
//! let req = Request { action: Action::Cancel };
//! assert_eq!(serde_json::to_string(&req).unwrap(), r#"{"action":"cancel"}"#);
//! assert_eq!(request_key("R1", "q1"), "ld/control/R1/q1.json");
//! assert_eq!(answer_key("R1", "q1"), "ld/control/R1/q1.answer.json");
//! ```

use serde::{Deserialize, Serialize};

/// Where control requests and their answers live.
pub const PREFIX: &str = "ld/control/";

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Stop the run: it ends `cancelled`.
    Cancel,
    /// Run a failed or cancelled run again from its first unfinished step.
    Retry,
}

/// A control request's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// What to do.
    pub action: Action,
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, when it was refused (the run finished, is not retryable, does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The key of a request.
pub fn request_key(run_id: &str, request_id: &str) -> String {
    format!("{PREFIX}{run_id}/{request_id}.json")
}

/// The key of a request's answer.
pub fn answer_key(run_id: &str, request_id: &str) -> String {
    format!("{PREFIX}{run_id}/{request_id}.answer.json")
}

/// The run id and request id of a request's key; `None` for an answer or another key.
pub fn parse_request_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(PREFIX)?;
    let (run_id, file) = rest.split_once('/')?;
    let request_id = file.strip_suffix(".json")?;
    if request_id.ends_with(".answer") || request_id.is_empty() || request_id.contains('/') {
        return None;
    }
    crate::metadata::is_valid_run_id(run_id).then_some((run_id, request_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_keys_parse_and_answers_do_not() {
        assert_eq!(
            parse_request_key(&request_key("R1", "01J")),
            Some(("R1", "01J"))
        );
        assert_eq!(parse_request_key(&answer_key("R1", "01J")), None);
        assert_eq!(parse_request_key("ld/control/R1/"), None);
        assert_eq!(parse_request_key("ld/control/bad.id/x.json"), None);
        assert_eq!(parse_request_key("ld/runs/R1.json"), None);
    }
}
