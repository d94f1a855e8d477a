//! Reading objects: a body with its metadata, or the metadata alone, on the blocking pool, or
//! on the calling thread when the index is free and the lookup is short.

use bytes::Bytes;
use rusqlite::Connection;

use super::{ObjectMeta, Store, body, index};
use crate::Result;

impl Store {
    /// An object's metadata and body, or `None` when there is no such object.
    pub async fn get_object(&self, bucket: &str, key: &str) -> Result<Option<(ObjectMeta, Bytes)>> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.blocking(move |i| {
            let db = i.db();
            index::require_bucket(&db, &bucket)?;
            let Some(row) = index::get_object(&db, &bucket, &key)? else {
                return Ok(None);
            };
            let reader = row.body.open(&i.blobs)?;
            drop(db);
            Ok(Some((row.meta, reader.read_all()?)))
        })
        .await
    }

    /// Runs `f` on the index right here when nobody holds it: a lookup costs less than a trip
    /// to the blocking pool. `None` when the index is busy (a commit, an fsync): then the
    /// caller takes the blocking pool's way.
    fn index_now<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Option<Result<T>> {
        match self.inner.db.try_lock() {
            Ok(db) => Some(f(&db)),
            Err(_) => None,
        }
    }

    /// [`Store::head_object`], on the calling thread when the index is free.
    pub(crate) async fn head_object_now(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<ObjectMeta>> {
        let now = self.index_now(|db| {
            index::require_bucket(db, bucket)?;
            index::get_meta(db, bucket, key)
        });
        match now {
            Some(meta) => meta,
            None => self.head_object(bucket, key).await,
        }
    }

    /// An object's body, on the calling thread when the index is free and the body is in
    /// its row; else as [`Store::get_object`] does.
    pub(crate) async fn body_now(&self, bucket: &str, key: &str) -> Result<Option<Bytes>> {
        let now = self.index_now(|db| {
            index::require_bucket(db, bucket)?;
            Ok(match index::get_object(db, bucket, key)? {
                None => Some(None),
                Some(row) => match row.body {
                    body::Body::Inline(bytes) => Some(Some(bytes)),
                    _ => None,
                },
            })
        });
        match now {
            Some(Ok(Some(body))) => Ok(body),
            Some(Err(e)) => Err(e),
            // Busy, or a body in files: read on the blocking pool.
            Some(Ok(None)) | None => Ok(self.get_object(bucket, key).await?.map(|(_, b)| b)),
        }
    }

    /// An object's metadata, or `None` when there is no such object.
    pub async fn head_object(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        self.blocking(move |i| {
            let db = i.db();
            index::require_bucket(&db, &bucket)?;
            index::get_meta(&db, &bucket, &key)
        })
        .await
    }
}
