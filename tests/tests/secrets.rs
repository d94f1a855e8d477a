//! No secret reaches an output: `linedee local` at `RUST_LOG=trace` runs workflows that
//! succeed, fail, time out, are cancelled and are invalid, through the CLI and a real task
//! using the SDK; then every output is searched for the store's secret key, its session
//! token, the dashboard's token and a wrong secret a user passed: the engine's stdout and
//! stderr, every file of the data dir but the three that must hold them, every object of
//! the bucket (status documents, logs, outputs), `line_D`, every dashboard response, and
//! every CLI command's output, errors included.
//!
//! Serve mode and credentials rotation need moto (STS, IAM) and are covered by the interop
//! test `serve_rotate::a_client_keeps_working_across_three_rotations_and_no_secret_leaks`:
//! every minted secret key and session token, the engine's IAM secret and the Heroku API
//! token are searched for in the replica's output, `linedee cloud rotate`'s, a failed
//! rotation's error, every object of the bucket and every dashboard response.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use linedee_tests::{LinedeeLocal, binary, example_tasks};

/// Where the secrets are kept, by design (mode 0600): searched by no one.
const HOLDERS: &[&str] = &["env", "dashboard-token", "credentials.json"];

/// A wrong secret a user passes by mistake: it must not be echoed back either.
const WRONG_SECRET: &str = "wRoNgSeCrEtKeY0123456789abcdefABCDEF+/xyz";

struct Cli {
    bin: PathBuf,
    data: PathBuf,
    cwd: PathBuf,
}

