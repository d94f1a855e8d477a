//! Responses (with the security headers every response carries), query parsing and the
//! token check.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// The response type of every route.
pub(crate) type Resp = Response<Full<Bytes>>;

/// Only the app's own files; no inline script or style, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// A response with `body`, its content type and the security headers.
pub(crate) fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> Resp {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Resp {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    with_body(status, "application/json", Bytes::from(body))
}

/// A JSON error `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Resp {
    json(status, &serde_json::json!({ "error": message.to_string() }))
}

/// 405, naming the allowed method.
pub(crate) fn method_not_allowed(allowed: &'static str) -> Resp {
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allowed}"),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    resp
}

/// The query's `name=value` pairs, percent-decoded; `+` is a space.
pub(crate) fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in query `{s}`"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("query `{s}` is not UTF-8"))
}

/// Does the request carry `Authorization: Bearer <token>`? Compared in constant time.
pub(crate) fn authorized(headers: &http::HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    !token.is_empty() && constant_time_eq(given.trim().as_bytes(), token.as_bytes())
}

/// Equal, in time that depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Is the `Host` header one of loopback's names? Refuses DNS-rebinding pages that would
/// otherwise read the API through a name of their own.
pub(crate) fn loopback_host(headers: &http::HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        // HTTP/2 carries the authority in the URI instead; hyper checked it is well formed.
        return true;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(n, _)| n)
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode() {
        assert_eq!(
            query_pairs(Some("status=failed&before=12&x=a%20b+c")),
            Ok(vec![
                ("status".into(), "failed".into()),
                ("before".into(), "12".into()),
                ("x".into(), "a b c".into()),
            ])
        );
        assert!(query_pairs(Some("a=%zz")).is_err());
        assert!(query_pairs(Some("a=%4")).is_err());
    }

    #[test]
    fn tokens_compare() {
        let mut h = http::HeaderMap::new();
        assert!(!authorized(&h, "secret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secre"),
        );
        assert!(!authorized(&h, "secret"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret"),
        );
        assert!(authorized(&h, "secret"));
        assert!(!authorized(&h, ""));
    }

    #[test]
    fn hosts() {
        let check = |host: &'static str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static(host));
            loopback_host(&h)
        };
        assert!(check("127.0.0.1:8080"));
        assert!(check("localhost:1"));
        assert!(check("[::1]:9"));
        assert!(!check("evil.example:8080"));
        assert!(!check("10.0.0.1"));
    }
}
