//! How the [`Client`] makes each S3 request: one credential refresh and retry when the
//! credentials are rejected as expired, and S3's failures turned into [`Error`]s that say what
//! went wrong and what to do.

use std::future::Future;

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::client::Client;
use crate::error::{Error, Result};

/// S3 error codes after which the credentials are refreshed and the request tried once more.
const REFRESH_CODES: &[&str] = &[
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidAccessKeyId",
    "ExpiredTokenException",
];

impl Client {
    /// Runs an S3 call; on an expired or unknown token (or a bodiless 400/403 to a HEAD),
    /// invalidates the credentials and runs it once more with fresh ones.
    pub(crate) async fn call<T, E, F, Fut>(
        &self,
        operation: &'static str,
        key: &str,
        f: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, aws_smithy_runtime_api::http::Response>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match f().await {
            Ok(v) => Ok(v),
            Err(e) if needs_refresh(operation, &e) => {
                tracing::debug!(
                    operation,
                    code = e.code(),
                    "credentials rejected; refreshing and retrying once"
                );
                self.inner.credentials.invalidate().await;
                f().await.map_err(|e| self.s3_error(operation, key, e))
            }
            Err(e) => Err(self.s3_error(operation, key, e)),
        }
    }

    /// Turns a failed S3 call into an [`Error`]: `NotFound` for a missing key, otherwise
    /// [`Error::S3`] with a message that says what to check.
    pub(crate) fn s3_error<E>(
        &self,
        operation: &'static str,
        key: &str,
        e: SdkError<E, aws_smithy_runtime_api::http::Response>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = e.raw_response().map(|r| r.status().as_u16());
        let code = e.code().map(str::to_owned);
        if status == Some(404)
            && matches!(code.as_deref(), None | Some("NoSuchKey" | "NotFound"))
            && operation != "HeadBucket"
        {
            return Error::NotFound {
                bucket: self.inner.bucket.clone(),
                key: key.to_owned(),
            };
        }
        let message = match (&e, code.as_deref()) {
            (SdkError::TimeoutError(_), _) => format!(
                "no answer from {} within {:?} (the attempt timeout), on every attempt; the server \
                 is slow or stuck (raise `ClientBuilder::attempt_timeout` for slow links)",
                self.inner.endpoint.as_deref().unwrap_or("AWS S3"),
                self.inner.attempt_timeout
            ),
            (SdkError::DispatchFailure(_), _) => format!(
                "cannot reach {} ({}); check LD_S3_ENDPOINT and that the server is running",
                self.inner.endpoint.as_deref().unwrap_or("AWS S3"),
                root_cause(&e)
            ),
            (_, Some("AccessDenied")) => format!(
                "access denied; check that the credentials are current and may use bucket `{}`",
                self.inner.bucket
            ),
            (_, Some("NoSuchBucket")) => format!(
                "bucket `{}` does not exist; check LD_S3_BUCKET",
                self.inner.bucket
            ),
            (_, Some(c)) if REFRESH_CODES.contains(&c) => {
                format!(
                    "{c}: the credentials were rejected even after a refresh; check their source"
                )
            }
            (_, Some("BadDigest")) => format!(
                "BadDigest: the bytes the server received do not match their checksum{}; a file \
                 that changed while it was uploaded does this (or bytes corrupted on the way): \
                 upload it again once nothing writes to it",
                e.message().map(|m| format!(" ({m})")).unwrap_or_default()
            ),
            (_, Some("SlowDown" | "Throttling" | "ThrottlingException")) => {
                "the server is throttling requests (SlowDown) and retries ran out; try again later"
                    .to_owned()
            }
            (_, Some(c)) => {
                let http = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
                match e.message() {
                    Some(m) => format!("{c}{http}: {m}"),
                    None => format!("{c}{http}"),
                }
            }
            (_, None) => match status {
                Some(s) => format!("HTTP {s} without an S3 error code"),
                None => DisplayErrorContext(&e).to_string(),
            },
        };
        Error::S3 {
            operation,
            key: key.to_owned(),
            code,
            status,
            message,
        }
    }
}

fn needs_refresh<E: ProvideErrorMetadata>(
    operation: &str,
    e: &SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool {
    if e.code().is_some_and(|c| REFRESH_CODES.contains(&c)) {
        return true;
    }
    // HEAD responses have no body, so S3 cannot say why; 400/403 may be an expired token.
    operation.starts_with("Head")
        && e.code()
            .is_none_or(|c| c == "Forbidden" || c == "BadRequest")
        && e.raw_response()
            .is_some_and(|r| matches!(r.status().as_u16(), 400 | 403))
}

/// The innermost cause of an error, the part a user can act on ("Connection refused (os error
/// 111)"), rather than every layer's debug form.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}
