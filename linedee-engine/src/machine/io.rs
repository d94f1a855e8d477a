//! What goes into the machine ([`Event`]) and what comes out ([`Effect`]).

use linedee::status::RunState;

use super::record::Millis;

/// Something that happened to a run. Duplicated, late and out-of-order events are normal: the
/// machine ignores an event that no longer applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The engine (re)started with this run unfinished: processes of attempts that were in
    /// flight are gone or stale, and the run carries on from its record.
    Restarted,
    /// The runner granted a slot to `attempt` and started its process.
    AttemptStarted {
        task_id: String,
        attempt: u32,
        /// The runner's reference to the process (stored, so a restart can stop it).
        runner: String,
    },
    /// The runner could not start `attempt`'s process.
    SpawnFailed {
        task_id: String,
        attempt: u32,
        reason: String,
    },
    /// `attempt`'s process exited (`code` is `None` when a signal killed it). `detail` is what
    /// the runner could tell of why: the task's diagnostic line, the end of its log.
    Exited {
        task_id: String,
        attempt: u32,
        code: Option<i32>,
        detail: Option<String>,
    },
    /// `out/{task_id}` exists with a matching `ld_task_id`; `state` is its `ld_state`.
    OutputLanded {
        task_id: String,
        state: Option<String>,
    },
    /// The answer to [`Effect::CheckOutput`]: there is no such output.
    OutputMissing { task_id: String },
    /// A timer armed by [`Effect::ArmTimer`] came due.
    TimerFired(Timer),
    /// Stop the run: it ends `cancelled`.
    CancelRequested,
    /// Run a failed or cancelled run again from its first unfinished step.
    RedriveRequested,
    /// The engine is shutting down: start nothing new (attempts in flight go on).
    Halt,
    /// The shutdown grace period is over: attempts still undecided are interrupted and their
    /// processes stopped; their tasks start again when the engine restarts.
    Interrupt,
    /// The driver cannot carry the run on (its messages keep failing): it ends `failed` with
    /// `reason`, its processes stopped. A finished run is left as it is.
    Abandon { reason: String },
}

/// A timer of a run (serialisable: a cloud driver keeps armed timers in the run's state).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(tag = "timer", rename_all = "snake_case")]
pub(crate) enum Timer {
    /// `attempt` of a task must have its output by now.
    Timeout { task_id: String, attempt: u32 },
    /// The backoff after failed attempt `after` is over.
    Backoff { task_id: String, after: u32 },
    /// The `wait_for` pause after the task succeeded is over.
    Pause { task_id: String },
}

impl Timer {
    /// The task the timer belongs to.
    pub(crate) fn task_id(&self) -> &str {
        match self {
            Timer::Timeout { task_id, .. }
            | Timer::Backoff { task_id, .. }
            | Timer::Pause { task_id } => task_id,
        }
    }
}

/// Why the machine stops an attempt's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// It did not produce its output in time.
    TimedOut,
    /// The run was cancelled, or a sibling in its group failed for good.
    Cancelled,
    /// The engine is shutting down.
    Interrupted,
    /// It is no longer wanted (a start granted after its task was decided).
    Unwanted,
}

/// Something the driver must carry out. Effects are produced after the record was updated, so
/// a driver that saves the record before carrying them out never loses one it intended; every
/// effect is safe to carry out twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Ask whether `out/{task_id}` exists; answer with [`Event::OutputLanded`] or
    /// [`Event::OutputMissing`].
    CheckOutput { task_id: String },
    /// Start `attempt` of a task when a slot is free; answer with [`Event::AttemptStarted`] or
    /// [`Event::SpawnFailed`], and later [`Event::Exited`].
    StartAttempt { task_id: String, attempt: u32 },
    /// Stop an attempt's process (as a group: SIGTERM, then SIGKILL), or its start when it has
    /// not started (`runner` is `None`); its exit comes back as [`Event::Exited`].
    StopAttempt {
        task_id: String,
        attempt: u32,
        runner: Option<String>,
        reason: StopReason,
    },
    /// Stop a process that an engine before this one started, if it still runs that attempt.
    /// No event comes back.
    StopStale {
        task_id: String,
        attempt: u32,
        runner: String,
    },
    /// Deliver [`Event::TimerFired`] at `at`.
    ArmTimer { at: Millis, timer: Timer },
    /// Store the attempt's log as `ld/logs/{task_id}/{attempt}.log`.
    StoreLog { task_id: String, attempt: u32 },
    /// Rewrite the status document `ld/runs/{run_id}.json` from the record.
    Publish,
    /// The run reached its final state.
    Finished(RunState),
}

/// A control request the run's state does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Cancel of a run that already finished.
    Finished(RunState),
    /// Redrive of a run that is not failed or cancelled.
    NotRetryable(RunState),
    /// Redrive of a run whose workflow was invalid: there is nothing to run.
    InvalidWorkflow(String),
}
