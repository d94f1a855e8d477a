//! The read side of the journal: status documents, run listings and attempts, as the
//! publisher, the [`Engine`](crate::Engine) and the dashboard show them.

use linedee::Workflow;
use linedee::status::{RunStatus, StepStatus, TaskStatus, Trigger, TriggerKind};
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use crate::error::Result;
use crate::journal::{from_ms, parse_run_state, parse_task_state};

/// An attempt, for the dashboard's timeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AttemptRow {
    /// The task.
    pub task_id: String,
    /// 1-based.
    pub attempt: u32,
    /// Start, ms since the epoch.
    pub started_ms: i64,
    /// End, ms since the epoch (absent while running).
    pub finished_ms: Option<i64>,
    /// `succeeded`, `failed`, `timed_out`, `cancelled`, `interrupted`, or absent while running.
    pub outcome: Option<String>,
    /// Exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// Why it failed.
    pub error: Option<String>,
}

pub(crate) fn attempts(conn: &Connection, run_id: &str) -> Result<Vec<AttemptRow>> {
    let mut stmt = conn.prepare(
        "SELECT a.task_id, a.attempt, a.started_ms, a.finished_ms, a.outcome, a.exit_code, a.error
         FROM ld_attempts a JOIN ld_tasks t ON t.task_id = a.task_id WHERE t.run_id = ?1
         ORDER BY t.step, t.idx, a.attempt",
    )?;
    let rows = stmt
        .query_map([run_id], |r| {
            Ok(AttemptRow {
                task_id: r.get(0)?,
                attempt: r.get(1)?,
                started_ms: r.get(2)?,
                finished_ms: r.get(3)?,
                outcome: r.get(4)?,
                exit_code: r.get(5)?,
                error: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The status document of a run, from the journal.
pub(crate) fn render(conn: &Connection, run_id: &str) -> Result<Option<RunStatus>> {
    let head = conn
        .query_row(
            "SELECT run_id, title, bucket, trigger_key, trigger_etag, kind, workflow, status, error,
                    created_ms, started_ms, finished_ms FROM ld_runs WHERE run_id = ?1",
            [run_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, Option<String>>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, Option<i64>>(10)?,
                    r.get::<_, Option<i64>>(11)?,
                ))
            },
        )
        .optional()?;
    let Some((
        run_id,
        title,
        bucket,
        key,
        etag,
        kind,
        workflow,
        status,
        error,
        created,
        started,
        finished,
    )) = head
    else {
        return Ok(None);
    };
    let workflow = workflow.and_then(|w| Workflow::from_json(&w).ok());
    let mut stmt = conn.prepare(
        "SELECT task_id, step, idx, status, attempts, started_ms, finished_ms, exit_code, state, error
         FROM ld_tasks WHERE run_id = ?1 ORDER BY step, idx",
    )?;
    let rows = stmt
        .query_map([&run_id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)? as usize,
                r.get::<_, i64>(2)? as usize,
                r.get::<_, String>(3)?,
                r.get::<_, u32>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<i32>>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<String>>(9)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut steps: Vec<StepStatus> = workflow
        .as_ref()
        .map(|wf| {
            wf.run
                .iter()
                .map(|s| StepStatus {
                    name: s.name().map(str::to_owned),
                    parallel: matches!(s, linedee::Step::Group(_)),
                    tasks: Vec::new(),
                })
                .collect()
        })
        .unwrap_or_default();
    for (task_id, step, idx, tstatus, attempts, t_started, t_finished, exit_code, state, terror) in
        rows
    {
        let Some(def) = workflow
            .as_ref()
            .and_then(|w| w.run.get(step))
            .and_then(|s| s.tasks().get(idx))
        else {
            continue;
        };
        if let Some(s) = steps.get_mut(step) {
            s.tasks.push(TaskStatus {
                task_id,
                name: def.name.clone(),
                cmd: def.cmd.clone(),
                machine: Some(def.machine.as_str().to_owned()),
                status: parse_task_state(&tstatus),
                attempts,
                started_at: from_ms(t_started),
                finished_at: from_ms(t_finished),
                exit_code,
                state: state
                    .map(|s| serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s))),
                error: terror,
            });
        }
    }
    Ok(Some(RunStatus {
        run_id,
        title,
        trigger: Trigger {
            bucket,
            key,
            etag,
            kind: if kind == "ld_code" {
                TriggerKind::LdCode
            } else {
                TriggerKind::LdRun
            },
        },
        status: parse_run_state(&status),
        created_at: from_ms(Some(created)).unwrap_or(OffsetDateTime::UNIX_EPOCH),
        started_at: from_ms(started),
        finished_at: from_ms(finished),
        error,
        steps,
    }))
}

/// A line of the runs list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// Workflow title.
    pub title: Option<String>,
    /// `queued`, `running`, …
    pub status: String,
    /// Trigger key.
    pub trigger_key: String,
    /// Created, ms since the epoch.
    pub created_ms: i64,
    /// Started, ms since the epoch.
    pub started_ms: Option<i64>,
    /// Finished, ms since the epoch.
    pub finished_ms: Option<i64>,
}

/// Runs, newest first, optionally filtered by status, with keyset pagination on `seq`.
pub(crate) fn list_runs(
    conn: &Connection,
    status: Option<&str>,
    before_seq: Option<i64>,
    limit: usize,
) -> Result<Vec<(i64, RunSummary)>> {
    // Two statements, so that each can use its index: (status, seq) or the primary key.
    let sql = if status.is_some() {
        "SELECT seq, run_id, title, status, trigger_key, created_ms, started_ms, finished_ms FROM ld_runs
         WHERE status = ?1 AND seq < COALESCE(?2, 9223372036854775807) ORDER BY seq DESC LIMIT ?3"
    } else {
        "SELECT seq, run_id, title, status, trigger_key, created_ms, started_ms, finished_ms FROM ld_runs
         WHERE ?1 IS NULL AND seq < COALESCE(?2, 9223372036854775807) ORDER BY seq DESC LIMIT ?3"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt
        .query_map(
            params![status, before_seq, i64::try_from(limit).unwrap_or(100)],
            |r| {
                Ok((
                    r.get(0)?,
                    RunSummary {
                        run_id: r.get(1)?,
                        title: r.get(2)?,
                        status: r.get(3)?,
                        trigger_key: r.get(4)?,
                        created_ms: r.get(5)?,
                        started_ms: r.get(6)?,
                        finished_ms: r.get(7)?,
                    },
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
