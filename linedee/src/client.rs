//! [`Client`]: the line^d bucket over S3, with credentials that refresh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::credentials::{ACCESS_KEY_VAR, CredentialsCache, EnvProvider, SECRET_KEY_VAR};
use crate::error::{Error, Result};

/// `LD_S3_BUCKET`
pub const BUCKET_VAR: &str = "LD_S3_BUCKET";
/// `LD_REGION`
pub const REGION_VAR: &str = "LD_REGION";
/// `LD_S3_ENDPOINT`: an S3-compatible endpoint, used path-style (absent: AWS).
pub const ENDPOINT_VAR: &str = "LD_S3_ENDPOINT";
/// The region when `LD_REGION` is not set.
pub const DEFAULT_REGION: &str = "us-east-1";

/// A client for one line^d bucket. Cheap to clone.
///
/// ```no_run
/// # async fn demo() -> linedee::Result<()> {
/// use linedee::{Client, Task, Workflow};
///
/// let client = Client::from_env()?;
/// let wf = Workflow::new()
///     .title("Example 2-step workflow")
///     .step(Task::new(r#"bash -c 'echo "Do Step 1"'"#).no_output())
///     .step(Task::new(r#"bash -c 'echo "Do Step 2"'"#).no_output());
/// let submission = client.submit("in/example", &wf).await?;
/// let status = submission.wait(std::time::Duration::from_secs(60)).await?;
/// println!("{} {}", status.run_id, status.status);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) bucket: String,
    pub(crate) region: String,
    pub(crate) endpoint: Option<String>,
    pub(crate) credentials: CredentialsCache,
    pub(crate) multipart_threshold: usize,
    pub(crate) part_size: usize,
    pub(crate) upload_concurrency: usize,
    pub(crate) download_concurrency: usize,
    pub(crate) attempt_timeout: Duration,
}

pub use crate::builder::{
    ClientBuilder, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_DOWNLOAD_CONCURRENCY,
    DEFAULT_UPLOAD_CONCURRENCY, DOWNLOAD_CONCURRENCY_VAR, MIN_PART_SIZE, PART_SIZE_VAR,
    UPLOAD_CONCURRENCY_VAR,
};

impl Client {
    /// A builder; see [`ClientBuilder`].
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// A client from the line^d config vars: `LD_AWS_ACCESS_KEY_ID`, `LD_AWS_SECRET_ACCESS_KEY`,
    /// `LD_AWS_SESSION_TOKEN`, `LD_REGION` (default `us-east-1`), `LD_S3_BUCKET` and
    /// `LD_S3_ENDPOINT` (optional), and the transfer settings `LD_UPLOAD_CONCURRENCY`,
    /// `LD_DOWNLOAD_CONCURRENCY` and `LD_PART_SIZE` (optional). A missing or malformed variable
    /// is an error that names it.
    pub fn from_env() -> Result<Client> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Client> {
        let var = |name: &str| get(name).filter(|v| !v.is_empty());
        let missing = |name: &'static str| Error::MissingEnv {
            name,
            hint: "set the line^d config vars (`heroku config -s >> .env`, or the `env` file `linedee local` writes)",
        };
        let bucket = var(BUCKET_VAR).ok_or(missing(BUCKET_VAR))?;
        // Fail now, naming the variable, rather than at the first request.
        var(ACCESS_KEY_VAR).ok_or(missing(ACCESS_KEY_VAR))?;
        var(SECRET_KEY_VAR).ok_or(missing(SECRET_KEY_VAR))?;
        let mut builder = Client::builder()
            .bucket(bucket)
            .credentials_provider(EnvProvider);
        if let Some(region) = var(REGION_VAR) {
            builder = builder.region(region);
        }
        if let Some(endpoint) = var(ENDPOINT_VAR) {
            builder = builder.endpoint(endpoint);
        }
        builder.transfer_settings(var)?.build()
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.inner.bucket
    }

    /// The region.
    pub fn region(&self) -> &str {
        &self.inner.region
    }

    /// The endpoint, when not AWS.
    pub fn endpoint(&self) -> Option<&str> {
        self.inner.endpoint.as_deref()
    }

    /// The credentials cache (for example to share it, or to invalidate it by hand).
    pub fn credentials(&self) -> &CredentialsCache {
        &self.inner.credentials
    }

    /// The underlying `aws-sdk-s3` client, for operations this crate does not wrap. It uses the
    /// same refreshing credentials, but not the refresh-and-retry on `ExpiredToken`.
    pub fn s3(&self) -> &aws_sdk_s3::Client {
        &self.inner.s3
    }

    /// Checks that the bucket exists and the credentials work.
    pub async fn check(&self) -> Result<()> {
        let s3 = &self.inner.s3;
        self.call("HeadBucket", &self.inner.bucket, || {
            s3.head_bucket().bucket(&self.inner.bucket).send()
        })
        .await
        .map(|_| ())
    }

    /// Deletes an object (no error if it does not exist).
    pub async fn delete(&self, key: &str) -> Result<()> {
        let s3 = &self.inner.s3;
        self.call("DeleteObject", key, || {
            s3.delete_object()
                .bucket(&self.inner.bucket)
                .key(key)
                .send()
        })
        .await
        .map(|_| ())
    }

    /// Lists every object under `prefix` (all pages), with size and ETag.
    ///
    /// Keys are listed URL-encoded (`encoding-type=url`) and decoded here, so keys with
    /// characters XML cannot carry (control characters) list correctly.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectSummary>> {
        let s3 = &self.inner.s3;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .call("ListObjectsV2", prefix, || {
                    s3.list_objects_v2()
                        .bucket(&self.inner.bucket)
                        .prefix(prefix)
                        .encoding_type(aws_sdk_s3::types::EncodingType::Url)
                        .set_continuation_token(token.clone())
                        .send()
                })
                .await?;
            out.extend(page.contents().iter().filter_map(|o| {
                Some(ObjectSummary {
                    key: url_decode(o.key()?),
                    size: u64::try_from(o.size().unwrap_or(0)).unwrap_or(0),
                    etag: o.e_tag().map(str::to_owned),
                })
            }));
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    pub(crate) fn user_metadata(
        raw: Option<&std::collections::HashMap<String, String>>,
    ) -> BTreeMap<String, String> {
        raw.map(crate::metadata::decode_map).unwrap_or_default()
    }
}

