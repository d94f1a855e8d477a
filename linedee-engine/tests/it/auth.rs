//! SigV4 is required: unsigned, wrongly signed and unknown-key requests are refused;
//! rotating session credentials keep a client working through the config-vars endpoint,
//! and an expired one gets `ExpiredToken`.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError, future};
use aws_sdk_s3::config::Credentials as SdkCredentials;
use aws_sdk_s3::primitives::ByteStream;
use common::{Served, code, status};
use linedee_engine::store::StoreOptions;

fn options() -> StoreOptions {
    StoreOptions {
        default_bucket: Some("ld-auth".into()),
        fsync: false,
        ..StoreOptions::default()
    }
}

#[tokio::test]
async fn wrong_unknown_unsigned_and_tokenless_requests_are_refused() {
    let s = Served::start(options()).await;
    let good = s.store.credentials().expect("creds");
    let try_list = |creds: SdkCredentials| {
        let c = common::client_with(&s.endpoint, creds);
        async move { c.list_objects_v2().bucket("ld-auth").send().await }
    };
    try_list(common::sdk_credentials(&good))
        .await
        .expect("right credentials work");

    let wrong_secret = SdkCredentials::new(
        &good.access_key_id,
        "not-the-secret",
        Some(good.session_token.clone()),
        None,
        "t",
    );
    let err = try_list(wrong_secret).await.expect_err("wrong signature");
    assert_eq!(
        (code(&err).as_str(), status(&err)),
        ("SignatureDoesNotMatch", 403)
    );

    let unknown = SdkCredentials::new(
        "LDAKUNKNOWN",
        &good.secret_access_key,
        Some(good.session_token.clone()),
        None,
        "t",
    );
    let err = try_list(unknown).await.expect_err("unknown key");
    assert_eq!(code(&err), "InvalidAccessKeyId");

    let wrong_token = SdkCredentials::new(
        &good.access_key_id,
        &good.secret_access_key,
        Some("forged".into()),
        None,
        "t",
    );
    let err = try_list(wrong_token).await.expect_err("wrong token");
    assert_eq!(status(&err), 400);
    assert_eq!(code(&err), "InvalidToken");

    let no_token = SdkCredentials::new(
        &good.access_key_id,
        &good.secret_access_key,
        None,
        None,
        "t",
    );
    let err = try_list(no_token).await.expect_err("no token");
    assert_eq!(status(&err), 403);

    let http = reqwest::Client::new();
    for url in [
        format!("{}/ld-auth", s.endpoint),
        format!("{}/", s.endpoint),
        format!("{}/ld-auth/k", s.endpoint),
    ] {
        let resp = http.get(&url).send().await.expect("anonymous request");
        assert_eq!(resp.status().as_u16(), 403, "{url}");
    }
    let resp = http
        .put(format!("{}/ld-auth/anon", s.endpoint))
        .body("x")
        .send()
        .await
        .expect("anonymous put");
    assert_eq!(resp.status().as_u16(), 403);
    assert!(
        s.store
            .head_object("ld-auth", "anon")
            .await
            .expect("head")
            .is_none()
    );
    s.stop().await;
}

