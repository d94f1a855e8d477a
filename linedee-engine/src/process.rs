//! Task processes: spawned in their own process group, output pumped to a log file and the
//! console, stopped as a group (SIGTERM, then SIGKILL after a grace period), together with any
//! descendant that left the group (`setsid`) but still carries the attempt's `line_D`.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::console::Console;

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

/// An attempt's log file, created when the first output arrives. Written in place by the
/// pumps: a chunk of output is one `write` into the page cache, far cheaper than a trip to
/// the blocking pool. It is never synced: the copy stored when the attempt ends is the one
/// that lasts.
#[derive(Debug)]
struct Log {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl Log {
    /// Appends `chunk`, creating the file (and the logs directory) the first time.
    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(create_log(&self.path)?),
        };
        file.write_all(chunk)
    }
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
    let log = std::sync::Arc::new(std::sync::Mutex::new(Log {
        path: spec.log_path.clone(),
        file: None,
    }));
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

    /// Whether the attempt printed anything: then its log file exists. Meant for after
    /// [`Running::wait`] or [`Running::stop`].
    pub(crate) fn logged(&self) -> bool {
        lock(&self.log).file.is_some()
    }

    /// Waits for the process to exit, then for its output to be fully written to the log.
    /// Whatever is left of its process group is then stopped, so nothing outlives the attempt.
    pub(crate) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let status = self.child.wait().await?;
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

/// The pids of the attempt processes this engine started and has not reaped yet. Each is the
/// leader of another attempt, started by the engine itself, so it never descends from a task
/// and its environment need not be read when a scan looks for escaped processes.
fn leaders() -> std::sync::MutexGuard<'static, std::collections::HashSet<u32>> {
    static LEADERS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<u32>>> =
        std::sync::OnceLock::new();
    LEADERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Pids of processes (other than this one) whose environment has exactly `marker`, among
/// those started after `leader` (the attempt's first process): only they can descend from
/// it. Other attempts' leaders are passed over ([`leaders`]). The scan of `/proc` runs on the
/// blocking pool.
async fn escaped(marker: &[u8], leader: Option<i32>) -> Vec<i32> {
    if marker.is_empty() {
        return Vec::new();
    }
    let marker = marker.to_vec();
    tokio::task::spawn_blocking(move || scan_environs(&marker, leader))
        .await
        .unwrap_or_default()
}

fn scan_environs(marker: &[u8], leader: Option<i32>) -> Vec<i32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let started = Started::since(leader);
    let others: Vec<u32> = leaders().iter().copied().collect();
    // One buffer for every process (grown by the first read), and plain reads: `fs::read`
    // would also ask for a size (which /proc does not know) and probe with small reads,
    // several calls per process.
    let mut buf = Vec::new();
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && started.may_hold(*pid) && !others.contains(pid))
        .filter(|pid| environ_has(*pid, marker, &mut buf))
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// The pids given out since an attempt's leader started. Linux hands pids out in increasing
/// order, wrapping to low numbers past `pid_max`; `ns_last_pid` is the last one given out in
/// this pid namespace. So a descendant of the leader has a pid after the leader's and up to
/// the last (across the wrap, if there was one). Unknown, every pid may be one.
#[derive(Debug, Clone, Copy)]
struct Started {
    range: Option<(u32, u32)>,
}

impl Started {
    fn since(leader: Option<i32>) -> Self {
        // Only when `/proc` shows this process's own pid namespace (the one `ns_last_pid`
        // and the leader's pid are of).
        let same_namespace = std::fs::read_link("/proc/self")
            .ok()
            .and_then(|p| p.to_str()?.parse::<u32>().ok())
            == Some(std::process::id());
        let last = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|_| same_namespace);
        let leader = leader.and_then(|l| u32::try_from(l).ok());
        Started {
            range: leader.zip(last),
        }
    }

    fn may_hold(self, pid: u32) -> bool {
        match self.range {
            None => true,
            Some((leader, last)) if leader <= last => pid > leader && pid <= last,
            // Wrapped since the leader started.
            Some((leader, last)) => pid > leader || pid <= last,
        }
    }
}

