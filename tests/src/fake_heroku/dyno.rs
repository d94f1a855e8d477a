//! The fake's dynos: a `bash -c` process group each, supervised by a thread that reaps it,
//! tears the group down when its leader exits (as a dyno's container goes), and records the
//! exit; their output as Heroku log lines (`{time} app[run.N]: {line}`).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use super::{DynoInfo, STOP_GRACE, Shared};

/// Where a dyno is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Up,
    Exited {
        code: Option<i32>,
        /// Stopped (or expired) rather than ended by itself: gone, not crashed.
        stopped: bool,
    },
}

/// One dyno.
#[derive(Debug)]
pub(super) struct Dyno {
    pub(super) id: String,
    pub(super) name: String,
    command: String,
    size: String,
    kind: String,
    env: BTreeMap<String, String>,
    created_at: String,
    updated_at: String,
    /// When its create request was taken.
    requested: std::time::Instant,
    pgid: Option<i32>,
    phase: Phase,
    /// A stop was asked (or the time to live ran out).
    stopping: bool,
    log: PathBuf,
}

/// What `POST /apps/{app}/dynos` asked for, validated.
#[derive(Debug)]
pub(super) struct Create {
    pub(super) command: String,
    pub(super) env: BTreeMap<String, String>,
    pub(super) size: String,
    pub(super) kind: String,
    pub(super) time_to_live: Option<u64>,
}

impl Dyno {
    /// The state Heroku would show.
    fn state(&self) -> &'static str {
        match self.phase {
            Phase::Up => "up",
            Phase::Exited { stopped: true, .. } => "down",
            Phase::Exited { code: Some(0), .. } => "complete",
            Phase::Exited { .. } => "crashed",
        }
    }

    pub(super) fn info(&self) -> DynoInfo {
        DynoInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            command: self.command.clone(),
            env: self.env.clone(),
            state: self.state().to_owned(),
            exit_code: match self.phase {
                Phase::Up => None,
                Phase::Exited { code, .. } => code,
            },
            pgid: self.pgid,
            requested: self.requested,
        }
    }

    /// The process group to signal, while the dyno runs.
    pub(super) fn running_pgid(&self) -> Option<i32> {
        self.pgid.filter(|_| self.phase == Phase::Up)
    }

    /// The dyno object of the Platform API.
    pub(super) fn json(&self, app: &str) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "state": self.state(),
            "size": self.size,
            "type": self.kind,
            "command": self.command,
            "attach_url": null,
            "release": {"id": "00000000-0000-4000-8000-000000000001", "version": 1},
            "app": {"id": "00000000-0000-4000-8000-0000000000a0", "name": app},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }
}

/// Starts a dyno for `create`: its process runs when this returns. The answer's state is
/// `starting`, as Heroku's create answers.
pub(super) fn start(shared: &Arc<Shared>, create: Create) -> std::io::Result<Value> {
    let requested = std::time::Instant::now();
    let mut state = shared.state();
    let number = state.dynos.len() + 1;
    let name = format!("run.{number}");
    let script = resolve(&shared.config.app_dir, &create.command);
    let log = shared.log_dir.join(format!("{name}.log"));
    let file = Arc::new(Mutex::new(std::fs::File::create(&log)?));
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&script)
        .current_dir(&shared.config.app_dir)
        .env_clear()
        .envs(
            ["PATH", "HOME", "LANG"]
                .iter()
                .filter_map(|k| Some((*k, std::env::var(k).ok()?))),
        )
        .envs(&state.config_vars)
        .envs(&create.env)
        .env("DYNO", &name)
        .env("PORT", (5000 + number).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pgid = i32::try_from(child.id()).ok();
    let pumps: Vec<_> = [
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|out| {
        let (file, name) = (Arc::clone(&file), name.clone());
        std::thread::spawn(move || pump(out, &file, &name))
    })
    .collect();
    let now = timestamp();
    write_line(
        &file,
        &format!(
            "heroku[{name}]: Starting process with command `{}`",
            create.command
        ),
    );
    write_line(
        &file,
        &format!("heroku[{name}]: State changed from starting to up"),
    );
    let dyno = Dyno {
        id: uuid_like(number),
        name: name.clone(),
        command: create.command,
        size: create.size,
        kind: create.kind,
        env: create.env,
        created_at: now.clone(),
        updated_at: now,
        requested,
        pgid,
        phase: Phase::Up,
        stopping: false,
        log,
    };
    let mut answer = dyno.json(&shared.config.app);
    answer["state"] = "starting".into();
    let id = dyno.id.clone();
    state.dynos.push(dyno);
    *shared
        .supervisors
        .0
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
    let (supervisor, supervised) = (Arc::clone(shared), id.clone());
    std::thread::spawn(move || supervise(&supervisor, child, pgid, pumps, &file, &supervised));
    if let Some(ttl) = create.time_to_live {
        let shared = Arc::clone(shared);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(ttl)).await;
            stop(&shared, &id);
        });
        state.timers.push(timer.abort_handle());
    }
    drop(state);
    shared.changed();
    Ok(answer)
}

