//! Renders and checks the Procfile lines of the registered tasks.
//!
//! Each task is one process type: `{name}: {bin} {name}`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::registry::TaskDef;

/// The default binary: `target/release/{exe}`, where a Rust buildpack leaves it on Heroku
/// (and where `cargo build --release` puts it locally), relative to the app's root.
pub(crate) fn default_bin(exe: &str) -> String {
    format!("target/release/{exe}")
}

/// The Procfile line of one task.
pub(crate) fn line(name: &str, bin: &str) -> String {
    format!("{name}: {bin} {name}")
}

/// All the lines, in name order.
pub(crate) fn render(defs: &[&TaskDef], bin: &str) -> String {
    defs.iter().map(|d| line(d.spec.name, bin) + "\n").collect()
}

/// The differences between `text` (a Procfile) and the registered tasks, one message each.
///
/// Lines that are not `type: command` (blank lines, comments) are ignored, and so are
/// process types that neither are a task nor run this binary (`web`, a worker …).
pub(crate) fn check(defs: &[&TaskDef], bin: &str, text: &str) -> Vec<String> {
    let entries = parse(text);
    let mut drift = Vec::new();
    for def in defs {
        let name = def.spec.name;
        let want = line(name, bin);
        match entries.get(name) {
            None => drift.push(format!("missing: `{want}`")),
            Some((n, cmd)) if normalize(cmd) != normalize(&format!("{bin} {name}")) => {
                drift.push(format!(
                    "differs (line {n}): `{name}: {cmd}`, expected `{want}`"
                ));
            }
            Some(_) => {}
        }
    }
    let bin_file = file_name(bin);
    for (name, (n, cmd)) in &entries {
        let runs_us = cmd
            .split_whitespace()
            .next()
            .is_some_and(|first| first == bin || file_name(first) == bin_file);
        if runs_us && !defs.iter().any(|d| d.spec.name == *name) {
            drift.push(format!(
                "extra (line {n}): `{name}: {cmd}` runs this binary but no task is named `{name}`"
            ));
        }
    }
    drift
}

/// `type -> (line number, command)`; the last definition of a type wins, as on Heroku.
fn parse(text: &str) -> BTreeMap<&str, (usize, &str)> {
    let mut entries = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') {
            continue;
        }
        let Some((name, cmd)) = trimmed.split_once(':') else {
            continue;
        };
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            entries.insert(name, (i + 1, cmd.trim()));
        }
    }
    entries
}

fn normalize(cmd: &str) -> String {
    cmd.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn file_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Handler, TaskSpec};

    fn def(name: &'static str) -> TaskDef {
        TaskDef {
            spec: TaskSpec {
                name,
                machine: None,
                timeout_secs: None,
                no_output: false,
                retries: None,
            },
            fn_name: name,
            module_path: "m",
            handler: Handler::Sync(|_| Ok(crate::Output::empty())),
        }
    }

    #[test]
    fn renders_one_line_per_task() {
        let (a, b) = (def("a"), def("get-json"));
        assert_eq!(
            render(&[&a, &b], "bin/app"),
            "a: bin/app a\nget-json: bin/app get-json\n"
        );
        assert_eq!(default_bin("app"), "target/release/app");
    }

    #[test]
    fn check_reports_missing_differing_and_extra() {
        let (a, b, c) = (def("a"), def("b"), def("c"));
        let procfile = "# tasks\n\nweb: bin/server --port $PORT\na:   bin/app    a\n\
                        b: bin/app b --verbose\nold: ./bin/app old\nother: bin/other old\n";
        let drift = check(&[&a, &b, &c], "bin/app", procfile);
        assert_eq!(
            drift,
            vec![
                "differs (line 5): `b: bin/app b --verbose`, expected `b: bin/app b`".to_owned(),
                "missing: `c: bin/app c`".to_owned(),
                "extra (line 6): `old: ./bin/app old` runs this binary but no task is named `old`"
                    .to_owned(),
            ]
        );
        assert!(check(&[&a], "bin/app", "a: bin/app a\nweb: x\n").is_empty());
    }
}
