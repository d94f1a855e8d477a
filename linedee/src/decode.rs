//! Strict, path-aware decoding of workflow JSON.
//!
//! Decoding is best effort: it builds as much of the [`Workflow`] as it can and records every
//! structural problem (unknown field, wrong type, missing field) with its JSON path, so that one
//! pass reports them all and the semantic checks can still run on the rest.

use serde_json::{Map, Value};

use crate::error::Result;
use crate::machine::Machine;
use crate::validate::{self, Problem};
use crate::workflow::{Step, Task, TaskGroup, Workflow};

const WORKFLOW_FIELDS: &[&str] = &["title", "run"];
const TASK_FIELDS: &[&str] = &[
    "name",
    "cmd",
    "machine",
    "timeout",
    "options",
    "no_output",
    "wait_for",
    "retries",
];
const GROUP_FIELDS: &[&str] = &["name", "parallel"];
/// A step with neither `cmd` nor `parallel` could be either: its other fields are checked
/// against both, so a typo such as `paralel` gets its suggestion.
const STEP_FIELDS: &[&str] = &[
    "name",
    "cmd",
    "machine",
    "timeout",
    "options",
    "no_output",
    "wait_for",
    "retries",
    "parallel",
];

/// Parses text, failing only on a JSON syntax error.
pub(crate) fn decode_str(json: &str) -> Result<(Workflow, Vec<Problem>)> {
    let value = crate::json::parse(json)?;
    Ok(decode_value(&value))
}

/// Parses text and checks the semantic rules too: the structural problems, then the semantic
/// ones. The semantic rules are checked on each step and task where it stands in the
/// document, so a step dropped for a structural problem does not shift the paths of the
/// others (nor make a non-empty `run` look empty).
pub(crate) fn decode_and_check_str(json: &str) -> Result<(Workflow, Vec<Problem>)> {
    let value = crate::json::parse(json)?;
    let mut d = Decoder::default();
    let wf = d.workflow(&value);
    let mut problems = d.problems;
    problems.extend(d.semantic);
    Ok((wf, problems))
}

/// Decodes a JSON value into a workflow plus the structural problems found.
pub(crate) fn decode_value(value: &Value) -> (Workflow, Vec<Problem>) {
    let mut d = Decoder::default();
    let wf = d.workflow(value);
    (wf, d.problems)
}

