//! The runs list narrowed by a time window, a title or trigger-key prefix, and a `cmd`: the
//! links of the dashboard's overview lead to these lists.

use linedee::RunState;
use rusqlite::{Connection, params};

use crate::views::RunSummary;

/// What a runs list is narrowed to; every field left `None` keeps all runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only runs in this state.
    pub status: Option<RunState>,
    /// Only runs active at or after this time (ms since the epoch): unfinished, or finished
    /// since. With [`Window`](crate::Window)'s start, these are the runs an
    /// [`Overview`](crate::Overview) counts.
    pub since_ms: Option<i64>,
    /// Only runs whose title or trigger key starts with this (case-sensitive).
    pub prefix: Option<String>,
    /// Only runs with an attempt of this `cmd` (started at or after `since_ms`, when set).
    pub cmd: Option<String>,
}

impl RunFilter {
    /// Does it narrow more than by status (the list then needs `list` rather than the
    /// status index alone)?
    pub(crate) fn is_refined(&self) -> bool {
        self.since_ms.is_some() || self.prefix.is_some() || self.cmd.is_some()
    }
}

/// Runs matching `f`, newest first, with keyset pagination on `seq`. Walks the primary key
/// down from the cursor and stops at `limit` matches; the `cmd` test is one indexed
/// sub-query, evaluated once.
pub(crate) fn list(
    conn: &Connection,
    f: &RunFilter,
    before_seq: Option<i64>,
    limit: usize,
) -> rusqlite::Result<Vec<(i64, RunSummary)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, run_id, title, status, trigger_key, created_ms, started_ms, finished_ms
         FROM ld_runs
         WHERE seq < COALESCE(?1, 9223372036854775807)
           AND (?2 IS NULL OR status = ?2)
           AND (?3 IS NULL OR finished_ms IS NULL OR finished_ms >= ?3)
           AND (?4 IS NULL OR substr(title, 1, length(?4)) = ?4
                OR substr(trigger_key, 1, length(?4)) = ?4)
           AND (?5 IS NULL OR run_id IN (SELECT run_id FROM ld_attempts
                                         WHERE started_ms >= COALESCE(?3, 0) AND cmd = ?5))
         ORDER BY seq DESC LIMIT ?6",
    )?;
    let rows = stmt
        .query_map(
            params![
                before_seq,
                f.status.map(RunState::as_str),
                f.since_ms,
                f.prefix,
                f.cmd,
                i64::try_from(limit).unwrap_or(100)
            ],
            crate::views::summary,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
