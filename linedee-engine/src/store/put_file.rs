//! Writing a local file as an object, streamed (the engine's task logs can be large); a
//! small file's bytes go inline in the index.

use std::io::{Read, Write};
use std::path::Path;

use md5::{Digest, Md5};

use super::body::{Body, INLINE_BODY_MAX};
use super::{Commit, Inner, Store, blobs, index, validate_key};
use crate::{Error, Result};

impl Store {
    /// Writes the file at `path` as `bucket/key`, streaming it (memory stays bounded whatever
    /// its size); returns the ETag. Not a trigger: no user metadata is set.
    pub async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<String> {
        self.put_file_with(bucket, key, path, content_type, Commit::Synced)
            .await
    }

    /// Like [`Store::put_file`], but its index commit is not synced on its own (see
    /// [`Inner::unsynced_on`]) and rides a batch made for another write ([`Commit::Deferred`]):
    /// for the engine's task logs, which the run's next synced write
    /// (its status document, at the latest the final one) makes durable.
    pub(crate) async fn put_file_deferred(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
    ) -> Result<String> {
        self.put_file_with(bucket, key, path, content_type, Commit::Deferred)
            .await
    }

    async fn put_file_with(
        &self,
        bucket: &str,
        key: &str,
        path: &Path,
        content_type: Option<&str>,
        commit: Commit,
    ) -> Result<String> {
        validate_key(key)?;
        let (bucket, key, path) = (bucket.to_owned(), key.to_owned(), path.to_owned());
        let content_type = content_type.map(str::to_owned);
        // The file is read on the blocking pool; the commit goes with the committer's next
        // batch (`group.rs`).
        let obj = self
            .blocking(move |i| {
                let (body, size, md5) = copy_in(i, &path)?;
                Ok(index::NewObject {
                    bucket,
                    key,
                    body,
                    size,
                    etag: hex::encode(md5.finalize()),
                    content_type,
                    metadata: Default::default(),
                })
            })
            .await?;
        self.commit_queued(obj, index::Precondition::None, commit)
            .await
            .map(|c| c.meta.etag)
    }
}

/// Reads the file at `path` into a body: its first bytes into memory, and once it proves
/// larger than an inline body, everything into a new published body file. Returns the body,
/// its size and its MD5.
fn copy_in(i: &Inner, path: &Path) -> Result<(Body, u64, Md5)> {
    let mut src = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut md5 = Md5::new();
    let mut head = Vec::with_capacity(INLINE_BODY_MAX + 1);
    (&mut src)
        .take(INLINE_BODY_MAX as u64 + 1)
        .read_to_end(&mut head)
        .map_err(Error::io(path))?;
    md5.update(&head);
    if head.len() <= INLINE_BODY_MAX {
        let size = head.len() as u64;
        return Ok((Body::Inline(head.into()), size, md5));
    }
    let id = blobs::new_id();
    let mut dst = i.blobs.create_tmp(&id)?;
    let mut size = head.len() as u64;
    let mut buf = vec![0u8; 256 * 1024];
    let copied: std::io::Result<()> = (|| {
        dst.write_all(&head)?;
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            md5.update(&buf[..n]);
            dst.write_all(&buf[..n])?;
            size += n as u64;
        }
    })();
    if let Err(e) = copied {
        i.blobs.discard_tmp(&id);
        return Err(Error::io(path)(e));
    }
    i.blobs.publish(&id, dst)?;
    Ok((Body::File(id), size, md5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreOptions;

    fn synchronous(store: &Store) -> i64 {
        store
            .inner
            .db()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("pragma")
    }

    #[tokio::test]
    async fn unsynced_writes_are_stored_and_leave_later_writes_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(
            dir.path().join("store"),
            StoreOptions {
                default_bucket: Some("bkt".into()),
                ..StoreOptions::default()
            },
        )
        .expect("open");
        assert!(store.options().fsync);
        assert_eq!(synchronous(&store), 2, "FULL");
        for (name, len) in [("small", 10), ("large", INLINE_BODY_MAX + 1)] {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![b'x'; len]).expect("write");
            // A deferred write alone: committed by the committer's deadline, and answered.
            store
                .put_file_deferred("bkt", name, &path, None)
                .await
                .expect("put");
            let (meta, body) = store
                .get_object("bkt", name)
                .await
                .expect("get")
                .expect("stored");
            assert_eq!((meta.size, body.len()), (len as u64, len));
            assert_eq!(synchronous(&store), 2, "FULL again after {name}");
        }
        store
            .put_object_with(
                "bkt",
                "doc",
                "{}".into(),
                None,
                Default::default(),
                Commit::Unsynced,
            )
            .await
            .expect("an unsynced group commit");
        let (_, body) = store
            .get_object("bkt", "doc")
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(&body[..], b"{}");
        assert_eq!(synchronous(&store), 2, "FULL again after a group commit");
        store.ack_triggers(vec![1]).await.expect("ack");
        assert_eq!(synchronous(&store), 2, "FULL again after acknowledging");
    }
}
