//! The durable journal: runs, tasks and attempts in the store's SQLite database, and the
//! status document rendered from them (protocol §5).

use linedee::Workflow;
use linedee::status::{RunState, TaskState};
use rusqlite::{Connection, OptionalExtension, params};
use time::OffsetDateTime;

use crate::error::Result;
use crate::store::{self, Store};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ld_runs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL UNIQUE,
    trigger_id INTEGER UNIQUE,
    bucket TEXT NOT NULL,
    trigger_key TEXT NOT NULL,
    trigger_etag TEXT,
    kind TEXT NOT NULL,
    title TEXT,
    workflow TEXT,
    status TEXT NOT NULL,
    error TEXT,
    created_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    published TEXT
);
CREATE INDEX IF NOT EXISTS ld_runs_status ON ld_runs (status, seq);
CREATE TABLE IF NOT EXISTS ld_tasks (
    task_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_ms INTEGER,
    finished_ms INTEGER,
    exit_code INTEGER,
    state TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS ld_tasks_run ON ld_tasks (run_id, step, idx);
CREATE TABLE IF NOT EXISTS ld_attempts (
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    pgid INTEGER,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    outcome TEXT,
    exit_code INTEGER,
    error TEXT,
    PRIMARY KEY (task_id, attempt)
);
";

pub(crate) fn init(conn: &Connection) -> Result<()> {
    conn.execute_batch(SCHEMA)?;
    Ok(())
}

fn now_ms() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

pub(crate) fn from_ms(ms: Option<i64>) -> Option<OffsetDateTime> {
    ms.and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok())
}

/// A run as the executor needs it.
#[derive(Debug, Clone)]
pub(crate) struct RunRow {
    pub(crate) run_id: String,
    pub(crate) bucket: String,
    pub(crate) trigger_key: String,
    pub(crate) trigger_etag: Option<String>,
    pub(crate) workflow: Option<Workflow>,
    pub(crate) status: RunState,
}

/// A task's journaled progress.
#[derive(Debug, Clone)]
pub(crate) struct TaskRow {
    pub(crate) task_id: String,
    pub(crate) step: usize,
    pub(crate) idx: usize,
    pub(crate) status: TaskState,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    /// The engine stopped while it ran; it is started again on resume.
    Interrupted,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::TimedOut => "timed_out",
            Outcome::Cancelled => "cancelled",
            Outcome::Interrupted => "interrupted",
        }
    }
}

pub(crate) fn parse_run_state(s: &str) -> RunState {
    match s {
        "queued" => RunState::Queued,
        "running" => RunState::Running,
        "succeeded" => RunState::Succeeded,
        "cancelled" => RunState::Cancelled,
        _ => RunState::Failed,
    }
}

pub(crate) fn parse_task_state(s: &str) -> TaskState {
    match s {
        "pending" => TaskState::Pending,
        "running" => TaskState::Running,
        "succeeded" => TaskState::Succeeded,
        "cancelled" => TaskState::Cancelled,
        _ => TaskState::Failed,
    }
}

/// What a trigger becomes.
#[derive(Debug)]
pub(crate) struct NewRun<'a> {
    pub(crate) run_id: &'a str,
    pub(crate) trigger: &'a store::Trigger,
    pub(crate) workflow: std::result::Result<&'a Workflow, String>,
}

/// Creates a run for a trigger and marks the trigger consumed, in one transaction. Returns
/// `false` (and creates nothing) when the trigger or the run id was seen before.
pub(crate) fn create_run(conn: &mut Connection, new: &NewRun<'_>) -> Result<bool> {
    let tx = conn.transaction()?;
    let t = new.trigger;
    let kind = match t.kind {
        store::TriggerKind::LdCode => "ld_code",
        _ => "ld_run",
    };
    let (title, workflow_json, status, error) = match &new.workflow {
        Ok(wf) => (wf.title.clone(), Some(wf.to_json()), "queued", None),
        Err(e) => (None, None, "failed", Some(e.clone())),
    };
    let now = now_ms();
    let inserted = tx.execute(
        "INSERT OR IGNORE INTO ld_runs (run_id, trigger_id, bucket, trigger_key, trigger_etag, kind, title, workflow,
             status, error, created_ms, finished_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            new.run_id,
            t.id,
            t.bucket,
            t.key,
            t.etag,
            kind,
            title,
            workflow_json,
            status,
            error,
            now,
            (status == "failed").then_some(now)
        ],
    )? == 1;
    if inserted && let Ok(wf) = new.workflow {
        let mut stmt = tx.prepare("INSERT INTO ld_tasks (task_id, run_id, step, idx, status) VALUES (?1, ?2, ?3, ?4, 'pending')")?;
        for (s, i, _) in wf.tasks() {
            stmt.execute(params![
                linedee::line_d::task_id(new.run_id, s, i),
                new.run_id,
                s as i64,
                i as i64
            ])?;
        }
    }
    Store::ack_trigger_in(&tx, t.id)?;
    tx.commit()?;
    Ok(inserted)
}

