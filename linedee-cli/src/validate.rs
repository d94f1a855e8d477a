//! `linedee validate wf.json [--procfile Procfile]`: every problem with its JSON path, and
//! every `cmd` checked against the Procfile.

use std::path::{Path, PathBuf};

use linedee::{Problem, Step, Workflow};
use linedee_engine::Procfile;

use crate::cli::ValidateArgs;
use crate::exit;
use crate::submit::read_text;

/// Runs `linedee validate`.
pub(crate) fn run(args: ValidateArgs) -> anyhow::Result<u8> {
    let text = read_text(&args.workflow)?;
    let name = args.workflow.display().to_string();
    let workflow = match Workflow::from_json(&text) {
        Ok(wf) => wf,
        Err(e) => return Err(anyhow::Error::new(e).context(name)),
    };
    let mut problems = match workflow.validate() {
        Ok(()) => Vec::new(),
        Err(e) => e.problems,
    };
    let (procfile, source) = load_procfile(args.procfile.as_deref())?;
    problems.extend(check_cmds(&workflow, &procfile, &source));
    if !problems.is_empty() {
        let mut msg = format!("{name}: invalid workflow ({} problems):", problems.len());
        if let [one] = problems.as_slice() {
            msg = format!("{name}: invalid workflow: {one}");
        } else {
            for p in &problems {
                msg.push_str(&format!("\n  - {p}"));
            }
        }
        return Err(exit::bad_input(msg));
    }
    let tasks = workflow.tasks().count();
    println!(
        "{name}: ok ({} steps, {tasks} tasks{})",
        workflow.run.len(),
        workflow
            .title
            .as_deref()
            .map(|t| format!(", \"{t}\""))
            .unwrap_or_default()
    );
    Ok(exit::OK)
}

/// The Procfile, and how to name it in messages (empty: there is none). An explicit one must exist; the default
/// `./Procfile` may be absent (then every bare word is an error).
fn load_procfile(path: Option<&Path>) -> anyhow::Result<(Procfile, String)> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from("Procfile"), false),
    };
    if !explicit && !path.exists() {
        return Ok((Procfile::default(), String::new()));
    }
    let procfile = Procfile::load(&path).map_err(|e| exit::bad_input(e.to_string()))?;
    Ok((procfile, path.display().to_string()))
}

/// A `cmd` is fine when its first word is a process type (exactly, or with `_` read as `-`),
/// or when it is a command line (it has whitespace or a `/`).
fn check_cmds(wf: &Workflow, procfile: &Procfile, source: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    for (s, step) in wf.run.iter().enumerate() {
        for (t, task) in step.tasks().iter().enumerate() {
            let path = match step {
                Step::Group(_) => format!("run[{s}].parallel[{t}].cmd"),
                _ => format!("run[{s}].cmd"),
            };
            let cmd = task.cmd.trim();
            if cmd.is_empty() || cmd.contains(char::is_whitespace) || cmd.contains('/') {
                continue;
            }
            if procfile.command(cmd).is_some() || procfile.command(&cmd.replace('_', "-")).is_some()
            {
                continue;
            }
            let known: Vec<&str> = procfile.names().collect();
            let known = if source.is_empty() {
                "there is no ./Procfile (name one with --procfile)".to_owned()
            } else if known.is_empty() {
                format!("{source} defines no process types")
            } else {
                format!("the process types in {source} are: {}", known.join(", "))
            };
            out.push(Problem::new(
                path,
                format!(
                    "`{cmd}` is not a Procfile process type; {known} (a command line needs a space or a `/`)"
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_words_must_be_process_types() {
        let wf = Workflow::parse(
            r#"{"run":[{"cmd":"process_image"},{"parallel":[{"cmd":"bin/x"},{"cmd":"nope"},{"cmd":"echo hi"}]}]}"#,
        )
        .expect("valid");
        let p = Procfile::parse("process-image: bin/tasks process-image\nweb: bin/web\n")
            .expect("procfile");
        let problems = check_cmds(&wf, &p, "Procfile");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "run[1].parallel[1].cmd");
        assert!(
            problems[0].message.contains("process-image, web"),
            "{}",
            problems[0].message
        );
    }
}
