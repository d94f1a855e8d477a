//! Replays the fuzz targets' corpora (`fuzz/corpus/<target>/`) and seeds (`fuzz/seeds/`)
//! through the same invariant checks the targets run (the crates' `fuzzing` modules), so the
//! guarantees the fuzzer established hold on stable, without libFuzzer, on every test run.

use std::path::PathBuf;

use linedee_tests::workspace_root;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["fuzz/corpus", "fuzz/seeds"] {
        let dir = workspace_root().join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            if path.is_file() {
                let data = std::fs::read(&path).expect("corpus file");
                out.push((path, data));
            }
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no corpus for the `{target}` target");
    out
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let inputs = inputs(target);
    for (path, data) in &inputs {
        if let Err(panic) = std::panic::catch_unwind(|| check(data)) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{target}: {} broke an invariant: {why}", path.display());
        }
    }
    inputs.len()
}

#[test]
fn workflow_corpus_decodes_round_trips_and_validates_consistently() {
    replay("workflow", linedee::fuzzing::workflow);
}

#[test]
fn line_d_corpus_parses_and_round_trips() {
    replay("line_d", linedee_task::fuzzing::line_d);
}

#[test]
fn procfile_corpus_parses_and_writes_back() {
    replay("procfile", linedee_engine::fuzzing::procfile);
}

#[test]
fn rfc2047_corpus_decodes_and_encoded_words_round_trip() {
    replay("rfc2047", linedee::fuzzing::rfc2047);
}

#[test]
fn store_key_corpus_keeps_paths_inside_and_lists_every_key_once() {
    replay("store_key", |data| {
        linedee::fuzzing::export_key(data);
        linedee_engine::fuzzing::store_keys(data);
    });
}
