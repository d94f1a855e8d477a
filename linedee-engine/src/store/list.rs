//! ListObjectsV2 over the index: prefix, delimiter, continuation token, start-after and
//! max-keys, with S3's ordering (UTF-8 bytes) and its rule that keys and common prefixes
//! both count towards max-keys.

use rusqlite::Connection;
use time::OffsetDateTime;

use super::index;
use crate::Result;

/// One listed key: `(key, size, unquoted etag, last modified)`.
pub(crate) type Listed = (String, u64, String, OffsetDateTime);

/// One page of a listing.
#[derive(Debug, Default)]
pub(crate) struct Page {
    pub(crate) contents: Vec<Listed>,
    pub(crate) common_prefixes: Vec<String>,
    pub(crate) next_token: Option<String>,
}

const BATCH: usize = 1000;

/// Lists keys of `bucket` after `start` (exclusive).
pub(crate) fn list(
    conn: &Connection,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    start: &str,
    max_keys: usize,
) -> Result<Page> {
    let mut page = Page::default();
    if max_keys == 0 {
        return Ok(page);
    }
    let delimiter = delimiter.filter(|d| !d.is_empty());
    let mut cursor = start.to_owned();
    let mut count = 0;
    'outer: loop {
        let batch = index::keys_after(conn, bucket, &cursor, prefix, BATCH)?;
        let full = batch.len() == BATCH;
        for item in batch {
            let key = &item.0;
            if !key.starts_with(prefix) {
                return Ok(page);
            }
            let rolled = delimiter.and_then(|d| {
                key[prefix.len()..]
                    .find(d)
                    .map(|i| key[..prefix.len() + i + d.len()].to_owned())
            });
            if let Some(cp) = rolled {
                if page.common_prefixes.last() == Some(&cp) {
                    cursor.clone_from(key);
                    continue;
                }
                if count == max_keys {
                    page.next_token = Some(encode_token(&cursor));
                    return Ok(page);
                }
                count += 1;
                // Every key starting with `cp` sorts before `cp` + U+10FFFF (except keys
                // continuing with that very character, which the check above skips).
                cursor = format!("{cp}\u{10FFFF}");
                page.common_prefixes.push(cp);
                continue 'outer;
            }
            if count == max_keys {
                page.next_token = Some(encode_token(&cursor));
                return Ok(page);
            }
            count += 1;
            cursor.clone_from(key);
            page.contents.push(item);
        }
        if !full {
            return Ok(page);
        }
    }
}

/// A continuation token: the cursor, hex-encoded (opaque to clients).
pub(crate) fn encode_token(cursor: &str) -> String {
    hex::encode(cursor.as_bytes())
}

/// The cursor a continuation token stands for, or `None` when it is not one of ours.
pub(crate) fn decode_token(token: &str) -> Option<String> {
    String::from_utf8(hex::decode(token).ok()?).ok()
}

/// Percent-encodes a key for `encoding-type=url` listings (as S3 does; `/` stays).
pub(crate) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::index::{NewObject, Precondition};

    fn setup(keys: &[&str]) -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut conn = index::open(&dir.path().join("db"), false).expect("open");
        index::create_bucket(&conn, "b").expect("bucket");
        for (i, k) in keys.iter().enumerate() {
            let obj = NewObject {
                bucket: "b".into(),
                key: (*k).into(),
                body: crate::store::body::Body::File(format!("{i:032x}")),
                size: 1,
                etag: "e".into(),
                content_type: None,
                metadata: Default::default(),
            };
            index::commit_object(&mut conn, &obj, &Precondition::None, |_| Ok(())).expect("put");
        }
        (dir, conn)
    }

    #[test]
    fn delimiter_rolls_up_and_pages_count_prefixes() {
        let (_d, conn) = setup(&["a", "a/b", "a/c", "b", "c/d/e", "c/x"]);
        let p = list(&conn, "b", "", Some("/"), "", 1000).expect("list");
        let keys: Vec<_> = p.contents.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(p.common_prefixes, ["a/", "c/"]);
        assert!(p.next_token.is_none());

        let p1 = list(&conn, "b", "", Some("/"), "", 2).expect("list");
        assert_eq!(p1.contents.len() + p1.common_prefixes.len(), 2);
        let cursor = decode_token(p1.next_token.as_deref().expect("token")).expect("decode");
        let p2 = list(&conn, "b", "", Some("/"), &cursor, 2).expect("list");
        let keys: Vec<_> = p2.contents.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(keys, ["b"]);
        assert_eq!(p2.common_prefixes, ["c/"]);
        assert!(p2.next_token.is_none());
    }

    #[test]
    fn prefix_and_start_after() {
        let (_d, conn) = setup(&["x/1", "x/2", "x/3", "y"]);
        let p = list(&conn, "b", "x/", None, "x/1", 1000).expect("list");
        let keys: Vec<_> = p.contents.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(keys, ["x/2", "x/3"]);
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("a b/é+"), "a%20b/%C3%A9%2B");
    }
}
