//! The runtime as a real process, without S3: this test binary is also a task app.
//!
//! Run plainly, `main` runs the cases; each case starts this same binary again with
//! `LINEDEE_TASK_TEST_CHILD=1`, which makes it `linedee_task::main()`. (`harness = false`.)

use std::process::{Command, Output};

use linedee_task::{TaskContext, ld_task};
use serde_json::Value;

const CHILD: &str = "LINEDEE_TASK_TEST_CHILD";

#[derive(Debug, thiserror::Error)]
#[error("the input is empty")]
struct EmptyInput(#[source] std::io::Error);

#[ld_task]
async fn explode(_ctx: TaskContext) -> anyhow::Result<()> {
    let items: Vec<u32> = Vec::new();
    if items.is_empty() {
        panic!("boom at item {}", items.len());
    }
    Ok(())
}

#[ld_task]
fn sync_explode(_ctx: &TaskContext) -> anyhow::Result<()> {
    panic!("sync boom");
}

#[ld_task(machine = "standard-2x", timeout = 30, retries = 4)]
fn sync_fails(_ctx: TaskContext) -> Result<(), EmptyInput> {
    Err(EmptyInput(std::io::Error::other("0 bytes read")))
}

/// `no_output`: succeeds without writing anything, so without any `LD_*` variable.
#[ld_task(no_output)]
async fn fire_and_forget(ctx: TaskContext) -> anyhow::Result<()> {
    anyhow::ensure!(ctx.task_id() == "R.0.0", "wrong task id {}", ctx.task_id());
    anyhow::ensure!(
        ctx.option("who").as_deref() == Some("env"),
        "option from env"
    );
    Ok(())
}

/// Needs the client: fails with the SDK's error naming the missing variable.
#[ld_task]
async fn needs_s3(ctx: TaskContext) -> anyhow::Result<()> {
    ctx.client()?;
    Ok(())
}

fn app(args: &[&str], line_d: Option<&str>) -> Output {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .env_clear()
        .env(CHILD, "1")
        .env("who", "env")
        .env("RUST_LOG", "warn");
    if let Some(line_d) = line_d {
        cmd.env("line_D", line_d);
    }
    cmd.output().expect("the app starts")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn diagnostic(out: &Output) -> Value {
    let text = stderr(out);
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"error_type\""))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one diagnostic line:\n{text}");
    assert_eq!(
        text.lines().last(),
        Some(lines[0]),
        "it is the last line:\n{text}"
    );
    serde_json::from_str(lines[0]).expect("JSON diagnostic")
}

