//! Not public API: the invariants the fuzz targets (`fuzz/`) and the corpus replay test
//! (`tests/tests/fuzz_corpus.rs`) check, compiled only with the `fuzzing` feature.
//!
//! Each function takes arbitrary bytes, must never panic on its own account, and panics
//! (an `assert!`) only when an invariant is broken.

use std::path::{Component, Path};

use base64::Engine as _;

use crate::error::Error;
use crate::workflow::Workflow;

/// Workflow decoding and validation: never panics; a workflow that decodes serialises
/// (compact, pretty and ASCII metadata forms) and decodes again to the same value;
/// [`Workflow::parse`] agrees with [`Workflow::from_json`] plus [`Workflow::validate`];
/// serde's `Deserialize` agrees with `from_json`; every problem has a path; the strict JSON
/// reader agrees with serde_json.
pub fn workflow(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    strict_json(text);
    let decoded = Workflow::from_json(text);
    let parsed = Workflow::parse(text);
    let via_serde = serde_json::from_str::<Workflow>(text);
    assert_eq!(
        decoded.is_ok(),
        via_serde.is_ok(),
        "from_json and Deserialize disagree"
    );
    match &decoded {
        Ok(wf) => {
            assert_eq!(via_serde.as_ref().ok(), Some(wf));
            for json in [wf.to_json(), wf.to_json_pretty(), wf.to_metadata_json()] {
                let again = Workflow::from_json(&json).expect("a serialised workflow decodes");
                assert_eq!(&again, wf, "round trip changed the workflow: {json}");
            }
            assert!(wf.to_metadata_json().is_ascii());
            match (wf.validate(), &parsed) {
                (Ok(()), Ok(p)) => assert_eq!(p, wf),
                (Err(v), Err(Error::Invalid(p))) => assert_eq!(&v, p),
                (v, p) => panic!("validate {v:?} but parse {p:?}"),
            }
        }
        Err(Error::Json { line, column, .. }) => {
            assert!(*line >= 1, "a syntax error has a line");
            let _ = column;
            assert!(
                matches!(parsed, Err(Error::Json { .. })),
                "parse must fail on a syntax error too"
            );
        }
        Err(Error::Invalid(v)) => {
            assert!(!v.problems.is_empty());
            assert!(parsed.is_err());
        }
        Err(other) => panic!("unexpected error kind from from_json: {other:?}"),
    }
    if let Err(Error::Invalid(v)) = &parsed {
        assert!(!v.problems.is_empty());
        let shown = v.to_string();
        for p in &v.problems {
            assert!(!p.path.is_empty(), "a problem without a path: {p:?}");
            assert!(!p.message.is_empty(), "a problem without a reason: {p:?}");
            assert!(shown.contains(&p.path));
        }
    }
}

/// The strict JSON reader that workflow text goes through: what it accepts, serde_json reads
/// as the same value; what it refuses but serde_json accepts (which keeps the last of two
/// fields with one name) is a field given twice, and the message says so.
fn strict_json(text: &str) {
    let ours = crate::json::parse(text);
    let theirs = serde_json::from_str::<serde_json::Value>(text);
    match (ours, theirs) {
        (Ok(ours), Ok(theirs)) => assert_eq!(ours, theirs, "the strict reader changed a value"),
        (Ok(ours), Err(e)) => panic!("the strict reader accepted {ours} but serde_json: {e}"),
        (Err(Error::Json { message, .. }), Ok(_)) => assert!(
            message.contains("appears twice"),
            "refused for no stated reason: {message}"
        ),
        (Err(Error::Json { line, .. }), Err(_)) => assert!(line >= 1),
        (Err(other), _) => panic!("the strict reader gave a non-JSON error: {other:?}"),
    }
}

/// RFC 2047 decoding: never panics; text without `=?` is returned as is; any text encoded
/// as one or two adjacent `B` or `Q` words decodes back to itself; [`crate::metadata::decode_map`]
/// lowercases keys and decodes values the same way; a valid run id is unchanged by decoding.
pub fn rfc2047(data: &[u8]) {
    use crate::metadata::{decode_map, decode_rfc2047, is_valid_run_id};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let decoded = decode_rfc2047(text);
    if !text.contains("=?") {
        assert_eq!(decoded, text);
    }
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let q = |s: &str| s.bytes().map(|b| format!("={b:02X}")).collect::<String>();
    assert_eq!(decode_rfc2047(&format!("=?UTF-8?B?{}?=", b64(text))), text);
    assert_eq!(decode_rfc2047(&format!("=?utf-8?q?{}?=", q(text))), text);
    let mid = text
        .char_indices()
        .nth(text.chars().count() / 2)
        .map_or(0, |(i, _)| i);
    let (a, b) = text.split_at(mid);
    assert_eq!(
        decode_rfc2047(&format!("=?UTF-8?B?{}?= =?UTF-8?Q?{}?=", b64(a), q(b))),
        text,
        "adjacent words are joined"
    );
    let key = text.to_owned();
    let map = decode_map([(&key, &key)]);
    assert_eq!(map.len(), 1);
    assert_eq!(
        map.get(&text.to_ascii_lowercase()).map(String::as_str),
        Some(decoded.as_ref())
    );
    if is_valid_run_id(text) {
        assert_eq!(decode_rfc2047(text), text);
        assert!(!text.contains(['/', '.', '\0']));
        let task = crate::line_d::task_id(text, 1, 2);
        assert_eq!(task.strip_suffix(".1.2"), Some(text));
    }
}

/// The export's key → local path mapping: never panics, and a key it accepts maps to a path
/// strictly inside the base directory, made only of normal segments (no `..`, `.`, root or
/// NUL), one per key segment.
pub fn export_key(data: &[u8]) {
    let Ok(key) = std::str::from_utf8(data) else {
        return;
    };
    let base = Path::new("/export/base");
    let Ok(path) = crate::export::local_path(base, key) else {
        return;
    };
    let rest = path
        .strip_prefix(base)
        .expect("the path stays under the base");
    let parts: Vec<_> = rest.components().collect();
    assert!(!parts.is_empty(), "{key:?} maps to the base itself");
    assert_eq!(parts.len(), key.split('/').count(), "{key:?} -> {path:?}");
    for c in &parts {
        assert!(
            matches!(c, Component::Normal(s) if !s.as_encoded_bytes().contains(&0)),
            "{key:?} -> {path:?}"
        );
    }
    assert_eq!(path, base.join(key));
}
