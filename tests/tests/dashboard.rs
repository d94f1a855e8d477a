//! The dashboard after real runs: in a real browser (headless Chromium, as `.ci/run` installs
//! it) and over HTTP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use linedee::status::{RunState, TaskState};
use linedee::{Task, Workflow};
use linedee_engine::Engine;
use linedee_tests::{TestEngine, workspace_root};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(60);
const CHROMIUM: &str = "/usr/bin/chromium";

fn bash(script: &str) -> Task {
    Task::new(format!("bash -c '{script}'"))
}

/// The dashboard of an engine, on `127.0.0.1:0`, stopped when dropped.
struct Dashboard {
    url: String,
    token: String,
    _stop: oneshot::Sender<()>,
}

async fn dashboard(engine: &Engine) -> Dashboard {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let token = engine.store().api_token();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(linedee_engine::dashboard::serve(
        engine.clone(),
        listener,
        token.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    Dashboard {
        url,
        token,
        _stop: stop,
    }
}

/// Two finished runs: one that succeeded, one whose only task failed twice (1 retry).
struct Runs {
    ok: String,
    failed: String,
}

async fn succeeded_and_failed(t: &TestEngine) -> Runs {
    let ok = Workflow::new().title("Says hello").step(
        bash("echo hello from the dashboard test")
            .name("Hello")
            .no_output(),
    );
    let ok = t.client.submit("in/hello", &ok).await.expect("submit");
    let status = ok.wait(WAIT).await.expect("run finishes");
    assert_eq!(status.status, RunState::Succeeded, "{status:#?}");
    let bad = Workflow::new().title("Fails on purpose").step(
        bash("echo failing on purpose >&2; exit 3")
            .name("Always fails")
            .retries(1),
    );
    let bad = t.client.submit("in/bad", &bad).await.expect("submit");
    let status = bad.wait(WAIT).await.expect("failed run finishes");
    assert_eq!(status.status, RunState::Failed, "{status:#?}");
    let task = status.tasks().next().expect("one task");
    assert_eq!((task.status, task.attempts), (TaskState::Failed, 2));
    // `no_output` succeeds once the process starts: wait for its log line to land.
    let log = t.engine.log_path(&format!("{}.0.0", ok.run_id()), 1);
    eventually(|| std::fs::read_to_string(&log).is_ok_and(|l| l.contains("hello"))).await;
    Runs {
        ok: ok.run_id().to_owned(),
        failed: bad.run_id().to_owned(),
    }
}

/// Waits until `f` holds (for effects with no event to wait on from outside).
async fn eventually(f: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs headless Chromium on `url` with `args`; returns its stdout (the DOM with `--dump-dom`).
async fn chromium(url: &str, args: &[&str]) -> String {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: the dashboard is tested in headless Chromium; run `.ci/run` or \
         `apt-get install chromium`"
    );
    let profile = tempfile::tempdir().expect("profile dir");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=5000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finishes within 2 minutes")
    .expect("chromium starts");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The opening tags `<{tag} …>` of `dom` that contain every one of `needles`.
fn tags<'a>(dom: &'a str, tag: &str, needles: &[&str]) -> Vec<&'a str> {
    dom.split(&format!("<{tag} "))
        .skip(1)
        .filter_map(|rest| rest.split_once('>').map(|(attrs, _)| attrs))
        .filter(|attrs| needles.iter().all(|n| attrs.contains(n)))
        .collect()
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn screenshot(url: &str, name: &str) -> PathBuf {
    let path = screenshot_dir().join(name);
    let _ = std::fs::remove_file(&path);
    chromium(
        url,
        &[
            &format!("--screenshot={}", path.display()),
            "--window-size=1280,900",
        ],
    )
    .await;
    let png = std::fs::read(&path).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is not a PNG");
    assert!(png.len() > 10_000, "{name} is only {} bytes", png.len());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_shows_the_runs_and_one_timeline_bar_per_attempt() {
    let t = TestEngine::start("").await;
    let runs = succeeded_and_failed(&t).await;
    let d = dashboard(&t.engine).await;

    let dom = chromium(&format!("{}/#/", d.url), &["--dump-dom"]).await;
    let rows = tags(&dom, "tr", &["class=\"run-row\""]);
    assert_eq!(rows.len(), 2, "{dom}");
    assert_eq!(
        tags(
            &dom,
            "tr",
            &[
                &format!("data-run-id=\"{}\"", runs.ok),
                "data-status=\"succeeded\""
            ]
        )
        .len(),
        1,
        "{dom}"
    );
    assert_eq!(
        tags(
            &dom,
            "tr",
            &[
                &format!("data-run-id=\"{}\"", runs.failed),
                "data-status=\"failed\""
            ]
        )
        .len(),
        1,
        "{dom}"
    );
    assert!(
        dom.contains("Fails on purpose") && dom.contains("in/bad"),
        "{dom}"
    );
    assert!(!dom.contains(&d.token), "the token reached the page");

    let failed_task = format!("{}.0.0", runs.failed);
    let dom = chromium(
        &format!("{}/#/runs/{}", d.url, runs.failed),
        &["--dump-dom"],
    )
    .await;
    let bars = tags(&dom, "rect", &["class=\"attempt"]);
    assert_eq!(bars.len(), 2, "one bar per attempt: {dom}");
    for (n, bar) in bars.iter().enumerate() {
        assert!(
            bar.contains(&format!("data-task-id=\"{failed_task}\"")),
            "{bar}"
        );
        assert!(
            bar.contains(&format!("data-attempt=\"{}\"", n + 1)),
            "{bar}"
        );
        assert!(bar.contains("class=\"attempt failed\""), "{bar}");
    }
    assert_eq!(
        tags(
            &dom,
            "section",
            &[
                &format!("data-task-id=\"{failed_task}\""),
                "data-status=\"failed\""
            ]
        )
        .len(),
        1,
        "{dom}"
    );
    assert!(dom.contains("<dd class=\"exit-code\">3</dd>"), "{dom}");
    assert!(
        tags(&dom, "dd", &["class=\"error-text failure\""]).len() == 1,
        "{dom}"
    );
    assert!(
        dom.contains("failing on purpose"),
        "the log is shown: {dom}"
    );

    let dom = chromium(&format!("{}/#/runs/{}", d.url, runs.ok), &["--dump-dom"]).await;
    let bars = tags(&dom, "rect", &["class=\"attempt"]);
    assert_eq!(bars.len(), 1, "{dom}");
    assert!(bars[0].contains("data-outcome=\"succeeded\""), "{dom}");
    assert!(dom.contains("hello from the dashboard test"), "{dom}");

    screenshot(&format!("{}/#/", d.url), "runs.png").await;
    screenshot(
        &format!("{}/#/runs/{}", d.url, runs.failed),
        "run-failed.png",
    )
    .await;
}
