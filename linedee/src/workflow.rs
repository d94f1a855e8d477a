//! The workflow model: [`Workflow`], [`Step`], [`Task`] and [`TaskGroup`], with a builder.
//!
//! The JSON shape is exactly the product document's (plus the optional `retries` extension);
//! fields equal to their default are left out when serialising.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::machine::Machine;
use crate::validate::ValidationError;

/// Default seconds to wait for a task's output.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// A line^d workflow: an optional title and a sequence of steps.
///
/// ```
/// use std::time::Duration;
/// use linedee::{Machine, Task, Workflow};
///
/// let wf = Workflow::new()
///     .title("Process media files")
///     .step(
///         Task::new("process_image")
///             .machine(Machine::Standard2x)
///             .timeout(Duration::from_secs(30))
///             .option("dir", "out"),
///     )
///     .parallel([
///         Task::new("get_data").option("endpoint", "posts"),
///         Task::new("get_data").option("endpoint", "users"),
///     ]);
/// wf.validate().unwrap();
/// assert_eq!(
///     wf.to_json(),
///     r#"{"title":"Process media files","run":[{"cmd":"process_image","machine":"standard-2x","timeout":30,"options":["dir=out"]},{"parallel":[{"cmd":"get_data","options":["endpoint=posts"]},{"cmd":"get_data","options":["endpoint=users"]}]}]}"#
/// );
/// assert_eq!(Workflow::from_json(&wf.to_json()).unwrap(), wf);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields, title = "line^d workflow")]
#[non_exhaustive]
pub struct Workflow {
    /// Title of the workflow, for documentation and display.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The steps, run one after another.
    pub run: Vec<Step>,
}

/// One step of a workflow: a single task or a group of tasks run in parallel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Step {
    /// A single task.
    Task(Task),
    /// Tasks started together.
    Group(TaskGroup),
}

/// A task: one Heroku process (or command line) whose output proves success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[non_exhaustive]
pub struct Task {
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Procfile process type to run, or a command line.
    pub cmd: String,
    /// Dyno size (default `basic`).
    #[serde(skip_serializing_if = "is_default")]
    #[schemars(default)]
    pub machine: Machine,
    /// Seconds to wait for the output file (default 60, range 1..=86400).
    #[serde(skip_serializing_if = "is_default_timeout")]
    #[schemars(default = "default_timeout", range(min = 1, max = 86400))]
    pub timeout: u64,
    /// `name=value` pairs put in the task's environment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(default)]
    pub options: Vec<String>,
    /// Success as soon as the process starts; no output is awaited.
    #[serde(skip_serializing_if = "is_default")]
    #[schemars(default)]
    pub no_output: bool,
    /// Seconds to pause after the task completes.
    #[serde(skip_serializing_if = "is_default")]
    #[schemars(default, range(max = 86400))]
    pub wait_for: u64,
    /// Retries after a failed attempt (extension; the engine's default is 2).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 100))]
    pub retries: Option<u32>,
}

/// Tasks that run at the same time; the group succeeds when all of them do.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[non_exhaustive]
pub struct TaskGroup {
    /// Display name of the group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The tasks.
    pub parallel: Vec<Task>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn is_default_timeout(v: &u64) -> bool {
    *v == DEFAULT_TIMEOUT_SECS
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

/// Whole seconds, rounding a fractional part up so a timeout is never shortened.
fn whole_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Workflow {
    /// An empty workflow; add steps with [`step`](Self::step) and [`parallel`](Self::parallel).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Appends a step: a [`Task`] or a [`TaskGroup`].
    pub fn step(mut self, step: impl Into<Step>) -> Self {
        self.run.push(step.into());
        self
    }

    /// Appends an unnamed group of tasks that run in parallel.
    pub fn parallel(self, tasks: impl IntoIterator<Item = Task>) -> Self {
        self.step(TaskGroup::new(tasks))
    }

    /// Parses the JSON form strictly: unknown fields, wrong types and missing fields are errors,
    /// all reported at once with their JSON paths. Run [`validate`](Self::validate) for the
    /// semantic rules, or use [`parse`](Self::parse) for both.
    pub fn from_json(json: &str) -> Result<Self> {
        let (workflow, problems) = crate::decode::decode_str(json)?;
        if problems.is_empty() {
            Ok(workflow)
        } else {
            Err(ValidationError::new(problems).into())
        }
    }

    /// Parses and validates in one go, reporting every structural and semantic problem at once.
    /// This is what the engine does with a trigger.
    pub fn parse(json: &str) -> Result<Self> {
        let (workflow, problems) = crate::decode::decode_and_check_str(json)?;
        if problems.is_empty() {
            Ok(workflow)
        } else {
            Err(ValidationError::new(problems).into())
        }
    }

    /// Checks the semantic rules (non-empty `run`, option syntax, timeout range …) and returns
    /// every problem found, each with its JSON path.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let problems = crate::validate::check(self);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ValidationError::new(problems))
        }
    }

