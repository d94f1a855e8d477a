//! The `linedee` binary end to end: a real `linedee local` child process (store, engine and
//! dashboard), real task processes, and every command run as its own process against it.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long any condition may take to come true.
const DEADLINE: Duration = Duration::from_secs(60);

const LD_VARS: &[&str] = &[
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

/// `linedee` with a clean environment (no `LD_*` from the machine running the tests).
fn linedee_cmd(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_linedee"));
    cmd.current_dir(cwd);
    for v in LD_VARS {
        cmd.env_remove(v);
    }
    cmd
}

/// What a finished command did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Asserts the exit code, showing both streams when it differs.
    #[track_caller]
    fn expect(self, code: i32) -> Out {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }
}

/// Runs `linedee --dir <dir> ARGS` in `cwd` to completion.
fn linedee(cwd: &Path, dir: &Path, args: &[&str]) -> Out {
    let out = linedee_cmd(cwd)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("linedee runs");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Polls `f` until it returns `Some`, failing after [`DEADLINE`].
#[track_caller]
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The lines of a child's output, read on a thread.
fn lines_of(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// How many processes have exactly this command line (arguments joined by spaces).
fn processes_running(cmdline: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|raw| {
            let args: Vec<_> = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(String::from_utf8_lossy)
                .collect();
            args.join(" ") == cmdline
        })
        .count()
}

/// A running `linedee local`; SIGTERM (then SIGKILL) on drop, so no process outlives a test.
struct Local {
    child: Child,
    /// The lines printed before the ready line.
    banner: Vec<String>,
    /// Later stdout lines.
    rest: mpsc::Receiver<String>,
}

impl Local {
    /// Starts `linedee local --dir <dir> --app-dir <app> --port 0 --dashboard-port 0 --quiet`
    /// and waits for its ready line.
    fn start(cwd: &Path, dir: &Path, app: &Path) -> Local {
        let mut child = linedee_cmd(cwd)
            .arg("--dir")
            .arg(dir)
            .args(["local", "--port", "0", "--dashboard-port", "0", "--quiet"])
            .arg("--app-dir")
            .arg(app)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("linedee local starts");
        // Drained on a thread so the engine never blocks on a full pipe.
        let rest = lines_of(child.stdout.take().expect("stdout"));
        let mut local = Local {
            child,
            banner: Vec::new(),
            rest,
        };
        loop {
            match local.rest.recv_timeout(DEADLINE) {
                Ok(line) if line == "linedee local ready" => return local,
                Ok(line) => local.banner.push(line),
                Err(e) => panic!(
                    "linedee local was not ready ({e}); it printed {:?}",
                    local.banner
                ),
            }
        }
    }

    /// Sends SIGTERM and waits for the exit code.
    fn terminate(&mut self) -> i32 {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("linedee local did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let start = Instant::now();
            while let Ok(None) = self.child.try_wait() {
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.wait();
        }
    }
}

/// A temporary directory with `data` (the `--dir`), `app` (the app dir) and `cwd`.
struct Sandbox {
    tmp: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = tempfile::tempdir().expect("tempdir");
        for d in ["app", "cwd"] {
            std::fs::create_dir_all(tmp.path().join(d)).expect("mkdir");
        }
        Sandbox { tmp }
    }
    fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }
    fn app(&self) -> PathBuf {
        self.tmp.path().join("app")
    }
    fn cwd(&self) -> PathBuf {
        self.tmp.path().join("cwd")
    }
    /// Writes a file under `cwd` and returns its path.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.cwd().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
    fn start(&self) -> Local {
        Local::start(&self.cwd(), &self.data(), &self.app())
    }
    /// `linedee --dir data ARGS`, run in `cwd`.
    fn run(&self, args: &[&str]) -> Out {
        linedee(&self.cwd(), &self.data(), args)
    }
}

