//! `linedee local` as a real child process: started on free loopback ports, its output
//! captured, stopped (SIGTERM, then SIGKILL) when dropped so no process outlives a test.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use linedee::Client;
use linedee::credentials::{Credentials, StaticProvider};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The line `linedee local` prints once it serves.
const READY_LINE: &str = "linedee local ready";

/// How long start-up and shutdown may take.
const DEADLINE: Duration = Duration::from_secs(60);

/// Variables of the machine running the tests that must not leak into the child.
const CLEARED: &[&str] = &[
    "LD_AWS_ACCESS_KEY_ID",
    "LD_AWS_SECRET_ACCESS_KEY",
    "LD_AWS_SESSION_TOKEN",
    "LD_REGION",
    "LD_S3_BUCKET",
    "LD_S3_ENDPOINT",
    "LD_DASHBOARD_URL",
    "LINEDEE_DIR",
    "LINEDEE_DASHBOARD_TOKEN",
    "RUST_LOG",
];

/// A running `linedee local`.
pub struct LinedeeLocal {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// `--dir`: the data dir (store, journal, logs, `env`, `dashboard-token`).
    pub data_dir: PathBuf,
    /// `--app-dir`: the Procfile, `.env`, and the tasks' working directory.
    pub app_dir: PathBuf,
    /// The variables written to `<dir>/env` (credentials, bucket, endpoint, dashboard URL).
    pub env: HashMap<String, String>,
    /// The dashboard's bearer token (`<dir>/dashboard-token`).
    pub token: String,
}

impl LinedeeLocal {
    /// Starts `linedee --dir <data_dir> local --app-dir <app_dir> --port 0 --dashboard-port 0`
    /// plus `extra` arguments, and waits for its ready line.
    pub fn start(data_dir: &Path, app_dir: &Path, extra: &[&str]) -> LinedeeLocal {
        Self::start_with_env(data_dir, app_dir, extra, &[])
    }

    /// [`LinedeeLocal::start`] with extra environment variables (e.g. `RUST_LOG`).
    pub fn start_with_env(
        data_dir: &Path,
        app_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> LinedeeLocal {
        let bin = crate::binary("linedee-cli", "linedee");
        let mut cmd = Command::new(bin);
        for v in CLEARED {
            cmd.env_remove(v);
        }
        let mut child = cmd
            .arg("--dir")
            .arg(data_dir)
            .args(["local", "--port", "0", "--dashboard-port", "0"])
            .arg("--app-dir")
            .arg(app_dir)
            .args(extra)
            .envs(env.iter().copied())
            .current_dir(app_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("linedee local starts");
        let (tx, rx) = mpsc::channel();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().expect("stdout"), &stdout, Some(tx)),
            collect(child.stderr.take().expect("stderr"), &stderr, None),
        ];
        let mut local = LinedeeLocal {
            child,
            stdout,
            stderr,
            readers,
            data_dir: data_dir.to_owned(),
            app_dir: app_dir.to_owned(),
            env: HashMap::new(),
            token: String::new(),
        };
        // Read until the ready line: every byte is also kept for `stdout()`.
        loop {
            match rx.recv_timeout(DEADLINE) {
                Ok(line) if line == READY_LINE => break,
                Ok(_) => {}
                Err(e) => panic!(
                    "linedee local was not ready ({e}); stdout: {}\nstderr: {}",
                    local.stdout(),
                    local.stderr()
                ),
            }
        }
        let env = std::fs::read_to_string(data_dir.join("env")).expect("the env file");
        local.env = linedee_engine::parse_dotenv(&env)
            .expect("the env file parses")
            .into_iter()
            .collect();
        local.token = std::fs::read_to_string(data_dir.join("dashboard-token"))
            .expect("the token file")
            .trim()
            .to_owned();
        local
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The S3 endpoint (`LD_S3_ENDPOINT`).
    pub fn endpoint(&self) -> &str {
        &self.env["LD_S3_ENDPOINT"]
    }

    /// The dashboard's URL (`LD_DASHBOARD_URL`).
    pub fn dashboard_url(&self) -> &str {
        &self.env["LD_DASHBOARD_URL"]
    }

    /// An SDK client with the credentials in `<dir>/env`.
    pub fn client(&self) -> Client {
        let creds = Credentials::new(
            self.env["LD_AWS_ACCESS_KEY_ID"].clone(),
            self.env["LD_AWS_SECRET_ACCESS_KEY"].clone(),
            self.env.get("LD_AWS_SESSION_TOKEN").cloned(),
            None,
        );
        Client::builder()
            .bucket(&self.env["LD_S3_BUCKET"])
            .endpoint(self.endpoint())
            .credentials_provider(StaticProvider::new(creds))
            .build()
            .expect("client")
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Sends SIGTERM, waits for the exit (SIGKILL after the deadline) and for both streams
    /// to close; returns the exit code (-1 when killed by a signal).
    pub fn stop(&mut self) -> i32 {
        let code = terminate(&mut self.child);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        code
    }
}

impl Drop for LinedeeLocal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            terminate(&mut self.child);
        }
    }
}

/// SIGTERM, then SIGKILL once the deadline passes; the exit code.
fn terminate(child: &mut Child) -> i32 {
    if let Ok(Some(status)) = child.try_wait() {
        return status.code().unwrap_or(-1);
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
    let _ = kill(pid, Signal::SIGTERM);
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.code().unwrap_or(-1),
            Ok(None) if start.elapsed() > DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                return -1;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return -1,
        }
    }
}

/// Appends every line of `stream` to `into`, and forwards each to `lines` when given.
fn collect(
    stream: impl Read + Send + 'static,
    into: &Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) -> std::thread::JoinHandle<()> {
    let into = Arc::clone(into);
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut all) = into.lock() {
                all.push_str(&line);
                all.push('\n');
            }
            if let Some(tx) = &lines {
                let _ = tx.send(line);
            }
        }
    })
}