/// Whether the environment of `pid` has exactly `marker` as one of its entries. `buf` is
/// scratch space, grown when an environment does not fit.
fn environ_has(pid: u32, marker: &[u8], buf: &mut Vec<u8>) -> bool {
    use std::io::Read as _;
    let Ok(mut environ) = std::fs::File::open(format!("/proc/{pid}/environ")) else {
        return false;
    };
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            buf.resize((buf.len() * 2).max(4096), 0);
        }
        match environ.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    buf[..filled].split(|b| *b == 0).any(|var| var == marker)
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
        if lock(&log).write(chunk).is_err() {
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
}

/// The local log file of an attempt: `logs/{task_id}.{attempt}.log`, one flat directory, so
/// starting an attempt creates one file and no directory.
pub(crate) fn log_path(data_dir: &Path, task_id: &str, attempt: u32) -> PathBuf {
    data_dir
        .join("logs")
        .join(format!("{task_id}.{attempt}.log"))
}

/// The local log file of an attempt to read: [`log_path`], or where earlier engines wrote
/// it (`logs/{task_id}/{attempt}.log`) when only that one exists.
pub(crate) fn existing_log_path(data_dir: &Path, task_id: &str, attempt: u32) -> PathBuf {
    let path = log_path(data_dir, task_id, attempt);
    let legacy = data_dir
        .join("logs")
        .join(task_id)
        .join(format!("{attempt}.log"));
    if !path.exists() && legacy.exists() {
        legacy
    } else {
        path
    }
}

