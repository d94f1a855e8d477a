//! The run status document, `ld/runs/{run_id}.json` (protocol §2.3).
//!
//! The engine rewrites it on every transition; the SDK reads it to follow a run with S3 alone.
//! Readers ignore fields they do not know. The structs are plain data, constructed by the
//! engine that writes the document.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Key of a run's status document.
pub fn status_key(run_id: &str) -> String {
    format!("ld/runs/{run_id}.json")
}

/// Key of one attempt's log.
pub fn log_key(task_id: &str, attempt: u32) -> String {
    format!("ld/logs/{task_id}/{attempt}.log")
}

/// The state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RunState {
    /// Accepted, waiting for a slot.
    Queued,
    /// Tasks are running.
    Running,
    /// Every step succeeded.
    Succeeded,
    /// A task failed for good, or the workflow was invalid.
    Failed,
    /// Stopped on request.
    Cancelled,
}

impl RunState {
    /// Is this a final state?
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }

    /// The lowercase name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for RunState {
    type Err = crate::Error;

    /// Parses the wire name; an unknown name is an error, never a guess.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "queued" => RunState::Queued,
            "running" => RunState::Running,
            "succeeded" => RunState::Succeeded,
            "failed" => RunState::Failed,
            "cancelled" => RunState::Cancelled,
            other => {
                return Err(crate::Error::UnknownState {
                    what: "run",
                    value: other.to_owned(),
                    expected: "queued, running, succeeded, failed, cancelled",
                });
            }
        })
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TaskState {
    /// Not started yet.
    Pending,
    /// An attempt is in flight (or waiting to be retried).
    Running,
    /// Its output landed (or, with `no_output`, its process started).
    Succeeded,
    /// Every attempt failed.
    Failed,
    /// Stopped because the run was cancelled or a sibling failed.
    Cancelled,
}

impl TaskState {
    /// The lowercase name, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for TaskState {
    type Err = crate::Error;

    /// Parses the wire name; an unknown name is an error, never a guess.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "pending" => TaskState::Pending,
            "running" => TaskState::Running,
            "succeeded" => TaskState::Succeeded,
            "failed" => TaskState::Failed,
            "cancelled" => TaskState::Cancelled,
            other => {
                return Err(crate::Error::UnknownState {
                    what: "task",
                    value: other.to_owned(),
                    expected: "pending, running, succeeded, failed, cancelled",
                });
            }
        })
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run was triggered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TriggerKind {
    /// The object's body is the workflow (`ld_run: true`).
    LdRun,
    /// The workflow is in the `ld_code` metadata; the object is the input.
    LdCode,
}

/// The object that started a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// ETag, quotes included.
    #[serde(default)]
    pub etag: Option<String>,
    /// `ld_run` or `ld_code`.
    pub kind: TriggerKind,
}

/// The status document of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    /// The run id.
    pub run_id: String,
    /// The workflow's title.
    #[serde(default)]
    pub title: Option<String>,
    /// What started it.
    pub trigger: Trigger,
    /// Where it stands.
    pub status: RunState,
    /// When the trigger was accepted.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the first task started.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it reached a final state.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Why it failed (for an invalid workflow: every problem, with its JSON path).
    #[serde(default)]
    pub error: Option<String>,
    /// The steps, in order.
    #[serde(default)]
    pub steps: Vec<StepStatus>,
}

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStatus {
    /// The task's or group's display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether the step is a parallel group.
    #[serde(default)]
    pub parallel: bool,
    /// Its tasks.
    #[serde(default)]
    pub tasks: Vec<TaskStatus>,
}

/// One task of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// `{run_id}.{step}.{task}`.
    pub task_id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The `cmd`.
    pub cmd: String,
    /// Dyno size.
    #[serde(default)]
    pub machine: Option<String>,
    /// Where it stands.
    pub status: TaskState,
    /// Attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the first attempt started.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it reached a final state.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Exit code of the last attempt's process, when it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The `ld_state` read back from the output.
    #[serde(default)]
    pub state: Option<serde_json::Value>,
    /// Why the last attempt failed.
    #[serde(default)]
    pub error: Option<String>,
}

impl RunStatus {
    /// Every task, in order.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskStatus> {
        self.steps.iter().flat_map(|s| s.tasks.iter())
    }

    /// The task with this id.
    pub fn task(&self, task_id: &str) -> Option<&TaskStatus> {
        self.tasks().find(|t| t.task_id == task_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_document_parses_and_ignores_unknown_fields() {
        let doc = r#"{"run_id":"R","title":"t","trigger":{"bucket":"b","key":"in/x","etag":"\"e\"","kind":"ld_code"},
            "status":"running","created_at":"2026-11-27T10:00:00Z","future":1,
            "steps":[{"name":"s","parallel":false,"tasks":[{"task_id":"R.0.0","cmd":"c","status":"succeeded",
            "attempts":2,"exit_code":0,"state":{"n":1},"extra":true}]}]}"#;
        let s: RunStatus = serde_json::from_str(doc).unwrap();
        assert_eq!(s.status, RunState::Running);
        assert!(!s.status.is_finished());
        assert_eq!(s.trigger.kind, TriggerKind::LdCode);
        let t = s.task("R.0.0").unwrap();
        assert_eq!((t.attempts, t.status), (2, TaskState::Succeeded));
        assert_eq!(t.state.as_ref().unwrap()["n"], 1);
        assert_eq!(status_key("R"), "ld/runs/R.json");
        assert_eq!(log_key("R.0.0", 2), "ld/logs/R.0.0/2.log");
    }

    #[test]
    fn states_round_trip_through_their_names_and_unknown_names_are_errors() {
        for s in [
            RunState::Queued,
            RunState::Running,
            RunState::Succeeded,
            RunState::Failed,
            RunState::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<RunState>().unwrap(), s);
        }
        for s in [
            TaskState::Pending,
            TaskState::Running,
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::Cancelled,
        ] {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), s);
        }
        let e = "done".parse::<RunState>().unwrap_err().to_string();
        assert!(
            e.contains("unknown run state `done`") && e.contains("queued, running"),
            "{e}"
        );
        let e = "Failed".parse::<TaskState>().unwrap_err().to_string();
        assert!(e.contains("unknown task state `Failed`"), "{e}");
    }
}