    /// Compact JSON (fields at their default left out), as sent in an `ld_run` body.
    pub fn to_json(&self) -> String {
        // Serialising plain strings, integers and vectors cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Pretty-printed JSON, for people.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The ASCII-only compact form used in `ld_code` metadata (non-ASCII escaped as `\uXXXX`).
    pub fn to_metadata_json(&self) -> String {
        crate::metadata::escape_non_ascii(&self.to_json())
    }

    /// Every task with its SPEC task-id indices `(step, task)`, in order.
    pub fn tasks(&self) -> impl Iterator<Item = (usize, usize, &Task)> {
        self.run.iter().enumerate().flat_map(|(s, step)| {
            step.tasks()
                .iter()
                .enumerate()
                .map(move |(t, task)| (s, t, task))
        })
    }
}

impl<'de> Deserialize<'de> for Workflow {
    /// Deserialises strictly, with the same rules and messages as [`Workflow::from_json`].
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = crate::json::StrictValue::deserialize(d)?.0;
        let (workflow, problems) = crate::decode::decode_value(&value);
        if problems.is_empty() {
            Ok(workflow)
        } else {
            Err(serde::de::Error::custom(ValidationError::new(problems)))
        }
    }
}

impl Step {
    /// The step's tasks: one for a task, all of them for a group.
    pub fn tasks(&self) -> &[Task] {
        match self {
            Step::Task(t) => std::slice::from_ref(t),
            Step::Group(g) => &g.parallel,
        }
    }

    /// The display name of the task or group, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Step::Task(t) => t.name.as_deref(),
            Step::Group(g) => g.name.as_deref(),
        }
    }
}

impl From<Task> for Step {
    fn from(t: Task) -> Self {
        Step::Task(t)
    }
}

impl From<TaskGroup> for Step {
    fn from(g: TaskGroup) -> Self {
        Step::Group(g)
    }
}

impl Task {
    /// A task that runs `cmd` (a Procfile process type, or a command line) with the defaults.
    pub fn new(cmd: impl Into<String>) -> Self {
        Task {
            name: None,
            cmd: cmd.into(),
            machine: Machine::Basic,
            timeout: DEFAULT_TIMEOUT_SECS,
            options: Vec::new(),
            no_output: false,
            wait_for: 0,
            retries: None,
        }
    }

    /// Sets the display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the dyno size.
    pub fn machine(mut self, machine: Machine) -> Self {
        self.machine = machine;
        self
    }

    /// Sets how long to wait for the output, in whole seconds (a fraction rounds up).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = whole_secs(timeout);
        self
    }

    /// Adds an option: `name=value` in the task's environment.
    pub fn option(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        self.options
            .push(format!("{}={}", name.as_ref(), value.as_ref()));
        self
    }

    /// Succeeds as soon as the process starts; no output file is awaited.
    pub fn no_output(mut self) -> Self {
        self.no_output = true;
        self
    }

    /// Pauses this long after the task completes (whole seconds, a fraction rounds up).
    pub fn wait_for(mut self, pause: Duration) -> Self {
        self.wait_for = whole_secs(pause);
        self
    }

    /// Sets the number of retries after a failed attempt (extension field `retries`).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = Some(retries);
        self
    }

    /// The timeout as a [`Duration`].
    pub fn timeout_duration(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// The options as `(name, value)` pairs; an entry without `=` gives an empty value.
    pub fn option_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.options
            .iter()
            .map(|o| o.split_once('=').unwrap_or((o.as_str(), "")))
    }
}

impl TaskGroup {
    /// An unnamed group of tasks.
    pub fn new(tasks: impl IntoIterator<Item = Task>) -> Self {
        TaskGroup {
            name: None,
            parallel: tasks.into_iter().collect(),
        }
    }

    /// Sets the group's display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a task to the group.
    pub fn task(mut self, task: Task) -> Self {
        self.parallel.push(task);
        self
    }
}

