//! The Heroku credential providers: the Platform API's config vars (wiremock stands in for
//! api.heroku.com; `linedee local` serves the same endpoint for the end-to-end path) and the
//! `heroku config -j` command (a real process: a script with the CLI's output shape).

use linedee::credentials::{
    CredentialsCache, HerokuApiProvider, HerokuCliProvider, ProvideCredentials,
};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[tokio::test]
async fn heroku_api_reads_config_vars_with_the_platform_api_headers() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/apps/example-app/config-vars"))
        .and(header("authorization", "Bearer hk-token"))
        .and(header("accept", "application/vnd.heroku+json; version=3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "LD_AWS_ACCESS_KEY_ID": "ASIAEXAMPLE",
            "LD_AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
            "LD_AWS_SESSION_TOKEN": "FwoGZXIvYXdz",
            "LD_S3_BUCKET": "ld-private-x",
            "WEB_CONCURRENCY": 2
        })))
        .mount(&server)
        .await;
    let provider = HerokuApiProvider::new(server.uri(), "example-app", "hk-token");
    assert!(
        !format!("{provider:?}").contains("hk-token"),
        "Debug redacts the token"
    );
    let c = provider.provide().await.unwrap();
    assert_eq!(
        (c.access_key_id(), c.secret_access_key()),
        ("ASIAEXAMPLE", "wJalrXUtnFEMI")
    );
    assert_eq!(c.session_token(), Some("FwoGZXIvYXdz"));
}

#[tokio::test]
async fn heroku_api_errors_say_what_to_check_without_secrets() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let err = HerokuApiProvider::new(server.uri(), "example-app", "hk-token")
        .provide()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("HTTP 401") && msg.contains("check HEROKU_API_KEY"),
        "{msg}"
    );
    assert!(!msg.contains("hk-token"), "{msg}");
}

#[cfg(unix)]
#[tokio::test]
async fn heroku_cli_output_is_read_and_refreshed_on_invalidate() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("calls");
    let script = dir.path().join("heroku");
    // Like `heroku config -j`: prints the app's config vars as JSON; each call rotates.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1 $2 $3 $4\" = \"config -j --app example-app\" ] || {{ echo \"bad args: $*\" >&2; exit 2; }}\n\
             echo x >> '{}'\nn=$(wc -l < '{}' | tr -d ' ')\n\
             printf '{{\"LD_AWS_ACCESS_KEY_ID\":\"ASIA%s\",\"LD_AWS_SECRET_ACCESS_KEY\":\"s\",\"LD_REGION\":\"us-east-1\"}}' \"$n\"\n",
            counter.display(),
            counter.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let cache = CredentialsCache::new(
        HerokuCliProvider::new()
            .program(script.to_string_lossy())
            .app("example-app"),
    );
    assert_eq!(cache.get().await.unwrap().access_key_id(), "ASIA1");
    assert_eq!(
        cache.get().await.unwrap().access_key_id(),
        "ASIA1",
        "cached"
    );
    cache.invalidate().await;
    assert_eq!(
        cache.get().await.unwrap().access_key_id(),
        "ASIA2",
        "refreshed"
    );
}

#[tokio::test]
async fn a_missing_heroku_cli_is_a_clear_error() {
    let err = HerokuCliProvider::new()
        .program("/nonexistent/heroku")
        .provide()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot run it") && err.contains("Heroku CLI installed"),
        "{err}"
    );
}