/// Creates (truncates) a log file, and its directory the first time.
fn create_log(path: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::File::create(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::File::create(path)
        }
        created => created,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path, script: &str) -> Spec {
        Spec {
            script: script.to_owned(),
            env: vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())],
            cwd: dir.to_owned(),
            log_path: log_path(dir, "R.0.0", 1),
            label: "t.1".to_owned(),
        }
    }

    async fn run(spec: Spec) -> (Option<i32>, String) {
        let log = spec.log_path.clone();
        let prepared = prepare(&spec).expect("prepare");
        let mut running = spawn(spec, prepared, &Console::quiet()).expect("spawn");
        let code = running.wait().await.expect("wait").code();
        (code, std::fs::read_to_string(log).expect("log"))
    }

    #[tokio::test]
    async fn a_plain_command_runs_without_a_shell_in_the_app_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = spec(dir.path(), "env");
        assert!(prepare(&s).expect("prepare").direct.is_some());
        let (code, log) = run(s).await;
        assert_eq!(code, Some(0));
        let pwd = format!("PWD={}", dir.path().display());
        assert!(log.lines().any(|l| l == pwd), "{log}");
    }

    #[tokio::test]
    async fn a_script_or_a_missing_command_goes_to_the_shell_as_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (code, log) = run(spec(dir.path(), "echo $((1 + 2)) && exit 4")).await;
        assert_eq!((code, log.as_str()), (Some(4), "3\n"));
        let (code, log) = run(spec(dir.path(), "no-such-command-here")).await;
        assert_eq!(code, Some(127));
        assert!(log.contains("not found"), "{log}");
    }

    #[tokio::test]
    async fn a_log_file_is_made_by_the_first_output_and_a_stale_one_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let silent = spec(dir.path(), "true");
        let log = silent.log_path.clone();
        std::fs::create_dir_all(log.parent().expect("parent")).expect("mkdir");
        std::fs::write(&log, "left by an earlier engine").expect("write");
        let prepared = prepare(&silent).expect("prepare");
        assert!(!log.exists(), "a stale log is removed before the start");
        let mut running = spawn(silent, prepared, &Console::quiet()).expect("spawn");
        assert_eq!(running.wait().await.expect("wait").code(), Some(0));
        assert!(!running.logged());
        assert!(!log.exists(), "an attempt that prints nothing has no file");

        let chatty = spec(dir.path(), "echo to the log");
        let prepared = prepare(&chatty).expect("prepare");
        let mut running = spawn(chatty, prepared, &Console::quiet()).expect("spawn");
        assert_eq!(running.wait().await.expect("wait").code(), Some(0));
        assert!(running.logged());
        assert_eq!(std::fs::read_to_string(&log).expect("log"), "to the log\n");
    }

    #[test]
    fn only_pids_given_out_since_the_leader_may_descend_from_it() {
        let plain = Started {
            range: Some((100, 200)),
        };
        assert!(!plain.may_hold(100) && !plain.may_hold(99) && !plain.may_hold(201));
        assert!(plain.may_hold(101) && plain.may_hold(200));
        let wrapped = Started {
            range: Some((4_000_000, 500)),
        };
        assert!(wrapped.may_hold(4_000_001) && wrapped.may_hold(301) && wrapped.may_hold(500));
        assert!(!wrapped.may_hold(501) && !wrapped.may_hold(4_000_000));
        let unknown = Started { range: None };
        assert!(unknown.may_hold(1) && unknown.may_hold(u32::MAX));
        // Here: a child started now is after this process's last child, and is found.
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn");
        let before = i32::try_from(child.id()).expect("pid") - 1;
        assert!(Started::since(Some(before)).may_hold(child.id()));
        let _ = child.kill();
        let _ = child.wait();
    }

    #[tokio::test]
    async fn a_scan_passes_over_the_engines_own_attempts_but_not_other_processes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = spec(dir.path(), "sleep 30");
        let line_d = format!("{}={{\"task_id\":\"scan.0.0\"}}", linedee::line_d::VAR);
        let (k, v) = line_d.split_once('=').expect("k=v");
        s.env.push((k.to_owned(), v.to_owned()));
        let prepared = prepare(&s).expect("prepare");
        let mut attempt = spawn(s, prepared, &Console::quiet()).expect("spawn");
        let leader = attempt.child.id().expect("pid");
        // The same marker in a process the engine did not start as an attempt: an escapee.
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .env(k, v)
            .spawn()
            .expect("spawn");
        let since = i32::try_from(leader).expect("pid") - 1;
        let found = scan_environs(line_d.as_bytes(), Some(since));
        assert_eq!(found, vec![i32::try_from(other.id()).expect("pid")]);
        assert!(leaders().contains(&leader));
        let _ = other.kill();
        let _ = other.wait();
        attempt.stop(Duration::from_secs(5)).await.expect("stop");
        assert!(!leaders().contains(&leader), "a reaped leader is forgotten");
    }

    #[test]
    fn an_environment_entry_is_found_whole_past_the_first_buffer() {
        let environ = std::fs::read("/proc/self/environ").expect("environ");
        let last = environ
            .split(|b| *b == 0)
            .rfind(|var| !var.is_empty())
            .expect("an entry");
        let me = std::process::id();
        let mut buf = vec![0u8; 1];
        assert!(environ_has(me, last, &mut buf));
        assert!(buf.len() >= environ.len(), "the buffer grew");
        assert!(
            !environ_has(me, &last[..last.len() - 1], &mut buf),
            "whole entries only"
        );
        assert!(!environ_has(u32::MAX, last, &mut buf), "no such process");
    }

    #[test]
    fn a_log_is_read_where_an_earlier_engine_wrote_it_when_only_that_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flat = log_path(dir.path(), "R.0.0", 2);
        assert_eq!(flat, dir.path().join("logs/R.0.0.2.log"));
        assert_eq!(existing_log_path(dir.path(), "R.0.0", 2), flat);
        let legacy = dir.path().join("logs/R.0.0/2.log");
        std::fs::create_dir_all(legacy.parent().expect("parent")).expect("mkdir");
        std::fs::write(&legacy, "old").expect("write");
        assert_eq!(existing_log_path(dir.path(), "R.0.0", 2), legacy);
        std::fs::write(&flat, "new").expect("write");
        assert_eq!(existing_log_path(dir.path(), "R.0.0", 2), flat);
    }
}