/// The run id from `run <id> submitted: …`.
#[track_caller]
fn run_id(out: &Out) -> String {
    out.stdout
        .lines()
        .find(|l| l.starts_with("run ") && l.contains(" submitted: "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no run id in {out:#?}"))
        .to_owned()
}

#[test]
fn submit_upload_runs_run_logs_and_export_against_linedee_local() {
    let sb = Sandbox::new();
    let _local = sb.start();

    // submit --wait: exit 0, the id and the final status.
    sb.file(
        "hello.json",
        r#"{"title":"cli hello","run":[{"name":"Greet","cmd":"sh -c 'echo hello-from-task'","no_output":true}]}"#,
    );
    let out = sb.run(&["submit", "hello.json", "--wait"]).expect(0);
    let submitted = run_id(&out);
    assert!(
        out.stdout
            .contains(&format!("run {submitted} succeeded — cli hello")),
        "{out:#?}"
    );
    assert!(
        out.stdout.contains("s3://linedee-local/in/hello.json"),
        "{out:#?}"
    );

    // logs --follow waits for the attempt's log to land, then prints it.
    let task = format!("{submitted}.0.0");
    let out = sb.run(&["logs", &task, "--follow"]).expect(0);
    assert_eq!(out.stdout.trim(), "hello-from-task");
    let out = sb.run(&["logs", &task]).expect(0);
    assert_eq!(out.stdout.trim(), "hello-from-task");
    let out = sb.run(&["logs", &task, "--attempt", "2"]).expect(3);
    assert!(out.stderr.contains("has no attempt 2"), "{out:#?}");

    // logs --follow on a running task: the lines so far (from the local engine's copy), then
    // the rest once the attempt ends, each line once.
    sb.file(
        "slow.json",
        r#"{"run":[{"cmd":"sh -c 'echo first-line; while [ ! -f release ]; do sleep 0.05; done; echo second-line'","no_output":true}]}"#,
    );
    let slow = run_id(&sb.run(&["submit", "slow.json"]).expect(0));
    let mut follower = linedee_cmd(&sb.cwd())
        .arg("--dir")
        .arg(sb.data())
        .args(["logs", &format!("{slow}.0.0"), "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("logs --follow starts");
    let lines = lines_of(follower.stdout.take().expect("stdout"));
    let first = lines
        .recv_timeout(DEADLINE)
        .expect("a first line while the task runs");
    assert_eq!(first, "first-line");
    assert!(
        follower.try_wait().expect("wait").is_none(),
        "--follow ended while the task ran"
    );
    std::fs::write(sb.app().join("release"), "").expect("release");
    let status = eventually("logs --follow ends", || follower.try_wait().expect("wait"));
    assert!(status.success());
    let rest: Vec<String> = lines.iter().collect();
    assert_eq!(rest, ["second-line"]);

    // upload --wait: the file is the input, the workflow rides in ld_code.
    sb.file("input.txt", "some input bytes\n");
    sb.file(
        "upload.json",
        r#"{"run":[{"cmd":"sh -c 'echo upload-task-ran'","no_output":true}]}"#,
    );
    let out = sb
        .run(&[
            "upload",
            "input.txt",
            "--workflow",
            "upload.json",
            "--key",
            "in/data/input.txt",
            "--wait",
        ])
        .expect(0);
    let uploaded = run_id(&out);
    assert!(
        out.stdout.contains(&format!("run {uploaded} succeeded")),
        "{out:#?}"
    );

    // run ID: the trigger, the steps and tasks.
    let out = sb.run(&["run", &uploaded]).expect(0);
    assert!(
        out.stdout
            .contains("ld_code s3://linedee-local/in/data/input.txt"),
        "{out:#?}"
    );
    assert!(out.stdout.contains(&format!("{uploaded}.0.0")), "{out:#?}");
    let out = sb.run(&["run", &submitted, "--watch"]).expect(0);
    assert!(out.stdout.contains("succeeded"), "{out:#?}");

    // runs: newest first, filtered, limited.
    let out = sb.run(&["runs"]).expect(0);
    let (a, b) = (
        out.stdout.find(&uploaded).expect("upload run listed"),
        out.stdout.find(&submitted).expect("submit run listed"),
    );
    assert!(a < b, "newest first: {}", out.stdout);
    let out = sb.run(&["runs", "--limit", "1"]).expect(0);
    assert!(out.stdout.contains(&uploaded) && !out.stdout.contains(&submitted));
    let out = sb.run(&["runs", "--status", "failed"]).expect(0);
    assert!(!out.stdout.contains(&uploaded) && !out.stdout.contains(&submitted));
    sb.run(&["runs", "--status", "bogus"]).expect(2);

    // export: the objects and the ld/ history.
    let export = sb.tmp.path().join("export");
    let out = sb
        .run(&["export", export.to_str().expect("utf-8 path")])
        .expect(0);
    assert!(out.stdout.starts_with("exported "), "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(export.join("in/data/input.txt")).expect("exported input"),
        "some input bytes\n"
    );
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(export.join(format!("ld/runs/{submitted}.json")))
            .expect("exported status"),
    )
    .expect("status JSON");
    assert_eq!(doc["status"], "succeeded");
    assert!(export.join(format!("ld/logs/{task}/1.log")).is_file());

    // Bad input.
    let out = sb.run(&["run", "no-such-run"]).expect(3);
    assert!(
        out.stderr.starts_with("error: no run `no-such-run`"),
        "{out:#?}"
    );
    let out = sb.run(&["logs", "no-such-run.0.0"]).expect(3);
    assert!(out.stderr.contains("no run `no-such-run`"), "{out:#?}");
    let out = sb.run(&["logs", &format!("{submitted}.5.0")]).expect(3);
    assert!(
        out.stderr.contains(&format!("its tasks are: {task}")),
        "{out:#?}"
    );
    let out = sb.run(&["submit", "missing.json"]).expect(2);
    assert!(
        out.stderr.starts_with("error: cannot read missing.json"),
        "{out:#?}"
    );
    sb.file("typo.json", r#"{"run":[{"cmd":"x","timout":5}]}"#);
    let out = sb.run(&["submit", "typo.json", "--wait"]).expect(2);
    assert!(
        out.stderr
            .contains("run[0].timout: unknown field `timout` (did you mean `timeout`?)"),
        "{out:#?}"
    );
    let out = sb
        .run(&["upload", "missing.bin", "--workflow", "upload.json"])
        .expect(2);
    assert!(out.stderr.contains("cannot read missing.bin"), "{out:#?}");
    // Errors are one or two lines, never a Debug dump or a backtrace.
    assert!(
        out.stderr.lines().count() <= 2 && !out.stderr.contains("Os {"),
        "{out:#?}"
    );
}

/// The task script: fails (no output) without `marker`; with it, writes its output over S3
/// (curl signs with SigV4) with `ld_task_id` and an `ld_state`.
const MARKER_TASK: &str = r#"test -f marker || { echo "marker missing" >&2; exit 1; }
tid=$(printf %s "$line_D" | sed 's/.*"task_id":"\([^"]*\)".*/\1/')
curl -sS -f -X PUT --aws-sigv4 "aws:amz:$LD_REGION:s3" \
  --user "$LD_AWS_ACCESS_KEY_ID:$LD_AWS_SECRET_ACCESS_KEY" \
  -H "x-amz-security-token: $LD_AWS_SESSION_TOKEN" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
  -H "x-amz-meta-ld_task_id: $tid" -H 'x-amz-meta-ld_state: {"ok":true}' \
  --data-binary done "$LD_S3_ENDPOINT/$LD_S3_BUCKET/out/$tid" || exit 1
echo "output written"
"#;

#[test]
fn cancel_and_retry_through_the_local_dashboard() {
    let sb = Sandbox::new();
    std::fs::write(sb.app().join("task.sh"), MARKER_TASK).expect("script");
    std::fs::write(sb.app().join("Procfile"), "needs-marker: sh task.sh\n").expect("Procfile");
    let _local = sb.start();

    // cancel: a task that would sleep for 10 minutes (a duration no other test uses, so its
    // process can be told apart).
    let sleep = format!("sleep {}", 600 + std::process::id() % 10_000);
    sb.file(
        "sleep.json",
        &format!(r#"{{"run":[{{"cmd":"{sleep}","timeout":20000}}]}}"#),
    );
    let out = sb.run(&["submit", "sleep.json"]).expect(0);
    let sleeping = run_id(&out);
    eventually("the sleep task runs", || {
        let out = sb.run(&["run", &sleeping]).expect(0);
        out.stdout
            .lines()
            .any(|l| l.contains(&format!("{sleeping}.0.0")) && l.contains(" running "))
            .then_some(())
    });
    assert_eq!(processes_running(&sleep), 1, "{sleep} runs");
    let out = sb.run(&["cancel", &sleeping]).expect(0);
    assert_eq!(out.stdout.trim(), format!("run {sleeping} cancelled"));
    eventually("the cancelled task's process is gone", || {
        (processes_running(&sleep) == 0).then_some(())
    });
    let out = sb.run(&["run", &sleeping]).expect(0);
    assert!(
        out.stdout.starts_with(&format!("run {sleeping} cancelled")),
        "{out:#?}"
    );
    let out = sb.run(&["cancel", &sleeping]).expect(2);
    assert!(out.stderr.contains("already finished"), "{out:#?}");

    // retry: the first run fails without the marker; with it, the redriven run succeeds.
    sb.file(
        "marker.json",
        r#"{"run":[{"cmd":"needs_marker","retries":0,"timeout":30}]}"#,
    );
    let out = sb.run(&["submit", "marker.json", "--wait"]).expect(1);
    let failing = run_id(&out);
    assert!(
        out.stdout.contains(&format!("run {failing} failed")),
        "{out:#?}"
    );
    assert!(out.stdout.contains("marker missing"), "{out:#?}");
    let out = sb.run(&["runs", "--status", "failed"]).expect(0);
    assert!(out.stdout.contains(&failing), "{out:#?}");
    let out = sb.run(&["retry", &sleeping]).expect(0);
    assert!(out.stdout.contains("redriven"), "{out:#?}");
    std::fs::write(sb.app().join("marker"), "").expect("marker");
    sb.run(&["retry", &failing]).expect(0);
    let out = sb.run(&["run", &failing, "--watch"]).expect(0);
    assert!(
        out.stdout.contains(&format!("run {failing} succeeded")),
        "{out:#?}"
    );
    assert!(out.stdout.contains(r#"state: {"ok":true}"#), "{out:#?}");
    let task = format!("{failing}.0.0");
    let out = sb.run(&["logs", &task, "--attempt", "1"]).expect(0);
    assert_eq!(out.stdout.trim(), "marker missing");
    let out = sb.run(&["logs", &task, "--follow"]).expect(0);
    assert!(out.stdout.contains("output written"), "{out:#?}");
    // The sleep run was redriven too: cancel it again so nothing is left running.
    sb.run(&["cancel", &sleeping]).expect(0);

    // Bad input.
    let out = sb.run(&["retry", "no-such-run"]).expect(3);
    assert!(out.stderr.contains("no run `no-such-run`"), "{out:#?}");
    let out = sb.run(&["retry", &failing]).expect(2);
    assert!(
        out.stderr.contains("only failed or cancelled runs"),
        "{out:#?}"
    );
    let out = sb.run(&["cancel", "bad id!"]).expect(2);
    assert!(out.stderr.contains("invalid run id"), "{out:#?}");
    let elsewhere = sb.tmp.path().join("not-a-local-dir");
    let out = linedee(&sb.cwd(), &elsewhere, &["cancel", &sleeping]).expect(4);
    assert!(
        out.stderr.contains("needs a local engine") && out.stderr.contains("linedee serve"),
        "{out:#?}"
    );
}

#[test]
fn local_writes_a_private_env_refuses_a_second_instance_and_stops_on_sigterm() {
    let sb = Sandbox::new();
    let mut local = sb.start();

    let env_path = sb.data().join("env");
    let env = std::fs::read_to_string(&env_path).expect("env file");
    for file in [&env_path, &sb.data().join("dashboard-token")] {
        let mode = std::fs::metadata(file)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    let vars: std::collections::HashMap<String, String> = env
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for name in [
        "LD_AWS_ACCESS_KEY_ID",
        "LD_AWS_SECRET_ACCESS_KEY",
        "LD_AWS_SESSION_TOKEN",
        "LD_REGION",
        "LD_S3_BUCKET",
        "LD_S3_ENDPOINT",
        "LD_DASHBOARD_URL",
    ] {
        assert!(vars.contains_key(name), "{name} missing from {env}");
    }
    assert!(vars["LD_S3_ENDPOINT"].starts_with("http://127.0.0.1:"));
    let banner = local.banner.join("\n");
    assert!(
        banner.contains(&format!("dashboard: {}", vars["LD_DASHBOARD_URL"])),
        "{banner}"
    );
    assert!(banner.contains(&format!("LD_S3_ENDPOINT={}", vars["LD_S3_ENDPOINT"])));
    // The secrets go to the file only.
    assert!(
        !banner.contains(&vars["LD_AWS_SECRET_ACCESS_KEY"]),
        "{banner}"
    );

    // A second instance on the same dir is refused, naming the holder.
    let out = sb.run(&["local", "--port", "0", "--dashboard-port", "0", "--quiet"]);
    let out = out.expect(2);
    assert!(
        out.stderr.contains("is in use by another `linedee local`")
            && out.stderr.contains(&format!("pid {}", local.child.id())),
        "{out:#?}"
    );

    // SIGTERM: a graceful stop, exit 0; then the dir is free again.
    assert_eq!(local.terminate(), 0);
    let last = eventually("the stopped line", || {
        local.rest.recv().ok().filter(|l| l.contains("stopped"))
    });
    assert_eq!(last, "linedee local stopped");
    drop(local);
    let again = sb.start();
    assert!(again.banner.iter().any(|l| l.starts_with("dashboard: ")));
}

#[test]
fn validate_checks_paths_and_procfile_types() {
    let sb = Sandbox::new();
    let procfile = sb.file(
        "Procfile.tasks",
        "process-image: bin/tasks process-image\nweb: bin/web\n",
    );
    let procfile = procfile.to_str().expect("utf-8");
    let dir = sb.data();
    let run = |args: &[&str]| linedee(&sb.cwd(), &dir, args);

    sb.file(
        "ok.json",
        r#"{"title":"t","run":[{"cmd":"process_image"},{"parallel":[{"cmd":"bin/other"},{"cmd":"echo hi"}]}]}"#,
    );
    let out = run(&["validate", "ok.json", "--procfile", procfile]).expect(0);
    assert!(
        out.stdout.starts_with("ok.json: ok (2 steps, 3 tasks"),
        "{out:#?}"
    );

    sb.file(
        "bare.json",
        r#"{"run":[{"parallel":[{"cmd":"web"},{"cmd":"resize"}]}]}"#,
    );
    let out = run(&["validate", "bare.json", "--procfile", procfile]).expect(2);
    assert!(
        out.stderr
            .contains("run[0].parallel[1].cmd: `resize` is not a Procfile process type")
            && out.stderr.contains("process-image, web"),
        "{out:#?}"
    );
    // Without a Procfile a bare word cannot run either.
    let out = run(&["validate", "ok.json"]).expect(2);
    assert!(out.stderr.contains("there is no ./Procfile"), "{out:#?}");

    sb.file(
        "many.json",
        r#"{"run":[{"cmd":"a b","timeout":0},{"parallel":[{"cmd":"c d","options":["no-equals"]}]}]}"#,
    );
    let out = run(&["validate", "many.json"]).expect(2);
    assert!(out.stderr.contains("run[0].timeout: "), "{out:#?}");
    assert!(
        out.stderr.contains("run[1].parallel[0].options[0]: "),
        "{out:#?}"
    );

    sb.file("syntax.json", "{\"run\": [\n  {\"cmd\": }\n]}");
    let out = run(&["validate", "syntax.json"]).expect(2);
    assert!(out.stderr.contains("line 2, column"), "{out:#?}");
    let out = run(&["validate", "nope.json"]).expect(2);
    assert!(out.stderr.contains("cannot read nope.json"), "{out:#?}");
    let out = run(&["validate", "ok.json", "--procfile", "missing-Procfile"]).expect(2);
    assert!(out.stderr.contains("missing-Procfile"), "{out:#?}");

    // schema, completions, help.
    let out = run(&["schema"]).expect(0);
    let schema: serde_json::Value = serde_json::from_str(&out.stdout).expect("schema is JSON");
    assert!(schema["properties"]["run"].is_object(), "{schema}");
    let out = run(&["completions", "bash"]).expect(0);
    assert!(out.stdout.contains("linedee"), "{out:#?}");
    let out = run(&["--help"]).expect(0);
    assert!(out.stdout.contains("Exit codes:"), "{out:#?}");
    run(&["no-such-command"]).expect(2);
}

#[test]
fn without_a_reachable_store_commands_say_what_to_do() {
    let sb = Sandbox::new();
    // No env file, no LD_* variables.
    let out = sb.run(&["runs"]).expect(4);
    assert!(out.stderr.contains("LD_S3_BUCKET is not set"), "{out:#?}");
    assert!(out.stderr.contains("linedee local"), "{out:#?}");

    // An env file pointing at a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    std::fs::create_dir_all(sb.data()).expect("mkdir");
    std::fs::write(
        sb.data().join("env"),
        format!(
            "LD_AWS_ACCESS_KEY_ID=AK\nLD_AWS_SECRET_ACCESS_KEY=SK\nLD_S3_BUCKET=b\nLD_S3_ENDPOINT=http://127.0.0.1:{port}\n"
        ),
    )
    .expect("env");
    let out = sb.run(&["run", "some-run"]).expect(4);
    assert!(
        out.stderr
            .contains(&format!("cannot reach http://127.0.0.1:{port}")),
        "{out:#?}"
    );
    // A variable set in the environment wins over the file.
    let out = linedee_cmd(&sb.cwd())
        .arg("--dir")
        .arg(sb.data())
        .args(["runs"])
        .env("LD_S3_ENDPOINT", "not-a-url")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-a-url"));
}

#[test]
fn stats_prints_the_overview_of_the_runs_it_was_given() {
    let sb = Sandbox::new();
    std::fs::write(sb.app().join("Procfile"), "ok: true\nfail: exit 3\n").expect("Procfile");
    // Without a running engine there is no dashboard to ask.
    let out = sb.run(&["stats"]).expect(2);
    assert!(out.stderr.contains("linedee local"), "{out:#?}");
    let _local = sb.start();
    sb.file("ok.json", r#"{"run":[{"cmd":"ok","no_output":true}]}"#);
    sb.file("fail.json", r#"{"run":[{"cmd":"fail","retries":1}]}"#);
    for _ in 0..3 {
        sb.run(&["submit", "ok.json", "--wait"]).expect(0);
    }
    sb.run(&["submit", "fail.json", "--wait"]).expect(1);

    let out = sb.run(&["stats", "--window", "1h", "--json"]).expect(0);
    let o: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(o["window"], "1h", "{o}");
    assert_eq!(
        (
            &o["counts"]["succeeded"],
            &o["counts"]["failed"],
            &o["queued_now"]
        ),
        (
            &serde_json::json!(3),
            &serde_json::json!(1),
            &serde_json::json!(0)
        ),
        "{o}"
    );
    let cmds = o["cmds"].as_array().expect("cmds");
    let fail = cmds.iter().find(|c| c["cmd"] == "fail").expect("fail row");
    assert_eq!(
        (&fail["runs"], &fail["failures"], &fail["retries"]),
        (
            &serde_json::json!(1),
            &serde_json::json!(2),
            &serde_json::json!(1)
        ),
        "{o}"
    );

    let out = sb.run(&["stats", "--window", "1h"]).expect(0);
    assert!(
        out.stdout
            .contains("runs      queued 0  running 0  succeeded 3  failed 1  cancelled 0"),
        "{out:#?}"
    );
    let row: Vec<&str> = out
        .stdout
        .lines()
        .find(|l| l.starts_with("fail "))
        .unwrap_or_else(|| panic!("no fail row: {out:#?}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[..6], ["fail", "1", "2", "2", "1", "0"], "{out:#?}");
    let out = sb.run(&["stats", "--window", "2h"]).expect(2);
    assert!(out.stderr.contains("2h"), "{out:#?}");
}
