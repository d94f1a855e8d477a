//! The runner: what starts and stops a task's process. [`LocalRunner`](crate::local_runner)
//! runs process groups on this machine; a cloud runner starts one-off dynos.

use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

/// Everything a runner needs to start one attempt of a task.
#[derive(Debug, Clone)]
pub(crate) struct AttemptSpec {
    pub(crate) task_id: String,
    pub(crate) attempt: u32,
    /// The workflow's `cmd`: a process type (with arguments) or a command line.
    pub(crate) cmd: String,
    /// Display name of the task, if it has one.
    pub(crate) name: Option<String>,
    /// Dyno size (Heroku's name); a process on this machine has no size.
    pub(crate) machine: String,
    /// Seconds the attempt has to land its output (a dyno's time to live).
    pub(crate) timeout: u64,
    /// The task's options, `name=value` pairs put in its environment.
    pub(crate) options: Vec<(String, String)>,
    /// The bucket the task writes its output to.
    pub(crate) bucket: String,
    /// The `line_D` JSON (protocol §6).
    pub(crate) line_d: String,
}

/// How an attempt's process ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exit {
    /// Exit code; `None` when a signal ended it.
    pub(crate) code: Option<i32>,
    /// What the runner can tell of why: the task's diagnostic line or the end of its log, and
    /// whether a missing command is a process type gone from the Procfile.
    pub(crate) detail: Option<String>,
    /// A log whose diagnostic line or last line says why, read only if the exit needs
    /// explaining (the attempt's output did not land): most exits do not.
    pub(crate) log: Option<LogBody>,
}

impl Exit {
    /// Why the process ended, as far as the runner can tell: [`Exit::detail`], else what
    /// [`Exit::log`] says (read on the blocking pool).
    pub(crate) async fn explained(self) -> Option<String> {
        match (self.detail, self.log) {
            (Some(detail), _) => Some(detail),
            (None, Some(LogBody::Bytes(bytes))) => crate::diagnostic::from_bytes(&bytes),
            (None, Some(LogBody::File(log))) => {
                tokio::task::spawn_blocking(move || crate::diagnostic::from_log(&log))
                    .await
                    .ok()
                    .flatten()
            }
            (None, None) => None,
        }
    }
}

/// Called once, when an attempt's process has exited.
pub(crate) type OnExit = Box<dyn FnOnce(Exit) + Send>;

/// Why an attempt did not start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// `cancel` fired while it waited for a slot.
    Cancelled,
    /// The process could not be started.
    Failed(String),
}

/// What the machine hears of a start: the attempt started (and the runner's reference to
/// it) or could not be started; `None` for a start withdrawn by its cancel, which the machine
/// asked for and so already knows of. Both drivers map a start's result with this.
pub(crate) fn start_event(
    task_id: String,
    attempt: u32,
    started: Result<String, StartError>,
) -> Option<crate::machine::Event> {
    use crate::machine::Event;
    match started {
        Ok(runner) => Some(Event::AttemptStarted {
            task_id,
            attempt,
            runner,
        }),
        Err(StartError::Failed(reason)) => Some(Event::SpawnFailed {
            task_id,
            attempt,
            reason,
        }),
        Err(StartError::Cancelled) => None,
    }
}

/// Where an attempt's log is, for the driver to store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogBody {
    /// A local file.
    File(PathBuf),
    /// Text the runner holds or fetched (a short attempt's output, a dyno's log lines).
    Bytes(Vec<u8>),
}

/// Starts and stops attempts' processes.
#[async_trait::async_trait]
pub(crate) trait Runner: Send + Sync + 'static {
    /// Waits for a free slot (or `cancel`), then starts the attempt. Returns the runner's
    /// reference to the process, stored in the run's record so that a later engine can stop
    /// it. `on_exit` is called once the process has exited, whatever ends it.
    async fn start(
        &self,
        spec: AttemptSpec,
        cancel: CancellationToken,
        on_exit: OnExit,
    ) -> Result<String, StartError>;

    /// Stops a process this runner started (SIGTERM to its group, SIGKILL after a grace
    /// period). Unknown or finished references are ignored.
    async fn stop(&self, runner: &str);

    /// Stops a process that an earlier engine started, if it still runs `task_id`'s attempt.
    async fn stop_stale(&self, runner: &str, task_id: &str);

    /// The attempt's log, when there is one.
    async fn log(&self, task_id: &str, attempt: u32) -> Option<LogBody>;

    /// Stops every process this runner started and waits until all have exited.
    async fn stop_all(&self);

    /// Whether the process behind `runner` (from any engine, this one or an earlier one) still
    /// runs: `Some(false)` when the runner knows it is gone, `None` when it cannot tell (a
    /// process on another host). A driver that lost an exit notice asks this.
    async fn alive(&self, runner: &str) -> Option<bool> {
        let _ = runner;
        None
    }
}