const R: Option<&str> = Some(r#"{"task_id":"R.0.0"}"#);

fn a_panic_in_an_async_task_is_one_diagnostic_line() {
    let out = app(&["explode"], R);
    assert_eq!(out.status.code(), Some(1));
    let d = diagnostic(&out);
    assert_eq!(d["error_type"], "panic");
    let msg = d["error_message"].as_str().expect("string");
    assert!(msg.starts_with("boom at item 0 (at "), "{msg}");
    assert!(msg.contains("tests/process.rs:"), "{msg}");
    assert!(
        !stderr(&out).contains("panicked at"),
        "no default panic message"
    );
}

fn a_panic_in_a_sync_task_is_one_diagnostic_line() {
    let out = app(&["sync-explode"], R);
    assert_eq!(out.status.code(), Some(1));
    let d = diagnostic(&out);
    assert_eq!(d["error_type"], "panic");
    assert!(
        d["error_message"]
            .as_str()
            .expect("string")
            .starts_with("sync boom")
    );
}

fn an_error_names_its_type_and_chain() {
    let out = app(&["sync_fails"], R);
    assert_eq!(out.status.code(), Some(1));
    let d = diagnostic(&out);
    assert_eq!(d["error_type"], "process::EmptyInput");
    assert_eq!(d["error_message"], "the input is empty: 0 bytes read");
}

fn no_output_tasks_succeed_without_writing() {
    let out = app(&["fire-and-forget"], R);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn a_missing_client_variable_is_named() {
    let out = app(&["needs-s3"], R);
    assert_eq!(out.status.code(), Some(1));
    let msg = diagnostic(&out)["error_message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(msg.contains("LD_S3_BUCKET"), "{msg}");
}

fn a_missing_line_d_explains_how_to_run_by_hand() {
    let out = app(&["fire-and-forget"], None);
    assert_eq!(out.status.code(), Some(1));
    let msg = diagnostic(&out)["error_message"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(msg.contains("`line_D` is not set"), "{msg}");
    assert!(msg.contains("started by the linedee engine"), "{msg}");
    assert!(
        msg.contains(r#"line_D='{"task_id":"manual.0.0"}' process-"#),
        "{msg}"
    );
    assert!(msg.contains(" fire-and-forget` ("), "{msg}");
}

fn a_malformed_line_d_names_the_field() {
    let out = app(
        &["fire-and-forget"],
        Some(r#"{"task_id":"R.0.0","options":{"n":1}}"#),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        diagnostic(&out)["error_message"],
        "`line_D` field `options.n`: expected a string, found number 1"
    );
}

fn an_unknown_task_lists_the_known_ones() {
    let out = app(&["nope"], R);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "error: unknown task `nope`; known tasks: explode, fire-and-forget, needs-s3, \
         sync-explode, sync-fails"
    );
}

fn list_shows_the_defaults() {
    let out = app(&["list"], None);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "TASK",
            "FUNCTION",
            "MACHINE",
            "TIMEOUT",
            "RETRIES",
            "NO_OUTPUT"
        ]
    );
    let row: Vec<&str> = lines[5].split_whitespace().collect();
    assert_eq!(
        row,
        [
            "sync-fails",
            "process::sync_fails",
            "standard-2x",
            "30s",
            "4",
            "false"
        ]
    );
    let row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(row[0], "fire-and-forget");
    assert_eq!(row[5], "true");

    let out = app(&["list", "--json"], None);
    assert!(out.status.success());
    let tasks: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(tasks.as_array().map(Vec::len), Some(5));
    assert_eq!(
        tasks[4],
        serde_json::json!({"name": "sync-fails", "function": "process::sync_fails",
            "machine": "standard-2x", "timeout": 30, "retries": 4, "no_output": false})
    );
    assert_eq!(tasks[0]["machine"], Value::Null);
}

fn procfile_prints_and_checks() {
    let out = app(&["procfile", "--bin", "bin/app"], None);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(text.lines().count(), 5);
    assert!(text.contains("needs-s3: bin/app needs-s3\n"), "{text}");

    let dir = std::env::temp_dir().join(format!("linedee-task-procfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("Procfile.good");
    std::fs::write(&good, format!("web: bin/server\n# tasks\n{text}")).expect("write");
    let out = app(
        &[
            "procfile",
            "--check",
            good.to_str().expect("utf-8"),
            "--bin",
            "bin/app",
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let drifted = text.replace("explode: bin/app explode\n", "") + "gone: bin/app gone\n";
    let bad = dir.join("Procfile.bad");
    std::fs::write(&bad, drifted).expect("write");
    let out = app(
        &[
            "procfile",
            "--check",
            bad.to_str().expect("utf-8"),
            "--bin",
            "bin/app",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("missing: `explode: bin/app explode`"), "{err}");
    assert!(
        err.contains("extra (line 5): `gone: bin/app gone`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        linedee_task::main();
    }
    let cases: &[(&str, fn())] = &[
        (
            "a_panic_in_an_async_task_is_one_diagnostic_line",
            a_panic_in_an_async_task_is_one_diagnostic_line,
        ),
        (
            "a_panic_in_a_sync_task_is_one_diagnostic_line",
            a_panic_in_a_sync_task_is_one_diagnostic_line,
        ),
        (
            "an_error_names_its_type_and_chain",
            an_error_names_its_type_and_chain,
        ),
        (
            "no_output_tasks_succeed_without_writing",
            no_output_tasks_succeed_without_writing,
        ),
        (
            "a_missing_client_variable_is_named",
            a_missing_client_variable_is_named,
        ),
        (
            "a_missing_line_d_explains_how_to_run_by_hand",
            a_missing_line_d_explains_how_to_run_by_hand,
        ),
        (
            "a_malformed_line_d_names_the_field",
            a_malformed_line_d_names_the_field,
        ),
        (
            "an_unknown_task_lists_the_known_ones",
            an_unknown_task_lists_the_known_ones,
        ),
        ("list_shows_the_defaults", list_shows_the_defaults),
        ("procfile_prints_and_checks", procfile_prints_and_checks),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut ran = 0;
    for (name, case) in cases {
        if filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())) {
            case();
            println!("test {name} ... ok");
            ran += 1;
        }
    }
    println!("\ntest result: ok. {ran} passed");
}
