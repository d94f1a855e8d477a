//! Semantic validation of workflows: every problem at once, each with its JSON path.

use std::collections::BTreeSet;
use std::fmt;

use crate::workflow::{Step, Task, Workflow};

/// Largest `timeout`, `wait_for`: one day.
pub const MAX_SECONDS: u64 = 86_400;
/// Largest `retries`.
pub const MAX_RETRIES: u32 = 100;

/// One problem in a workflow: where (a JSON path such as `run[1].parallel[2].options[0]`) and
/// what was expected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Problem {
    /// JSON path of the offending value (`$` for the document itself).
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct ValidationError {
    /// The problems, in document order.
    pub problems: Vec<Problem>,
}

impl ValidationError {
    pub(crate) fn new(problems: Vec<Problem>) -> Self {
        ValidationError { problems }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid workflow: {one}"),
            many => {
                write!(f, "invalid workflow ({} problems):", many.len())?;
                for p in many {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

/// Is `name` a valid option (environment variable) name, `[A-Za-z_][A-Za-z0-9_]*`?
pub fn is_option_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Is `name` reserved for the engine (`line_D`, `DYNO`, `PORT`, `LD_*`)?
pub fn is_reserved_name(name: &str) -> bool {
    matches!(name, "line_D" | "DYNO" | "PORT") || name.starts_with("LD_")
}

/// The semantic rules; structural rules live in the decoder.
pub(crate) fn check(wf: &Workflow) -> Vec<Problem> {
    let mut out = Vec::new();
    check_run_len(wf.run.len(), &mut out);
    for (i, step) in wf.run.iter().enumerate() {
        let path = format!("run[{i}]");
        match step {
            Step::Task(t) => check_task(t, &path, &mut out),
            Step::Group(g) => {
                check_group_len(g.parallel.len(), &path, &mut out);
                for (j, t) in g.parallel.iter().enumerate() {
                    check_task(t, &format!("{path}.parallel[{j}]"), &mut out);
                }
            }
        }
    }
    out
}

/// `run` needs at least one step (`len` is the length of the list as written).
pub(crate) fn check_run_len(len: usize, out: &mut Vec<Problem>) {
    if len == 0 {
        out.push(Problem::new(
            "run",
            "expected at least one step, got an empty list",
        ));
    }
}

/// A group at `path` needs at least one task (`len` is the length of the list as written).
pub(crate) fn check_group_len(len: usize, path: &str, out: &mut Vec<Problem>) {
    if len == 0 {
        out.push(Problem::new(
            format!("{path}.parallel"),
            "expected at least one task in a parallel group, got an empty list",
        ));
    }
}

/// The semantic rules of one task at `path`.
pub(crate) fn check_task(t: &Task, path: &str, out: &mut Vec<Problem>) {
    if t.cmd.trim().is_empty() {
        out.push(Problem::new(
            format!("{path}.cmd"),
            "expected a Procfile process type or a command line, got an empty string",
        ));
    }
    if !(1..=MAX_SECONDS).contains(&t.timeout) {
        out.push(Problem::new(
            format!("{path}.timeout"),
            format!("expected 1 to {MAX_SECONDS} seconds, got {}", t.timeout),
        ));
    }
    if t.wait_for > MAX_SECONDS {
        out.push(Problem::new(
            format!("{path}.wait_for"),
            format!("expected 0 to {MAX_SECONDS} seconds, got {}", t.wait_for),
        ));
    }
    if let Some(r) = t.retries.filter(|r| *r > MAX_RETRIES) {
        out.push(Problem::new(
            format!("{path}.retries"),
            format!("expected 0 to {MAX_RETRIES} retries, got {r}"),
        ));
    }
    let mut seen = BTreeSet::new();
    for (k, option) in t.options.iter().enumerate() {
        let at = format!("{path}.options[{k}]");
        let Some((name, _)) = option.split_once('=') else {
            out.push(Problem::new(
                at,
                format!("expected `name=value`, got {option:?} (no `=`)"),
            ));
            continue;
        };
        if !is_option_name(name) {
            out.push(Problem::new(
                at,
                format!("invalid option name {name:?}: expected letters, digits and `_`, not starting with a digit"),
            ));
        } else if is_reserved_name(name) {
            out.push(Problem::new(
                at,
                format!("option name `{name}` is reserved for the engine (line_D, DYNO, PORT and LD_* cannot be set)"),
            ));
        } else if !seen.insert(name) {
            out.push(Problem::new(
                at,
                format!("option `{name}` is set more than once"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::{TaskGroup, Workflow};

    fn problems(wf: &Workflow) -> Vec<String> {
        check(wf).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn empty_run_group_and_cmd() {
        assert_eq!(
            problems(&Workflow::new()),
            ["run: expected at least one step, got an empty list"]
        );
        let wf = Workflow::new()
            .step(TaskGroup::new([]))
            .step(Task::new("  "));
        assert_eq!(
            problems(&wf),
            [
                "run[0].parallel: expected at least one task in a parallel group, got an empty list",
                "run[1].cmd: expected a Procfile process type or a command line, got an empty string",
            ]
        );
    }

    #[test]
    fn option_rules() {
        let mut t = Task::new("x");
        t.options = [
            "novalue",
            "1bad=x",
            "LD_S3_BUCKET=x",
            "line_D=x",
            "ok=a=b",
            "ok=again",
            "PORT=1",
            "DYNO=2",
            "_x=",
        ]
        .map(String::from)
        .to_vec();
        let p = problems(&Workflow::new().parallel([Task::new("a"), t]));
        assert_eq!(p.len(), 7, "{p:#?}");
        assert!(p[0].starts_with("run[0].parallel[1].options[0]: expected `name=value`"));
        assert!(p[1].starts_with("run[0].parallel[1].options[1]: invalid option name \"1bad\""));
        assert!(p[2].contains("options[2]: option name `LD_S3_BUCKET` is reserved"));
        assert!(p[3].contains("options[3]: option name `line_D` is reserved"));
        assert!(p[4].contains("options[5]: option `ok` is set more than once"));
        assert!(p[5].contains("options[6]: option name `PORT` is reserved"));
        assert!(p[6].contains("options[7]: option name `DYNO` is reserved"));
    }

    #[test]
    fn ranges() {
        let mut t = Task::new("x");
        t.timeout = 0;
        t.wait_for = MAX_SECONDS + 1;
        t.retries = Some(101);
        let p = problems(&Workflow::new().step(t.clone()));
        assert_eq!(
            p,
            [
                "run[0].timeout: expected 1 to 86400 seconds, got 0",
                "run[0].wait_for: expected 0 to 86400 seconds, got 86401",
                "run[0].retries: expected 0 to 100 retries, got 101",
            ]
        );
        t.timeout = MAX_SECONDS + 1;
        assert!(problems(&Workflow::new().step(t))[0].contains("got 86401"));
    }

    #[test]
    fn the_report_lists_every_problem() {
        let err = ValidationError::new(vec![
            Problem::new("run", "a"),
            Problem::new("run[0].cmd", "b"),
        ]);
        assert_eq!(
            err.to_string(),
            "invalid workflow (2 problems):\n  - run: a\n  - run[0].cmd: b"
        );
    }
}