/// One entry of [`Client::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectSummary {
    /// The key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag, quotes included.
    pub etag: Option<String>,
}

/// Decodes a key of an `encoding-type=url` listing: `%XX` escapes and `+` for a space (as
/// S3 writes them). Text that does not decode to UTF-8 is returned as it came.
fn url_decode(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Client> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Client::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn listed_keys_are_url_decoded() {
        assert_eq!(url_decode("in/a%20b+c%2Bd"), "in/a b c+d");
        assert_eq!(url_decode("in/%00/x"), "in/\u{0}/x");
        assert_eq!(url_decode("%C3%A9t%C3%A9"), "été");
        // Not an escape, or not UTF-8 once decoded: kept as it came.
        assert_eq!(url_decode("100%"), "100%");
        assert_eq!(url_decode("%zz"), "%zz");
        assert_eq!(url_decode("%FF"), "%FF");
    }

    #[test]
    fn from_env_names_each_missing_variable() {
        let full = [
            (BUCKET_VAR, "b"),
            (ACCESS_KEY_VAR, "AK"),
            (SECRET_KEY_VAR, "SK"),
            (REGION_VAR, "eu-west-1"),
            (ENDPOINT_VAR, "http://127.0.0.1:1"),
        ];
        let client = from(&full).unwrap();
        assert_eq!(
            (client.bucket(), client.region(), client.endpoint()),
            ("b", "eu-west-1", Some("http://127.0.0.1:1"))
        );
        for missing in [BUCKET_VAR, ACCESS_KEY_VAR, SECRET_KEY_VAR] {
            let vars: Vec<_> = full
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = from(&vars).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("environment variable `{missing}` is not set")),
                "{err}"
            );
        }
        // Region defaults; the endpoint is optional; the session token is optional.
        let client = from(&full[..3]).unwrap();
        assert_eq!((client.region(), client.endpoint()), ("us-east-1", None));
    }

    #[test]
    fn bad_settings_are_refused() {
        let err = from(&[
            (BUCKET_VAR, "b"),
            (ACCESS_KEY_VAR, "a"),
            (SECRET_KEY_VAR, "s"),
            (ENDPOINT_VAR, "localhost:9000"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("not an http:// or https:// URL"), "{err}");
        let err = Client::builder()
            .credentials_provider(EnvProvider)
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no bucket set"), "{err}");
        let err = Client::builder()
            .bucket("b")
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no credentials provider"), "{err}");
        let err = Client::builder()
            .bucket("b")
            .credentials_provider(EnvProvider)
            .part_size(1024)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("below S3's minimum"), "{err}");
    }
}
