//! `GET /apps/{app}/config-vars` in the Heroku Platform API's shape: a bearer token, and a
//! JSON object of the `LD_*` variables (with the current, possibly rotated, credentials),
//! so the SDK's Heroku provider can refresh credentials against the local store.

use std::collections::BTreeMap;

use http::{HeaderValue, Response, StatusCode, header};
use s3s::Body;

use super::Store;
use super::auth::secret_eq;

fn bearer(req: &http::Request<impl Sized>) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Whether a request is for this endpoint: `GET /apps/{app}/config-vars` with a bearer
/// token (S3 requests are SigV4-signed, so a bucket named `apps` is unaffected).
pub(crate) fn matches(req: &http::Request<impl Sized>) -> bool {
    let path = req.uri().path();
    let app = path
        .strip_prefix("/apps/")
        .and_then(|rest| rest.strip_suffix("/config-vars"));
    req.method() == http::Method::GET
        && app.is_some_and(|a| !a.is_empty() && !a.contains('/'))
        && bearer(req).is_some()
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Answers a matched request.
pub(crate) fn handle(
    store: &Store,
    req: &http::Request<impl Sized>,
    endpoint: &str,
) -> Response<Body> {
    let authorized = bearer(req).is_some_and(|t| secret_eq(t, &store.api_token()));
    if !authorized {
        return json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"id": "unauthorized", "message": "Invalid credentials provided."}),
        );
    }
    let creds = match store.credentials() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "could not read the store's credentials");
            return json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"id": "internal_server_error", "message": "The store could not read its credentials."}),
            );
        }
    };
    let options = store.options();
    let vars: BTreeMap<&str, String> = BTreeMap::from([
        ("LD_AWS_ACCESS_KEY_ID", creds.access_key_id),
        ("LD_AWS_SECRET_ACCESS_KEY", creds.secret_access_key),
        ("LD_AWS_SESSION_TOKEN", creds.session_token),
        ("LD_REGION", options.region.clone()),
        (
            "LD_S3_BUCKET",
            options.default_bucket.clone().unwrap_or_default(),
        ),
        ("LD_S3_ENDPOINT", endpoint.to_owned()),
    ]);
    json(StatusCode::OK, &serde_json::json!(vars))
}
