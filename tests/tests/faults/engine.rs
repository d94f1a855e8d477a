//! The engine under faults: forked children, a Procfile changing under it, 100 MB of logs.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use linedee::status::RunState;
use linedee::{Client, RunStatus, Task, Workflow};
use linedee_tests::{LinedeeLocal, TestEngine, example_tasks};

use super::WAIT;

/// Polls `f` until it returns `Some`, failing after `limit`.
async fn within<T, F, Fut>(what: &str, limit: Duration, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn finished(client: &Client, run_id: &str) -> RunStatus {
    within("the run finishes", WAIT, || async {
        client
            .run(run_id)
            .await
            .ok()
            .filter(|s| s.status.is_finished())
    })
    .await
}

/// A `sleep` argument no other process on the machine uses: `600.<pid><n>`.
fn marker() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "600.{}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Pids of live processes whose command line is exactly `sleep <arg>`.
fn sleeping(arg: &str) -> Vec<i32> {
    let want = format!("sleep {arg}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<_> = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(String::from_utf8_lossy)
                .collect();
            (args.join(" ") == want).then_some(pid)
        })
        .collect()
}

/// Kills what a test started and left behind, so a failing test leaves no process either.
struct Sweep(Vec<String>);

impl Drop for Sweep {
    fn drop(&mut self) {
        for m in &self.0 {
            for pid in sleeping(m) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

#[tokio::test]
async fn no_forked_child_outlives_its_attempt() {
    let t = TestEngine::start("").await;
    let (bg, double, session) = (marker(), marker(), marker());
    let _sweep = Sweep(vec![bg.clone(), double.clone(), session.clone()]);
    // A background child, a double fork (reparented away from the shell) and a child in a
    // session (and process group) of its own; the shell waits until each has started (each
    // writes its pid file once in place), then exits without an output.
    let script = format!(
        "sleep {bg} & \
         (sh -c 'echo $$ > {double}.pid; exec sleep {double}' &); \
         setsid sh -c 'echo $$ > {session}.pid; exec sleep {session}' & \
         while [ ! -s {double}.pid ] || [ ! -s {session}.pid ]; do sleep 0.01; done; \
         echo children started; exit 0"
    );
    let wf = Workflow::new().step(
        Task::new(script)
            .retries(0)
            .timeout(Duration::from_secs(40)),
    );
    let run = t.client.submit("in/forks", &wf).await.unwrap();
    let started = Instant::now();
    let status = finished(&t.client, run.run_id()).await;
    assert_eq!(status.status, RunState::Failed, "{status:#?}");
    let task_id = format!("{}.0.0", run.run_id());
    let error = status.tasks().next().and_then(|t| t.error.clone());
    assert_eq!(
        error.as_deref(),
        Some(
            format!(
                "exited with code 0 without writing out/{task_id}: last output: children started"
            )
            .as_str()
        ),
        "the attempt ends when the shell exits, not at its timeout"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    for (what, m) in [
        ("background", &bg),
        ("double fork", &double),
        ("setsid", &session),
    ] {
        assert!(
            sleeping(m).is_empty(),
            "the {what} child `sleep {m}` outlived its attempt"
        );
    }
}

#[tokio::test]
async fn an_escaped_process_holding_the_log_pipe_does_not_stall_the_attempt() {
    let t = TestEngine::start("").await;
    let m = marker();
    let _sweep = Sweep(vec![m.clone()]);
    // `env -i` drops the attempt's environment, so the engine cannot tell it belongs to the
    // attempt (a known limit); it still holds the attempt's stdout open.
    let script = format!(
        "env -i setsid sh -c 'echo $$ > {m}.pid; exec sleep {m}' & \
         while [ ! -s {m}.pid ]; do sleep 0.01; done; echo escaped; exit 3"
    );
    let wf = Workflow::new().step(
        Task::new(script)
            .retries(0)
            .timeout(Duration::from_secs(40)),
    );
    let run = t.client.submit("in/escaped", &wf).await.unwrap();
    let status = finished(&t.client, run.run_id()).await;
    let task_id = format!("{}.0.0", run.run_id());
    let error = status.tasks().next().and_then(|t| t.error.clone());
    assert_eq!(
        error.as_deref(),
        Some(
            format!("exited with code 3 without writing out/{task_id}: last output: escaped")
                .as_str()
        ),
        "the attempt ends at the exit, not at the timeout"
    );
    // Its log is stored too.
    let log = t
        .client
        .get(&linedee::status::log_key(&task_id, 1))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&log).trim(), "escaped");
}

/// Rewrites the Procfile and moves its modification time forward, so the change is seen
/// even within the file system's timestamp granularity.
fn write_procfile(path: &Path, text: &str) {
    static BUMP: AtomicU32 = AtomicU32::new(1);
    std::fs::write(path, text).expect("write the Procfile");
    let later =
        SystemTime::now() + Duration::from_secs(u64::from(BUMP.fetch_add(1, Ordering::SeqCst)));
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(later))
        .expect("bump the mtime");
}

async fn run_one(client: &Client, task: Task) -> (String, RunStatus) {
    let run = client
        .submit("in/procfile", &Workflow::new().step(task))
        .await
        .expect("submitted");
    let status = finished(client, run.run_id()).await;
    (format!("{}.0.0", run.run_id()), status)
}

#[tokio::test]
async fn a_procfile_changed_while_the_engine_runs_is_picked_up_or_refused() {
    let bin = example_tasks();
    let tmp = tempfile::tempdir().unwrap();
    let (data, app) = (tmp.path().join("data"), tmp.path().join("app"));
    std::fs::create_dir_all(&app).unwrap();
    let procfile = app.join("Procfile");
    let posts = format!("posts: {} get-data\n", bin.display());
    let users = format!("users-data: {} get-data\n", bin.display());
    write_procfile(&procfile, &posts);
    let local = LinedeeLocal::start(&data, &app, &["--quiet"]);
    let client = local.client();
    let get = |cmd: &str, endpoint: &str| Task::new(cmd).option("endpoint", endpoint).retries(0);

    let (_, status) = run_one(&client, get("posts", "posts")).await;
    assert_eq!(status.status, RunState::Succeeded, "{status:#?}");

    // A process type added while the engine runs is used by the next run.
    write_procfile(&procfile, &format!("{posts}{users}"));
    let (task_id, status) = run_one(&client, get("users_data", "users")).await;
    assert_eq!(status.status, RunState::Succeeded, "{status:#?}");
    let out = client
        .task_output(&task_id)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(include_str!("../../../examples/tasks/data/users.json")).unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
        expected
    );

