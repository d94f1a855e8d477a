//! The process tests: starting without a shell, logs, the escape scan.

use super::*;
use crate::escape::{leaders, scan_environs};
use std::path::Path;

fn spec(dir: &Path, script: &str) -> Spec {
    Spec {
        script: script.to_owned(),
        env: vec![("PATH".to_owned(), "/usr/bin:/bin".to_owned())],
        cwd: dir.to_owned(),
        log_path: crate::task_log::log_path(dir, "R.0.0", 1),
        label: "t.1".to_owned(),
    }
}

/// Runs `spec` to its end: its exit code and what it printed (a short attempt's output
/// stays in memory).
async fn run(spec: Spec) -> (Option<i32>, String) {
    let prepared = prepare(&spec).expect("prepare");
    let mut running = spawn(spec, prepared, &Console::quiet()).expect("spawn");
    let code = running.wait().await.expect("wait").code();
    match running.take_log() {
        Captured::Memory(bytes) => (code, String::from_utf8(bytes).expect("utf-8")),
        other => panic!("a short attempt's log is in memory: {other:?}"),
    }
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
async fn a_stale_log_is_removed_and_a_long_attempts_log_goes_to_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let silent = spec(dir.path(), "true");
    let log = silent.log_path.clone();
    std::fs::create_dir_all(log.parent().expect("parent")).expect("mkdir");
    std::fs::write(&log, "left by an earlier engine").expect("write");
    let prepared = prepare(&silent).expect("prepare");
    assert!(!log.exists(), "a stale log is removed before the start");
    let mut running = spawn(silent, prepared, &Console::quiet()).expect("spawn");
    assert_eq!(running.wait().await.expect("wait").code(), Some(0));
    assert_eq!(running.take_log(), Captured::Nothing);
    assert!(!log.exists(), "an attempt that prints nothing has no file");

    // Still running at the spill time: what it printed is in the file, and so is the rest.
    // The script waits for the file to appear before it goes on, so the test does not
    // depend on timing.
    let long = spec(
        dir.path(),
        &format!(
            "echo started; while [ ! -s {log} ]; do sleep 0.05; done; echo finished",
            log = log.display()
        ),
    );
    let prepared = prepare(&long).expect("prepare");
    let mut running = spawn(long, prepared, &Console::quiet()).expect("spawn");
    assert_eq!(running.wait().await.expect("wait").code(), Some(0));
    assert_eq!(running.take_log(), Captured::File);
    assert_eq!(
        std::fs::read_to_string(&log).expect("log"),
        "started\nfinished\n"
    );
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
