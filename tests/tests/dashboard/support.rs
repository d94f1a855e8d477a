//! Support for the dashboard tests: the dashboard on `127.0.0.1:0`, finished runs, headless
//! Chromium, and small HTTP helpers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use linedee::status::{RunState, TaskState};
use linedee::{Task, Workflow};
use linedee_engine::Engine;
use linedee_tests::{TestEngine, workspace_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

pub(crate) const WAIT: Duration = Duration::from_secs(60);
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

pub(crate) fn bash(script: &str) -> Task {
    Task::new(format!("bash -c '{script}'"))
}

/// The dashboard of an engine, on `127.0.0.1:0`, stopped when dropped.
pub(crate) struct Dashboard {
    pub(crate) url: String,
    pub(crate) token: String,
    _stop: oneshot::Sender<()>,
}

pub(crate) async fn dashboard(engine: &Engine) -> Dashboard {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let token = engine.store().dashboard_token();
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
pub(crate) struct Runs {
    pub(crate) ok: String,
    pub(crate) failed: String,
}

pub(crate) async fn succeeded_and_failed(t: &TestEngine) -> Runs {
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
    // `no_output` succeeds once the process starts: wait for its log to be stored.
    let key = linedee::status::log_key(&format!("{}.0.0", ok.run_id()), 1);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(object) = t.client.get(&key).await
            && object
                .bytes()
                .await
                .is_ok_and(|b| String::from_utf8_lossy(&b).contains("hello"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log of {key} was not stored within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Runs {
        ok: ok.run_id().to_owned(),
        failed: bad.run_id().to_owned(),
    }
}

/// Waits until `f` holds (for effects with no event to wait on from outside).
pub(crate) async fn eventually(f: impl Fn() -> bool) {
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
pub(crate) async fn chromium(url: &str, args: &[&str]) -> String {
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
pub(crate) fn tags<'a>(dom: &'a str, tag: &str, needles: &[&str]) -> Vec<&'a str> {
    dom.split(&format!("<{tag} "))
        .skip(1)
        .filter_map(|rest| rest.split_once('>').map(|(attrs, _)| attrs))
        .filter(|attrs| needles.iter().all(|n| attrs.contains(n)))
        .collect()
}

pub(crate) fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = target.join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

pub(crate) async fn screenshot(url: &str, name: &str) -> PathBuf {
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

/// A request with a path sent as is (reqwest would normalise `..` away); returns the status.
pub(crate) async fn raw_get(base: &str, path: &str, host: &str) -> u16 {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.expect("read");
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp}"))
}

pub(crate) async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::get(url).await.expect("GET");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON body"))
}

pub(crate) async fn post(url: &str, auth: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().post(url);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let resp = req.send().await.expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON body"))
}

/// Polls the run's JSON until `pred` holds (the run may not exist yet: the trigger is
/// picked up asynchronously).
pub(crate) async fn wait_api(
    d: &Dashboard,
    run_id: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (code, doc) = get_json(&format!("{}/api/runs/{run_id}", d.url)).await;
        assert!(code == 200 || code == 404, "{code}: {doc}");
        if code == 200 && pred(&doc) {
            return doc;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {WAIT:?}: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET {base}{path}` answers 200 with a `kind` content type, the dashboard's CSP and
/// `nosniff`, and a body without the token.
pub(crate) async fn assert_locked_down(base: &str, path: &str, kind: &str, token: &str) {
    let resp = reqwest::get(format!("{base}{path}")).await.expect("GET");
    assert_eq!(resp.status().as_u16(), 200, "{path}");
    let h = resp.headers().clone();
    assert!(
        h["content-type"]
            .to_str()
            .is_ok_and(|c| c.starts_with(kind)),
        "{path}: {h:?}"
    );
    assert!(
        h["content-security-policy"]
            .to_str()
            .is_ok_and(|c| c.starts_with("default-src 'self'")),
        "{path}"
    );
    assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    let body = resp.text().await.expect("body");
    assert!(!body.contains(token), "{path} holds the token");
}
