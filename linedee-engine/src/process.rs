//! Task processes: spawned in their own process group, output pumped to a log file and the
//! console, stopped as a group (SIGTERM, then SIGKILL after a grace period), together with any
//! descendant that left the group (`setsid`) but still carries the attempt's `line_D`.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::console::Console;
use crate::escape::{escaped, leaders};
use crate::task_log::{Captured, Log};

/// Longest line kept whole on the console; longer lines are split. Bounds memory per stream.
const MAX_LINE: usize = 16 * 1024;

/// How long the output pipes may stay open once the attempt's processes are gone: a process
/// that escaped unrecognised may hold them; its further output is then not logged.
const PUMP_GRACE: Duration = Duration::from_secs(5);

/// What to run.
#[derive(Debug)]
pub(crate) struct Spec {
    /// A shell script for `/bin/sh -c`.
    pub(crate) script: String,
    /// Variables added to the engine's own environment.
    pub(crate) env: Vec<(String, String)>,
    /// Working directory (the app's directory).
    pub(crate) cwd: PathBuf,
    /// Where stdout and stderr go.
    pub(crate) log_path: PathBuf,
    /// Console prefix, e.g. `process_image.1`.
    pub(crate) label: String,
}

/// A running task process.
#[derive(Debug)]
pub(crate) struct Running {
    child: Child,
    pgid: Option<i32>,
    log: SharedLog,
    pumps: Vec<JoinHandle<()>>,
    stop_pumps: CancellationToken,
    /// The `line_D=…` entry of the attempt's environment, inherited by its descendants.
    marker: Vec<u8>,
}

/// What starting a process needs from the file system, found ahead of [`spawn`] on the
/// blocking pool ([`prepare`]).
#[derive(Debug)]
pub(crate) struct Prepared {
    direct: Option<crate::exec::Direct>,
}

/// Clears the way for the attempt's log and decides whether its script needs a shell.
/// Blocking.
///
/// The log file is created by the attempt's first output ([`Log`]), so an attempt that prints
/// nothing costs no file. A file an earlier engine left under the same name is removed here,
/// so it cannot pass for this attempt's output.
pub(crate) fn prepare(spec: &Spec) -> std::io::Result<Prepared> {
    let path = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| std::ffi::OsString::from(v))
        .or_else(|| std::env::var_os("PATH"));
    match std::fs::remove_file(&spec.log_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    Ok(Prepared {
        direct: crate::exec::direct(&spec.script, path.as_deref(), &spec.cwd),
    })
}

/// The log, shared by an attempt's two pumps.
type SharedLog = std::sync::Arc<std::sync::Mutex<Log>>;

fn lock(log: &SharedLog) -> std::sync::MutexGuard<'_, Log> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Starts `spec` in a new process group: directly when its script is one plain command
/// ([`crate::exec`]), else with `/bin/sh -c`.
pub(crate) fn spawn(spec: Spec, prepared: Prepared, console: &Console) -> std::io::Result<Running> {
    let Prepared { direct } = prepared;
    let marker = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == linedee::line_d::VAR)
        .map(|(k, v)| format!("{k}={v}").into_bytes())
        .unwrap_or_default();
    let command = |direct: Option<&crate::exec::Direct>| {
        let mut cmd = match direct {
            Some(d) => {
                let mut cmd = Command::new(&d.program);
                cmd.arg0(&d.arg0).args(&d.args);
                cmd
            }
            None => {
                let mut cmd = Command::new("/bin/sh");
                cmd.arg("-c").arg(&spec.script);
                cmd
            }
        };
        cmd.current_dir(&spec.cwd)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if direct.is_some() {
            // What `sh` exports when it starts in `cwd`.
            cmd.env("PWD", &spec.cwd);
        }
        cmd
    };
    // A direct start that fails (the program went away, or is not a binary the kernel runs)
    // is left to the shell, which runs it or says why not, as it always has.
    let mut child = match direct.as_ref().map(|d| command(Some(d)).spawn()) {
        Some(Ok(child)) => child,
        _ => command(None).spawn()?,
    };
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    if let Some(pid) = child.id() {
        leaders().insert(pid);
    }
    let log = std::sync::Arc::new(std::sync::Mutex::new(Log::new(spec.log_path.clone())));
    let mut pumps = Vec::new();
    let stop_pumps = CancellationToken::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(
            out,
            log.clone(),
            console.stream(&spec.label, false),
            stop_pumps.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(
            err,
            log.clone(),
            console.stream(&spec.label, true),
            stop_pumps.clone(),
        )));
    }
    Ok(Running {
        child,
        pgid,
        log,
        pumps,
        stop_pumps,
        marker,
    })
}

impl Running {
    /// The process group id (the shell's pid).
    pub(crate) fn pgid(&self) -> Option<i32> {
        self.pgid
    }

    /// What the attempt printed: in memory, in its log file, or nothing. Meant for after
    /// [`Running::wait`] or [`Running::stop`].
    pub(crate) fn take_log(&self) -> Captured {
        lock(&self.log).finish()
    }

