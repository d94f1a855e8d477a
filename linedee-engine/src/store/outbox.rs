//! The trigger outbox: a trigger object's write and its trigger row commit in one SQLite
//! transaction, so "one run per trigger" survives crashes.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::{Error, Result};

/// The prefix the engine owns; nothing under it triggers.
pub const ENGINE_PREFIX: &str = "ld/";

/// How a trigger object names its workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TriggerKind {
    /// Metadata `ld_run: true`: the body is the workflow JSON.
    LdRun,
    /// Metadata `ld_code: <workflow JSON>`: the object is the workflow's input.
    LdCode,
}

impl TriggerKind {
    /// The wire name: `ld_run` or `ld_code`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LdRun => "ld_run",
            Self::LdCode => "ld_code",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "ld_run" => Ok(Self::LdRun),
            "ld_code" => Ok(Self::LdCode),
            other => Err(Error::corrupt(format!("trigger kind `{other}`"))),
        }
    }
}

/// A committed trigger: an object write that starts a workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The outbox row id; increases with every trigger.
    pub id: i64,
    /// The bucket of the trigger object.
    pub bucket: String,
    /// The key of the trigger object.
    pub key: String,
    /// The object's ETag as S3 sends it, quotes included.
    pub etag: String,
    /// `ld_run` or `ld_code`.
    pub kind: TriggerKind,
    /// The submitter's run id (`ld_run_id` metadata), if any.
    pub run_id: Option<String>,
    /// The object's user metadata (keys lowercase).
    pub metadata: BTreeMap<String, String>,
    /// When it was committed, in milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// A committed object write, pushed to subscribers after the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The ETag as S3 sends it, quotes included.
    pub etag: String,
    /// The body's size in bytes.
    pub size: u64,
    /// The user metadata (keys lowercase).
    pub metadata: BTreeMap<String, String>,
}

/// Whether an object written at `key` with `metadata` is a trigger, and of which kind.
///
/// `ld_run` counts when its value is `true` (any case); `ld_code` counts when present. Keys
/// under [`ENGINE_PREFIX`] never trigger.
pub fn trigger_kind(key: &str, metadata: &BTreeMap<String, String>) -> Option<TriggerKind> {
    if key.starts_with(ENGINE_PREFIX) {
        return None;
    }
    if metadata
        .get("ld_run")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        return Some(TriggerKind::LdRun);
    }
    metadata
        .contains_key("ld_code")
        .then_some(TriggerKind::LdCode)
}

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS triggers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    etag TEXT NOT NULL,
    kind TEXT NOT NULL,
    run_id TEXT,
    metadata TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS triggers_pending ON triggers(id) WHERE acked = 0;
";

/// Records a trigger inside the object's write transaction.
pub(crate) fn record(
    tx: &Connection,
    bucket: &str,
    key: &str,
    etag: &str,
    kind: TriggerKind,
    metadata: &BTreeMap<String, String>,
    now_ms: i64,
) -> Result<Trigger> {
    let run_id = metadata.get("ld_run_id").cloned();
    let meta_json = serde_json::to_string(metadata)
        .map_err(|e| Error::corrupt(format!("metadata does not serialize: {e}")))?;
    tx.prepare_cached(
        "INSERT INTO triggers (bucket, key, etag, kind, run_id, metadata, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        bucket,
        key,
        etag,
        kind.as_str(),
        run_id,
        meta_json,
        now_ms
    ])?;
    Ok(Trigger {
        id: tx.last_insert_rowid(),
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        etag: etag.to_owned(),
        kind,
        run_id,
        metadata: metadata.clone(),
        created_ms: now_ms,
    })
}

fn row_to_trigger(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Trigger, String, String)> {
    Ok((
        Trigger {
            id: row.get(0)?,
            bucket: row.get(1)?,
            key: row.get(2)?,
            etag: row.get(3)?,
            kind: TriggerKind::LdRun,
            run_id: row.get(5)?,
            metadata: BTreeMap::new(),
            created_ms: row.get(7)?,
        },
        row.get::<_, String>(4)?,
        row.get::<_, String>(6)?,
    ))
}

fn finish(parts: (Trigger, String, String)) -> Result<Trigger> {
    let (mut t, kind, meta) = parts;
    t.kind = TriggerKind::parse(&kind)?;
    t.metadata = serde_json::from_str(&meta)
        .map_err(|e| Error::corrupt(format!("trigger {} metadata: {e}", t.id)))?;
    Ok(t)
}

/// Every trigger not yet acknowledged, oldest first.
pub(crate) fn pending(conn: &Connection) -> Result<Vec<Trigger>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, bucket, key, etag, kind, run_id, metadata, created_ms FROM triggers
         WHERE acked = 0 ORDER BY id",
    )?;
    let rows = stmt.query_map([], row_to_trigger)?;
    rows.map(|r| finish(r?)).collect()
}

/// Up to `limit` pending triggers with an id above `after`, in id order (the order they were
/// committed in).
pub(crate) fn pending_after(conn: &Connection, after: i64, limit: usize) -> Result<Vec<Trigger>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, bucket, key, etag, kind, run_id, metadata, created_ms FROM triggers
         WHERE acked = 0 AND id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(rusqlite::params![after, limit], row_to_trigger)?;
    rows.map(|r| finish(r?)).collect()
}

/// One trigger by id, acknowledged or not.
pub(crate) fn get(conn: &Connection, id: i64) -> Result<Option<Trigger>> {
    let row = conn
        .prepare_cached(
            "SELECT id, bucket, key, etag, kind, run_id, metadata, created_ms FROM triggers WHERE id = ?1",
        )?
        .query_row([id], row_to_trigger)
        .optional()?;
    row.map(finish).transpose()
}

/// Marks each of `ids` consumed, inside the caller's transaction; returns how many were
/// pending.
pub(crate) fn mark_acked(conn: &Connection, ids: &[i64]) -> Result<usize> {
    let mut stmt =
        conn.prepare_cached("UPDATE triggers SET acked = 1 WHERE id = ?1 AND acked = 0")?;
    let mut acked = 0;
    for id in ids {
        acked += stmt.execute([id])?;
    }
    Ok(acked)
}

pub(crate) fn ack(conn: &Connection, id: i64) -> Result<bool> {
    let n = conn.execute(
        "UPDATE triggers SET acked = 1 WHERE id = ?1 AND acked = 0",
        [id],
    )?;
    Ok(n == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn detects_ld_run_and_ld_code_outside_ld_prefix() {
        assert_eq!(
            trigger_kind("in/x", &meta(&[("ld_run", "TRUE")])),
            Some(TriggerKind::LdRun)
        );
        assert_eq!(trigger_kind("in/x", &meta(&[("ld_run", "false")])), None);
        assert_eq!(
            trigger_kind("in/x", &meta(&[("ld_code", "{}")])),
            Some(TriggerKind::LdCode)
        );
        assert_eq!(
            trigger_kind("ld/runs/x", &meta(&[("ld_run", "true")])),
            None
        );
        assert_eq!(trigger_kind("in/x", &meta(&[("other", "true")])), None);
    }
}
