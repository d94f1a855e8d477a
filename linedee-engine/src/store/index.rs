//! The SQLite index: buckets, objects (key -> body, size, ETag, content type, user
//! metadata, last-modified) and the queries on them. Keys are compared as UTF-8 bytes, which
//! is S3's listing order.
//!
//! An object row holds its body in one of three ways (`body.rs`): `blob` names a body file and
//! `body` is NULL; `blob` is empty and `body` holds the bytes (small bodies, which then
//! commit with their row); or `blob` lists the body files of a completed multipart upload.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use time::OffsetDateTime;

use super::body::Body;
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

/// An object row, with its body.
#[derive(Debug, Clone)]
pub(crate) struct ObjectRow {
    pub(crate) meta: ObjectMeta,
    pub(crate) body: Body,
}

/// A write the caller wants to commit.
#[derive(Debug)]
pub(crate) struct NewObject {
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) body: Body,
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
    /// The body files the key pointed to before; delete them after the commit.
    pub(crate) replaced: Vec<String>,
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
    body BLOB,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;
-- One row, rewritten when a sync is asked for and no write would make one (group.rs).
CREATE TABLE IF NOT EXISTS ld_durable (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL);
";

/// Brings an index made by an earlier version up to [`SCHEMA`]: `objects.body` (inline
/// bodies) was added after the first stores were made. Idempotent.
fn migrate(conn: &Connection) -> Result<()> {
    let has_body: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM pragma_table_info('objects') WHERE name = 'body')",
        [],
        |r| r.get(0),
    )?;
    if !has_body {
        conn.execute_batch("ALTER TABLE objects ADD COLUMN body BLOB")?;
    }
    Ok(())
}

/// Opens the index database, creating its tables.
pub(crate) fn open(path: &Path, fsync: bool) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if fsync { "FULL" } else { "OFF" })?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute_batch(SCHEMA)?;
    migrate(&conn)?;
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

/// The columns [`row_to_meta`] reads, in its order.
const META_COLUMNS: &str = "key, size, etag, content_type, metadata, modified_ms";

fn row_to_meta(bucket: &str, r: &rusqlite::Row<'_>) -> rusqlite::Result<(ObjectMeta, String)> {
    let size: i64 = r.get(1)?;
    Ok((
        ObjectMeta {
            bucket: bucket.to_owned(),
            key: r.get(0)?,
            size: u64::try_from(size).unwrap_or(0),
            etag: quote(&r.get::<_, String>(2)?),
            content_type: r.get(3)?,
            metadata: BTreeMap::new(),
            last_modified: from_ms(r.get(5)?),
        },
        r.get(4)?,
    ))
}

/// The object at `bucket`/`key`, with its body (an inline body is read with the row).
pub(crate) fn get_object(conn: &Connection, bucket: &str, key: &str) -> Result<Option<ObjectRow>> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {META_COLUMNS}, blob, body FROM objects WHERE bucket = ?1 AND key = ?2"
        ))?
        .query_row(params![bucket, key], |r| {
            Ok((row_to_meta(bucket, r)?, r.get::<_, String>(6)?, r.get(7)?))
        })
        .optional()?;
    found
        .map(|((mut meta, metadata), blob, inline)| {
            meta.metadata = decode_metadata(&metadata)?;
            Ok(ObjectRow {
                meta,
                body: Body::from_columns(blob, inline)?,
            })
        })
        .transpose()
}

