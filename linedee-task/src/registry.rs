//! The tasks of this program, registered by `#[ld_task]` through `inventory`.
//!
//! There is no central list: each `#[ld_task]` submits a [`TaskDef`]; dispatch, `list` and
//! the Procfile all read [`tasks`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use linedee::{Machine, Task};

use crate::context::TaskContext;
use crate::runtime::Failure;

/// The defaults given to `#[ld_task(...)]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSpec {
    /// The Procfile process type, `^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`.
    pub name: &'static str,
    /// The dyno size (checked by the macro), lowercase.
    pub machine: Option<&'static str>,
    /// Seconds the engine waits for the output.
    pub timeout_secs: Option<u64>,
    /// Success as soon as the process starts; the runtime writes no output by itself.
    pub no_output: bool,
    /// Retries after a failed attempt.
    pub retries: Option<u32>,
}

impl TaskSpec {
    /// A [`linedee::Task`] running this task (`cmd` is its name), with these defaults.
    pub fn task(&self) -> Task {
        let mut task = Task::new(self.name);
        if let Some(machine) = self.machine {
            match machine.parse::<Machine>() {
                Ok(m) => task = task.machine(m),
                Err(err) => tracing::warn!(task = self.name, "{err}"),
            }
        }
        if let Some(secs) = self.timeout_secs {
            task = task.timeout(Duration::from_secs(secs));
        }
        if self.no_output {
            task = task.no_output();
        }
        if let Some(retries) = self.retries {
            task = task.retries(retries);
        }
        task
    }
}

/// What a handler gives back, its output not yet written.
pub type HandlerResult = Result<crate::output::Output, Failure>;

/// The future of an `async` handler.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult>>>;

/// How to call a registered function.
#[derive(Clone, Copy)]
pub enum Handler {
    /// An `async fn`.
    Async(fn(TaskContext) -> HandlerFuture),
    /// A `fn`, called on the runtime's thread (see [`TaskContext::block_on`]).
    Sync(fn(TaskContext) -> HandlerResult),
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Handler::Async(_) => "Async",
            Handler::Sync(_) => "Sync",
        })
    }
}

/// One registered task: its spec, where it is defined, and how to call it.
#[derive(Debug)]
pub struct TaskDef {
    /// The attribute's values.
    pub spec: TaskSpec,
    /// The function's name.
    pub fn_name: &'static str,
    /// The module it is defined in.
    pub module_path: &'static str,
    /// The function.
    pub handler: Handler,
}

inventory::collect!(TaskDef);

/// Every registered task, sorted by name.
pub fn tasks() -> Vec<&'static TaskDef> {
    let mut all: Vec<&'static TaskDef> = inventory::iter::<TaskDef>.into_iter().collect();
    all.sort_by(|a, b| (a.spec.name, a.module_path).cmp(&(b.spec.name, b.module_path)));
    all
}

/// The task called `name`; its function's name works too (`process_image` for
/// `process-image`), as workflows written by hand often use it.
pub(crate) fn find<'a>(all: &[&'a TaskDef], name: &str) -> Option<&'a TaskDef> {
    all.iter()
        .find(|d| d.spec.name == name)
        .or_else(|| all.iter().find(|d| d.fn_name == name))
        .copied()
}

/// Names registered more than once, with where: `name (a::x, b::y)`.
pub(crate) fn duplicates(all: &[&TaskDef]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, d) in all.iter().enumerate() {
        let same: Vec<_> = all.iter().filter(|o| o.spec.name == d.spec.name).collect();
        let first = all.iter().position(|o| o.spec.name == d.spec.name);
        if same.len() > 1 && first == Some(i) {
            let places: Vec<String> = same
                .iter()
                .map(|o| format!("{}::{}", o.module_path, o.fn_name))
                .collect();
            out.push(format!("`{}` ({})", d.spec.name, places.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &'static str, fn_name: &'static str, module_path: &'static str) -> TaskDef {
        TaskDef {
            spec: TaskSpec {
                name,
                machine: Some("performance-l"),
                timeout_secs: Some(30),
                no_output: true,
                retries: Some(1),
            },
            fn_name,
            module_path,
            handler: Handler::Sync(|_| Ok(crate::Output::empty())),
        }
    }

    #[test]
    fn find_by_name_then_by_function_name() {
        let (a, b) = (
            def("process-image", "process_image", "m"),
            def("x", "y", "m"),
        );
        let all = [&a, &b];
        assert_eq!(
            find(&all, "process-image").map(|d| d.fn_name),
            Some("process_image")
        );
        assert_eq!(
            find(&all, "process_image").map(|d| d.fn_name),
            Some("process_image")
        );
        assert_eq!(find(&all, "y").map(|d| d.spec.name), Some("x"));
        assert!(find(&all, "z").is_none());
    }

    #[test]
    fn duplicates_name_every_place() {
        let (a, b, c) = (def("t", "f", "a"), def("t", "g", "b"), def("u", "h", "c"));
        assert_eq!(duplicates(&[&a, &b, &c]), ["`t` (a::f, b::g)"]);
        assert!(duplicates(&[&a, &c]).is_empty());
    }

    #[test]
    fn spec_gives_a_task_with_the_defaults() {
        let task = def("t", "f", "m").spec.task();
        assert_eq!(task.cmd, "t");
        assert_eq!(task.machine, Machine::PerformanceL);
        assert_eq!(task.timeout, 30);
        assert!(task.no_output);
        assert_eq!(task.retries, Some(1));
        assert_eq!(task.name, None);
    }

    #[test]
    fn every_machine_the_macro_accepts_parses() {
        // The macro's list (linedee-macros/src/attr.rs) is SPEC 2.5's; the SDK must agree.
        for m in [
            "eco",
            "basic",
            "standard-1x",
            "standard-2x",
            "performance-m",
            "performance-l",
            "performance-l-ram",
            "performance-xl",
            "performance-2xl",
            "private-s",
            "private-m",
            "private-l",
            "private-l-ram",
            "private-xl",
            "private-2xl",
            "shield-s",
            "shield-m",
            "shield-l",
            "shield-l-ram",
            "shield-xl",
            "shield-2xl",
        ] {
            assert_eq!(m.parse::<Machine>().map(Machine::as_str), Ok(m));
        }
    }
}
