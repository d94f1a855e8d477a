//! Not public API: the invariants the fuzz targets (`fuzz/`) and the corpus replay test
//! (`tests/tests/fuzz_corpus.rs`) check, compiled only with the `fuzzing` feature.

/// `line_D` parsing: never panics; an accepted value has a non-blank `task_id` and an
/// attempt from 1, and its compact JSON form parses back to the same value; a rejected one
/// gives a message naming `line_D`.
pub fn line_d(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match crate::line_d::parse(text) {
        Ok(parsed) => {
            assert!(!parsed.task_id.trim().is_empty());
            assert!(parsed.attempt.is_none_or(|a| a >= 1));
            let json = parsed.to_json();
            let again = crate::line_d::parse(&json).expect("a serialised line_D parses");
            assert_eq!(again, parsed, "round trip changed line_D: {json}");
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(shown.contains("line_D"), "{shown}");
        }
    }
}
