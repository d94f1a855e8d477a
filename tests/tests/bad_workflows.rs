//! A corpus of hand-written bad workflows (`tests/corpus/bad-workflows/`): each one is refused
//! by `Workflow::parse` with a problem naming the expected JSON path and reason, and, put in a
//! bucket as an `ld_run` body (and, when it fits, as `ld_code` metadata), gives a failed run
//! whose status document says the same. The engine keeps serving afterwards.
//!
//! `expected.tsv` holds, for each file, the JSON path a problem must name and a fragment of
//! its reason, written by hand. The path `(json)` means a JSON syntax error (the fragment is
//! then part of the "not valid JSON (line L, column C): …" message), `(utf8)` a body that is
//! not UTF-8 text.

use std::path::PathBuf;
use std::time::Duration;

use linedee::status::RunState;
use linedee::{Error, Task, Workflow};
use linedee_tests::{TestEngine, workspace_root};

const WAIT: Duration = Duration::from_secs(120);

struct Case {
    file: String,
    body: Vec<u8>,
    path: String,
    fragment: String,
}

fn corpus_dir() -> PathBuf {
    workspace_root().join("tests/corpus/bad-workflows")
}

fn cases() -> Vec<Case> {
    let dir = corpus_dir();
    let table = std::fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv");
    let mut cases = Vec::new();
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let mut cols = line.split('\t');
        let (Some(file), Some(path), Some(fragment), None) =
            (cols.next(), cols.next(), cols.next(), cols.next())
        else {
            panic!("expected.tsv: not `file<TAB>path<TAB>fragment`: {line:?}");
        };
        cases.push(Case {
            file: file.to_owned(),
            body: std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}")),
            path: path.to_owned(),
            fragment: fragment.to_owned(),
        });
    }
    // Every workflow file has its expectation, and every expectation its file.
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "expected.tsv")
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = cases.iter().map(|c| c.file.clone()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "files and expected.tsv disagree");
    cases
}

/// Does a status document's `error` (the engine's rendering of the parse error) hold a
/// problem at `path` whose reason contains `fragment`?
fn error_names(error: &str, path: &str, fragment: &str) -> bool {
    match path {
        "(json)" => error.contains("is not valid JSON") && error.contains(fragment),
        "(utf8)" => error.contains(fragment),
        _ => {
            let items: Vec<&str> = match error.strip_prefix("invalid workflow: ") {
                Some(one) => vec![one],
                None => error.split("\n  - ").skip(1).collect(),
            };
            items.iter().any(|p| {
                p.strip_prefix(path)
                    .and_then(|rest| rest.strip_prefix(": "))
                    .is_some_and(|reason| reason.contains(fragment))
            })
        }
    }
}

#[test]
fn the_corpus_has_over_a_hundred_distinct_bad_workflows() {
    let cases = cases();
    assert!(cases.len() >= 100, "{} bad workflows", cases.len());
    let mut bodies: Vec<&[u8]> = cases.iter().map(|c| c.body.as_slice()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), cases.len(), "two files hold the same body");
}

