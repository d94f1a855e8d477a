//! Conditional reads (`If-Match`, `If-None-Match`, `If-Modified-Since`,
//! `If-Unmodified-Since` on GetObject and HeadObject), as RFC 9110 and S3 define them.

use s3s::dto::{ETagCondition, Timestamp};
use s3s::{S3Result, s3_error};
use time::OffsetDateTime;

use super::index::ObjectMeta;

/// The conditions of one read.
#[derive(Debug, Default, Clone)]
pub(crate) struct ReadConditions {
    pub(crate) if_match: Option<ETagCondition>,
    pub(crate) if_none_match: Option<ETagCondition>,
    pub(crate) if_modified_since: Option<Timestamp>,
    pub(crate) if_unmodified_since: Option<Timestamp>,
}

fn matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::ETag(e) => e.value() == etag.trim_matches('"'),
        _ => true,
    }
}

fn secs(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

impl ReadConditions {
    /// `PreconditionFailed` (412) or `NotModified` (304) when a condition does not hold.
    pub(crate) fn check(&self, meta: &ObjectMeta) -> S3Result<()> {
        let modified = secs(meta.last_modified);
        match &self.if_match {
            Some(c) if !matches(c, &meta.etag) => return Err(s3_error!(PreconditionFailed)),
            Some(_) => {}
            None => {
                if let Some(t) = &self.if_unmodified_since
                    && modified > secs(OffsetDateTime::from(t.clone()))
                {
                    return Err(s3_error!(PreconditionFailed));
                }
            }
        }
        match &self.if_none_match {
            Some(c) if matches(c, &meta.etag) => Err(s3_error!(NotModified)),
            Some(_) => Ok(()),
            None => match &self.if_modified_since {
                Some(t) if modified <= secs(OffsetDateTime::from(t.clone())) => {
                    Err(s3_error!(NotModified))
                }
                _ => Ok(()),
            },
        }
    }
}
