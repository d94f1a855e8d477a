//! Writing a local file as an object, streamed (the engine's task logs can be large).

use std::io::{Read, Write};
use std::path::Path;

use md5::{Digest, Md5};

use super::{Store, blobs, index, validate_key};
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
        validate_key(key)?;
        let (bucket, key, path) = (bucket.to_owned(), key.to_owned(), path.to_owned());
        let content_type = content_type.map(str::to_owned);
        self.blocking(move |i| {
            let id = blobs::new_id();
            let mut src = std::fs::File::open(&path).map_err(Error::io(&path))?;
            let mut dst = i.blobs.create_tmp(&id)?;
            let mut md5 = Md5::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; 256 * 1024];
            let copied: std::io::Result<()> = (|| loop {
                let n = src.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                md5.update(&buf[..n]);
                dst.write_all(&buf[..n])?;
                size += n as u64;
            })();
            if let Err(e) = copied {
                i.blobs.discard_tmp(&id);
                return Err(Error::io(&path)(e));
            }
            i.blobs.publish(&id, dst)?;
            let obj = index::NewObject {
                bucket,
                key,
                blob: id,
                size,
                etag: hex::encode(md5.finalize()),
                content_type,
                metadata: Default::default(),
            };
            i.commit(&obj, &index::Precondition::None, |_| Ok(()))
        })
        .await
        .map(|c| c.meta.etag)
    }
}
