//! `linedee_task::main()`: the subcommands of a task app.

use std::ffi::OsString;
use std::io::Write;

use crate::context::exe_name;
use crate::registry::{self, TaskDef};
use crate::{procfile, runtime};

/// Exit code: success.
const OK: i32 = 0;
/// Exit code: the task failed, or the Procfile drifted.
const FAILED: i32 = 1;
/// Exit code: bad command line (unknown task or subcommand, missing argument).
const USAGE: i32 = 2;

/// The whole `fn main` of a task app.
///
/// | command | does |
/// |---|---|
/// | `app <task>` | runs the task in its own tokio runtime (what the engine and the Procfile do) |
/// | `app list [--json]` | shows each task with its defaults (`--json`: one array) |
/// | `app procfile [--bin PATH]` | prints one Procfile line per task, `{task}: {PATH} {task}` |
/// | `app procfile --check FILE [--bin PATH]` | compares `FILE` with those lines, lists the drift |
///
/// `PATH` defaults to `target/release/{exe}`, where the Rust buildpack leaves the binary on
/// Heroku and where `cargo build --release` puts it. A task can also be named by its
/// function's name (`process_image` for `process-image`).
///
/// Exit codes: 0 success; 1 the task failed (after printing
/// `{"error_type":…,"error_message":…}` on stderr) or the Procfile drifted; 2 a bad command
/// line, e.g. an unknown task (the error lists the known ones).
/// Logs go to stderr, filtered by `RUST_LOG` (default `info`).
///
/// ```no_run
/// use linedee_task::{ld_task, TaskContext};
///
/// #[ld_task]
/// async fn hello(ctx: TaskContext) -> anyhow::Result<()> {
///     tracing::info!("hello from {}", ctx.task_id());
///     Ok(())
/// }
///
/// fn main() {
///     linedee_task::main()
/// }
/// ```
pub fn main() -> ! {
    let code = run(std::env::args_os().skip(1).collect());
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}

fn run(args: Vec<OsString>) -> i32 {
    let exe = exe_name();
    let args: Vec<String> = match args.into_iter().map(OsString::into_string).collect() {
        Ok(args) => args,
        Err(bad) => return usage(&exe, &format!("argument {bad:?} is not UTF-8")),
    };
    let all = registry::tasks();
    let dups = registry::duplicates(&all);
    if !dups.is_empty() {
        eprintln!(
            "error: task names registered more than once: {}; give each `#[ld_task]` a \
             distinct `name`",
            dups.join("; ")
        );
        return USAGE;
    }
    match args.first().map(String::as_str) {
        None => usage(&exe, "no task given"),
        Some("-h" | "--help" | "help") => {
            println!("{}", help(&exe, &all));
            OK
        }
        Some("list") => match &args[1..] {
            [] => {
                print!("{}", list(&all));
                OK
            }
            [json] if json == "--json" => {
                println!("{}", list_json(&all));
                OK
            }
            _ => usage(&exe, "`list` takes only `--json`"),
        },
        Some("procfile") => procfile_cmd(&exe, &all, &args[1..]),
        Some(name) => {
            if args.len() > 1 {
                return usage(&exe, &format!("unexpected arguments after `{name}`"));
            }
            match registry::find(&all, name) {
                Some(def) => {
                    runtime::init_tracing();
                    if runtime::run(def) { OK } else { FAILED }
                }
                None => {
                    eprintln!("error: unknown task `{name}`; known tasks: {}", known(&all));
                    USAGE
                }
            }
        }
    }
}

fn procfile_cmd(exe: &str, all: &[&TaskDef], args: &[String]) -> i32 {
    let mut bin = None;
    let mut check = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let slot = match arg.as_str() {
            "--bin" => &mut bin,
            "--check" => &mut check,
            other => return usage(exe, &format!("unknown `procfile` argument `{other}`")),
        };
        match it.next() {
            Some(value) => *slot = Some(value.clone()),
            None => return usage(exe, &format!("`{arg}` needs a value")),
        }
    }
    let bin = bin.unwrap_or_else(|| procfile::default_bin(exe));
    let Some(path) = check else {
        print!("{}", procfile::render(all, &bin));
        return OK;
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("error: cannot read `{path}`: {err}");
            return FAILED;
        }
    };
    let drift = procfile::check(all, &bin, &text);
    if drift.is_empty() {
        println!("{path} is up to date ({} tasks)", all.len());
        OK
    } else {
        eprintln!("{path} does not match the tasks of `{exe}`:");
        for d in &drift {
            eprintln!("  {d}");
        }
        eprintln!("regenerate the task lines with `{exe} procfile --bin {bin}`");
        FAILED
    }
}

fn usage(exe: &str, problem: &str) -> i32 {
    eprintln!(
        "error: {problem}\n\nusage: {exe} <task> | list [--json] | procfile [--bin PATH] [--check FILE]"
    );
    USAGE
}

fn known(all: &[&TaskDef]) -> String {
    if all.is_empty() {
        return "none (add `#[ld_task]` to a function)".to_owned();
    }
    all.iter()
        .map(|d| d.spec.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn help(exe: &str, all: &[&TaskDef]) -> String {
    format!(
        "{exe}: a linedee task app\n\n\
         usage:\n  {exe} <task>                                 run a task (needs `line_D`)\n  \
         {exe} list [--json]                          show the tasks and their defaults\n  \
         {exe} procfile [--bin PATH]                  print the Procfile lines\n  \
         {exe} procfile --check FILE [--bin PATH]     compare FILE with them\n\n\
         tasks: {}",
        known(all)
    )
}

/// `[{"name":…,"function":…,"machine":…,"timeout":…,"retries":…,"no_output":…}]`, `null`
/// for a default left to the engine.
fn list_json(all: &[&TaskDef]) -> String {
    let tasks: Vec<serde_json::Value> = all
        .iter()
        .map(|d| {
            serde_json::json!({
                "name": d.spec.name,
                "function": format!("{}::{}", d.module_path, d.fn_name),
                "machine": d.spec.machine,
                "timeout": d.spec.timeout_secs,
                "retries": d.spec.retries,
                "no_output": d.spec.no_output,
            })
        })
        .collect();
    serde_json::Value::Array(tasks).to_string()
}

/// A table: name, function, machine, timeout, retries, no_output.
fn list(all: &[&TaskDef]) -> String {
    let rows: Vec<[String; 6]> = all
        .iter()
        .map(|d| {
            let s = &d.spec;
            [
                s.name.to_owned(),
                format!("{}::{}", d.module_path, d.fn_name),
                s.machine.unwrap_or("basic").to_owned(),
                format!("{}s", s.timeout_secs.unwrap_or(60)),
                s.retries.map_or("default".to_owned(), |r| r.to_string()),
                s.no_output.to_string(),
            ]
        })
        .collect();
    let header = [
        "TASK",
        "FUNCTION",
        "MACHINE",
        "TIMEOUT",
        "RETRIES",
        "NO_OUTPUT",
    ]
    .map(String::from);
    let mut widths = [0usize; 6];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_command_lines_are_usage_errors() {
        assert_eq!(run(vec!["no-such-task".into()]), USAGE);
        assert_eq!(run(vec!["procfile".into(), "--bin".into()]), USAGE);
        assert_eq!(run(vec!["procfile".into(), "--what".into()]), USAGE);
        assert_eq!(run(vec![]), USAGE);
        assert_eq!(run(vec!["list".into()]), OK);
        assert_eq!(run(vec!["list".into(), "--json".into()]), OK);
        assert_eq!(run(vec!["list".into(), "--yaml".into()]), USAGE);
    }
}
