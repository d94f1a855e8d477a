//! What the interop tests share: the Python venv (boto3, awscli, moto), commands run in it,
//! a moto server child process, and waiting for a run by its trigger key.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use linedee::{Client, RunStatus};
use linedee_tests::workspace_root;

/// How long any condition may take to come true.
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);

/// `tests/interop/`.
pub(crate) fn interop_dir() -> PathBuf {
    workspace_root().join("tests").join("interop")
}

/// `tests/interop/py/`: the product document's Python examples and the Python task.
pub(crate) fn py_dir() -> PathBuf {
    interop_dir().join("py")
}

/// The venv with the pinned tools: `tests/interop/setup-venv` is run once per test process
/// (it returns at once when the venv is current). A failure fails the test, with its output.
pub(crate) fn venv() -> &'static Path {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let venv = VENV.get_or_init(|| {
        let script = interop_dir().join("setup-venv");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let path = stdout.lines().last().unwrap_or_default().trim().to_owned();
        if !out.status.success() || path.is_empty() {
            return Err(format!(
                "{} failed ({}): the interop tests need Python 3 and PyPI for their pinned \
                 boto3/awscli/moto.\nstdout: {stdout}\nstderr: {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(path))
    });
    match venv {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// A program of the venv (`python`, `aws`, `moto_server`).
pub(crate) fn venv_bin(name: &str) -> PathBuf {
    let path = venv().join("bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing from the venv",
        path.display()
    );
    path
}

/// A venv program with a clean AWS setup: no profile or config file of the machine, no
/// instance metadata, and only the given variables' credentials.
pub(crate) fn venv_cmd(name: &str, cwd: &Path, env: &HashMap<String, String>) -> Command {
    let mut cmd = Command::new(venv_bin(name));
    cmd.current_dir(cwd).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("AWS_") || k.starts_with("LD_") || k == "line_D" {
            cmd.env_remove(&k);
        }
    }
    let empty = empty_aws_files();
    cmd.env("AWS_CONFIG_FILE", &empty.0)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty.1)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env);
    cmd
}

/// Two empty files (config and credentials) shared by every command of this process.
fn empty_aws_files() -> &'static (PathBuf, PathBuf) {
    static FILES: OnceLock<(tempfile::TempDir, (PathBuf, PathBuf))> = OnceLock::new();
    &FILES
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let config = dir.path().join("config");
            let creds = dir.path().join("credentials");
            std::fs::write(&config, "").expect("empty config");
            std::fs::write(&creds, "").expect("empty credentials");
            (dir, (config, creds))
        })
        .1
}

/// The `AWS_*` variables for the CLI from `linedee local`'s env file.
pub(crate) fn aws_env(ld: &HashMap<String, String>) -> HashMap<String, String> {
    let mut env = HashMap::from([
        (
            "AWS_ACCESS_KEY_ID".to_owned(),
            ld["LD_AWS_ACCESS_KEY_ID"].clone(),
        ),
        (
            "AWS_SECRET_ACCESS_KEY".to_owned(),
            ld["LD_AWS_SECRET_ACCESS_KEY"].clone(),
        ),
        (
            "AWS_DEFAULT_REGION".to_owned(),
            ld.get("LD_REGION")
                .cloned()
                .unwrap_or_else(|| "us-east-1".to_owned()),
        ),
    ]);
    if let Some(token) = ld.get("LD_AWS_SESSION_TOKEN") {
        env.insert("AWS_SESSION_TOKEN".to_owned(), token.clone());
    }
    env
}

/// Runs a command to completion and asserts it succeeded, showing its output otherwise.
#[track_caller]
pub(crate) fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `f` until it returns `Some`, failing after [`DEADLINE`].
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The run started by the object at `key`, once it is finished.
pub(crate) async fn finished_run_for(client: &Client, key: &str) -> RunStatus {
    eventually(&format!("a finished run triggered by {key}"), || async {
        let docs = client.list("ld/runs/").await.ok()?;
        for doc in docs.iter().filter(|d| d.key.ends_with(".json")) {
            let run_id = doc
                .key
                .trim_start_matches("ld/runs/")
                .trim_end_matches(".json");
            let Ok(run) = client.run(run_id).await else {
                continue;
            };
            if run.trigger.key == key && run.status.is_finished() {
                return Some(run);
            }
        }
        None
    })
    .await
}

/// Waits until every task's last attempt has its log stored (the engine stores it once the
/// process has exited), so that no more `ld/` history is on its way; returns the status
/// document.
pub(crate) async fn settled(client: &Client, run_id: &str) -> RunStatus {
    let start = Instant::now();
    loop {
        let run = client.run(run_id).await.expect("the status document");
        let mut missing = Vec::new();
        for task in run.tasks() {
            let log = linedee::status::log_key(&task.task_id, task.attempts);
            if client.head(&log).await.is_err() {
                missing.push(log);
            }
        }
        if missing.is_empty() {
            return run;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "run {run_id}'s logs were not stored within {DEADLINE:?}: {missing:?}\n{run:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every regular file under `dir`, by its path relative to `dir` (`/`-separated).
pub(crate) fn files_under(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under root");
                let rel = rel.to_string_lossy().replace('\\', "/");
                out.insert(rel, std::fs::read(&path).expect("read file"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Every object of the bucket, read through the SDK.
pub(crate) async fn objects_of(client: &Client) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for o in client.list("").await.expect("list the bucket") {
        let body = client
            .get(&o.key)
            .await
            .expect("get")
            .bytes()
            .await
            .expect("body");
        out.insert(o.key, body.to_vec());
    }
    out
}

/// A moto server on a free loopback port; killed (and reaped) on drop.
pub(crate) struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub(crate) endpoint: String,
    dir: tempfile::TempDir,
}

impl Moto {
    /// Starts `moto_server` and waits until it answers HTTP.
    pub(crate) async fn start() -> Moto {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("addr").port()
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let log = std::fs::File::create(dir.path().join("moto.log")).expect("moto log");
        let child = venv_cmd("moto_server", dir.path(), &HashMap::new())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("moto_server starts");
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let http = reqwest::Client::new();
        let start = Instant::now();
        loop {
            let reset = format!("{}/moto-api/reset", moto.endpoint);
            if http.post(&reset).send().await.is_ok() {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto_server exited ({status}): {}", moto.log());
            }
            assert!(
                start.elapsed() < DEADLINE,
                "moto_server did not answer within {DEADLINE:?}: {}",
                moto.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What moto printed.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
