//! Multipart uploads in the index: an upload remembers the final object's content type and
//! metadata; each part is a body file of its own, which completion hands to the object
//! (`Body::Parts`) without copying it.

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use time::OffsetDateTime;

use super::index::{decode_metadata, encode_metadata, from_ms, now_ms, require_bucket};
use crate::{Error, Result, StoreError};

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
    let (content_type, metadata) =
        row.ok_or_else(|| StoreError::NoSuchUpload(upload_id.to_owned()))?;
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
    let size = i64::try_from(size).map_err(|_| Error::corrupt("part size"))?;
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
        return Err(StoreError::NoSuchUpload(upload_id.to_owned()).into());
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

/// An open upload, as ListMultipartUploads shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenUpload {
    pub(crate) key: String,
    pub(crate) upload_id: String,
    pub(crate) initiated: OffsetDateTime,
}

/// One page of open uploads.
#[derive(Debug, Default)]
pub(crate) struct UploadPage {
    pub(crate) uploads: Vec<OpenUpload>,
    /// With a delimiter: the distinct key prefixes up to and including it, after `prefix`.
    pub(crate) common_prefixes: Vec<String>,
    /// Whether more entries follow.
    pub(crate) truncated: bool,
    /// When truncated, the key and upload id to pass as the next page's markers (none when
    /// the page is empty because `max` was 0).
    pub(crate) next: Option<(String, String)>,
}

/// The open uploads of `bucket` whose keys start with `prefix`, in S3's order (key, then
/// initiation), after the markers: keys after `key_marker`, or with `upload_id_marker`, also
/// the uploads of `key_marker` initiated after that upload. With a delimiter, keys that have
/// it after the prefix roll up into common prefixes. `max` counts uploads and prefixes.
pub(crate) fn list_open(
    conn: &Connection,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    key_marker: &str,
    upload_id_marker: Option<&str>,
    max: usize,
) -> Result<UploadPage> {
    let mut stmt = conn.prepare_cached(
        "SELECT key, upload_id, created_ms FROM uploads
         WHERE bucket = ?1 AND key >= ?2 AND (key > ?3 OR (key = ?3 AND (created_ms, upload_id)
             > (SELECT created_ms, upload_id FROM uploads WHERE upload_id = ?4)))
         ORDER BY key, created_ms, upload_id",
    )?;
    let rows = stmt.query_map(params![bucket, prefix, key_marker, upload_id_marker], |r| {
        Ok(OpenUpload {
            key: r.get(0)?,
            upload_id: r.get(1)?,
            initiated: from_ms(r.get(2)?),
        })
    })?;
    let mut page = UploadPage::default();
    let mut entries = 0;
    let mut last: Option<(String, String)> = None;
    for row in rows {
        let upload = row?;
        let Some(rest) = upload.key.strip_prefix(prefix) else {
            break; // Sorted, and no key before this one was out of the prefix.
        };
        let rolled = delimiter
            .and_then(|d| rest.find(d).map(|i| prefix.len() + i + d.len()))
            .map(|end| upload.key[..end].to_owned());
        let repeat = rolled.is_some() && rolled.as_ref() == page.common_prefixes.last();
        if !repeat {
            if entries == max {
                page.truncated = true;
                page.next = last;
                break;
            }
            entries += 1;
        }
        last = Some((upload.key.clone(), upload.upload_id.clone()));
        match rolled {
            Some(_) if repeat => {}
            Some(p) => page.common_prefixes.push(p),
            None => page.uploads.push(upload),
        }
    }
    Ok(page)
}

/// Checks the client's part list against the stored parts and picks them, in order.
/// `wanted` is `(part number, unquoted etag)`.
pub(crate) fn select(stored: &[PartRow], wanted: &[(i32, String)]) -> Result<Vec<PartRow>> {
    if wanted.is_empty() {
        return Err(StoreError::InvalidPart("the upload lists no parts".into()).into());
    }
    let mut out = Vec::with_capacity(wanted.len());
    let mut last = 0;
    for (number, etag) in wanted {
        if *number <= last {
            return Err(StoreError::InvalidPartOrder.into());
        }
        last = *number;
        let part = stored
            .iter()
            .find(|p| p.number == *number)
            .ok_or_else(|| StoreError::InvalidPart(format!("part {number} was not uploaded")))?;
        if part.etag != *etag {
            return Err(StoreError::InvalidPart(format!(
                "part {number}: ETag does not match the uploaded part"
            ))
            .into());
        }
        out.push(part.clone());
    }
    if let Some((_, init)) = out.split_last()
        && let Some(small) = init.iter().find(|p| p.size < MIN_PART_SIZE)
    {
        return Err(StoreError::EntityTooSmall {
            part: small.number,
            size: small.size,
        }
        .into());
    }
    Ok(out)
}

