//! The journal's tables: each run's record as the machine's JSON, and its projection into
//! indexed rows (runs and attempts) for listings and the dashboard, written in the same
//! transaction.

use rusqlite::params;

use super::NewRun;
use crate::machine::RunRecord;
use linedee::status::TriggerKind;

/// The journal's tables and indexes, created when missing; indexes of earlier versions that
/// no query reads are dropped.
pub(crate) const SCHEMA: &str = "
-- One row, rewritten to sync the WAL (Journal::sync).
CREATE TABLE IF NOT EXISTS ld_durable (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS ld_runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    dedup TEXT UNIQUE,
    bucket TEXT NOT NULL,
    trigger_key TEXT NOT NULL,
    trigger_etag TEXT,
    kind TEXT NOT NULL,
    title TEXT,
    status TEXT NOT NULL,
    error TEXT,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    live INTEGER NOT NULL DEFAULT 0,
    published TEXT,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ld_runs_status ON ld_runs (status, seq);
CREATE INDEX IF NOT EXISTS ld_runs_live ON ld_runs (live) WHERE live = 1;
CREATE TABLE IF NOT EXISTS ld_attempts (
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    cmd TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    outcome TEXT,
    exit_code INTEGER,
    error TEXT,
    PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ld_attempts_run ON ld_attempts (run_id, step, idx, attempt);
-- For the overview's aggregates (stats.rs): counts are index range counts, percentiles either
-- sort a small window's rows or walk a duration index in order.
CREATE INDEX IF NOT EXISTS ld_runs_started ON ld_runs (started_ms) WHERE started_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS ld_runs_finished_status ON ld_runs (finished_ms, status, started_ms)
    WHERE finished_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS ld_runs_status_finished ON ld_runs (status, finished_ms)
    WHERE finished_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS ld_runs_duration ON ld_runs (finished_ms - started_ms, finished_ms, started_ms)
    WHERE finished_ms IS NOT NULL AND started_ms IS NOT NULL;
CREATE INDEX IF NOT EXISTS ld_attempts_window ON ld_attempts (started_ms, cmd, finished_ms, outcome, attempt, run_id);
CREATE INDEX IF NOT EXISTS ld_attempts_cmd ON ld_attempts (cmd, started_ms, attempt, outcome, finished_ms, run_id);
CREATE INDEX IF NOT EXISTS ld_attempts_cmd_duration ON ld_attempts (cmd, finished_ms - started_ms, started_ms, finished_ms)
    WHERE finished_ms IS NOT NULL;
-- Indexes of earlier versions that no query needs: ld_runs_finished and ld_attempts_started
-- are covered by ld_runs_finished_status and ld_attempts_window (the planner reads those), and
-- nothing filters or sorts by created_ms. Each cost a page write for every run.
DROP INDEX IF EXISTS ld_runs_finished;
DROP INDEX IF EXISTS ld_attempts_started;
DROP INDEX IF EXISTS ld_runs_created;
";

/// Writes a record and its projection.
///
/// A projected column is written only when its value changes. SQLite rewrites the entries of
/// every index that holds a column an `UPDATE` sets, even to the same value, and most turns
/// change the record but none of its indexed columns: they then write one table page, not a
/// dozen index pages.
pub(super) fn save(tx: &rusqlite::Transaction<'_>, r: &RunRecord) -> rusqlite::Result<()> {
    let record = r.to_json();
    let projected = tx
        .prepare_cached(
            "UPDATE ld_runs SET title = ?2, status = ?3, error = ?4, started_ms = ?5,
                 finished_ms = ?6, live = ?7, record = ?8
             WHERE run_id = ?1 AND (title IS NOT ?2 OR status IS NOT ?3 OR error IS NOT ?4
                 OR started_ms IS NOT ?5 OR finished_ms IS NOT ?6 OR live IS NOT ?7)",
        )?
        .execute(params![
            r.run_id,
            r.workflow.as_ref().and_then(|w| w.title.as_deref()),
            r.status.as_str(),
            r.error,
            r.started_ms,
            r.finished_ms,
            r.has_live_processes(),
            record
        ])?;
    if projected == 0 {
        tx.prepare_cached("UPDATE ld_runs SET record = ?2 WHERE run_id = ?1")?
            .execute(params![r.run_id, record])?;
    }
    let mut stmt = tx.prepare_cached(
        "INSERT INTO ld_attempts (task_id, attempt, run_id, step, idx, cmd, started_ms, finished_ms, outcome, exit_code, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (task_id, attempt) DO UPDATE SET finished_ms = ?8, outcome = ?9, exit_code = ?10, error = ?11
         WHERE ld_attempts.finished_ms IS NOT ?8 OR ld_attempts.outcome IS NOT ?9
             OR ld_attempts.exit_code IS NOT ?10 OR ld_attempts.error IS NOT ?11",
    )?;
    for t in &r.tasks {
        let cmd = r.def(t.step, t.idx).map_or("", |d| d.cmd.as_str());
        for a in &t.attempts {
            let Some(started) = a.started_ms else {
                continue;
            };
            stmt.execute(params![
                t.task_id,
                a.n,
                r.run_id,
                t.step as i64,
                t.idx as i64,
                cmd,
                started,
                a.finished_ms,
                a.outcome.map(|o| o.as_str()),
                a.exit_code,
                a.error
            ])?;
        }
    }
    Ok(())
}

pub(super) fn insert(tx: &rusqlite::Transaction<'_>, new: &NewRun) -> rusqlite::Result<bool> {
    let r = &new.record;
    let inserted = tx
        .prepare_cached(
        "INSERT OR IGNORE INTO ld_runs (run_id, dedup, bucket, trigger_key, trigger_etag, kind, title, status,
             error, created_ms, finished_ms, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
            r.run_id,
            new.dedup,
            r.trigger.bucket,
            r.trigger.key,
            r.trigger.etag,
            match r.trigger.kind {
                TriggerKind::LdCode => "ld_code",
                _ => "ld_run",
            },
            r.workflow.as_ref().and_then(|w| w.title.as_deref()),
            r.status.as_str(),
            r.error,
            r.created_ms,
            r.finished_ms,
            r.to_json()
        ])?
        == 1;
    if inserted {
        save(tx, r)?;
    }
    Ok(inserted)
}
