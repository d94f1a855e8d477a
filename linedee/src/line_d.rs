//! The `line_D` environment variable every task process receives (protocol §2.4).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The name of the variable.
pub const VAR: &str = "line_D";

/// The JSON object in `line_D`. Only `task_id` is required; unknown fields are ignored, and it
/// never holds a secret.
///
/// ```
/// let raw = r#"{"task_id":"01JDX3Q7ZK6Q.1.0","run_id":"01JDX3Q7ZK6Q","attempt":1,"new":"ignored"}"#;
/// let env: linedee::LineD = serde_json::from_str(raw).unwrap();
/// assert_eq!(env.task_id, "01JDX3Q7ZK6Q.1.0");
/// assert_eq!(env.output_key(), "out/01JDX3Q7ZK6Q.1.0");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LineD {
    /// `{run_id}.{step}.{task}`: the same for every attempt.
    pub task_id: String,
    /// The run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// 1 for the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The workflow's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_title: Option<String>,
    /// The task's display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_name: Option<String>,
    /// The task's `cmd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// The dyno size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Seconds the engine waits for the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// The task's options (also set as environment variables).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    /// The bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The key of the object that triggered the run (the input, for `ld_code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_key: Option<String>,
    /// The trigger object's ETag, quotes included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_etag: Option<String>,
    /// Where the output goes; `out/{task_id}` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
}

impl LineD {
    /// A `line_D` for `task_id` with nothing else set.
    pub fn new(task_id: impl Into<String>) -> Self {
        LineD {
            task_id: task_id.into(),
            ..Default::default()
        }
    }

    /// The output key: `output_key`, or `out/{task_id}`.
    pub fn output_key(&self) -> String {
        self.output_key
            .clone()
            .unwrap_or_else(|| output_key(&self.task_id))
    }

    /// The compact JSON form, as set in the environment.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The output key of a task: `out/{task_id}`.
pub fn output_key(task_id: &str) -> String {
    format!("out/{task_id}")
}

/// A task id: `{run_id}.{step}.{task}` with 0-based indices.
pub fn task_id(run_id: &str, step: usize, task: usize) -> String {
    format!("{run_id}.{step}.{task}")
}
