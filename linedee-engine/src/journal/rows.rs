//! The journal's tables: each run's record as the machine's JSON, and its projection into
//! indexed rows (runs and attempts) for listings and the dashboard.
//!
//! A save writes the record and marks the run unprojected (`ld_unprojected`); the projection
//! follows in a later commit shared by many runs ([`project`], `journal.rs` says when). A
//! crash in between loses nothing: opening the journal projects the marked runs first.

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
-- Runs whose record changed since their row's columns and attempts were last projected.
CREATE TABLE IF NOT EXISTS ld_unprojected (run_id TEXT PRIMARY KEY) WITHOUT ROWID;
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

/// Writes a record and marks its run unprojected (`marked`: already marked, in this commit or
/// an earlier one not yet projected). Only the record's column is set, so no index entry is
/// rewritten: the run's table page and, for a run not yet marked, the marks' page.
pub(super) fn save(
    tx: &rusqlite::Transaction<'_>,
    r: &RunRecord,
    marked: bool,
) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE ld_runs SET record = ?2 WHERE run_id = ?1")?
        .execute(params![r.run_id, r.to_json()])?;
    if !marked {
        tx.prepare_cached("INSERT OR IGNORE INTO ld_unprojected (run_id) VALUES (?1)")?
            .execute([&r.run_id])?;
    }
    Ok(())
}

/// Projects `runs` (each its latest record) into their rows and attempts, and clears their
/// marks.
///
/// Only the projected columns whose values change are set. SQLite rewrites the entries of
/// every index that holds a column an `UPDATE` sets, even to the same value, so setting them
/// all would rewrite a run's six indexes when only `live` changes, and an attempt's three
/// when its exit code comes. Projecting a short run once, after it ended, writes each of its
/// index entries once; and the runs projected together share the pages of the indexes kept in
/// time order.
pub(super) fn project<'a>(
    tx: &rusqlite::Transaction<'_>,
    runs: impl IntoIterator<Item = &'a RunRecord>,
) -> rusqlite::Result<()> {
    for r in runs {
        project_run(tx, r)?;
        project_attempts(tx, r)?;
        tx.prepare_cached("DELETE FROM ld_unprojected WHERE run_id = ?1")?
            .execute([&r.run_id])?;
    }
    Ok(())
}

/// Records which final status each run's document shows (run id, status).
pub(super) fn mark_published(
    tx: &rusqlite::Transaction<'_>,
    marks: &[(String, String)],
) -> rusqlite::Result<()> {
    for (run_id, status) in marks {
        tx.prepare_cached("UPDATE ld_runs SET published = ?2 WHERE run_id = ?1")?
            .execute(params![run_id, status])?;
    }
    Ok(())
}

/// The marked runs' stored records (run id, JSON), for projecting them at open.
pub(super) fn marked(c: &rusqlite::Connection) -> rusqlite::Result<Vec<(String, String)>> {
    c.prepare(
        "SELECT u.run_id, r.record FROM ld_unprojected u JOIN ld_runs r ON r.run_id = u.run_id",
    )?
    .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
    .collect()
}

/// A run's projected columns, as stored or as its record has them.
#[derive(Debug, PartialEq, Eq)]
struct Projected {
    title: Option<String>,
    status: String,
    error: Option<String>,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
    live: bool,
}

impl Projected {
    fn of(r: &RunRecord) -> Self {
        Projected {
            title: r.workflow.as_ref().and_then(|w| w.title.clone()),
            status: r.status.as_str().to_owned(),
            error: r.error.clone(),
            started_ms: r.started_ms,
            finished_ms: r.finished_ms,
            live: r.has_live_processes(),
        }
    }
}

