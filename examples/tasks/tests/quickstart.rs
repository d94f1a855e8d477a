//! The README's first command: `linedee-example-tasks quickstart` runs the product document's
//! three examples on the embedded engine and exits 0 with a summary.

use std::process::Command;

#[test]
fn quickstart_runs_the_three_examples_and_prints_a_summary() {
    let out = Command::new(env!("CARGO_BIN_EXE_linedee-example-tasks"))
        .arg("quickstart")
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The Procfile comes from the registry and runs this same binary.
    assert!(
        stdout.contains("process-image: ") && stdout.contains("get-data: "),
        "{stdout}"
    );
    // Task output is echoed foreman-style.
    assert!(
        stdout.lines().any(|l| l.contains("| Do Step 1")),
        "{stdout}"
    );
    // The summary: three runs, six tasks, all succeeded, the media task's state.
    let runs: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            [
                "Example 2-step workflow",
                "Process media files",
                "Fetch records",
            ]
            .iter()
            .any(|t| l.contains(t))
        })
        .collect();
    assert_eq!(runs.len(), 3, "{stdout}");
    assert!(runs.iter().all(|l| l.contains(" succeeded ")), "{runs:?}");
    let tasks = stdout
        .lines()
        .filter(|l| {
            l.contains(" succeeded ")
                && l.split_whitespace()
                    .next()
                    .is_some_and(|id| id.matches('.').count() == 2)
        })
        .count();
    assert_eq!(tasks, 6, "{stdout}");
    assert!(stdout.contains(r#"{"bytes":16384}"#), "{stdout}");
}
