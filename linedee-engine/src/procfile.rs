//! The app's `Procfile` and `.env`, read the way `heroku local` reads them.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{AppError, Error, Result};

/// Process types from a Procfile: `name: command` lines.
///
/// Names are `[A-Za-z0-9_-]+`; comments (`#`) and blank lines are ignored.
///
/// ```
/// let p = linedee_engine::Procfile::parse("# tasks\nprocess_image: bin/tasks process-image\n\nweb: bin/web\n").unwrap();
/// assert_eq!(p.command("process_image"), Some("bin/tasks process-image"));
/// assert_eq!(p.names().collect::<Vec<_>>(), ["process_image", "web"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Procfile {
    entries: BTreeMap<String, String>,
    order: Vec<String>,
}

impl Procfile {
    /// Parses Procfile text. A line that is not `name: command`, a bad name or a name defined
    /// twice is an error naming the line.
    pub fn parse(text: &str) -> Result<Self> {
        let mut p = Procfile::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: String| -> Error {
                AppError::Procfile {
                    line: i + 1,
                    message,
                }
                .into()
            };
            let Some((name, command)) = line.split_once(':') else {
                return Err(bad(format!("expected `name: command`, got {line:?}")));
            };
            let name = name.trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(bad(format!(
                    "invalid process type {name:?}: expected letters, digits, `_` and `-`"
                )));
            }
            let command = command.trim();
            if command.is_empty() {
                return Err(bad(format!("process type `{name}` has no command")));
            }
            if p.entries
                .insert(name.to_owned(), command.to_owned())
                .is_some()
            {
                return Err(bad(format!("process type `{name}` is defined twice")));
            }
            p.order.push(name.to_owned());
        }
        Ok(p)
    }

    /// Reads and parses a Procfile.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::file("cannot read Procfile", path, e))?;
        Self::parse(&text).map_err(|e| match e {
            Error::App(AppError::Procfile { line, message }) => AppError::ProcfileAt {
                path: path.to_owned(),
                line,
                message,
            }
            .into(),
            other => other,
        })
    }

    /// The command of a process type.
    pub fn command(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(String::as_str)
    }

    /// Process type names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    /// When the first word of `cmd` is not a process type (so `cmd` ran as a command line),
    /// a note naming it and the types there are; for a command that was not found (exit 127).
    pub(crate) fn not_a_type(&self, cmd: &str) -> Option<String> {
        let first = cmd.split_whitespace().next()?;
        if self.command(first).is_some() || self.command(&first.replace('_', "-")).is_some() {
            return None;
        }
        let known: Vec<&str> = self.names().collect();
        let has = if known.is_empty() {
            "it has none".to_owned()
        } else {
            format!("it has: {}", known.join(", "))
        };
        Some(format!(
            "`{first}` is not a process type of the Procfile ({has}), so it ran as a command line"
        ))
    }

    /// `cmd` as a one-off dyno's command: its first word as the process type it names
    /// (`process_image` becomes `process-image` when only that type exists), so Heroku
    /// substitutes the type's command as `resolve` does here.
    pub(crate) fn dyno_command(&self, cmd: &str) -> String {
        let cmd = cmd.trim();
        let (first, rest) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
        let dashed = first.replace('_', "-");
        if self.command(first).is_none() && self.command(&dashed).is_some() {
            if rest.trim().is_empty() {
                dashed
            } else {
                format!("{dashed} {}", rest.trim())
            }
        } else {
            cmd.to_owned()
        }
    }

    /// The shell script that runs `cmd` (protocol §2.5): when its first word is a process type
    /// (exactly, or with `_` read as `-`), that type's command with the rest of `cmd` appended
    /// (as `heroku run` does); otherwise `cmd` itself, as a command line.
    pub fn resolve(&self, cmd: &str) -> String {
        let cmd = cmd.trim();
        let (first, rest) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
        // `process_image` also finds `process-image`, the name `#[ld_task]` generates.
        let found = self
            .command(first)
            .or_else(|| self.command(&first.replace('_', "-")));
        match found {
            Some(command) if rest.trim().is_empty() => command.to_owned(),
            Some(command) => format!("{command} {}", rest.trim()),
            None => cmd.to_owned(),
        }
    }
}

