//! The SQLite index: buckets, objects (key -> body file id, size, ETag, content type, user
//! metadata, last-modified) and the queries on them. Keys are compared as UTF-8 bytes, which
//! is S3's listing order.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use time::OffsetDateTime;

use super::outbox::{self, Trigger};
use crate::{Error, Result, StoreError};

/// What the store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The body's size in bytes.
    pub size: u64,
    /// The ETag as S3 sends it, quotes included.
    pub etag: String,
    /// The content type given at write time, if any.
    pub content_type: Option<String>,
    /// The user metadata (keys lowercase, as S3 stores them).
    pub metadata: BTreeMap<String, String>,
    /// When the object was written.
    pub last_modified: OffsetDateTime,
}

/// An object row, with the body file it points to.
#[derive(Debug, Clone)]
pub(crate) struct ObjectRow {
    pub(crate) meta: ObjectMeta,
    pub(crate) blob: String,
}

/// A write the caller wants to commit.
#[derive(Debug)]
pub(crate) struct NewObject {
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) blob: String,
    pub(crate) size: u64,
    /// Unquoted.
    pub(crate) etag: String,
    pub(crate) content_type: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
}

/// A conditional write.
#[derive(Debug, Clone, Default)]
pub(crate) enum Precondition {
    /// Unconditional.
    #[default]
    None,
    /// `If-None-Match: *`: only when no object exists at the key.
    IfNoneMatchAny,
    /// `If-Match`: only when an object exists (with this unquoted ETag, when given).
    IfMatch(Option<String>),
}

/// What a commit did.
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) meta: ObjectMeta,
    /// The body file the key pointed to before; delete it after the commit.
    pub(crate) replaced_blob: Option<String>,
    pub(crate) trigger: Option<Trigger>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    blob TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    content_type TEXT,
    metadata TEXT NOT NULL,
    modified_ms INTEGER NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
";

/// Opens the index database, creating its tables.
pub(crate) fn open(path: &Path, fsync: bool) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "OFF" })?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(outbox::SCHEMA)?;
    conn.execute_batch(super::multipart::SCHEMA)?;
    Ok(conn)
}