/// The ETag of a multipart object: MD5 of the parts' MD5s, then `-` and the count.
pub(crate) fn etag(parts: &[PartRow]) -> Result<String> {
    let mut md5 = Md5::new();
    for p in parts {
        let raw =
            hex::decode(&p.etag).map_err(|_| Error::corrupt(format!("part ETag {}", p.etag)))?;
        md5.update(&raw);
    }
    Ok(format!("{}-{}", hex::encode(md5.finalize()), parts.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index;

    /// A store index with bucket `b` and one open upload per key, initiated in this order.
    fn setup(keys: &[&str]) -> (tempfile::TempDir, Connection, Vec<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = index::open(&dir.path().join("db"), false).expect("open");
        index::create_bucket(&conn, "b").expect("bucket");
        let mut ids = Vec::new();
        for (ms, key) in (1_i64..).zip(keys) {
            let id = create(&conn, "b", key, None, &BTreeMap::new()).expect("create");
            conn.execute(
                "UPDATE uploads SET created_ms = ?1 WHERE upload_id = ?2",
                params![ms, id],
            )
            .expect("initiated");
            ids.push(id);
        }
        (dir, conn, ids)
    }

    /// Every page of a listing, following the next markers; entries as `key` or `prefix/`.
    fn pages(
        conn: &Connection,
        prefix: &str,
        delimiter: Option<&str>,
        max: usize,
    ) -> Vec<Vec<String>> {
        let (mut key_marker, mut id_marker) = (String::new(), None::<String>);
        let mut out = Vec::new();
        loop {
            let page = list_open(
                conn,
                "b",
                prefix,
                delimiter,
                &key_marker,
                id_marker.as_deref(),
                max,
            )
            .expect("list");
            let mut entries: Vec<String> = page.uploads.iter().map(|u| u.key.clone()).collect();
            entries.extend(page.common_prefixes);
            out.push(entries);
            if !page.truncated {
                return out;
            }
            let (k, id) = page.next.expect("a truncated page has next markers");
            (key_marker, id_marker) = (k, Some(id));
        }
    }

    #[test]
    fn uploads_list_by_key_then_initiation_and_page_through_markers() {
        let (_dir, conn, ids) = setup(&["b/2", "a", "b/1", "c", "a"]);
        let all = list_open(&conn, "b", "", None, "", None, 1000).expect("list");
        let got: Vec<_> = all
            .uploads
            .iter()
            .map(|u| (u.key.as_str(), u.upload_id.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a", &*ids[1]),
                ("a", &*ids[4]),
                ("b/1", &*ids[2]),
                ("b/2", &*ids[0]),
                ("c", &*ids[3])
            ]
        );
        assert!(!all.truncated && all.next.is_none());
        assert_eq!(
            pages(&conn, "", None, 2),
            [vec!["a", "a"], vec!["b/1", "b/2"], vec!["c"]]
        );
        assert_eq!(pages(&conn, "b/", None, 1), [vec!["b/1"], vec!["b/2"]]);
        assert_eq!(pages(&conn, "d", None, 1000), [Vec::<String>::new()]);
    }

    #[test]
    fn a_key_marker_alone_skips_that_key_entirely() {
        let (_dir, conn, _) = setup(&["a", "a", "b"]);
        let page = list_open(&conn, "b", "", None, "a", None, 1000).expect("list");
        let keys: Vec<_> = page.uploads.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["b"]);
    }

    #[test]
    fn a_delimiter_rolls_keys_into_prefixes_that_count_once() {
        let (_dir, conn, _) = setup(&["in/x/1", "in/x/2", "in/y", "in/x/3", "out"]);
        let whole = list_open(&conn, "b", "in/", Some("/"), "", None, 1000).expect("list");
        let keys: Vec<_> = whole.uploads.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(
            (keys, whole.common_prefixes),
            (vec!["in/y"], vec!["in/x/".to_owned()])
        );
        assert_eq!(pages(&conn, "", Some("/"), 1), [vec!["in/"], vec!["out"]]);
        assert_eq!(
            pages(&conn, "in/", Some("/"), 1),
            [vec!["in/x/"], vec!["in/y"]]
        );
    }

    #[test]
    fn max_zero_is_an_empty_truncated_page() {
        let (_dir, conn, _) = setup(&["a"]);
        let page = list_open(&conn, "b", "", None, "", None, 0).expect("list");
        assert!(page.uploads.is_empty() && page.truncated);
    }
}
