//! The multipart operations of [`StoreS3`]: create, upload part, complete (the upload's
//! content type and metadata go to the final object), abort, list parts, list the open
//! uploads.

use std::collections::HashSet;
use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::body::{Body, PartFile};
use super::index::NewObject;
use super::ingest::{self, Declared};
use super::s3::StoreS3;
use super::s3_list::encoder;
use super::s3_types::{ok, precondition, strong, to_s3};
use super::{index, multipart, normalize_metadata, validate_key};

impl StoreS3 {
    pub(crate) async fn create_multipart_upload_impl(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        validate_key(&input.key).map_err(to_s3)?;
        let metadata = normalize_metadata(input.metadata.unwrap_or_default()).map_err(to_s3)?;
        let (bucket, key, content_type) =
            (input.bucket.clone(), input.key.clone(), input.content_type);
        let upload_id = self
            .store
            .blocking(move |i| {
                multipart::create(&i.db(), &bucket, &key, content_type.as_deref(), &metadata)
            })
            .await
            .map_err(to_s3)?;
        ok(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        })
    }

    pub(crate) async fn upload_part_impl(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "part numbers are 1 to 10000"));
        }
        let (bucket, key, upload_id) = (
            input.bucket.clone(),
            input.key.clone(),
            input.upload_id.clone(),
        );
        self.store
            .blocking(move |i| multipart::get(&i.db(), &upload_id, &bucket, &key).map(drop))
            .await
            .map_err(to_s3)?;
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
        let etag = rx.md5.clone();
        let (bucket, key, upload_id, number) =
            (input.bucket, input.key, input.upload_id, input.part_number);
        let e = etag.clone();
        self.store
            .blocking(move |i| {
                let size = rx.size;
                let blob = rx.publish()?;
                let put = multipart::put_part(
                    &mut i.db(),
                    &upload_id,
                    &bucket,
                    &key,
                    number,
                    &blob,
                    size,
                    &e,
                );
                match put {
                    Ok(old) => {
                        if let Some(old) = old {
                            i.blobs.remove(&old);
                        }
                        Ok(())
                    }
                    Err(err) => {
                        i.blobs.remove(&blob);
                        Err(err)
                    }
                }
            })
            .await
            .map_err(to_s3)?;
        ok(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            ..Default::default()
        })
    }

    pub(crate) async fn complete_multipart_upload_impl(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        let cond = precondition(input.if_none_match.as_ref(), input.if_match.as_ref())?;
        let wanted: Vec<(i32, String)> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                (
                    p.part_number.unwrap_or(0),
                    p.e_tag.map(|e| e.value().to_owned()).unwrap_or_default(),
                )
            })
            .collect();
        let (bucket, key, upload_id) = (input.bucket.clone(), input.key.clone(), input.upload_id);
        let committed = self
            .store
            .blocking(move |i| {
                // The index lock is held from reading the parts to the commit, so a part
                // uploaded again meanwhile cannot replace (and remove) a file the object names.
                let mut db = i.db();
                let upload = multipart::get(&db, &upload_id, &bucket, &key)?;
                let stored = multipart::parts(&db, &upload_id)?;
                let selected = multipart::select(&stored, &wanted)?;
                let etag = multipart::etag(&selected)?;
                // The parts' files become the object's body as they are: completing an
                // upload copies nothing, and they were durable when each part was answered.
                let parts: Arc<[PartFile]> = selected
                    .iter()
                    .map(|p| PartFile {
                        id: p.blob.clone(),
                        size: p.size,
                    })
                    .collect();
                let obj = NewObject {
                    bucket,
                    key,
                    size: parts.iter().map(|p| p.size).sum(),
                    body: Body::Parts(parts),
                    etag,
                    content_type: upload.content_type,
                    metadata: upload.metadata,
                };
                let mut upload_files = Vec::new();
                let committed = i.commit_adopting(&mut db, &obj, &cond, |tx| {
                    upload_files = multipart::remove(tx, &upload_id)?;
                    Ok(())
                })?;
                drop(db);
                // Parts uploaded but not listed in the completion go with their upload.
                let kept: HashSet<&str> = obj.body.files().into_iter().collect();
                for blob in upload_files.iter().filter(|b| !kept.contains(b.as_str())) {
                    i.blobs.remove(blob);
                }
                i.remove_replaced(&committed);
                Ok(committed)
            })
            .await
            .map_err(to_s3)?;
        ok(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            e_tag: Some(strong(&committed.meta.etag)),
            ..Default::default()
        })
    }

    pub(crate) async fn abort_multipart_upload_impl(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let (bucket, key, upload_id) = (req.input.bucket, req.input.key, req.input.upload_id);
        self.store
            .blocking(move |i| {
                let blobs = multipart::abort(&mut i.db(), &upload_id, &bucket, &key)?;
                for blob in &blobs {
                    i.blobs.remove(blob);
                }
                Ok(())
            })
            .await
            .map_err(to_s3)?;
        ok(AbortMultipartUploadOutput::default())
    }

    pub(crate) async fn list_parts_impl(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let max_parts = input.max_parts.unwrap_or(1000).clamp(0, 1000);
        let marker = input.part_number_marker.unwrap_or(0);
        let (bucket, key, upload_id) = (
            input.bucket.clone(),
            input.key.clone(),
            input.upload_id.clone(),
        );
        let stored = self
            .store
            .blocking(move |i| {
                let db = i.db();
                multipart::get(&db, &upload_id, &bucket, &key)?;
                multipart::parts(&db, &upload_id)
            })
            .await
            .map_err(to_s3)?;
        let after: Vec<_> = stored.into_iter().filter(|p| p.number > marker).collect();
        let take = usize::try_from(max_parts).unwrap_or(0);
        let truncated = after.len() > take;
        let parts: Vec<Part> = after
            .into_iter()
            .take(take)
            .map(|p| Part {
                part_number: Some(p.number),
                e_tag: Some(ETag::Strong(p.etag)),
                size: Some(i64::try_from(p.size).unwrap_or(i64::MAX)),
                last_modified: Some(Timestamp::from(p.modified)),
                ..Default::default()
            })
            .collect();
        ok(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: Some(max_parts),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: parts.last().and_then(|p| p.part_number),
            is_truncated: Some(truncated),
            parts: Some(parts),
            ..Default::default()
        })
    }

    pub(crate) async fn list_multipart_uploads_impl(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let max_uploads = input.max_uploads.unwrap_or(1000);
        if max_uploads < 0 {
            return Err(s3_error!(
                InvalidArgument,
                "max-uploads must not be negative"
            ));
        }
        let max_uploads = max_uploads.min(1000);
        let (bucket, prefix, delimiter) = (
            input.bucket.clone(),
            input.prefix.clone().unwrap_or_default(),
            input.delimiter.clone().filter(|d| !d.is_empty()),
        );
        let (key_marker, upload_id_marker) = (
            input.key_marker.clone().unwrap_or_default(),
            input.upload_id_marker.clone(),
        );
        let page = self
            .store
            .blocking(move |i| {
                let db = i.db();
                index::require_bucket(&db, &bucket)?;
                multipart::list_open(
                    &db,
                    &bucket,
                    &prefix,
                    delimiter.as_deref(),
                    &key_marker,
                    upload_id_marker.as_deref(),
                    usize::try_from(max_uploads).unwrap_or(0),
                )
            })
            .await
            .map_err(to_s3)?;
        let enc = encoder(input.encoding_type.as_ref());
        let uploads = page
            .uploads
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(enc(u.key)),
                upload_id: Some(u.upload_id),
                initiated: Some(Timestamp::from(u.initiated)),
                storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        let common_prefixes = page
            .common_prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(p)),
            })
            .collect();
        let (next_key_marker, next_upload_id_marker) = page.next.unzip();
        ok(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(enc(input.prefix.unwrap_or_default())),
            delimiter: input.delimiter.map(enc),
            key_marker: Some(enc(input.key_marker.unwrap_or_default())),
            upload_id_marker: Some(input.upload_id_marker.unwrap_or_default()),
            max_uploads: Some(max_uploads),
            is_truncated: Some(page.truncated),
            next_key_marker: next_key_marker.map(enc),
            next_upload_id_marker,
            uploads: Some(uploads),
            common_prefixes: Some(common_prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        })
    }
}