    /// Waits for the process to exit, then for its output to be fully written to the log.
    /// Whatever is left of its process group is then stopped, so nothing outlives the attempt.
    /// Output still held in memory when it is due ([`crate::task_log::SPILL_AFTER`]) goes to
    /// the log file meanwhile, so a long attempt's log can be followed there.
    pub(crate) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let spill_at = tokio::time::Instant::from_std(lock(&self.log).spill_at());
        let status = tokio::select! {
            status = self.child.wait() => status?,
            () = tokio::time::sleep_until(spill_at) => {
                if let Err(e) = lock(&self.log).spill() {
                    tracing::warn!(error = %e, "cannot write a task log; its output is still shown on the console");
                }
                self.child.wait().await?
            }
        };
        self.forget_leader();
        self.reap_group().await;
        self.finish_pumps().await;
        Ok(status)
    }

    /// Stops the whole group: SIGTERM, then SIGKILL after `grace`. Returns the exit status.
    pub(crate) async fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus> {
        signal_group(self.pgid, Signal::SIGTERM);
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                signal_group(self.pgid, Signal::SIGKILL);
                self.child.wait().await?
            }
        };
        self.forget_leader();
        self.reap_group().await;
        self.finish_pumps().await;
        Ok(status)
    }

    /// Takes the leader off [`leaders`] once it is reaped (its pid is free again).
    fn forget_leader(&self) {
        if let Some(pid) = self.pgid.and_then(|p| u32::try_from(p).ok()) {
            leaders().remove(&pid);
        }
    }

    /// Kills any process left in the group after its leader exited (forked children), and
    /// any descendant that left the group but still carries the attempt's `line_D`.
    async fn reap_group(&self) {
        if !self.alive().await {
            return;
        }
        self.signal_all(Signal::SIGTERM).await;
        for _ in 0..50 {
            if !self.alive().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.signal_all(Signal::SIGKILL).await;
    }

    /// Whether a process of the attempt is left, in its group or escaped from it.
    async fn alive(&self) -> bool {
        group_alive(self.pgid) || !escaped(&self.marker, self.pgid).await.is_empty()
    }

    /// Signals the attempt's group and every process that escaped it.
    async fn signal_all(&self, signal: Signal) {
        signal_group(self.pgid, signal);
        for pid in escaped(&self.marker, self.pgid).await {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
        }
    }

    /// Waits for the output to be logged; after [`PUMP_GRACE`] a pipe still held open (by a
    /// process that escaped unrecognised) is let go, so the attempt does not hang on it.
    async fn finish_pumps(&mut self) {
        let drained = tokio::time::timeout(PUMP_GRACE, async {
            while let Some(p) = self.pumps.first_mut() {
                let _ = p.await;
                self.pumps.remove(0);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                pgid = self.pgid,
                "a process outside the task's process group still holds its output open; \
                 its further output is not logged"
            );
            self.stop_pumps.cancel();
            for p in self.pumps.drain(..) {
                let _ = p.await;
            }
        }
    }
}

impl Drop for Running {
    /// A process dropped without being waited for is killed (`kill_on_drop`) and reaped in the
    /// background: its pid leaves [`leaders`] now, so it is never passed over once reused.
    fn drop(&mut self) {
        self.forget_leader();
    }
}

fn signal_group(pgid: Option<i32>, signal: Signal) {
    if let Some(pgid) = pgid.filter(|p| *p > 1) {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// Whether any process is still in the group (signal 0 probes without sending).
fn group_alive(pgid: Option<i32>) -> bool {
    pgid.filter(|p| *p > 1)
        .is_some_and(|p| nix::sys::signal::killpg(Pid::from_raw(p), None).is_ok())
}

/// Stops a process group left over from an engine that died (recorded in the journal), if its
/// leader still runs the same attempt. Used at recovery.
pub(crate) fn stop_stale_group(pgid: i32, task_id: &str) {
    let environ = std::fs::read(format!("/proc/{pgid}/environ")).unwrap_or_default();
    let marker = format!("\"task_id\":\"{task_id}\"");
    if environ
        .split(|b| *b == 0)
        .any(|var| var.starts_with(b"line_D=") && contains(var, marker.as_bytes()))
    {
        signal_group(Some(pgid), Signal::SIGKILL);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Copies a stream to the log file and, line by line, to the console.
async fn pump(
    mut from: impl AsyncRead + Unpin,
    log: SharedLog,
    mut console: crate::console::Stream,
    stop: CancellationToken,
) {
    // Read into spare capacity: nothing is zeroed first.
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut line: Vec<u8> = Vec::with_capacity(1024);
    let mut warned = false;
    loop {
        buf.clear();
        let n = tokio::select! {
            read = from.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            () = stop.cancelled() => break,
        };
        let chunk = &buf[..n];
        if let Err(e) = lock(&log).write(chunk)
            && !warned
        {
            warned = true;
            tracing::warn!(error = %e, "cannot write a task log; its output is still shown on the console");
        }
        for &b in chunk {
            if b == b'\n' || line.len() >= MAX_LINE {
                console.line(&line);
                line.clear();
                if b == b'\n' {
                    continue;
                }
            }
            line.push(b);
        }
    }
    if !line.is_empty() {
        console.line(&line);
    }
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