/// Parses a `.env` file: `KEY=value` lines, optional `export `, `#` comments, and single- or
/// double-quoted values (double quotes understand `\n`, `\"` and `\\`).
pub fn parse_dotenv(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let bad = |message: String| -> Error {
            AppError::Dotenv {
                line: i + 1,
                message,
            }
            .into()
        };
        let Some((key, value)) = line.split_once('=') else {
            return Err(bad("expected `KEY=value`".to_owned()));
        };
        let key = key.trim();
        if !linedee::validate::is_option_name(key) {
            return Err(bad(format!("invalid variable name {key:?}")));
        }
        let value = value.trim();
        let value = if let Some(inner) = value.strip_prefix('"') {
            let inner = inner
                .strip_suffix('"')
                .ok_or_else(|| bad(format!("unterminated double quote in the value of `{key}`")))?;
            unescape(inner)
        } else if let Some(inner) = value.strip_prefix('\'') {
            inner
                .strip_suffix('\'')
                .ok_or_else(|| bad(format!("unterminated single quote in the value of `{key}`")))?
                .to_owned()
        } else {
            // An unquoted value ends at ` #`.
            value.split(" #").next().unwrap_or("").trim_end().to_owned()
        };
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// Reads `dir/.env` if it exists (no file: no variables).
pub(crate) fn load_dotenv(dir: &Path) -> Result<Vec<(String, String)>> {
    let path = dir.join(".env");
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_dotenv(&text).map_err(|e| match e {
            Error::App(AppError::Dotenv { line, message }) => AppError::DotenvAt {
                path,
                line,
                message,
            }
            .into(),
            other => other,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::file("cannot read", path, e)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dyno_commands_name_the_process_type() {
        let p = Procfile::parse("process-image: bin/x process-image\nget_json: bin/x get-json\n")
            .expect("parses");
        assert_eq!(p.dyno_command("process_image"), "process-image");
        assert_eq!(
            p.dyno_command("process_image --fast"),
            "process-image --fast"
        );
        assert_eq!(p.dyno_command("get_json"), "get_json");
        assert_eq!(p.dyno_command("bash -c 'echo'"), "bash -c 'echo'");
    }

    use super::*;

    #[test]
    fn a_missing_process_type_is_named_with_the_known_ones() {
        let p = Procfile::parse("posts: bin/app get-data\nweb: bin/web\n").unwrap();
        assert_eq!(p.not_a_type("posts x"), None);
        assert_eq!(
            p.not_a_type("users_data --x").as_deref(),
            Some(
                "`users_data` is not a process type of the Procfile (it has: posts, web), so it \
                 ran as a command line"
            )
        );
        assert_eq!(
            Procfile::default().not_a_type("nope").as_deref(),
            Some(
                "`nope` is not a process type of the Procfile (it has none), so it ran as a command line"
            )
        );
    }

    #[test]
    fn procfile_rules() {
        let p = Procfile::parse(
            "web: bin/web --port $PORT\n  # c\n\nget_data: bin/tasks get-data\nx-y_1: a:b\n",
        )
        .unwrap();
        assert_eq!(p.command("x-y_1"), Some("a:b"));
        assert_eq!(p.resolve("get_data"), "bin/tasks get-data");
        let generated = Procfile::parse("process-image: bin/tasks process-image").unwrap();
        assert_eq!(
            generated.resolve("process_image"),
            "bin/tasks process-image"
        );
        assert_eq!(
            p.resolve("get_data --verbose  "),
            "bin/tasks get-data --verbose"
        );
        assert_eq!(
            p.resolve(r#"bash -c 'echo "Do Step 1"'"#),
            r#"bash -c 'echo "Do Step 1"'"#
        );
        for (text, needle) in [
            ("web bin/web", "line 1: expected `name: command`"),
            ("\nbad name: x", "line 2: invalid process type \"bad name\""),
            ("a: x\na: y", "line 2: process type `a` is defined twice"),
            ("a:", "line 1: process type `a` has no command"),
        ] {
            let err = Procfile::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn dotenv_rules() {
        let vars =
            parse_dotenv("# c\nexport A=1\nB = \"two\\nlines\"\nC='raw \\n' \nD=x # comment\nE=\n")
                .unwrap();
        assert_eq!(
            vars,
            [
                ("A", "1"),
                ("B", "two\nlines"),
                ("C", "raw \\n"),
                ("D", "x"),
                ("E", "")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert!(
            parse_dotenv("NOEQUALS")
                .unwrap_err()
                .to_string()
                .contains("line 1")
        );
        assert!(
            parse_dotenv("A=\"open")
                .unwrap_err()
                .to_string()
                .contains("unterminated double quote")
        );
        assert!(
            parse_dotenv("1A=x")
                .unwrap_err()
                .to_string()
                .contains("invalid variable name")
        );
    }
}
