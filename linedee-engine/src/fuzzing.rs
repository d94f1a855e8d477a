//! Not public API: the invariants the fuzz targets (`fuzz/`) and the corpus replay test
//! (`tests/tests/fuzz_corpus.rs`) check, compiled only with the `fuzzing` feature.

pub use crate::store::fuzzing::store_keys;

use crate::procfile::{Procfile, parse_dotenv};

/// Procfile and `.env` parsing: never panics; an accepted Procfile has unique, valid names
/// with non-blank commands, each name resolves to its command, and written back out as
/// `name: command` lines it parses to the same value; accepted `.env` variables have valid
/// names and, written back with double quotes, parse to the same pairs.
pub fn procfile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Procfile::parse(text) {
        let names: Vec<&str> = p.names().collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "duplicate process types");
        let mut written = String::new();
        for name in &names {
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{name:?}"
            );
            let command = p.command(name).expect("a listed name has a command");
            assert!(!command.trim().is_empty() && command == command.trim());
            assert_eq!(p.resolve(name), command);
            written.push_str(&format!("{name}: {command}\n"));
        }
        assert_eq!(Procfile::parse(&written).expect("written back"), p);
    }
    let _ = Procfile::default().resolve(text);
    if let Ok(vars) = parse_dotenv(text) {
        let mut written = String::new();
        for (key, value) in &vars {
            assert!(linedee::validate::is_option_name(key), "{key:?}");
            let mut quoted = String::new();
            for c in value.chars() {
                match c {
                    '\\' => quoted.push_str("\\\\"),
                    '"' => quoted.push_str("\\\""),
                    '\n' => quoted.push_str("\\n"),
                    '\t' => quoted.push_str("\\t"),
                    c => quoted.push(c),
                }
            }
            written.push_str(&format!("{key}=\"{quoted}\"\n"));
        }
        assert_eq!(
            parse_dotenv(&written).expect("written back"),
            vars,
            "{written:?}"
        );
    }
}
