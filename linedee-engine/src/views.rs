//! The read side of the local journal: run listings and attempts, as the
//! [`Engine`](crate::Engine) and the dashboard show them (status documents are rendered
//! from a run's record by the machine).

use rusqlite::{Connection, params};

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

pub(crate) fn attempts(conn: &Connection, run_id: &str) -> rusqlite::Result<Vec<AttemptRow>> {
    let mut stmt = conn.prepare(
        "SELECT a.task_id, a.attempt, a.started_ms, a.finished_ms, a.outcome, a.exit_code, a.error
         FROM ld_attempts a WHERE a.run_id = ?1 ORDER BY a.step, a.idx, a.attempt",
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

/// A line of the runs list.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// Workflow title.
    pub title: Option<String>,
    /// Where it stands (serialised lowercase: `queued`, `running`, …).
    pub status: linedee::RunState,
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
) -> rusqlite::Result<Vec<(i64, RunSummary)>> {
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
            summary,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A row of `SELECT seq, run_id, title, status, trigger_key, created_ms, started_ms,
/// finished_ms` as a line of the runs list and its `seq`.
pub(crate) fn summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, RunSummary)> {
    Ok((
        r.get(0)?,
        RunSummary {
            run_id: r.get(1)?,
            title: r.get(2)?,
            status: r
                .get::<_, String>(3)?
                .parse()
                .map_err(|e: linedee::Error| {
                    rusqlite::Error::FromSqlConversionFailure(
                        3,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })?,
            trigger_key: r.get(4)?,
            created_ms: r.get(5)?,
            started_ms: r.get(6)?,
            finished_ms: r.get(7)?,
        },
    ))
}