pub(crate) fn run(conn: &Connection, run_id: &str) -> Result<Option<RunRow>> {
    Ok(conn
        .query_row(
            "SELECT run_id, bucket, trigger_key, trigger_etag, kind, workflow, status FROM ld_runs WHERE run_id = ?1",
            [run_id],
            |r| {
                let workflow: Option<String> = r.get(5)?;
                let status: String = r.get(6)?;
                Ok(RunRow {
                    run_id: r.get(0)?,
                    bucket: r.get(1)?,
                    trigger_key: r.get(2)?,
                    trigger_etag: r.get(3)?,
                    workflow: workflow.and_then(|w| Workflow::from_json(&w).ok()),
                    status: parse_run_state(&status),
                })
            },
        )
        .optional()?)
}

/// Records that the status document now shows `status`.
pub(crate) fn set_published(conn: &Connection, run_id: &str, status: RunState) -> Result<()> {
    conn.execute(
        "UPDATE ld_runs SET published = ?2 WHERE run_id = ?1",
        params![run_id, status.as_str()],
    )?;
    Ok(())
}

/// Finished runs whose status document does not show their final status.
pub(crate) fn unpublished(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT run_id FROM ld_runs WHERE status NOT IN ('queued', 'running') AND published IS NOT status ORDER BY seq",
    )?;
    let ids = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

pub(crate) fn unfinished_runs(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn
        .prepare("SELECT run_id FROM ld_runs WHERE status IN ('queued', 'running') ORDER BY seq")?;
    let ids = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok(ids)
}

