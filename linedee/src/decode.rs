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
#[path = "decode_tests.rs"]
mod tests;
