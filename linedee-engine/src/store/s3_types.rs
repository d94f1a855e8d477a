//! Between the store's types and s3s's: errors as S3 error codes, ETags, write
//! preconditions and user metadata.

use std::collections::HashMap;

use s3s::dto::{ETag, ETagCondition, Metadata};
use s3s::{S3Error, S3ErrorCode, S3Response, S3Result, s3_error};

use super::index::Precondition;
use crate::{Error, StoreError};

/// An internal failure: logged, answered with a generic `InternalError`.
pub(crate) fn internal(e: Error) -> S3Error {
    tracing::error!(error = %e, source = ?std::error::Error::source(&e), "store operation failed");
    S3Error::with_message(S3ErrorCode::InternalError, "the store failed; see its log")
}

/// A store error as S3 answers it: its code, and the message; internal failures are logged
/// and answered generically.
pub(crate) fn to_s3(e: Error) -> S3Error {
    let msg = e.to_string();
    let Error::Store(store) = &e else {
        return internal(e);
    };
    let code = match store {
        StoreError::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
        StoreError::InvalidBucketName { .. } => S3ErrorCode::InvalidBucketName,
        StoreError::InvalidKey { len } if *len > 1024 => S3ErrorCode::KeyTooLongError,
        StoreError::InvalidKey { .. } => S3ErrorCode::InvalidArgument,
        StoreError::MetadataTooLarge { .. } => S3ErrorCode::MetadataTooLarge,
        StoreError::PreconditionFailed(_) => S3ErrorCode::PreconditionFailed,
        StoreError::NoSuchUpload(_) => S3ErrorCode::NoSuchUpload,
        StoreError::InvalidPart(_) => S3ErrorCode::InvalidPart,
        StoreError::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
        StoreError::EntityTooSmall { .. } => S3ErrorCode::EntityTooSmall,
        _ => return internal(e),
    };
    S3Error::with_message(code, msg)
}

/// An ETag without its quotes.
pub(crate) fn unquote(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

/// A strong ETag from the index's (quoted or not) value.
pub(crate) fn strong(etag: &str) -> ETag {
    ETag::Strong(unquote(etag))
}

/// The write precondition of `If-None-Match: *` or `If-Match`; other `If-None-Match` values
/// are not implemented.
pub(crate) fn precondition(
    if_none_match: Option<&ETagCondition>,
    if_match: Option<&ETagCondition>,
) -> S3Result<Precondition> {
    if let Some(c) = if_none_match {
        if c.is_any() {
            return Ok(Precondition::IfNoneMatchAny);
        }
        return Err(s3_error!(
            NotImplemented,
            "If-None-Match on writes supports only `*`"
        ));
    }
    Ok(match if_match {
        None => Precondition::None,
        Some(ETagCondition::ETag(e)) => Precondition::IfMatch(Some(e.value().to_owned())),
        Some(_) => Precondition::IfMatch(None),
    })
}

/// User metadata as s3s wants it (`None` when there is none).
pub(crate) fn s3_metadata(m: &std::collections::BTreeMap<String, String>) -> Option<Metadata> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>()
    })
}

/// A successful answer.
pub(crate) fn ok<T>(output: T) -> S3Result<S3Response<T>> {
    Ok(S3Response::new(output))
}