/// The metadata of the object at `bucket`/`key`, without reading its body.
pub(crate) fn get_meta(conn: &Connection, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
    let found = conn
        .prepare_cached(&format!(
            "SELECT {META_COLUMNS} FROM objects WHERE bucket = ?1 AND key = ?2"
        ))?
        .query_row(params![bucket, key], |r| row_to_meta(bucket, r))
        .optional()?;
    found
        .map(|(mut meta, metadata)| {
            meta.metadata = decode_metadata(&metadata)?;
            Ok(meta)
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
    let (blob, inline) = obj.body.columns();
    tx.prepare_cached(
        "INSERT OR REPLACE INTO objects
         (bucket, key, blob, size, etag, content_type, metadata, modified_ms, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        obj.bucket,
        obj.key,
        blob,
        size,
        obj.etag,
        obj.content_type,
        encode_metadata(&obj.metadata)?,
        now,
        inline
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
        // An inline body (an empty `blob`) went with the row it was in.
        replaced: match old {
            Some((blob, _)) => {
                let kept: HashSet<&str> = obj.body.files().into_iter().collect();
                Body::files_in_column(blob)?
                    .into_iter()
                    .filter(|f| !kept.contains(f.as_str()))
                    .collect()
            }
            None => Vec::new(),
        },
        trigger,
    })
}

/// Deletes an object; returns its body files to remove (none for an inline body, which goes
/// with its row, or when there was no object).
pub(crate) fn delete_object(conn: &Connection, bucket: &str, key: &str) -> Result<Vec<String>> {
    let blob: Option<String> = conn
        .prepare_cached("DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING blob")?
        .query_row(params![bucket, key], |r| r.get(0))
        .optional()?;
    blob.map_or_else(|| Ok(Vec::new()), Body::files_in_column)
}

/// Every body file id an index row refers to.
pub(crate) fn live_blobs(conn: &Connection) -> Result<HashSet<String>> {
    let mut live = HashSet::new();
    let mut objects = conn.prepare("SELECT blob FROM objects WHERE blob != ''")?;
    for blob in objects.query_map([], |r| r.get::<_, String>(0))? {
        live.extend(Body::files_in_column(blob?)?);
    }
    let mut parts = conn.prepare("SELECT blob FROM parts")?;
    for blob in parts.query_map([], |r| r.get::<_, String>(0))? {
        live.insert(blob?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::body::PartFile;

    /// Writes `key` with `body`; returns the body files it replaced.
    fn put(conn: &mut Connection, key: &str, body: &Body) -> Vec<String> {
        let obj = NewObject {
            bucket: "b".into(),
            key: key.into(),
            body: body.clone(),
            size: 5,
            etag: "e".into(),
            content_type: None,
            metadata: BTreeMap::new(),
        };
        let done = commit_object(conn, &obj, &Precondition::None, |_| Ok(()));
        done.expect("commit").replaced
    }

    fn body_of(conn: &Connection, key: &str) -> Body {
        let row = get_object(conn, "b", key).expect("get");
        row.expect("exists").body
    }

    #[test]
    fn rows_hold_every_kind_and_only_files_are_handed_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = open(&dir.path().join("db"), false).expect("open");
        create_bucket(&conn, "b").expect("bucket");
        let (f1, f2) = ("1".repeat(32), "2".repeat(32));
        let (file1, file2) = (Body::File(f1.clone()), Body::File(f2.clone()));
        let inline = Body::Inline(bytes::Bytes::from_static(b"small"));
        let empty = Body::Inline(bytes::Bytes::new());
        let none: Vec<String> = Vec::new();
        assert_eq!(put(&mut conn, "k", &file1), none);
        assert_eq!(body_of(&conn, "k"), file1);
        assert_eq!(put(&mut conn, "k", &inline), vec![f1], "file -> inline");
        assert_eq!(body_of(&conn, "k"), inline);
        let meta = get_meta(&conn, "b", "k").expect("meta").expect("exists");
        assert_eq!((meta.size, meta.etag.as_str()), (5, "\"e\""));
        assert_eq!(put(&mut conn, "k", &empty), none, "inline -> inline");
        assert_eq!(body_of(&conn, "k"), empty, "empty is inline, not absent");
        assert_eq!(put(&mut conn, "k", &file2), none, "inline -> file");
        put(&mut conn, "i", &inline);
        let (p1, p2) = ("3".repeat(32), "4".repeat(32));
        let part = |id: &String, size| PartFile {
            id: id.clone(),
            size,
        };
        let parts = Body::Parts(vec![part(&p1, 5 << 20), part(&p2, 1)].into());
        assert_eq!(put(&mut conn, "p", &parts), none);
        assert_eq!(body_of(&conn, "p"), parts);
        let live = live_blobs(&conn).expect("live");
        assert_eq!(live, HashSet::from([f2.clone(), p1.clone(), p2.clone()]));
        assert_eq!(delete_object(&conn, "b", "i").expect("delete"), none);
        assert_eq!(delete_object(&conn, "b", "nope").expect("delete"), none);
        assert_eq!(delete_object(&conn, "b", "k").expect("delete"), vec![f2]);
        let kept = Body::Parts(vec![part(&p2, 1)].into());
        assert_eq!(
            put(&mut conn, "p", &kept),
            vec![p1],
            "a file the new body keeps stays"
        );
        assert_eq!(delete_object(&conn, "b", "p").expect("delete"), vec![p2]);
        assert!(live_blobs(&conn).expect("live").is_empty());
    }

    /// The tables as the first stores made them, before inline bodies.
    const FIRST_SCHEMA: &str = "
        CREATE TABLE buckets (name TEXT PRIMARY KEY, created_ms INTEGER NOT NULL);
        CREATE TABLE objects (
            bucket TEXT NOT NULL, key TEXT NOT NULL, blob TEXT NOT NULL, size INTEGER NOT NULL,
            etag TEXT NOT NULL, content_type TEXT, metadata TEXT NOT NULL,
            modified_ms INTEGER NOT NULL, PRIMARY KEY (bucket, key)
        ) WITHOUT ROWID;
        INSERT INTO buckets VALUES ('b', 0);
        INSERT INTO objects VALUES ('b', 'old', '0123456789abcdef0123456789abcdef', 3, 'e',
            NULL, '{}', 0);
    ";

    #[test]
    fn an_index_made_before_inline_bodies_is_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        Connection::open(&path)
            .and_then(|c| c.execute_batch(FIRST_SCHEMA))
            .expect("old index");
        let mut conn = open(&path, false).expect("open migrates");
        drop(open(&path, false).expect("and again: the migration is idempotent"));
        let old = "0123456789abcdef0123456789abcdef".to_owned();
        assert_eq!(body_of(&conn, "old"), Body::File(old.clone()));
        let inline = Body::Inline(bytes::Bytes::from_static(b"new"));
        put(&mut conn, "new", &inline);
        assert_eq!(body_of(&conn, "new"), inline);
        assert_eq!(live_blobs(&conn).expect("live"), HashSet::from([old]));
    }
}