impl Cli {
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(&self.bin)
            .arg("--dir")
            .arg(&self.data)
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .current_dir(&self.cwd)
            .output()
            .expect("linedee runs")
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

/// The run id from `run <id> submitted …` or `run <id> …`.
fn run_id(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .split_whitespace()
        .skip_while(|w| *w != "run")
        .nth(1)
        .unwrap_or_else(|| panic!("no run id in {stdout}"))
        .trim_end_matches(':')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_line_d_status_documents_the_dashboard_or_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (app, data, cwd) = (
        tmp.path().join("app"),
        tmp.path().join("data"),
        tmp.path().join("cwd"),
    );
    for d in [&app, &cwd] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let tasks = example_tasks();
    std::fs::write(
        app.join("Procfile"),
        format!(
            "show: bash -c 'echo \"line_D=$line_D\"; echo \"greeting=$greeting\"; echo to-stderr >&2'\n\
             fail: bash -c 'echo failing on purpose >&2; exit 3'\n\
             slow: sleep 30\n\
             process-image: {} process-image\n",
            tasks.display()
        ),
    )
    .expect("Procfile");
    let mut local = LinedeeLocal::start_with_env(&data, &app, &[], &[("RUST_LOG", "trace")]);
    let secrets = [
        local.env["LD_AWS_SECRET_ACCESS_KEY"].clone(),
        local.env["LD_AWS_SESSION_TOKEN"].clone(),
        local.token.clone(),
        WRONG_SECRET.to_owned(),
    ];
    let cli = Cli {
        bin: binary("linedee-cli", "linedee"),
        data: data.clone(),
        cwd: cwd.clone(),
    };
    let mut outputs: Vec<(String, String)> = Vec::new();
    let file = |name: &str, body: &str| {
        let p = cwd.join(name);
        std::fs::write(&p, body).expect("write");
        p.display().to_string()
    };

    // A task that prints `line_D` and an option, and succeeds.
    let show = file(
        "show.json",
        r#"{"run":[{"cmd":"show","no_output":true,"options":["greeting=hello"]}]}"#,
    );
    let out = cli.run(&["submit", &show, "--wait"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let show_run = run_id(&out);
    outputs.push(("submit show".into(), text(&out)));
    // A failing task, retried; a timed-out one; an invalid workflow.
    for (name, wf) in [
        ("fail", r#"{"run":[{"cmd":"fail","retries":1}]}"#),
        (
            "slow",
            r#"{"run":[{"cmd":"slow","timeout":1,"retries":0}]}"#,
        ),
        ("bad", r#"{"run":[{"cmd":"x","timout":5}]}"#),
    ] {
        let path = file(&format!("{name}.json"), wf);
        let out = cli.run(&["submit", &path, "--wait"], &[]);
        outputs.push((format!("submit {name}"), text(&out)));
    }
    // The invalid one again, sent by hand past validation so the engine reports it.
    let client = local.client();
    client
        .put("in/bad-by-hand", r#"{"run":[{"cmd":"x","timout":5}]}"#)
        .metadata("ld_run", "true")
        .send()
        .await
        .expect("put");
    // A real Rust task (the SDK and the task runtime, at RUST_LOG=trace) on an upload.
    let media = file(
        "media.json",
        r#"{"run":[{"cmd":"process_image","timeout":30}]}"#,
    );
    let img = file("example_img.jpg", "not really a jpeg");
    let out = cli.run(&["upload", &img, "--workflow", &media, "--wait"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    outputs.push(("upload".into(), text(&out)));
    // A run cancelled through the dashboard (the token comes from the data dir).
    let slow = file("slow2.json", r#"{"run":[{"cmd":"slow","timeout":60}]}"#);
    let out = cli.run(&["submit", &slow], &[]);
    let slow_run = run_id(&out);
    let out = cli.run(&["cancel", &slow_run], &[]);
    assert!(out.status.success(), "{}", text(&out));
    outputs.push(("cancel".into(), text(&out)));

    // Reading it all back through the CLI, and errors with a wrong secret.
    let out = cli.run(&["runs", "--limit", "100"], &[]);
    let listing = text(&out);
    outputs.push(("runs".into(), listing.clone()));
    let out = cli.run(&["run", &show_run], &[]);
    outputs.push(("run".into(), text(&out)));
    let out = cli.run(&["logs", &format!("{show_run}.0.0")], &[]);
    let show_log = text(&out);
    outputs.push(("logs".into(), show_log.clone()));
    let export = tmp.path().join("export");
    let out = cli.run(&["export", &export.display().to_string()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    outputs.push(("export".into(), text(&out)));
    let out = cli.run(&["runs"], &[("LD_AWS_SECRET_ACCESS_KEY", WRONG_SECRET)]);
    assert!(!out.status.success(), "a wrong secret is refused");
    outputs.push(("runs with a wrong secret".into(), text(&out)));
    let out = cli.run(
        &["submit", &show],
        &[("LD_AWS_SECRET_ACCESS_KEY", WRONG_SECRET)],
    );
    assert!(!out.status.success());
    outputs.push(("submit with a wrong secret".into(), text(&out)));

    // `line_D` as the task saw it.
    let line_d = show_log
        .lines()
        .find_map(|l| l.strip_prefix("line_D="))
        .unwrap_or_else(|| panic!("the task printed line_D: {show_log}"));
    let line_d: serde_json::Value = serde_json::from_str(line_d).expect("line_D is JSON");
    assert_eq!(line_d["task_id"], format!("{show_run}.0.0"));
    assert!(show_log.contains("greeting=hello"), "{show_log}");
    outputs.push(("line_D".into(), line_d.to_string()));

    // Every dashboard response.
    let http = reqwest::Client::new();
    let base = local.dashboard_url().to_owned();
    let get = |path: String| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let resp = http.get(&url).send().await.expect("dashboard answers");
            resp.text().await.unwrap_or_default()
        }
    };
    for path in ["/", "/app.js", "/style.css", "/api/runs?limit=100"] {
        outputs.push((format!("dashboard {path}"), get(path.to_owned()).await));
    }
    let runs: serde_json::Value =
        serde_json::from_str(&get("/api/runs?limit=100".into()).await).expect("runs json");
    let runs = runs["runs"].as_array().expect("runs").clone();
    // show, fail, slow, bad-by-hand, the upload, the cancelled one (the CLI refused `bad`).
    assert_eq!(runs.len(), 6, "{runs:?}");
    for run in &runs {
        let id = run["run_id"].as_str().expect("id");
        let page = get(format!("/api/runs/{id}")).await;
        let detail: serde_json::Value = serde_json::from_str(&page).expect("run json");
        for a in detail["attempts"].as_array().into_iter().flatten() {
            let (task, n) = (a["task_id"].as_str().unwrap_or(""), &a["attempt"]);
            outputs.push((
                format!("dashboard log {task}/{n}"),
                get(format!("/api/logs/{task}/{n}")).await,
            ));
        }
        outputs.push((format!("dashboard run {id}"), page));
    }

    // The engine's own output, once it has stopped.
    assert_eq!(local.stop(), 0);
    outputs.push(("linedee local stdout".into(), local.stdout()));
    outputs.push(("linedee local stderr".into(), local.stderr()));
    assert!(local.stderr().contains(" INFO "), "the engine logged");

    // Every file the engine wrote and every object of the bucket.
    let mut searched_files = 0;
    for path in walk(&data).into_iter().chain(walk(&export)) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.starts_with(&data) && HOLDERS.contains(&name) {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        outputs.push((
            path.display().to_string(),
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
        searched_files += 1;
    }
    assert!(
        walk(&export)
            .iter()
            .any(|p| p.to_string_lossy().contains("/ld/runs/")),
        "the export holds the status documents"
    );
    assert!(searched_files > 20, "only {searched_files} files");

    for (what, body) in &outputs {
        for (i, secret) in secrets.iter().enumerate() {
            assert!(
                !body.contains(secret.as_str()),
                "secret #{i} appears in {what}"
            );
        }
    }
}