#[tokio::test]
async fn config_vars_endpoint_requires_its_bearer_token() {
    let s = Served::start(options()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/apps/my-app/config-vars", s.endpoint);
    let resp = http
        .get(&url)
        .bearer_auth("wrong")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    let resp = http.get(&url).send().await.expect("request");
    assert_eq!(
        resp.status().as_u16(),
        403,
        "without a bearer token it is an (unsigned) S3 request"
    );
    let vars: std::collections::BTreeMap<String, String> = http
        .get(&url)
        .bearer_auth(s.store.api_token())
        .send()
        .await
        .expect("request")
        .error_for_status()
        .expect("200")
        .json()
        .await
        .expect("json");
    let creds = s.store.credentials().expect("creds");
    assert_eq!(vars["LD_AWS_ACCESS_KEY_ID"], creds.access_key_id);
    assert_eq!(vars["LD_AWS_SECRET_ACCESS_KEY"], creds.secret_access_key);
    assert_eq!(vars["LD_AWS_SESSION_TOKEN"], creds.session_token);
    assert_eq!(vars["LD_REGION"], "us-east-1");
    assert_eq!(vars["LD_S3_BUCKET"], "ld-auth");
    assert_eq!(vars["LD_S3_ENDPOINT"], s.endpoint);
    s.stop().await;
}

/// Fetches credentials from the config-vars endpoint, as the SDK's Heroku provider does.
#[derive(Debug)]
struct ConfigVars {
    url: String,
    token: String,
    refresh_after: Duration,
    seen: Arc<Mutex<Vec<String>>>,
}

impl ConfigVars {
    async fn fetch(&self) -> Result<SdkCredentials, CredentialsError> {
        let vars: std::collections::BTreeMap<String, String> = reqwest::Client::new()
            .get(&self.url)
            .bearer_auth(&self.token)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(CredentialsError::provider_error)?
            .json()
            .await
            .map_err(CredentialsError::provider_error)?;
        let key = vars["LD_AWS_ACCESS_KEY_ID"].clone();
        {
            let mut seen = self.seen.lock().expect("lock");
            if seen.last() != Some(&key) {
                seen.push(key.clone());
            }
        }
        Ok(SdkCredentials::new(
            key,
            vars["LD_AWS_SECRET_ACCESS_KEY"].clone(),
            Some(vars["LD_AWS_SESSION_TOKEN"].clone()),
            Some(SystemTime::now() + self.refresh_after),
            "config-vars",
        ))
    }
}

impl ProvideCredentials for ConfigVars {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.fetch())
    }
}

#[tokio::test]
async fn rotating_credentials_via_config_vars_keep_a_client_working() {
    let lifetime = Duration::from_secs(3);
    let s = Served::start(StoreOptions {
        credential_lifetime: Some(lifetime),
        ..options()
    })
    .await;
    let first = s.store.credentials().expect("creds");
    assert!(first.expires_at.is_some());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let provider = ConfigVars {
        url: format!("{}/apps/local/config-vars", s.endpoint),
        token: s.store.api_token(),
        refresh_after: Duration::from_secs(1),
        seen: Arc::clone(&seen),
    };
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&s.endpoint)
        .force_path_style(true)
        .identity_cache(
            aws_sdk_s3::config::IdentityCache::lazy()
                .buffer_time(Duration::from_millis(100))
                .build(),
        )
        .credentials_provider(provider)
        .build();
    let c = aws_sdk_s3::Client::from_conf(conf);
    // Keep working for more than two credential lifetimes.
    let until = std::time::Instant::now() + lifetime * 2 + Duration::from_millis(500);
    let mut ops = 0;
    while std::time::Instant::now() < until {
        let key = format!("k{ops}");
        c.put_object()
            .bucket("ld-auth")
            .key(&key)
            .body(ByteStream::from(key.clone().into_bytes()))
            .send()
            .await
            .expect("put across rotation");
        let got = c
            .get_object()
            .bucket("ld-auth")
            .key(&key)
            .send()
            .await
            .expect("get across rotation");
        assert_eq!(
            got.body
                .collect()
                .await
                .expect("body")
                .into_bytes()
                .as_ref(),
            key.as_bytes()
        );
        ops += 1;
    }
    let distinct = seen.lock().expect("lock").len();
    assert!(
        distinct >= 3,
        "the client used {distinct} credential sets in {ops} round trips"
    );
    // The first credentials have expired by now: S3's ExpiredToken.
    let old = common::client(&s.endpoint, &first);
    let err = old
        .list_objects_v2()
        .bucket("ld-auth")
        .send()
        .await
        .expect_err("expired");
    assert_eq!(code(&err), "ExpiredToken");
    s.stop().await;
}
