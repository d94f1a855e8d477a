//! ListObjectsV2 of [`StoreS3`], and the key encoding the listings share.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::s3::StoreS3;
use super::s3_types::{ok, to_s3};
use super::{index, list};

/// What a listing does to the keys and prefixes it returns: URL-encodes them when the request
/// asked for `encoding-type=url`, and otherwise leaves them as they are.
pub(crate) fn encoder(
    encoding_type: Option<&EncodingType>,
) -> impl Fn(String) -> String + Copy + use<> {
    let url = encoding_type.is_some_and(|e| e.as_str() == EncodingType::URL);
    move |s| if url { list::url_encode(&s) } else { s }
}

impl StoreS3 {
    pub(crate) async fn list_objects_v2_impl(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let max_keys = input.max_keys.unwrap_or(1000);
        if max_keys < 0 {
            return Err(s3_error!(InvalidArgument, "max-keys must not be negative"));
        }
        let max_keys = max_keys.min(1000);
        let prefix = input.prefix.clone().unwrap_or_default();
        let start = match &input.continuation_token {
            Some(t) => list::decode_token(t).ok_or_else(|| {
                s3_error!(
                    InvalidArgument,
                    "The continuation token provided is incorrect"
                )
            })?,
            None => input.start_after.clone().unwrap_or_default(),
        };
        let (bucket, delimiter) = (input.bucket.clone(), input.delimiter.clone());
        let page = self
            .store
            .blocking(move |i| {
                let db = i.db();
                index::require_bucket(&db, &bucket)?;
                list::list(
                    &db,
                    &bucket,
                    &prefix,
                    delimiter.as_deref(),
                    &start,
                    usize::try_from(max_keys).unwrap_or(0),
                )
            })
            .await
            .map_err(to_s3)?;
        let enc = encoder(input.encoding_type.as_ref());
        let key_count =
            i32::try_from(page.contents.len() + page.common_prefixes.len()).unwrap_or(i32::MAX);
        let contents = page
            .contents
            .into_iter()
            .map(|(key, size, etag, modified)| Object {
                key: Some(enc(key)),
                size: Some(i64::try_from(size).unwrap_or(i64::MAX)),
                e_tag: Some(ETag::Strong(etag)),
                last_modified: Some(Timestamp::from(modified)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
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
        ok(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(input.prefix.unwrap_or_default())),
            delimiter: input.delimiter.map(enc),
            max_keys: Some(max_keys),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            is_truncated: Some(page.next_token.is_some()),
            next_continuation_token: page.next_token,
            contents: Some(contents),
            common_prefixes: Some(common_prefixes),
            encoding_type: input.encoding_type,
            start_after: input.start_after.map(enc),
            ..Default::default()
        })
    }
}