#[derive(Default)]
struct Decoder {
    problems: Vec<Problem>,
    /// Semantic problems, at the paths of the document (used by `decode_and_check_str`).
    semantic: Vec<Problem>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The path of `field` in the object at `path`: `path.field`, or `path["field"]` (`$[""]` at
/// the root) when the name is not a plain identifier, so that every path is non-empty and
/// unambiguous even for keys such as `""` or `a.b`.
fn join(path: &str, field: &str) -> String {
    if validate::is_option_name(field) {
        if path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        }
    } else {
        let root = if path.is_empty() { "$" } else { path };
        let quoted = serde_json::to_string(field).unwrap_or_default();
        format!("{root}[{quoted}]")
    }
}

impl Decoder {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn object<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        what: &str,
    ) -> Option<&'v Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                let at = if path.is_empty() { "$" } else { path };
                self.problem(
                    at,
                    format!("expected {what} (an object), got {}", type_name(other)),
                );
                None
            }
        }
    }

    fn unknown_fields(&mut self, m: &Map<String, Value>, path: &str, allowed: &[&str], what: &str) {
        for key in m.keys().filter(|k| !allowed.contains(&k.as_str())) {
            let hint = closest(key, allowed)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            self.problem(
                join(path, key),
                format!(
                    "unknown field `{key}`{hint}; {what} fields are: {}",
                    allowed.join(", ")
                ),
            );
        }
    }

    fn string(&mut self, m: &Map<String, Value>, path: &str, field: &str) -> Option<String> {
        match m.get(field)? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(
                    join(path, field),
                    format!("expected a string, got {}", type_name(other)),
                );
                None
            }
        }
    }

    fn bool(&mut self, m: &Map<String, Value>, path: &str, field: &str) -> Option<bool> {
        match m.get(field)? {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            other => {
                self.problem(
                    join(path, field),
                    format!("expected true or false, got {}", type_name(other)),
                );
                None
            }
        }
    }

    fn integer(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        field: &str,
        unit: &str,
    ) -> Option<u64> {
        let v = m.get(field).filter(|v| !v.is_null())?;
        match v.as_u64() {
            Some(n) => Some(n),
            None => {
                let got = match v {
                    Value::Number(n) if n.is_f64() => format!("{n}"),
                    Value::Number(n) => format!("{n} (negative)"),
                    other => type_name(other).to_owned(),
                };
                self.problem(
                    join(path, field),
                    format!("expected a whole number of {unit}, got {got}"),
                );
                None
            }
        }
    }

    fn list<'v>(
        &mut self,
        m: &'v Map<String, Value>,
        path: &str,
        field: &str,
        of: &str,
    ) -> Option<&'v Vec<Value>> {
        match m.get(field)? {
            Value::Null => None,
            Value::Array(a) => Some(a),
            other => {
                self.problem(
                    join(path, field),
                    format!("expected a list of {of}, got {}", type_name(other)),
                );
                None
            }
        }
    }

    fn workflow(&mut self, v: &Value) -> Workflow {
        let mut wf = Workflow::default();
        let Some(m) = self.object(v, "", "a workflow") else {
            return wf;
        };
        self.unknown_fields(m, "", WORKFLOW_FIELDS, "workflow");
        wf.title = self.string(m, "", "title");
        match self.list(m, "", "run", "steps") {
            Some(steps) => {
                validate::check_run_len(steps.len(), &mut self.semantic);
                for (i, step) in steps.iter().enumerate() {
                    if let Some(step) = self.step(step, &format!("run[{i}]")) {
                        wf.run.push(step);
                    }
                }
            }
            None if m.get("run").is_none_or(Value::is_null) => self.problem(
                "run",
                "missing required field `run` (a list of tasks and task groups)",
            ),
            None => {}
        }
        wf
    }

    fn step(&mut self, v: &Value, path: &str) -> Option<Step> {
        let m = self.object(v, path, "a task or a task group")?;
        let has = |k: &str| m.get(k).is_some_and(|v| !v.is_null());
        match (has("cmd"), has("parallel")) {
            (false, true) => Some(Step::Group(self.group(m, path))),
            (true, false) => {
                let task = self.task_fields(m, path)?;
                validate::check_task(&task, path, &mut self.semantic);
                Some(Step::Task(task))
            }
            (true, true) => {
                self.problem(
                    path,
                    "a step has either `cmd` (a task) or `parallel` (a task group), not both",
                );
                None
            }
            _ => {
                self.problem(
                    path,
                    "expected a task (with `cmd`) or a task group (with `parallel`), found neither",
                );
                self.unknown_fields(m, path, STEP_FIELDS, "task or task group");
                None
            }
        }
    }

    fn group(&mut self, m: &Map<String, Value>, path: &str) -> TaskGroup {
        self.unknown_fields(m, path, GROUP_FIELDS, "task group");
        let mut group = TaskGroup {
            name: self.string(m, path, "name"),
            parallel: Vec::new(),
        };
        if let Some(tasks) = self.list(m, path, "parallel", "tasks") {
            validate::check_group_len(tasks.len(), path, &mut self.semantic);
            for (i, t) in tasks.iter().enumerate() {
                let tpath = format!("{path}.parallel[{i}]");
                if let Some(tm) = self.object(t, &tpath, "a task") {
                    if tm.contains_key("parallel") {
                        self.problem(
                            &tpath,
                            "task groups cannot be nested; a group holds tasks only",
                        );
                    } else if let Some(task) = self.task_fields(tm, &tpath) {
                        validate::check_task(&task, &tpath, &mut self.semantic);
                        group.parallel.push(task);
                    }
                }
            }
        }
        group
    }

    fn task_fields(&mut self, m: &Map<String, Value>, path: &str) -> Option<Task> {
        self.unknown_fields(m, path, TASK_FIELDS, "task");
        let Some(cmd) = self.string(m, path, "cmd") else {
            if m.get("cmd").is_none_or(Value::is_null) {
                self.problem(
                    join(path, "cmd"),
                    "missing required field `cmd` (a Procfile process type or a command line)",
                );
            }
            return None;
        };
        let mut task = Task::new(cmd);
        task.name = self.string(m, path, "name");
        if let Some(machine) = self.string(m, path, "machine") {
            match machine.parse::<Machine>() {
                Ok(mm) => task.machine = mm,
                Err(e) => self.problem(join(path, "machine"), e.to_string()),
            }
        }
        if let Some(t) = self.integer(m, path, "timeout", "seconds") {
            task.timeout = t;
        }
        if let Some(w) = self.integer(m, path, "wait_for", "seconds") {
            task.wait_for = w;
        }
        if let Some(r) = self.integer(m, path, "retries", "retries") {
            match u32::try_from(r) {
                Ok(r) => task.retries = Some(r),
                Err(_) => self.problem(
                    join(path, "retries"),
                    format!("expected at most 100 retries, got {r}"),
                ),
            }
        }
        if let Some(b) = self.bool(m, path, "no_output") {
            task.no_output = b;
        }
        if let Some(options) = self.list(m, path, "options", "`name=value` strings") {
            for (i, o) in options.iter().enumerate() {
                match o {
                    Value::String(s) => task.options.push(s.clone()),
                    other => self.problem(
                        format!("{path}.options[{i}]"),
                        format!("expected a `name=value` string, got {}", type_name(other)),
                    ),
                }
            }
        }
        Some(task)
    }
}

