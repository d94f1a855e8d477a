//! Task processes: spawned in their own process group, output pumped to a log file and the
//! console, stopped as a group (SIGTERM, then SIGKILL after a grace period).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::console::Console;

/// Longest line kept whole on the console; longer lines are split. Bounds memory per stream.
const MAX_LINE: usize = 16 * 1024;

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
    pumps: Vec<JoinHandle<()>>,
}

/// Starts `spec` in a new process group.
pub(crate) async fn spawn(spec: Spec, console: &Console) -> std::io::Result<Running> {
    if let Some(parent) = spec.log_path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let log = tokio::fs::File::create(&spec.log_path).await?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&spec.script)
        .current_dir(&spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let pgid = child.id().and_then(|id| i32::try_from(id).ok());
    let log = std::sync::Arc::new(tokio::sync::Mutex::new(log));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(
            out,
            log.clone(),
            console.stream(&spec.label, false),
        )));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(
            err,
            log,
            console.stream(&spec.label, true),
        )));
    }
    Ok(Running { child, pgid, pumps })
}

impl Running {
    /// The process group id (the shell's pid).
    pub(crate) fn pgid(&self) -> Option<i32> {
        self.pgid
    }

    /// Waits for the process to exit, then for its output to be fully written to the log.
    /// Whatever is left of its process group is then stopped, so nothing outlives the attempt.
    pub(crate) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await?;
        self.reap_group().await;
        for p in self.pumps.drain(..) {
            let _ = p.await;
        }
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
        self.reap_group().await;
        for p in self.pumps.drain(..) {
            let _ = p.await;
        }
        Ok(status)
    }

    /// Kills any process left in the group after its leader exited (forked children).
    async fn reap_group(&self) {
        if group_alive(self.pgid) {
            signal_group(self.pgid, Signal::SIGTERM);
            for _ in 0..50 {
                if !group_alive(self.pgid) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            signal_group(self.pgid, Signal::SIGKILL);
        }
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
    log: std::sync::Arc<tokio::sync::Mutex<tokio::fs::File>>,
    mut console: crate::console::Stream,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if log.lock().await.write_all(chunk).await.is_err() {
            tracing::warn!("cannot write a task log; output is still shown on the console");
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
    let _ = log.lock().await.flush().await;
}

/// The local log file of an attempt.
pub(crate) fn log_path(data_dir: &Path, task_id: &str, attempt: u32) -> PathBuf {
    data_dir
        .join("logs")
        .join(task_id)
        .join(format!("{attempt}.log"))
}