/// Sets the run's row to `r`'s projection: one `UPDATE` that names only the projected columns
/// that differ from the stored row, none when nothing does.
fn project_run(tx: &rusqlite::Transaction<'_>, r: &RunRecord) -> rusqlite::Result<()> {
    use rusqlite::OptionalExtension as _;
    let stored = tx
        .prepare_cached(
            "SELECT title, status, error, started_ms, finished_ms, live FROM ld_runs
             WHERE run_id = ?1",
        )?
        .query_row([&r.run_id], |row| {
            Ok(Projected {
                title: row.get(0)?,
                status: row.get(1)?,
                error: row.get(2)?,
                started_ms: row.get(3)?,
                finished_ms: row.get(4)?,
                live: row.get(5)?,
            })
        })
        .optional()?;
    let Some(stored) = stored else {
        return Ok(());
    };
    let now = Projected::of(r);
    let mut set: Vec<(&str, &dyn rusqlite::ToSql)> = Vec::new();
    if stored.title != now.title {
        set.push(("title", &now.title));
    }
    if stored.status != now.status {
        set.push(("status", &now.status));
    }
    if stored.error != now.error {
        set.push(("error", &now.error));
    }
    if stored.started_ms != now.started_ms {
        set.push(("started_ms", &now.started_ms));
    }
    if stored.finished_ms != now.finished_ms {
        set.push(("finished_ms", &now.finished_ms));
    }
    if stored.live != now.live {
        set.push(("live", &now.live));
    }
    if set.is_empty() {
        return Ok(());
    }
    let columns: Vec<String> = set
        .iter()
        .enumerate()
        .map(|(i, (column, _))| format!("{column} = ?{}", i + 2))
        .collect();
    let sql = format!(
        "UPDATE ld_runs SET {} WHERE run_id = ?1",
        columns.join(", ")
    );
    let values =
        std::iter::once(&r.run_id as &dyn rusqlite::ToSql).chain(set.iter().map(|(_, v)| *v));
    tx.prepare_cached(&sql)?
        .execute(rusqlite::params_from_iter(values))
        .map(drop)
}

/// Writes the rows of `r`'s started attempts: a new one whole; a stored one's end (time and
/// outcome) and its exit (code and error) each only when they changed, since the end is in
/// three indexes and the exit in none.
fn project_attempts(tx: &rusqlite::Transaction<'_>, r: &RunRecord) -> rusqlite::Result<()> {
    use rusqlite::OptionalExtension as _;
    type Stored = (Option<i64>, Option<String>, Option<i32>, Option<String>);
    for t in &r.tasks {
        for a in &t.attempts {
            let Some(started) = a.started_ms else {
                continue;
            };
            let outcome = a.outcome.map(|o| o.as_str());
            let stored: Option<Stored> = tx
                .prepare_cached(
                    "SELECT finished_ms, outcome, exit_code, error FROM ld_attempts
                     WHERE task_id = ?1 AND attempt = ?2",
                )?
                .query_row(params![t.task_id, a.n], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .optional()?;
            let Some((finished_ms, stored_outcome, exit_code, error)) = stored else {
                let cmd = r.def(t.step, t.idx).map_or("", |d| d.cmd.as_str());
                tx.prepare_cached(
                    "INSERT INTO ld_attempts (task_id, attempt, run_id, step, idx, cmd, started_ms,
                         finished_ms, outcome, exit_code, error)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?
                .execute(params![
                    t.task_id,
                    a.n,
                    r.run_id,
                    t.step as i64,
                    t.idx as i64,
                    cmd,
                    started,
                    a.finished_ms,
                    outcome,
                    a.exit_code,
                    a.error
                ])?;
                continue;
            };
            if finished_ms != a.finished_ms || stored_outcome.as_deref() != outcome {
                tx.prepare_cached(
                    "UPDATE ld_attempts SET finished_ms = ?3, outcome = ?4
                     WHERE task_id = ?1 AND attempt = ?2",
                )?
                .execute(params![t.task_id, a.n, a.finished_ms, outcome])?;
            }
            if exit_code != a.exit_code || error != a.error {
                tx.prepare_cached(
                    "UPDATE ld_attempts SET exit_code = ?3, error = ?4
                     WHERE task_id = ?1 AND attempt = ?2",
                )?
                .execute(params![t.task_id, a.n, a.exit_code, a.error])?;
            }
        }
    }
    Ok(())
}

pub(super) fn insert(tx: &rusqlite::Transaction<'_>, new: &NewRun) -> rusqlite::Result<bool> {
    let r = &new.record;
    let inserted = tx
        .prepare_cached(
        "INSERT OR IGNORE INTO ld_runs (run_id, dedup, bucket, trigger_key, trigger_etag, kind, title, status,
             error, created_ms, started_ms, finished_ms, live, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
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
            r.started_ms,
            r.finished_ms,
            r.has_live_processes(),
            r.to_json()
        ])?
        == 1;
    if inserted {
        project_attempts(tx, r)?;
    }
    Ok(inserted)
}
