//! `linedee logs TASK_ID [--attempt N] [--follow]`: an attempt's stdout and stderr, from
//! `ld/logs/{task_id}/{attempt}.log`.
//!
//! The engine uploads an attempt's log when the attempt ends. While it runs, `--follow` tails
//! the local engine's copy (`<dir>/logs/{task_id}.{attempt}.log`) when there is one, then
//! finishes from the uploaded log.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use linedee::status::{RunStatus, TaskState, TaskStatus, log_key};
use linedee::{Client, Error};

use crate::cli::LogsArgs;
use crate::env::Config;
use crate::exit;
use crate::runs;

const POLL: Duration = Duration::from_millis(200);

/// Runs `linedee logs`.
pub(crate) async fn run(config: &Config, dir: &Path, args: LogsArgs) -> anyhow::Result<u8> {
    let Some((run_id, _)) = args.task_id.split_once('.') else {
        return Err(exit::bad_input(format!(
            "`{}` is not a task id: expected `{{run_id}}.{{step}}.{{task}}`, as `linedee run RUN_ID` lists them",
            args.task_id
        )));
    };
    let client = config.client()?;
    let status = runs::fetch(&client, run_id).await?;
    let task = find_task(&status, &args.task_id)?.clone();
    if let Some(a) = args.attempt
        && (a == 0 || (a > task.attempts && !args.follow))
    {
        return Err(exit::not_found(format!(
            "task {} has no attempt {a}; it has {} (attempts count from 1)",
            task.task_id, task.attempts
        )));
    }
    if args.follow {
        let first = args.attempt.unwrap_or(task.attempts.max(1));
        return follow(&client, dir, run_id, &args.task_id, first).await;
    }
    let attempt = args.attempt.unwrap_or(task.attempts);
    if attempt == 0 {
        return Err(exit::not_found(format!(
            "task {} has not started yet; wait for it with `linedee logs {} --follow`",
            task.task_id, task.task_id
        )));
    }
    match read_log(&client, &task.task_id, attempt).await? {
        Some(bytes) => write_out(&bytes)?,
        None => {
            // Still running: show what the local engine has so far, if it is ours.
            let local = local_log(dir, &task.task_id, attempt);
            let so_far = match std::fs::read(&local) {
                // The local engine creates the file with the attempt's first output.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                read => read,
            };
            match so_far {
                Ok(bytes) if attempt == task.attempts && !finished(&task) => {
                    write_out(&bytes)?;
                    eprintln!("(attempt {attempt} is still running; follow it with --follow)");
                }
                _ => {
                    return Err(exit::not_found(format!(
                        "the log of {} attempt {attempt} is not in the bucket yet (it is uploaded when the attempt ends); wait for it with --follow",
                        task.task_id
                    )));
                }
            }
        }
    }
    Ok(exit::OK)
}

fn find_task<'a>(status: &'a RunStatus, task_id: &str) -> anyhow::Result<&'a TaskStatus> {
    status.task(task_id).ok_or_else(|| {
        let ids: Vec<&str> = status.tasks().map(|t| t.task_id.as_str()).collect();
        exit::not_found(format!(
            "run {} has no task `{task_id}`; its tasks are: {}",
            status.run_id,
            if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.join(", ")
            }
        ))
    })
}

fn finished(t: &TaskStatus) -> bool {
    matches!(
        t.status,
        TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
    )
}

/// Prints attempt after attempt, from `first`, until the task has finished and the log of its
/// last attempt has been printed.
async fn follow(
    client: &Client,
    dir: &Path,
    run_id: &str,
    task_id: &str,
    first: u32,
) -> anyhow::Result<u8> {
    let mut attempt = first;
    loop {
        if attempt > first {
            eprintln!("--- {task_id} attempt {attempt} ---");
        }
        // Wait for the attempt to start (or the task to end without it).
        loop {
            let status = runs::fetch(client, run_id).await?;
            let task = find_task(&status, task_id)?;
            if task.attempts >= attempt {
                break;
            }
            if finished(task) {
                if attempt == 1 {
                    eprintln!(
                        "task {task_id} ended {} without running",
                        task.status.as_str()
                    );
                }
                return Ok(exit::OK);
            }
            tokio::time::sleep(POLL).await;
        }
        let local = local_log(dir, task_id, attempt);
        follow_attempt(client, &local, run_id, task_id, attempt).await?;
        // The attempt has ended: is there another one?
        loop {
            let status = runs::fetch(client, run_id).await?;
            let task = find_task(&status, task_id)?;
            if task.attempts > attempt {
                attempt += 1;
                break;
            }
            if finished(task) {
                return Ok(exit::OK);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Tails the local copy while the attempt runs, then prints the rest of the uploaded log.
/// Gives up on an attempt whose log never lands (an engine that died mid-attempt) once a
/// later attempt has started.
async fn follow_attempt(
    client: &Client,
    local: &Path,
    run_id: &str,
    task_id: &str,
    attempt: u32,
) -> anyhow::Result<()> {
    let mut printed = 0usize;
    for poll in 1u64.. {
        if poll % 10 == 0 {
            let status = runs::fetch(client, run_id).await?;
            if find_task(&status, task_id)?.attempts > attempt
                && read_log(client, task_id, attempt).await?.is_none()
            {
                eprintln!("(the log of attempt {attempt} was never uploaded)");
                return Ok(());
            }
        }
        if let Some(bytes) = read_log(client, task_id, attempt).await? {
            write_out(bytes.get(printed..).unwrap_or_default())?;
            return Ok(());
        }
        if let Ok(bytes) = tokio::fs::read(local).await
            && bytes.len() > printed
        {
            // Only whole lines, so the rest is printed once from the uploaded log.
            if let Some(end) = bytes.iter().rposition(|&b| b == b'\n')
                && end + 1 > printed
            {
                write_out(&bytes[printed..=end])?;
                printed = end + 1;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

async fn read_log(client: &Client, task_id: &str, attempt: u32) -> anyhow::Result<Option<Vec<u8>>> {
    match client.get(&log_key(task_id, attempt)).await {
        Ok(object) => Ok(Some(object.bytes().await?.to_vec())),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn local_log(dir: &Path, task_id: &str, attempt: u32) -> PathBuf {
    linedee_engine::local_log_path(dir, task_id, attempt)
}

fn write_out(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}