pub(crate) fn now_ms() -> i64 {
    let now = OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

pub(crate) fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub(crate) fn quote(etag: &str) -> String {
    format!("\"{etag}\"")
}

pub(crate) fn encode_metadata(metadata: &BTreeMap<String, String>) -> Result<String> {
    serde_json::to_string(metadata).map_err(|e| Error::corrupt(format!("metadata: {e}")))
}

pub(crate) fn decode_metadata(json: &str) -> Result<BTreeMap<String, String>> {
    serde_json::from_str(json).map_err(|e| Error::corrupt(format!("metadata: {e}")))
}

// ---- buckets ----

/// Creates a bucket; returns false when it already existed.
pub(crate) fn create_bucket(conn: &Connection, name: &str) -> Result<bool> {
    let n = conn.execute(
        "INSERT OR IGNORE INTO buckets (name, created_ms) VALUES (?1, ?2)",
        params![name, now_ms()],
    )?;
    Ok(n == 1)
}

pub(crate) fn bucket_exists(conn: &Connection, name: &str) -> Result<bool> {
    let found = conn
        .prepare_cached("SELECT 1 FROM buckets WHERE name = ?1")?
        .query_row([name], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

pub(crate) fn require_bucket(conn: &Connection, name: &str) -> Result<()> {
    if bucket_exists(conn, name)? {
        Ok(())
    } else {
        Err(StoreError::NoSuchBucket(name.to_owned()).into())
    }
}

/// All buckets with their creation times, by name.
pub(crate) fn list_buckets(conn: &Connection) -> Result<Vec<(String, OffsetDateTime)>> {
    let mut stmt = conn.prepare_cached("SELECT name, created_ms FROM buckets ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    rows.map(|r| r.map(|(n, ms)| (n, from_ms(ms))).map_err(Error::from))
        .collect()
}

/// Deletes an empty bucket; false when it has objects or uploads.
pub(crate) fn delete_bucket(conn: &mut Connection, name: &str) -> Result<bool> {
    let tx = conn.transaction()?;
    require_bucket(&tx, name)?;
    let busy: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM objects WHERE bucket = ?1)
             OR EXISTS(SELECT 1 FROM uploads WHERE bucket = ?1)",
        [name],
        |r| r.get(0),
    )?;
    if busy {
        return Ok(false);
    }
    tx.execute("DELETE FROM buckets WHERE name = ?1", [name])?;
    tx.commit()?;
    Ok(true)
}

// ---- objects ----

fn row_to_object(bucket: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<(ObjectRow, String)> {
    let size: i64 = r.get(2)?;
    Ok((
        ObjectRow {
            meta: ObjectMeta {
                bucket: bucket.to_owned(),
                key: r.get(0)?,
                size: u64::try_from(size).unwrap_or(0),
                etag: quote(&r.get::<_, String>(3)?),
                content_type: r.get(4)?,
                metadata: BTreeMap::new(),
                last_modified: from_ms(r.get(6)?),
            },
            blob: r.get(1)?,
        },
        r.get(5)?,
    ))
}

/// The object at `bucket`/`key`.
pub(crate) fn get_object(conn: &Connection, bucket: &str, key: &str) -> Result<Option<ObjectRow>> {
    let found = conn
        .prepare_cached(
            "SELECT key, blob, size, etag, content_type, metadata, modified_ms
             FROM objects WHERE bucket = ?1 AND key = ?2",
        )?
        .query_row(params![bucket, key], |r| row_to_object(bucket, r))
        .optional()?;
    found
        .map(|(mut row, meta)| {
            row.meta.metadata = decode_metadata(&meta)?;
            Ok(row)
        })
        .transpose()
}

/// Commits an object write (and its trigger, when it is one) in one transaction.
/// `extra` runs inside the same transaction (multipart completion removes its upload).
pub(crate) fn commit_object(
    conn: &mut Connection,
    obj: &NewObject,
    cond: &Precondition,
    extra: impl FnOnce(&Transaction<'_>) -> Result<()>,
) -> Result<Committed> {
    let tx = conn.transaction()?;
    let committed = write_object(&tx, obj, cond)?;
    extra(&tx)?;
    tx.commit()?;
    Ok(committed)
}

/// Writes an object row (and its trigger row) inside the caller's transaction.
pub(crate) fn write_object(
    tx: &Connection,
    obj: &NewObject,
    cond: &Precondition,
) -> Result<Committed> {
    require_bucket(tx, &obj.bucket)?;
    let old: Option<(String, String)> = tx
        .prepare_cached("SELECT blob, etag FROM objects WHERE bucket = ?1 AND key = ?2")?
        .query_row(params![obj.bucket, obj.key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match (cond, &old) {
        (Precondition::IfNoneMatchAny, Some(_)) => {
            return Err(StoreError::PreconditionFailed("an object exists at this key").into());
        }
        (Precondition::IfMatch(_), None) => {
            return Err(StoreError::PreconditionFailed("no object exists at this key").into());
        }
        (Precondition::IfMatch(Some(want)), Some((_, etag))) if want != etag => {
            return Err(StoreError::PreconditionFailed("the ETag does not match").into());
        }
        _ => {}
    }
    let now = now_ms();
    let size = i64::try_from(obj.size).map_err(|_| Error::corrupt("object size"))?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO objects
         (bucket, key, blob, size, etag, content_type, metadata, modified_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        obj.bucket,
        obj.key,
        obj.blob,
        size,
        obj.etag,
        obj.content_type,
        encode_metadata(&obj.metadata)?,
        now
    ])?;
    let etag = quote(&obj.etag);
    let trigger = match outbox::trigger_kind(&obj.key, &obj.metadata) {
        Some(kind) => Some(outbox::record(
            tx,
            &obj.bucket,
            &obj.key,
            &etag,
            kind,
            &obj.metadata,
            now,
        )?),
        None => None,
    };
    Ok(Committed {
        meta: ObjectMeta {
            bucket: obj.bucket.clone(),
            key: obj.key.clone(),
            size: obj.size,
            etag,
            content_type: obj.content_type.clone(),
            metadata: obj.metadata.clone(),
            last_modified: from_ms(now),
        },
        replaced_blob: old.map(|(blob, _)| blob).filter(|b| *b != obj.blob),
        trigger,
    })
}

/// Deletes an object; returns its body file id when one existed.
pub(crate) fn delete_object(conn: &Connection, bucket: &str, key: &str) -> Result<Option<String>> {
    let blob = conn
        .prepare_cached("DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING blob")?
        .query_row(params![bucket, key], |r| r.get(0))
        .optional()?;
    Ok(blob)
}

/// Every body file id an index row refers to.
pub(crate) fn live_blobs(conn: &Connection) -> Result<HashSet<String>> {
    let mut live = HashSet::new();
    for sql in ["SELECT blob FROM objects", "SELECT blob FROM parts"] {
        let mut stmt = conn.prepare(sql)?;
        for blob in stmt.query_map([], |r| r.get::<_, String>(0))? {
            live.insert(blob?);
        }
    }
    Ok(live)
}

/// One page of keys: `(key, size, unquoted etag, modified)` with `key > after` and
/// `key >= prefix`, ascending.
pub(crate) fn keys_after(
    conn: &Connection,
    bucket: &str,
    after: &str,
    prefix: &str,
    limit: usize,
) -> Result<Vec<(String, u64, String, OffsetDateTime)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT key, size, etag, modified_ms FROM objects
         WHERE bucket = ?1 AND key > ?2 AND key >= ?3 ORDER BY key LIMIT ?4",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![bucket, after, prefix, limit], |r| {
        Ok((
            r.get::<_, String>(0)?,
            u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            r.get::<_, String>(2)?,
            from_ms(r.get(3)?),
        ))
    })?;
    rows.map(|r| r.map_err(Error::from)).collect()
}