    // A broken Procfile is refused, said so on the console, and the last good one stays.
    write_procfile(
        &procfile,
        &format!("{posts}{users}this line has no colon\n"),
    );
    let (_, status) = run_one(&client, get("users-data", "users")).await;
    assert_eq!(status.status, RunState::Succeeded, "{status:#?}");
    let refusal = format!(
        "{}:3: expected `name: command`, got \"this line has no colon\"",
        procfile.display()
    );
    within("the refusal is logged", WAIT, || async {
        let err = local.stderr();
        (err.contains("Procfile changed but is invalid; still using the previous version")
            && err.contains(&refusal))
        .then_some(())
    })
    .await;

    // A process type removed: a run using it fails, naming it and listing the known ones.
    write_procfile(&procfile, &posts);
    let (task_id, status) = run_one(&client, get("users-data", "users")).await;
    assert_eq!(status.status, RunState::Failed, "{status:#?}");
    let error = status
        .tasks()
        .next()
        .and_then(|t| t.error.clone())
        .unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "exited with code 127 without writing out/{task_id}: "
        )) && error.contains(
            "`users-data` is not a process type of the Procfile (it has: posts), so it ran \
                 as a command line"
        ),
        "{error}"
    );
}

/// The peak resident set (`VmHWM`) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// 1,000,000 lines of 100 `x`, the last without its newline.
const LOG_BYTES: u64 = 100_000_000 + 999_999;

#[tokio::test]
async fn a_task_writing_100_mb_of_logs_keeps_the_engine_memory_bounded() {
    let bin = example_tasks();
    let tmp = tempfile::tempdir().unwrap();
    let (data, app) = (tmp.path().join("data"), tmp.path().join("app"));
    std::fs::create_dir_all(&app).unwrap();
    // 100 MB on stdout, then the example task writes its output (quietly, so the log holds
    // exactly the 100 MB).
    write_procfile(
        &app.join("Procfile"),
        &format!(
            "chatty: head -c 100000000 /dev/zero | tr '\\0' 'x' | fold -w 100 && RUST_LOG=warn exec {} get-data\n",
            bin.display()
        ),
    );
    let local = LinedeeLocal::start(&data, &app, &["--quiet"]);
    let client = local.client();
    let idle = peak_rss_kib(local.pid());

    let task = Task::new("chatty")
        .option("endpoint", "posts")
        .timeout(Duration::from_secs(600));
    let (task_id, status) = run_one(&client, task).await;
    assert_eq!(status.status, RunState::Succeeded, "{status:#?}");
    // The log is kept whole: the local copy and `ld/logs/…`, byte for byte the size written.
    let key = linedee::status::log_key(&task_id, 1);
    let stored = within("the log is stored", WAIT, || async {
        client.head(&key).await.ok().and_then(|i| i.content_length)
    })
    .await;
    let local_log = linedee_engine::local_log_path(&data, &task_id, 1);
    assert_eq!(std::fs::metadata(&local_log).unwrap().len(), LOG_BYTES);
    assert_eq!(stored, LOG_BYTES);
    let mut tail = [0u8; 201];
    {
        use std::io::{Read as _, Seek as _};
        let mut f = std::fs::File::open(&local_log).unwrap();
        f.seek(std::io::SeekFrom::End(-201)).unwrap();
        f.read_exact(&mut tail).unwrap();
    }
    assert!(tail[..100] == [b'x'; 100][..] && tail[100] == b'\n' && tail[101..] == [b'x'; 100][..]);

    let peak = peak_rss_kib(local.pid());
    println!("engine VmHWM: idle {idle} KiB, after 100 MB of logs {peak} KiB");
    assert!(
        peak < 100 * 1024 && peak < idle + 60 * 1024,
        "engine peak RSS {peak} KiB (idle {idle} KiB) with {LOG_BYTES} bytes of logs"
    );
}
