//! The state of one run, as the machine keeps it: serialisable, versioned JSON that a journal
//! stores as it is (a row of the local journal, an S3 object in the cloud).

use linedee::Workflow;
use linedee::status::{RunState, RunStatus, StepStatus, TaskState, TaskStatus, Trigger};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The version of [`RunRecord`]'s JSON that this build writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// Milliseconds since the Unix epoch: the machine's only notion of time, always an input.
pub(crate) type Millis = i64;

/// One run: its trigger, workflow, and every task's progress and attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunRecord {
    /// [`FORMAT_VERSION`] when written.
    pub(crate) version: u32,
    pub(crate) run_id: String,
    pub(crate) trigger: Trigger,
    /// `None` when the trigger's workflow was invalid (the run failed at creation).
    pub(crate) workflow: Option<Workflow>,
    pub(crate) status: RunState,
    pub(crate) error: Option<String>,
    pub(crate) created_ms: Millis,
    pub(crate) started_ms: Option<Millis>,
    pub(crate) finished_ms: Option<Millis>,
    /// Every task, in step and index order.
    pub(crate) tasks: Vec<TaskRecord>,
    /// The final state decided while processes are still being stopped; the run takes it
    /// when the last of them has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ending: Option<Ending>,
    /// The record may be behind what happened: the engine restarted, and a power loss takes
    /// back a journal's last commits (or the run was created again from a trigger delivered
    /// again). Each unfinished task then checks for its output before it runs
    /// ([`TaskRecord::check_first`]), and until one of its attempts starts or the run ends the
    /// status document is not rewritten: a run whose document showed it succeeded finds
    /// every output again and ends succeeded, never showing less.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) recovered: bool,
    /// The engine is shutting down: nothing new is started (not stored: a restart clears it).
    #[serde(skip)]
    pub(crate) halted: bool,
}

/// A final state waiting for stops to complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Ending {
    pub(crate) status: RunState,
    pub(crate) error: Option<String>,
}

/// One task of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TaskRecord {
    pub(crate) task_id: String,
    pub(crate) step: usize,
    pub(crate) idx: usize,
    pub(crate) status: TaskState,
    pub(crate) started_ms: Option<Millis>,
    pub(crate) finished_ms: Option<Millis>,
    pub(crate) exit_code: Option<i32>,
    /// The `ld_state` read back from the output (JSON text as written).
    pub(crate) state: Option<String>,
    pub(crate) error: Option<String>,
    /// Failed attempts since the run was created or last redriven (interruptions do not count).
    #[serde(default)]
    pub(crate) failures: u32,
    /// The record may be behind on this task ([`RunRecord::recovered`]): its output is checked
    /// for before any attempt of it runs.
    #[serde(default, skip_serializing_if = "is_false")]
    pub(crate) check_first: bool,
    /// What the task waits for, when it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) wait: Option<Wait>,
    pub(crate) attempts: Vec<AttemptRecord>,
}

/// What a task is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "for", rename_all = "snake_case")]
pub(crate) enum Wait {
    /// Whether its output already landed (asked before a resumed or redriven task runs again).
    /// `failed`: an attempt whose failure counts only if the output has not landed (a timeout
    /// whose stop a restart found unfinished, in a record that may be behind).
    Check {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failed: Option<u32>,
    },
    /// A runner slot for `attempt`, asked for and not yet granted.
    Slot { attempt: u32 },
    /// The backoff after failed attempt `after`, until `until`.
    Backoff { after: u32, until: Millis },
    /// The `wait_for` pause after success, until `until`.
    Pause { until: Millis },
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AttemptRecord {
    /// 1-based, continuing across redrives and restarts.
    pub(crate) n: u32,
    /// The runner's reference to the process (a process group, a dyno), once started.
    pub(crate) runner: Option<String>,
    /// When it got its slot and its process was started (or failed to start).
    pub(crate) started_ms: Option<Millis>,
    pub(crate) finished_ms: Option<Millis>,
    /// How it ended; `None` while undecided.
    pub(crate) outcome: Option<Outcome>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) error: Option<String>,
    /// Its process has exited (or is known to be gone).
    #[serde(default)]
    pub(crate) exited: bool,
    /// The machine asked the runner to stop it.
    #[serde(default)]
    pub(crate) stopping: bool,
}

impl AttemptRecord {
    /// Started, and its process not known to be gone.
    pub(crate) fn live(&self) -> bool {
        self.started_ms.is_some() && !self.exited
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    /// The engine stopped while it ran; the task starts again on resume.
    Interrupted,
}

impl Outcome {
    /// The stored name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
            Outcome::Interrupted => "interrupted",
        }
    }
}

