//! What the wiremock fault tests share: a rotating credential provider, a client builder
//! pointed at the mock server, and S3 error documents.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use linedee::credentials::{Credentials, CredentialsFuture, ProvideCredentials};
use linedee::{Client, ClientBuilder};
use wiremock::{MockServer, ResponseTemplate};

/// The bucket every fault test uses.
pub(crate) const BUCKET: &str = "ld-private-test";

/// Hands out `AKIA0`/`token0`, `AKIA1`/`token1`, … and counts the calls.
#[derive(Debug, Default)]
pub(crate) struct Rotating(AtomicUsize);

impl Rotating {
    /// How many times the client asked for credentials.
    pub(crate) fn calls(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl ProvideCredentials for Rotating {
    fn provide(&self) -> CredentialsFuture<'_> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            Ok(Credentials::new(
                format!("AKIA{n}"),
                "secret-key-value",
                Some(format!("token{n}")),
                None,
            ))
        })
    }
}

/// A client builder for `server` with `provider` and a 10 ms initial backoff.
pub(crate) fn builder(server: &MockServer, provider: Arc<Rotating>) -> ClientBuilder {
    Client::builder()
        .bucket(BUCKET)
        .endpoint(server.uri())
        .credentials_provider(provider)
        .initial_backoff(Duration::from_millis(10))
}

/// An S3 error document with `status` and `code`.
pub(crate) fn s3_error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).insert_header("content-type", "application/xml").set_body_string(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{code} happened</Message><RequestId>r1</RequestId></Error>"#
    ))
}
