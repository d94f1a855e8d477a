//! Multipart uploads in the index: an upload remembers the final object's content type and
//! metadata; each part is a body file of its own until completion concatenates them.

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use time::OffsetDateTime;

use super::index::{decode_metadata, encode_metadata, from_ms, now_ms, require_bucket};
use crate::{Error, Result};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    content_type TEXT,
    metadata TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS parts (
    upload_id TEXT NOT NULL,
    part_number INTEGER NOT NULL,
    blob TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    modified_ms INTEGER NOT NULL,
    PRIMARY KEY (upload_id, part_number)
) WITHOUT ROWID;
";

/// The smallest size of every part but the last, as in S3.
pub(crate) const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// An open upload.
#[derive(Debug)]
pub(crate) struct Upload {
    pub(crate) content_type: Option<String>,
    pub(crate) metadata: BTreeMap<String, String>,
}

/// One uploaded part.
#[derive(Debug, Clone)]
pub(crate) struct PartRow {
    pub(crate) number: i32,
    pub(crate) blob: String,
    pub(crate) size: u64,
    /// Unquoted.
    pub(crate) etag: String,
    pub(crate) modified: OffsetDateTime,
}

pub(crate) fn create(
    conn: &Connection,
    bucket: &str,
    key: &str,
    content_type: Option<&str>,
    metadata: &BTreeMap<String, String>,
) -> Result<String> {
    require_bucket(conn, bucket)?;
    let id = super::blobs::new_id();
    conn.execute(
        "INSERT INTO uploads (upload_id, bucket, key, content_type, metadata, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id,
            bucket,
            key,
            content_type,
            encode_metadata(metadata)?,
            now_ms()
        ],
    )?;
    Ok(id)
}

pub(crate) fn get(conn: &Connection, upload_id: &str, bucket: &str, key: &str) -> Result<Upload> {
    let row: Option<(Option<String>, String)> = conn
        .query_row(
            "SELECT content_type, metadata FROM uploads
             WHERE upload_id = ?1 AND bucket = ?2 AND key = ?3",
            params![upload_id, bucket, key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (content_type, metadata) = row.ok_or_else(|| Error::NoSuchUpload(upload_id.to_owned()))?;
    Ok(Upload {
        content_type,
        metadata: decode_metadata(&metadata)?,
    })
}

/// Records a part; returns the body file of the part it replaced, if any.
#[allow(clippy::too_many_arguments)]
pub(crate) fn put_part(
    conn: &mut Connection,
    upload_id: &str,
    bucket: &str,
    key: &str,
    number: i32,
    blob: &str,
    size: u64,
    etag: &str,
) -> Result<Option<String>> {
    let tx = conn.transaction()?;
    get(&tx, upload_id, bucket, key)?;
    let old: Option<String> = tx
        .query_row(
            "SELECT blob FROM parts WHERE upload_id = ?1 AND part_number = ?2",
            params![upload_id, number],
            |r| r.get(0),
        )
        .optional()?;
    let size = i64::try_from(size).map_err(|_| Error::Corrupt("part size".into()))?;
    tx.execute(
        "INSERT OR REPLACE INTO parts (upload_id, part_number, blob, size, etag, modified_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![upload_id, number, blob, size, etag, now_ms()],
    )?;
    tx.commit()?;
    Ok(old)
}

/// The parts of an upload, by part number.
pub(crate) fn parts(conn: &Connection, upload_id: &str) -> Result<Vec<PartRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT part_number, blob, size, etag, modified_ms FROM parts
         WHERE upload_id = ?1 ORDER BY part_number",
    )?;
    let rows = stmt.query_map([upload_id], |r| {
        Ok(PartRow {
            number: r.get(0)?,
            blob: r.get(1)?,
            size: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
            etag: r.get(3)?,
            modified: from_ms(r.get(4)?),
        })
    })?;
    rows.map(|r| r.map_err(Error::from)).collect()
}

/// Removes an upload and its parts inside `tx`; returns the parts' body files.
pub(crate) fn remove(tx: &Transaction<'_>, upload_id: &str) -> Result<Vec<String>> {
    let blobs: Vec<String> = {
        let mut stmt = tx.prepare_cached("SELECT blob FROM parts WHERE upload_id = ?1")?;
        let rows = stmt.query_map([upload_id], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    tx.execute("DELETE FROM parts WHERE upload_id = ?1", [upload_id])?;
    let n = tx.execute("DELETE FROM uploads WHERE upload_id = ?1", [upload_id])?;
    if n == 0 {
        return Err(Error::NoSuchUpload(upload_id.to_owned()));
    }
    Ok(blobs)
}

/// Aborts an upload; returns the parts' body files to delete.
pub(crate) fn abort(
    conn: &mut Connection,
    upload_id: &str,
    bucket: &str,
    key: &str,
) -> Result<Vec<String>> {
    let tx = conn.transaction()?;
    get(&tx, upload_id, bucket, key)?;
    let blobs = remove(&tx, upload_id)?;
    tx.commit()?;
    Ok(blobs)
}

/// Checks the client's part list against the stored parts and picks them, in order.
/// `wanted` is `(part number, unquoted etag)`.
pub(crate) fn select(stored: &[PartRow], wanted: &[(i32, String)]) -> Result<Vec<PartRow>> {
    if wanted.is_empty() {
        return Err(Error::InvalidPart("the upload lists no parts".into()));
    }
    let mut out = Vec::with_capacity(wanted.len());
    let mut last = 0;
    for (number, etag) in wanted {
        if *number <= last {
            return Err(Error::InvalidPartOrder);
        }
        last = *number;
        let part = stored
            .iter()
            .find(|p| p.number == *number)
            .ok_or_else(|| Error::InvalidPart(format!("part {number} was not uploaded")))?;
        if part.etag != *etag {
            return Err(Error::InvalidPart(format!(
                "part {number}: ETag does not match the uploaded part"
            )));
        }
        out.push(part.clone());
    }
    if let Some((_, init)) = out.split_last()
        && let Some(small) = init.iter().find(|p| p.size < MIN_PART_SIZE)
    {
        return Err(Error::EntityTooSmall {
            part: small.number,
            size: small.size,
        });
    }
    Ok(out)
}

/// The ETag of a multipart object: MD5 of the parts' MD5s, then `-` and the count.
pub(crate) fn etag(parts: &[PartRow]) -> Result<String> {
    let mut md5 = Md5::new();
    for p in parts {
        let raw =
            hex::decode(&p.etag).map_err(|_| Error::Corrupt(format!("part ETag {}", p.etag)))?;
        md5.update(&raw);
    }
    Ok(format!("{}-{}", hex::encode(md5.finalize()), parts.len()))
}