impl std::str::FromStr for Workflow {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Workflow::from_json(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product document's three workflows, written as JSON.
    pub(crate) const SEED_STARTER: &str = r#"{
        "title": "Example 2-step workflow",
        "run": [
            {"cmd": "bash -c 'echo \"Do Step 1\"'", "machine": "basic", "no_output": true},
            {"cmd": "bash -c 'echo \"Do Step 2\"'", "machine": "basic", "no_output": true}
        ]
    }"#;
    const SEED_DEFINING: &str = r#"{
        "title": "Workflow title",
        "run": [
            {"name": "First task to run", "cmd": "Heroku process name", "machine": "dyno_size",
             "options": ["dir=out", "model_preset=model-preset"]},
            {"name": "Run a parallel Task Group", "parallel": [
                {"cmd": "get_data", "machine": "basic", "options": ["endpoint=posts"]},
                {"cmd": "get_data", "machine": "basic", "options": ["endpoint=users"]},
                {"cmd": "get_data", "machine": "basic", "options": ["endpoint=comments"]}
            ]}
        ]
    }"#;
    const SEED_MEDIA: &str = r#"{"title": "Process media files",
        "run": [{"cmd": "process_image", "machine": "basic", "timeout": 30}]}"#;

    #[test]
    fn the_seed_examples_parse_and_validate() {
        let starter = Workflow::parse(SEED_STARTER).unwrap();
        assert_eq!(starter.run.len(), 2);
        assert!(
            starter
                .tasks()
                .all(|(_, _, t)| t.no_output && t.machine == Machine::Basic)
        );
        let media = Workflow::parse(SEED_MEDIA).unwrap();
        assert_eq!(media.tasks().next().unwrap().2.timeout, 30);
        // The document's format example uses placeholders: a real dyno size makes it valid.
        let defining = Workflow::parse(&SEED_DEFINING.replace("dyno_size", "standard-1x")).unwrap();
        let group = &defining.run[1];
        assert_eq!(group.name(), Some("Run a parallel Task Group"));
        let endpoints: Vec<_> = group
            .tasks()
            .iter()
            .map(|t| t.option_pairs().next().unwrap().1)
            .collect();
        assert_eq!(endpoints, ["posts", "users", "comments"]);
        // As written, the placeholder machine is reported with the valid names.
        let err = Workflow::parse(SEED_DEFINING).unwrap_err().to_string();
        assert!(
            err.contains("run[0].machine: unknown machine \"dyno_size\""),
            "{err}"
        );
    }

    #[test]
    fn serialisation_is_compact_and_round_trips() {
        let wf = Workflow::parse(SEED_STARTER).unwrap();
        // `machine: basic` is the default and is left out.
        assert_eq!(
            wf.to_json(),
            r#"{"title":"Example 2-step workflow","run":[{"cmd":"bash -c 'echo \"Do Step 1\"'","no_output":true},{"cmd":"bash -c 'echo \"Do Step 2\"'","no_output":true}]}"#
        );
        assert_eq!(Workflow::from_json(&wf.to_json()).unwrap(), wf);
        let wf: Workflow = serde_json::from_str(SEED_MEDIA).unwrap();
        assert_eq!(
            wf.to_json(),
            r#"{"title":"Process media files","run":[{"cmd":"process_image","timeout":30}]}"#
        );
    }

    #[test]
    fn builder_covers_every_field() {
        let wf = Workflow::new()
            .title("Grüße")
            .step(
                Task::new("a")
                    .name("A")
                    .machine(Machine::PerformanceL)
                    .timeout(Duration::from_millis(1500))
                    .option("k", "v=w")
                    .no_output()
                    .wait_for(Duration::from_secs(2))
                    .retries(0),
            )
            .step(
                TaskGroup::new([Task::new("b")])
                    .name("G")
                    .task(Task::new("c")),
            );
        assert_eq!(
            wf.to_json(),
            r#"{"title":"Grüße","run":[{"name":"A","cmd":"a","machine":"performance-l","timeout":2,"options":["k=v=w"],"no_output":true,"wait_for":2,"retries":0},{"name":"G","parallel":[{"cmd":"b"},{"cmd":"c"}]}]}"#
        );
        assert_eq!(
            wf.tasks().map(|(s, t, _)| (s, t)).collect::<Vec<_>>(),
            [(0, 0), (1, 0), (1, 1)]
        );
        assert_eq!(
            wf.tasks().next().unwrap().2.option_pairs().next(),
            Some(("k", "v=w"))
        );
        // The metadata form is ASCII-only and means the same.
        let meta = wf.to_metadata_json();
        assert!(
            meta.is_ascii() && meta.contains(r"Gr\u00fc\u00dfe"),
            "{meta}"
        );
        assert_eq!(Workflow::from_json(&meta).unwrap(), wf);
    }

    #[test]
    fn deserialize_is_as_strict_as_from_json() {
        let err =
            serde_json::from_str::<Workflow>(r#"{"run":[{"cmd":"x","timout":1}]}"#).unwrap_err();
        assert!(
            err.to_string().contains("run[0].timout: unknown field"),
            "{err}"
        );
        let err = Workflow::parse(r#"{"run":[{"cmd":"x","timout":1,"options":["LD_X=1"]}]}"#)
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("2 problems") && msg.contains("run[0].options[0]"),
            "{msg}"
        );
    }
}
