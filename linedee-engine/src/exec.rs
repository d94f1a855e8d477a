//! How a task's script is started. A script that is one plain command (`bin/worker resize
//! --size=200`) is executed directly, as `/bin/sh -c` would do after its `PATH` lookup, so a
//! task does not pay for a shell's start. Anything a shell would interpret (quotes, `$`,
//! redirections, operators, globs, `~`, assignments, several lines, a builtin, a command not
//! found) goes to `/bin/sh -c` as before, so what runs and what a failure reports (`sh: 1:
//! foo: not found`, exit 127) do not change.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Shell builtins and reserved words: their meaning in `sh` comes first, even where a program
/// of the same name is on `PATH` (`echo`, `pwd`, `kill`…), so they always go to the shell.
const SHELL_WORDS: &[&str] = &[
    ".", ":", "[", "alias", "bg", "break", "case", "cd", "chdir", "command", "continue", "do",
    "done", "echo", "elif", "else", "esac", "eval", "exec", "exit", "export", "false", "fc", "fg",
    "fi", "for", "getopts", "hash", "if", "in", "jobs", "kill", "local", "printf", "pwd", "read",
    "readonly", "return", "set", "shift", "test", "then", "times", "trap", "true", "type",
    "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
];

/// A program to execute directly: its path and its arguments (`argv[0]` is the word as
/// written, as the shell would pass it).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Direct {
    pub(crate) program: PathBuf,
    pub(crate) arg0: String,
    pub(crate) args: Vec<String>,
}

/// `script` as a direct execution, when it is one plain command whose program is found.
/// `path` is the `PATH` the process gets; relative paths resolve against `cwd`, its working
/// directory.
pub(crate) fn direct(script: &str, path: Option<&OsStr>, cwd: &Path) -> Option<Direct> {
    let words = plain_words(script)?;
    let (first, args) = words.split_first()?;
    if SHELL_WORDS.contains(first) || first.contains('=') {
        return None;
    }
    let program = if first.contains('/') {
        Some(cwd.join(first)).filter(|p| is_executable(p))
    } else {
        std::env::split_paths(path?)
            .map(|dir| {
                // An empty entry is the working directory, as in `sh`.
                let dir = if dir.as_os_str().is_empty() {
                    cwd.to_path_buf()
                } else {
                    cwd.join(dir)
                };
                dir.join(first)
            })
            .find(|p| is_executable(p))
    }?;
    Some(Direct {
        program,
        arg0: (*first).to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
    })
}

/// The words of a script made only of characters no shell gives a meaning to, separated by
/// spaces or tabs; `None` for anything else (a newline is a command separator).
fn plain_words(script: &str) -> Option<Vec<&str>> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_./:,+@%=".contains(&b);
    script
        .bytes()
        .all(|b| plain(b) || b == b' ' || b == b'\t')
        .then(|| {
            script
                .split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .collect()
        })
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, std::ffi::OsString) {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        for (name, mode) in [("worker", 0o755), ("data", 0o644)] {
            let p = bin.join(name);
            std::fs::write(&p, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        (dir, std::ffi::OsString::from("/nonexistent:bin"))
    }

    #[test]
    fn a_plain_command_on_path_runs_directly() {
        let (dir, path) = setup();
        let d = direct(
            "worker  resize\t--size=200 a,b:c@d%e+f",
            Some(&path),
            dir.path(),
        )
        .expect("direct");
        assert_eq!(d.program, dir.path().join("bin/worker"));
        assert_eq!(d.arg0, "worker");
        assert_eq!(d.args, ["resize", "--size=200", "a,b:c@d%e+f"]);
        let d = direct("bin/worker", None, dir.path()).expect("a path needs no PATH");
        assert_eq!(d.program, dir.path().join("bin/worker"));
        assert_eq!(d.arg0, "bin/worker");
    }

    #[test]
    fn anything_a_shell_interprets_goes_to_the_shell() {
        let (dir, path) = setup();
        for script in [
            "worker $HOME",
            "worker 'a b'",
            "worker \"a\"",
            "worker > out",
            "worker | cat",
            "worker && worker",
            "worker; worker",
            "worker *",
            "worker ~/x",
            "worker\nworker",
            "worker # comment",
            "worker a\\ b",
            "worker `id`",
            "worker (x)",
            "FOO=1 worker",
            "echo hi",
            "exit 3",
            "cd bin",
            "",
            "   ",
        ] {
            assert_eq!(direct(script, Some(&path), dir.path()), None, "{script:?}");
        }
    }

    #[test]
    fn a_command_not_found_or_not_executable_goes_to_the_shell() {
        let (dir, path) = setup();
        assert_eq!(direct("missing", Some(&path), dir.path()), None);
        assert_eq!(direct("data", Some(&path), dir.path()), None);
        assert_eq!(direct("bin/data", Some(&path), dir.path()), None);
        assert_eq!(
            direct("worker", None, dir.path()),
            None,
            "no PATH, no lookup"
        );
        assert_eq!(direct("bin", Some(&path), dir.path()), None, "a directory");
    }
}