#[test]
fn every_bad_workflow_is_refused_with_its_path_and_reason() {
    let mut failures = Vec::new();
    for c in cases() {
        let text = match (std::str::from_utf8(&c.body), c.path.as_str()) {
            (Err(_), "(utf8)") => continue, // Checked end to end: the engine reads bytes.
            (Err(e), _) => panic!("{}: not UTF-8 ({e}) but not marked (utf8)", c.file),
            (Ok(_), "(utf8)") => panic!("{}: marked (utf8) but is UTF-8", c.file),
            (Ok(t), _) => t,
        };
        let err = match Workflow::parse(text) {
            Ok(wf) => {
                failures.push(format!("{}: accepted as {wf:?}", c.file));
                continue;
            }
            Err(e) => e,
        };
        let ok = match (&err, c.path.as_str()) {
            (Error::Json { .. }, "(json)") => err.to_string().contains(&c.fragment),
            (Error::Invalid(v), path) if path != "(json)" => v
                .problems
                .iter()
                .any(|p| p.path == path && p.message.contains(&c.fragment)),
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{}: expected {} / {:?}, got: {err}",
                c.file, c.path, c.fragment
            ));
        }
        // Serde's `Deserialize` (structural rules only) agrees with `from_json`.
        assert_eq!(
            serde_json::from_str::<Workflow>(text).is_err(),
            Workflow::from_json(text).is_err(),
            "{}",
            c.file
        );
    }
    assert!(
        failures.is_empty(),
        "{} of the corpus not as expected:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Files that can travel as `ld_code` metadata unchanged: printable ASCII on one line,
/// without surrounding spaces (HTTP trims them), within S3's 2 KB with the other keys.
fn fits_ld_code(body: &[u8], run_id: &str) -> bool {
    !body.is_empty()
        && body.iter().all(|b| (0x20..0x7f).contains(b))
        && body.first() != Some(&b' ')
        && body.last() != Some(&b' ')
        && !body.windows(2).any(|w| w == b"=?")
        && "ld_code".len() + body.len() + "ld_run_id".len() + run_id.len()
            <= linedee::metadata::LIMIT
}

async fn wait_finished(t: &TestEngine, run_id: &str) -> linedee::RunStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(s) = t.client.run(run_id).await
            && s.status.is_finished()
        {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run_id} did not finish within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_workflow_put_in_the_bucket_gives_a_failed_run_naming_the_problem() {
    let t = TestEngine::start("").await;
    let cases = cases();
    let mut runs: Vec<(String, &Case)> = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        // Written by hand, not through `submit`: the SDK would refuse to send these.
        let run_id = format!("bad-run-{i}");
        t.client
            .put(format!("in/bad/{}", c.file), c.body.clone())
            .metadata("ld_run", "true")
            .metadata("ld_run_id", run_id.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.file));
        runs.push((run_id, c));
        let code_id = format!("bad-code-{i}");
        if fits_ld_code(&c.body, &code_id) {
            let workflow = String::from_utf8(c.body.clone()).expect("ASCII");
            t.client
                .put(
                    format!("in/media/{i}.jpg"),
                    b"\xff\xd8\xff not really a jpeg".to_vec(),
                )
                .metadata("ld_code", workflow)
                .metadata("ld_run_id", code_id.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{} as ld_code: {e}", c.file));
            runs.push((code_id, c));
        }
    }
    let as_code = runs
        .iter()
        .filter(|(id, _)| id.starts_with("bad-code-"))
        .count();
    assert!(as_code >= 20, "only {as_code} files travelled as ld_code");

    let mut failures = Vec::new();
    for (run_id, c) in &runs {
        let status = wait_finished(&t, run_id).await;
        let error = status.error.clone().unwrap_or_default();
        if status.status != RunState::Failed {
            failures.push(format!("{run_id} ({}): {:?}", c.file, status.status));
        } else if !error_names(&error, &c.path, &c.fragment) {
            failures.push(format!(
                "{run_id} ({}): expected {} / {:?} in {error:?}",
                c.file, c.path, c.fragment
            ));
        }
        assert!(
            status.steps.is_empty(),
            "{run_id}: an invalid workflow has steps"
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {} runs not as expected:\n{}",
        failures.len(),
        runs.len(),
        failures.join("\n")
    );

    // The engine survived all of them: a valid workflow still runs, both ways.
    let ok = Workflow::new().step(Task::new("bash -c 'true'").no_output());
    let status = t
        .client
        .submit("in/ok", &ok)
        .await
        .expect("submit")
        .wait(WAIT)
        .await
        .expect("wait");
    assert_eq!(status.status, RunState::Succeeded, "{status:#?}");
    t.client
        .put("in/media/ok.jpg", b"ok".to_vec())
        .metadata("ld_code", ok.to_metadata_json())
        .metadata("ld_run_id", "good-code")
        .send()
        .await
        .expect("put");
    assert_eq!(
        wait_finished(&t, "good-code").await.status,
        RunState::Succeeded
    );
    t.stop().await.expect("engine stops cleanly");
}
