//! The s3s [`S3`] implementation over the index and the body files. Operations not here
//! answer `NotImplemented` (the trait's default).

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};
use tokio::io::AsyncReadExt;

use super::body::{Opened, STREAM_CHUNK, stream_segments};
use super::conditions::ReadConditions;
use super::index::{self, NewObject, Precondition};
use super::ingest::{self, Declared};
use super::s3_types::{ok, precondition, s3_metadata, strong, to_s3, unquote};
use super::{Store, normalize_metadata, validate_key};

/// The store as an s3s service.
#[derive(Debug, Clone)]
pub(crate) struct StoreS3 {
    pub(crate) store: Store,
}

#[async_trait::async_trait]
impl S3 for StoreS3 {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        super::validate_bucket(&bucket).map_err(to_s3)?;
        let b = bucket.clone();
        let created = self
            .store
            .blocking(move |i| index::create_bucket(&i.db(), &b))
            .await
            .map_err(to_s3)?;
        if !created {
            return Err(s3_error!(BucketAlreadyOwnedByYou));
        }
        ok(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        })
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let bucket = req.input.bucket;
        let deleted = self
            .store
            .blocking(move |i| index::delete_bucket(&mut i.db(), &bucket))
            .await
            .map_err(to_s3)?;
        if !deleted {
            return Err(s3_error!(BucketNotEmpty));
        }
        ok(DeleteBucketOutput::default())
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let bucket = req.input.bucket;
        self.store
            .blocking(move |i| index::require_bucket(&i.db(), &bucket))
            .await
            .map_err(to_s3)?;
        ok(HeadBucketOutput {
            bucket_region: Some(self.store.options().region.clone()),
            ..Default::default()
        })
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self
            .store
            .blocking(|i| index::list_buckets(&i.db()))
            .await
            .map_err(to_s3)?;
        let region = &self.store.options().region;
        let buckets = buckets
            .into_iter()
            .map(|(name, created)| Bucket {
                name: Some(name),
                creation_date: Some(Timestamp::from(created)),
                bucket_region: Some(region.clone()),
            })
            .collect();
        ok(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("linedee".into()),
                id: Some("linedee".into()),
            }),
            ..Default::default()
        })
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let bucket = req.input.bucket;
        self.store
            .blocking(move |i| index::require_bucket(&i.db(), &bucket))
            .await
            .map_err(to_s3)?;
        let region = &self.store.options().region;
        let location_constraint =
            (region != "us-east-1").then(|| BucketLocationConstraint::from(region.clone()));
        ok(GetBucketLocationOutput {
            location_constraint,
        })
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        validate_key(&input.key).map_err(to_s3)?;
        let metadata = normalize_metadata(input.metadata.unwrap_or_default()).map_err(to_s3)?;
        let cond = precondition(input.if_none_match.as_ref(), input.if_match.as_ref())?;
        // Fail fast before a large body; small ones are checked by the commit alone.
        if input
            .content_length
            .is_none_or(|n| n > ingest::SPILL as i64)
        {
            let bucket = input.bucket.clone();
            self.store
                .blocking(move |i| index::require_bucket(&i.db(), &bucket))
                .await
                .map_err(to_s3)?;
        }
        let declared = Declared {
            algorithm: input.checksum_algorithm,
            crc32: input.checksum_crc32,
            crc32c: input.checksum_crc32c,
            sha1: input.checksum_sha1,
            sha256: input.checksum_sha256,
            crc64nvme: input.checksum_crc64nvme,
            content_md5: input.content_md5,
        };
        let rx = ingest::receive(
            &self.store.inner.blobs,
            input.body,
            declared,
            req.trailing_headers,
        )
        .await?;
        let (size, etag) = (rx.size, rx.md5.clone());
        // A small body goes inline with its row; a large one is published as a file first.
        let body = if rx.is_inline() {
            rx.into_body()
        } else {
            self.store.blocking(move |_| rx.into_body()).await
        }
        .map_err(to_s3)?;
        let obj = NewObject {
            bucket: input.bucket,
            key: input.key,
            size,
            etag,
            body,
            content_type: input.content_type,
            metadata,
        };
        let committed = self
            .store
            .commit_queued(obj, cond, super::Commit::Synced)
            .await
            .map_err(to_s3)?;
        ok(PutObjectOutput {
            e_tag: Some(strong(&committed.meta.etag)),
            ..Default::default()
        })
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let (bucket, key, range) = (input.bucket, input.key, input.range);
        let conditions = ReadConditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
            if_modified_since: input.if_modified_since,
            if_unmodified_since: input.if_unmodified_since,
        };
        let (meta, body, content_range) = self
            .store
            .blocking(move |i| {
                let db = i.db();
                index::require_bucket(&db, &bucket)?;
                let Some(row) = index::get_object(&db, &bucket, &key)? else {
                    return Ok(Err(s3_error!(NoSuchKey)));
                };
                if let Err(e) = conditions.check(&row.meta) {
                    return Ok(Err(e));
                }
                let reader = row.body.open(&i.blobs)?;
                drop(db);
                let size = row.meta.size;
                let (start, len, content_range) = match &range {
                    None => (0, size, None),
                    Some(r) => match r.check(size) {
                        Ok(r) => (
                            r.start,
                            r.end - r.start,
                            Some(format!("bytes {}-{}/{size}", r.start, r.end - 1)),
                        ),
                        Err(_) => return Ok(Err(s3_error!(InvalidRange))),
                    },
                };
                let body = reader.range(start, len)?;
                Ok(Ok((row.meta, body, content_range)))
            })
            .await
            .map_err(to_s3)??;
        let (blob, len) = match body {
            Opened::Bytes(buf) => {
                let len = buf.len() as u64;
                (StreamingBlob::from(s3s::Body::from(buf)), len)
            }
            Opened::File(file, len) => {
                let reader = tokio::fs::File::from_std(file).take(len);
                let stream = tokio_util::io::ReaderStream::with_capacity(reader, STREAM_CHUNK);
                (StreamingBlob::wrap(stream), len)
            }
            Opened::Parts(segments, pin) => {
                let len = segments.iter().map(|s| s.len).sum();
                (StreamingBlob::wrap(stream_segments(segments, pin)), len)
            }
        };
        ok(GetObjectOutput {
            body: Some(blob),
            content_length: Some(i64::try_from(len).unwrap_or(i64::MAX)),
            content_range,
            accept_ranges: Some("bytes".into()),
            content_type: meta.content_type.clone(),
            e_tag: Some(strong(&meta.etag)),
            last_modified: Some(Timestamp::from(meta.last_modified)),
            metadata: s3_metadata(&meta.metadata),
            ..Default::default()
        })
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let (bucket, key) = (input.bucket, input.key);
        let conditions = ReadConditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
            if_modified_since: input.if_modified_since,
            if_unmodified_since: input.if_unmodified_since,
        };
        let meta = self
            .store
            .blocking(move |i| {
                let db = i.db();
                index::require_bucket(&db, &bucket)?;
                index::get_meta(&db, &bucket, &key)
            })
            .await
            .map_err(to_s3)?
            .ok_or_else(|| s3_error!(NoSuchKey))?;
        conditions.check(&meta)?;
        ok(HeadObjectOutput {
            content_length: Some(i64::try_from(meta.size).unwrap_or(i64::MAX)),
            accept_ranges: Some("bytes".into()),
            content_type: meta.content_type.clone(),
            e_tag: Some(strong(&meta.etag)),
            last_modified: Some(Timestamp::from(meta.last_modified)),
            metadata: s3_metadata(&meta.metadata),
            ..Default::default()
        })
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let (bucket, key) = (req.input.bucket, req.input.key);
        self.store
            .blocking(move |i| {
                let db = i.db();
                index::require_bucket(&db, &bucket)?;
                let blobs = index::delete_object(&db, &bucket, &key)?;
                drop(db);
                for blob in &blobs {
                    i.blobs.remove(blob);
                }
                Ok(())
            })
            .await
            .map_err(to_s3)?;
        ok(DeleteObjectOutput::default())
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        let quiet = input.delete.quiet.unwrap_or(false);
        let keys: Vec<String> = input.delete.objects.into_iter().map(|o| o.key).collect();
        let bucket = input.bucket;
        let deleted = self
            .store
            .blocking(move |i| {
                let mut db = i.db();
                index::require_bucket(&db, &bucket)?;
                let tx = db.transaction()?;
                let mut blobs = Vec::new();
                for key in &keys {
                    blobs.extend(index::delete_object(&tx, &bucket, key)?);
                }
                tx.commit()?;
                drop(db);
                for blob in &blobs {
                    i.blobs.remove(blob);
                }
                Ok(keys)
            })
            .await
            .map_err(to_s3)?;
        let deleted = (!quiet).then(|| {
            deleted
                .into_iter()
                .map(|key| DeletedObject {
                    key: Some(key),
                    ..Default::default()
                })
                .collect()
        });
        ok(DeleteObjectsOutput {
            deleted,
            ..Default::default()
        })
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let input = req.input;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "copying from an access point is not supported"
            ));
        };
        let (src_bucket, src_key) = (src_bucket.to_string(), src_key.to_string());
        validate_key(&input.key).map_err(to_s3)?;
        let replace = match input
            .metadata_directive
            .as_ref()
            .map(MetadataDirective::as_str)
        {
            None | Some(MetadataDirective::COPY) => false,
            Some(MetadataDirective::REPLACE) => true,
            Some(other) => {
                return Err(s3_error!(
                    InvalidArgument,
                    "unknown metadata directive `{other}`"
                ));
            }
        };
        if !replace && src_bucket == input.bucket && src_key == input.key {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata."
            ));
        }
        let new_meta = if replace {
            Some(normalize_metadata(input.metadata.unwrap_or_default()).map_err(to_s3)?)
        } else {
            None
        };
        let (bucket, key, content_type) = (input.bucket, input.key, input.content_type);
        let committed = self
            .store
            .blocking(move |i| {
                let db = i.db();
                index::require_bucket(&db, &src_bucket)?;
                let Some(src) = index::get_object(&db, &src_bucket, &src_key)? else {
                    return Ok(Err(s3_error!(NoSuchKey)));
                };
                // Body files are linked under new ids while the lock keeps them in place; an
                // inline body's bytes go into the new row.
                let body = src.body.duplicate(&i.blobs)?;
                drop(db);
                let (content_type, metadata) = match new_meta {
                    Some(m) => (content_type, m),
                    None => (src.meta.content_type, src.meta.metadata),
                };
                let obj = NewObject {
                    bucket,
                    key,
                    body,
                    size: src.meta.size,
                    etag: unquote(&src.meta.etag),
                    content_type,
                    metadata,
                };
                i.commit_grouped(obj, Precondition::None, super::Commit::Synced)
                    .map(Ok)
            })
            .await
            .map_err(to_s3)??;
        ok(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(strong(&committed.meta.etag)),
                last_modified: Some(Timestamp::from(committed.meta.last_modified)),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.list_objects_v2_impl(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.create_multipart_upload_impl(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.upload_part_impl(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.complete_multipart_upload_impl(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.abort_multipart_upload_impl(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.list_parts_impl(req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.list_multipart_uploads_impl(req).await
    }
}