/// Stops the dyno `id_or_name`: SIGTERM to its group, SIGKILL after [`STOP_GRACE`]. Whether
/// it is known and listed (a gone dyno is not found).
pub(super) fn stop(shared: &Arc<Shared>, id_or_name: &str) -> bool {
    let mut state = shared.state();
    let Some(dyno) = state
        .dynos
        .iter_mut()
        .find(|d| (d.id == id_or_name || d.name == id_or_name) && d.info().listed())
    else {
        return false;
    };
    dyno.stopping = true;
    if let Phase::Exited { code, .. } = dyno.phase {
        // A crashed dyno that is stopped goes away.
        dyno.phase = Phase::Exited {
            code,
            stopped: true,
        };
        drop(state);
        shared.changed();
        return true;
    }
    if let Some(pgid) = dyno.pgid {
        signal_group(pgid, Signal::SIGTERM);
        let shared2 = Arc::clone(shared);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            let pgid = shared2
                .state()
                .dynos
                .iter()
                .find(|d| d.pgid == Some(pgid))
                .and_then(Dyno::running_pgid);
            if let Some(pgid) = pgid {
                signal_group(pgid, Signal::SIGKILL);
            }
        });
        state.timers.push(timer.abort_handle());
    }
    true
}

/// Waits for the dyno's leader, kills what is left of its group, lets the output drain, and
/// records the exit.
fn supervise(
    shared: &Shared,
    mut child: std::process::Child,
    pgid: Option<i32>,
    pumps: Vec<std::thread::JoinHandle<()>>,
    file: &Mutex<std::fs::File>,
    id: &str,
) {
    let status = child.wait().ok();
    if let Some(pgid) = pgid {
        signal_group(pgid, Signal::SIGKILL);
    }
    for pump in pumps {
        let _ = pump.join();
    }
    let code = status.and_then(|s| s.code());
    {
        let mut state = shared.state();
        if let Some(dyno) = state.dynos.iter_mut().find(|d| d.id == id) {
            let stopped = dyno.stopping;
            dyno.phase = Phase::Exited { code, stopped };
            dyno.updated_at = timestamp();
            let name = &dyno.name;
            let status = code.map_or_else(|| "signal".to_owned(), |c| c.to_string());
            write_line(
                file,
                &format!("heroku[{name}]: Process exited with status {status}"),
            );
            write_line(
                file,
                &format!("heroku[{name}]: State changed from up to {}", dyno.state()),
            );
        }
    }
    shared.changed();
    let (count, ended) = &shared.supervisors;
    *count
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) -= 1;
    ended.notify_all();
}

/// Copies a process's output to the dyno's log, a Heroku log line per line.
fn pump(out: Box<dyn Read + Send>, file: &Mutex<std::fs::File>, name: &str) {
    for line in BufReader::new(out).split(b'\n') {
        let Ok(line) = line else { break };
        write_line(
            file,
            &format!("app[{name}]: {}", String::from_utf8_lossy(&line)),
        );
    }
}

fn write_line(file: &Mutex<std::fs::File>, line: &str) {
    let mut file = file
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = writeln!(file, "{} {line}", log_time());
}

/// The dyno's last `lines` log lines from `source` (`app`, `heroku`, or all).
pub(super) fn log_lines(shared: &Shared, name: &str, lines: usize, source: Option<&str>) -> String {
    let path = shared
        .state()
        .dynos
        .iter()
        .find(|d| d.name == name)
        .map(|d| d.log.clone());
    let text = path
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| match (source, l.split_once(' ')) {
            (None, _) => true,
            (Some(s), Some((_, rest))) => rest.starts_with(&format!("{s}[")),
            (Some(_), None) => false,
        })
        .collect();
    let from = kept.len().saturating_sub(lines);
    kept[from..].iter().map(|l| format!("{l}\n")).collect()
}

/// The command line Heroku runs: a Procfile process type's command (its arguments kept), or
/// the command as given.
fn resolve(app_dir: &Path, command: &str) -> String {
    let procfile = linedee_engine::Procfile::load(&app_dir.join("Procfile")).unwrap_or_default();
    let command = command.trim();
    let (first, rest) = command
        .split_once(char::is_whitespace)
        .unwrap_or((command, ""));
    match procfile.command(first) {
        Some(line) if rest.trim().is_empty() => line.to_owned(),
        Some(line) => format!("{line} {}", rest.trim()),
        None => command.to_owned(),
    }
}

/// Signals a process group; one already gone is fine.
pub(super) fn signal_group(pgid: i32, signal: Signal) {
    if pgid > 1 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// A UUID-shaped id: random, with the dyno's number at the end.
fn uuid_like(number: usize) -> String {
    let r: u64 = rand::random();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        r >> 32,
        (r >> 16) & 0xffff,
        r & 0xfff,
        (r >> 4) & 0xfff,
        number
    )
}

/// `2026-06-05T12:00:00Z`, the API's time format.
fn timestamp() -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}

/// `2026-06-05T12:00:00.123456+00:00`, the log lines' time format.
fn log_time() -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00"
    );
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}