/// The allowed name closest to a typo, if it is close enough to be a likely typo. A name the
/// given one shortens or lengthens (`retry` → `retries`, `wait` → `wait_for`, `timeout_secs` →
/// `timeout`) beats a match two edits away (`time` → `name`).
fn closest<'a>(given: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let given = given.to_ascii_lowercase();
    let stem = given.trim_end_matches('y');
    let (distance, nearest) = allowed
        .iter()
        .map(|a| (edit_distance(&given, a), *a))
        .min_by_key(|(d, _)| *d)?;
    let affix = allowed.iter().copied().find(|a| {
        (stem.len() >= 4 && a.starts_with(stem)) || (a.len() >= 3 && given.starts_with(a))
    });
    match affix {
        Some(a) if distance > 1 => Some(a),
        _ => (distance <= 2.max(nearest.len() / 4)).then_some(nearest),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(json: &str) -> Vec<String> {
        decode_str(json)
            .unwrap()
            .1
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn a_typo_is_an_error_with_a_suggestion() {
        let p = problems(r#"{"run":[{"cmd":"x","timout":30}]}"#);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("run[0].timout: unknown field `timout` (did you mean `timeout`?)"),
            "{p:?}"
        );
    }

    #[test]
    fn shortened_and_lengthened_names_get_suggestions() {
        for (given, expected) in [
            ("retry", Some("retries")),
            ("wait", Some("wait_for")),
            ("time", Some("timeout")),
            ("timeout_secs", Some("timeout")),
            ("Machine", Some("machine")),
            ("env", None),
            ("x", None),
        ] {
            assert_eq!(closest(given, TASK_FIELDS), expected, "{given}");
        }
    }

    #[test]
    fn every_structural_problem_is_reported_at_once() {
        let p = problems(
            r#"{"title":7,"run":[{"cmd":"a","timeout":"60"},{"parallel":[{"cmd":"b","options":[1]},{"nope":1}]},{"x":1}]}"#,
        );
        let joined = p.join("\n");
        for needle in [
            "title: expected a string, got a number",
            "run[0].timeout: expected a whole number of seconds, got a string",
            "run[1].parallel[0].options[0]: expected a `name=value` string, got a number",
            "run[1].parallel[1].nope: unknown field",
            "run[1].parallel[1].cmd: missing required field `cmd`",
            "run[2]: expected a task (with `cmd`) or a task group (with `parallel`)",
            "run[2].x: unknown field `x`; task or task group fields are: name, cmd,",
        ] {
            assert!(joined.contains(needle), "missing {needle:?} in:\n{joined}");
        }
        assert_eq!(p.len(), 7, "{joined}");
    }

    #[test]
    fn null_means_absent_for_optional_fields_only() {
        assert!(
            problems(
                r#"{"title":null,"run":[{"cmd":"a","name":null,"timeout":null,"retries":null}]}"#
            )
            .is_empty()
        );
        assert_eq!(problems(r#"{"run":[{"cmd":null,"name":"x"}]}"#).len(), 1);
        assert_eq!(
            problems(r#"{"run":null}"#),
            ["run: missing required field `run` (a list of tasks and task groups)"]
        );
    }

    #[test]
    fn missing_run_and_wrong_root() {
        assert_eq!(
            problems("{}"),
            ["run: missing required field `run` (a list of tasks and task groups)"]
        );
        assert_eq!(
            problems("[]"),
            ["$: expected a workflow (an object), got a list"]
        );
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        match decode_str("{\n  \"run\": [,]\n}") {
            Err(crate::Error::Json {
                line,
                column,
                message,
            }) => {
                assert_eq!((line, column), (2, 11));
                assert!(message.contains("expected value"), "{message}");
            }
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn negative_and_fractional_numbers_are_rejected() {
        let p = problems(r#"{"run":[{"cmd":"a","timeout":-1,"wait_for":1.5}]}"#).join("\n");
        assert!(
            p.contains("run[0].timeout: expected a whole number of seconds, got -1 (negative)"),
            "{p}"
        );
        assert!(
            p.contains("run[0].wait_for: expected a whole number of seconds, got 1.5"),
            "{p}"
        );
    }

    fn checked(json: &str) -> Vec<String> {
        decode_and_check_str(json)
            .unwrap()
            .1
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    /// Regression (bad-workflow corpus): a step or task dropped for a structural problem
    /// shifted the semantic problems of the ones after it to the wrong path, and made a
    /// non-empty `run` or group look empty.
    #[test]
    fn semantic_problems_keep_their_document_paths() {
        assert_eq!(
            checked(r#"{"run":[{"x":1},{"cmd":"a","timeout":0}]}"#),
            [
                "run[0]: expected a task (with `cmd`) or a task group (with `parallel`), found neither",
                "run[0].x: unknown field `x`; task or task group fields are: name, cmd, machine, timeout, options, no_output, wait_for, retries, parallel",
                "run[1].timeout: expected 1 to 86400 seconds, got 0",
            ]
        );
        let p = checked(r#"{"run":[{"parallel":[7,{"cmd":"b","options":["PORT=1"]}]}]}"#);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].starts_with("run[0].parallel[0]: expected a task (an object)"));
        assert!(p[1].starts_with("run[0].parallel[1].options[0]: option name `PORT`"));
        // Without structural problems, the same as `validate::check`.
        let json = r#"{"run":[{"cmd":" ","retries":101},{"parallel":[]},{"parallel":[{"cmd":"c","wait_for":86401}]}]}"#;
        let (wf, problems) = decode_and_check_str(json).unwrap();
        assert_eq!(problems, crate::validate::check(&wf));
        assert_eq!(problems.len(), 4, "{problems:#?}");
    }

    /// Regression (fuzz target `workflow`): an unknown field named `""` had the empty path;
    /// a name that is not an identifier is quoted, so no path is empty or ambiguous.
    #[test]
    fn odd_field_names_get_quoted_paths() {
        // serde_json orders an object's keys.
        let p = problems(r#"{"":7,"run":[{"cmd":"x","a.b":1,"[0]":2}]}"#);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert!(p[0].starts_with(r#"$[""]: unknown field ``"#), "{p:#?}");
        assert!(
            p[1].starts_with(r#"run[0]["[0]"]: unknown field `[0]`"#),
            "{p:#?}"
        );
        assert!(
            p[2].starts_with(r#"run[0]["a.b"]: unknown field `a.b`"#),
            "{p:#?}"
        );
    }

    /// Regression (bad-workflow corpus): `{"paralel": […]}` said only "found neither".
    #[test]
    fn a_step_with_neither_gets_typo_suggestions() {
        let p = checked(r#"{"run":[{"name":"Fetch","paralel":[{"cmd":"x"}]}]}"#);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].ends_with("found neither"), "{p:#?}");
        assert!(
            p[1].starts_with("run[0].paralel: unknown field `paralel` (did you mean `parallel`?)"),
            "{p:#?}"
        );
    }

    #[test]
    fn nested_groups_and_unknown_machines() {
        let p =
            problems(r#"{"run":[{"parallel":[{"parallel":[]}]},{"cmd":"a","machine":"huge"}]}"#)
                .join("\n");
        assert!(
            p.contains("run[0].parallel[0]: task groups cannot be nested"),
            "{p}"
        );
        assert!(
            p.contains("run[1].machine: unknown machine \"huge\"; expected one of: eco, basic"),
            "{p}"
        );
    }
}