pub(crate) fn tasks(conn: &Connection, run_id: &str) -> Result<Vec<TaskRow>> {
    let mut stmt = conn.prepare(
        "SELECT task_id, step, idx, status FROM ld_tasks WHERE run_id = ?1 ORDER BY step, idx",
    )?;
    let rows = stmt
        .query_map([run_id], |r| {
            let status: String = r.get(3)?;
            Ok(TaskRow {
                task_id: r.get(0)?,
                step: r.get::<_, i64>(1)? as usize,
                idx: r.get::<_, i64>(2)? as usize,
                status: parse_task_state(&status),
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub(crate) fn set_run_status(
    conn: &Connection,
    run_id: &str,
    status: RunState,
    error: Option<&str>,
) -> Result<()> {
    let now = now_ms();
    match status {
        RunState::Running => conn.execute(
            "UPDATE ld_runs SET status = 'running', started_ms = COALESCE(started_ms, ?2) WHERE run_id = ?1",
            params![run_id, now],
        )?,
        RunState::Queued => conn.execute(
            "UPDATE ld_runs SET status = 'queued', error = NULL, finished_ms = NULL WHERE run_id = ?1",
            params![run_id],
        )?,
        done => conn.execute(
            "UPDATE ld_runs SET status = ?2, error = ?3, finished_ms = ?4 WHERE run_id = ?1",
            params![run_id, done.as_str(), error, now],
        )?,
    };
    Ok(())
}

/// Records the start of an attempt; returns its number.
pub(crate) fn start_attempt(conn: &Connection, task_id: &str, pgid: Option<i32>) -> Result<u32> {
    let now = now_ms();
    conn.execute(
        "UPDATE ld_tasks SET status = 'running', attempts = attempts + 1, started_ms = COALESCE(started_ms, ?2),
             exit_code = NULL, error = NULL WHERE task_id = ?1",
        params![task_id, now],
    )?;
    let attempt: u32 = conn.query_row(
        "SELECT attempts FROM ld_tasks WHERE task_id = ?1",
        [task_id],
        |r| r.get(0),
    )?;
    conn.execute(
        "INSERT OR REPLACE INTO ld_attempts (task_id, attempt, pgid, started_ms) VALUES (?1, ?2, ?3, ?4)",
        params![task_id, attempt, pgid, now],
    )?;
    Ok(attempt)
}

pub(crate) fn set_attempt_pgid(
    conn: &Connection,
    task_id: &str,
    attempt: u32,
    pgid: Option<i32>,
) -> Result<()> {
    conn.execute(
        "UPDATE ld_attempts SET pgid = ?3 WHERE task_id = ?1 AND attempt = ?2",
        params![task_id, attempt, pgid],
    )?;
    Ok(())
}

/// Records how an attempt ended, and the task's resulting status.
pub(crate) fn finish_attempt(
    conn: &Connection,
    task_id: &str,
    attempt: u32,
    outcome: Outcome,
    exit_code: Option<i32>,
    error: Option<&str>,
    task_status: TaskState,
) -> Result<()> {
    let now = now_ms();
    conn.execute(
        "UPDATE ld_attempts SET finished_ms = COALESCE(finished_ms, ?3), outcome = COALESCE(outcome, ?4),
             exit_code = COALESCE(exit_code, ?5), error = COALESCE(error, ?6) WHERE task_id = ?1 AND attempt = ?2",
        params![task_id, attempt, now, outcome.as_str(), exit_code, error],
    )?;
    let finished = matches!(
        task_status,
        TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
    )
    .then_some(now);
    conn.execute(
        "UPDATE ld_tasks SET status = ?2, exit_code = COALESCE(?3, exit_code), error = ?4, finished_ms = ?5 WHERE task_id = ?1",
        params![task_id, task_status.as_str(), exit_code, error, finished],
    )?;
    Ok(())
}

/// A process's exit code, after the attempt was already decided (the process went on after its
/// output landed).
pub(crate) fn set_exit_code(
    conn: &Connection,
    task_id: &str,
    attempt: u32,
    code: Option<i32>,
) -> Result<()> {
    conn.execute(
        "UPDATE ld_attempts SET exit_code = ?3 WHERE task_id = ?1 AND attempt = ?2",
        params![task_id, attempt, code],
    )?;
    conn.execute(
        "UPDATE ld_tasks SET exit_code = ?3 WHERE task_id = ?1 AND attempts = ?2",
        params![task_id, attempt, code],
    )?;
    Ok(())
}

pub(crate) fn set_task_state(conn: &Connection, task_id: &str, state: Option<&str>) -> Result<()> {
    conn.execute(
        "UPDATE ld_tasks SET state = ?2 WHERE task_id = ?1",
        params![task_id, state],
    )?;
    Ok(())
}

/// Marks a task succeeded without an attempt of ours (its output was found on resume).
pub(crate) fn task_found_done(conn: &Connection, task_id: &str, state: Option<&str>) -> Result<()> {
    conn.execute(
        "UPDATE ld_tasks SET status = 'succeeded', state = ?2, error = NULL, finished_ms = ?3 WHERE task_id = ?1",
        params![task_id, state, now_ms()],
    )?;
    conn.execute(
        "UPDATE ld_attempts SET outcome = 'succeeded', finished_ms = COALESCE(finished_ms, ?2)
         WHERE task_id = ?1 AND outcome IS NULL",
        params![task_id, now_ms()],
    )?;
    Ok(())
}

/// Sets tasks that are not done to a new status (pending tasks of a cancelled run, or the
/// failed step's tasks on redrive).
pub(crate) fn reset_tasks(
    conn: &Connection,
    run_id: &str,
    from: &[TaskState],
    to: TaskState,
) -> Result<usize> {
    let mut n = 0;
    for s in from {
        n += conn.execute(
            "UPDATE ld_tasks SET status = ?3, finished_ms = CASE WHEN ?3 = 'pending' THEN NULL ELSE finished_ms END
             WHERE run_id = ?1 AND status = ?2",
            params![run_id, s.as_str(), to.as_str()],
        )?;
    }
    Ok(n)
}

/// Sets one task's status (a task cancelled before its attempt started).
pub(crate) fn reset_tasks_one(conn: &Connection, task_id: &str, to: TaskState) -> Result<()> {
    conn.execute(
        "UPDATE ld_tasks SET status = ?2, finished_ms = ?3 WHERE task_id = ?1 AND status != 'succeeded'",
        params![task_id, to.as_str(), now_ms()],
    )?;
    Ok(())
}

/// In-flight attempts of a run whose process may have outlived a crash: `(task_id, pgid)`.
pub(crate) fn open_attempts(conn: &Connection, run_id: &str) -> Result<Vec<(String, i32)>> {
    let mut stmt = conn.prepare(
        "SELECT a.task_id, a.pgid FROM ld_attempts a JOIN ld_tasks t ON t.task_id = a.task_id
         WHERE t.run_id = ?1 AND a.outcome IS NULL AND a.pgid IS NOT NULL",
    )?;
    let rows = stmt
        .query_map([run_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Closes attempts left open by a crash; returns how many there were.
pub(crate) fn close_open_attempts(conn: &Connection, run_id: &str) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE ld_attempts SET outcome = 'interrupted', finished_ms = ?2
         WHERE outcome IS NULL AND task_id IN (SELECT task_id FROM ld_tasks WHERE run_id = ?1)",
        params![run_id, now_ms()],
    )?)
}