impl RunRecord {
    /// Reads a stored record; a record of another format version is an error that says so.
    pub(crate) fn from_json(json: &str) -> Result<Self, String> {
        let probe: serde_json::Value =
            serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        match probe.get("version").and_then(serde_json::Value::as_u64) {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(format!(
                    "format version {v}; this build reads version {FORMAT_VERSION}"
                ));
            }
            None => return Err("no format `version` field".to_owned()),
        }
        serde_json::from_value(probe).map_err(|e| e.to_string())
    }

    /// The stored form.
    pub(crate) fn to_json(&self) -> String {
        // Plain strings, integers, enums and a workflow: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The task with this id.
    pub(crate) fn task(&self, task_id: &str) -> Option<&TaskRecord> {
        self.tasks.iter().find(|t| t.task_id == task_id)
    }

    /// The workflow's definition of a task.
    pub(crate) fn def(&self, step: usize, idx: usize) -> Option<&linedee::Task> {
        self.workflow.as_ref()?.run.get(step)?.tasks().get(idx)
    }

    /// Whether any attempt's process is still being stopped by the machine.
    pub(crate) fn stopping(&self) -> bool {
        self.tasks
            .iter()
            .flat_map(|t| &t.attempts)
            .any(|a| a.stopping && a.live())
    }

    /// Whether the run succeeded and every task proved it with an output: the outcome can be
    /// found again from the outputs alone (a `no_output` task's proof is its start, which only
    /// the record knows).
    pub(crate) fn succeeded_by_outputs(&self) -> bool {
        self.status == RunState::Succeeded
            && self
                .tasks
                .iter()
                .all(|t| self.def(t.step, t.idx).is_some_and(|d| !d.no_output))
    }

    /// Whether some attempt's process may still run (for the driver: keep routing its exit).
    pub(crate) fn has_live_processes(&self) -> bool {
        self.tasks
            .iter()
            .flat_map(|t| &t.attempts)
            .any(AttemptRecord::live)
    }

    /// The public status document, `ld/runs/{run_id}.json` (protocol §5).
    pub(crate) fn status_document(&self) -> RunStatus {
        let mut steps: Vec<StepStatus> = self
            .workflow
            .iter()
            .flat_map(|wf| &wf.run)
            .map(|s| StepStatus {
                name: s.name().map(str::to_owned),
                parallel: matches!(s, linedee::Step::Group(_)),
                tasks: Vec::new(),
            })
            .collect();
        for t in &self.tasks {
            let (Some(def), Some(step)) = (self.def(t.step, t.idx), steps.get_mut(t.step)) else {
                continue;
            };
            step.tasks.push(TaskStatus {
                task_id: t.task_id.clone(),
                name: def.name.clone(),
                cmd: def.cmd.clone(),
                machine: Some(def.machine.as_str().to_owned()),
                status: t.status,
                attempts: t.started_attempts(),
                started_at: at(t.started_ms),
                finished_at: at(t.finished_ms),
                exit_code: t.exit_code,
                state: t.state.as_ref().map(|s| {
                    serde_json::from_str(s).unwrap_or_else(|_| serde_json::Value::String(s.clone()))
                }),
                error: t.error.clone(),
            });
        }
        RunStatus {
            run_id: self.run_id.clone(),
            title: self.workflow.as_ref().and_then(|w| w.title.clone()),
            trigger: self.trigger.clone(),
            status: self.status,
            created_at: at(Some(self.created_ms)).unwrap_or(OffsetDateTime::UNIX_EPOCH),
            started_at: at(self.started_ms),
            finished_at: at(self.finished_ms),
            error: self.error.clone(),
            steps,
        }
    }
}

impl TaskRecord {
    /// Attempts that got a slot (the count the status document shows).
    pub(crate) fn started_attempts(&self) -> u32 {
        u32::try_from(
            self.attempts
                .iter()
                .filter(|a| a.started_ms.is_some())
                .count(),
        )
        .unwrap_or(u32::MAX)
    }

    /// The latest attempt.
    pub(crate) fn last(&self) -> Option<&AttemptRecord> {
        self.attempts.last()
    }

    pub(crate) fn attempt_mut(&mut self, n: u32) -> Option<&mut AttemptRecord> {
        self.attempts.iter_mut().find(|a| a.n == n)
    }

    /// Whether the task is done for this drive of the run.
    pub(crate) fn is_final(&self) -> bool {
        matches!(
            self.status,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A time for the status document.
pub(crate) fn at(ms: Option<Millis>) -> Option<OffsetDateTime> {
    ms.and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
}

/// Now, for drivers (the machine itself never reads the clock).
pub(crate) fn now_ms() -> Millis {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}
