//! The fake's HTTP side: counting, injected faults, the rate limit, the checks every API
//! request passes (token, `Accept`, app), and the routes.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::Shared;
use super::dyno::{self, Create};

/// The media type every API request must accept.
const ACCEPT: &str = "application/vnd.heroku+json; version=3";

/// What Heroku answers once the rate limit is spent.
const RATE_LIMITED: &str = "Your account reached the API rate limit";

/// Serves `shared` on `listener`; connections end with this task (they live in its
/// `JoinSet`).
pub(super) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(handle(&shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

/// A route: its template (for the counters) and what it names.
enum Route {
    Create,
    List,
    Info(String),
    Stop(String),
    LogSession,
    Logplex(String),
    App,
    Formation,
    ConfigVars,
    SetConfigVars,
    Unknown,
}

impl Route {
    /// The route of `method` `path`, and the app it names (API routes).
    fn parse(method: &Method, path: &str) -> (Route, Option<String>) {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let app = (parts.first() == Some(&"apps"))
            .then(|| parts.get(1).map(|a| (*a).to_owned()))
            .flatten();
        let route = match (method, parts.as_slice()) {
            (&Method::POST, ["apps", _, "dynos"]) => Route::Create,
            (&Method::GET, ["apps", _, "dynos"]) => Route::List,
            (&Method::GET, ["apps", _, "dynos", d]) => Route::Info((*d).to_owned()),
            (&Method::POST, ["apps", _, "dynos", d, "actions", "stop"]) => {
                Route::Stop((*d).to_owned())
            }
            (&Method::POST, ["apps", _, "log-sessions"]) => Route::LogSession,
            (&Method::GET, ["apps", _]) => Route::App,
            (&Method::GET, ["apps", _, "formation"]) => Route::Formation,
            (&Method::GET, ["apps", _, "config-vars"]) => Route::ConfigVars,
            (&Method::PATCH, ["apps", _, "config-vars"]) => Route::SetConfigVars,
            (&Method::GET, ["logplex", d]) => Route::Logplex((*d).to_owned()),
            _ => Route::Unknown,
        };
        (route, app)
    }

    fn template(&self, method: &Method) -> String {
        let path = match self {
            Route::Create | Route::List => "/apps/{app}/dynos",
            Route::Info(_) => "/apps/{app}/dynos/{dyno}",
            Route::Stop(_) => "/apps/{app}/dynos/{dyno}/actions/stop",
            Route::LogSession => "/apps/{app}/log-sessions",
            Route::Logplex(_) => "/logplex/{dyno}",
            Route::App => "/apps/{app}",
            Route::Formation => "/apps/{app}/formation",
            Route::ConfigVars | Route::SetConfigVars => "/apps/{app}/config-vars",
            Route::Unknown => "(unknown)",
        };
        format!("{method} {path}")
    }
}

async fn handle(shared: &Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let (route, app) = Route::parse(&parts.method, parts.uri.path());
    let (remaining, fail) = {
        let mut state = shared.state();
        state.requests.total += 1;
        *state
            .requests
            .by_route
            .entry(route.template(&parts.method))
            .or_default() += 1;
        if let Route::Logplex(dyno) = &route {
            // A log session's URL: no token, no rate limit, its own signature (`srv`).
            let session = query(parts.uri.query(), "srv")
                .and_then(|id| state.sessions.get(&id).cloned())
                .filter(|(name, _, _)| name == dyno);
            drop(state);
            return match session {
                Some((name, lines, source)) => {
                    let text = dyno::log_lines(shared, &name, lines, source.as_deref());
                    plain(StatusCode::OK, text)
                }
                None => plain(StatusCode::FORBIDDEN, "bad or missing log session\n".into()),
            };
        }
        let spent = state.remaining == 0;
        state.remaining = state.remaining.saturating_sub(1);
        let fail = match state.fail {
            Some((n, status)) => {
                state.fail = (n > 1).then_some((n - 1, status));
                Some(status)
            }
            None if spent => Some(429),
            None => None,
        };
        (state.remaining, fail)
    };
    if let Some(status) = fail {
        return injected(status, remaining);
    }
    let answer = |status: StatusCode, body: Value| api_answer(status, &body, remaining);
    if let Some(refused) = check(&parts.headers, shared, app.as_deref()) {
        return answer(refused.0, refused.1);
    }
    match route {
        Route::Create => match parse_create(&body) {
            Ok(create) => match dyno::start(shared, create) {
                Ok(dyno) => answer(StatusCode::CREATED, dyno),
                Err(e) => answer(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"id": "internal_server_error", "message": e.to_string()}),
                ),
            },
            Err(message) => answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"id": "invalid_params", "message": message}),
            ),
        },
        Route::List => {
            let app = &shared.config.app;
            let list: Vec<Value> = shared
                .state()
                .dynos
                .iter()
                .filter(|d| d.info().listed())
                .map(|d| d.json(app))
                .collect();
            answer(StatusCode::OK, Value::Array(list))
        }
        Route::Info(d) => {
            let state = shared.state();
            match state
                .dynos
                .iter()
                .find(|x| (x.id == d || x.name == d) && x.info().listed())
            {
                Some(x) => answer(StatusCode::OK, x.json(&shared.config.app)),
                None => answer(StatusCode::NOT_FOUND, not_found("dyno")),
            }
        }
        Route::Stop(d) => {
            if dyno::stop(shared, &d) {
                answer(StatusCode::ACCEPTED, json!({}))
            } else {
                answer(StatusCode::NOT_FOUND, not_found("dyno"))
            }
        }
        Route::LogSession => log_session(shared, &body, remaining),
        Route::App => answer(
            StatusCode::OK,
            json!({"id": "00000000-0000-4000-8000-0000000000a0", "name": shared.config.app}),
        ),
        Route::Formation => answer(StatusCode::OK, formation(shared)),
        Route::ConfigVars => answer(StatusCode::OK, json!(shared.state().config_vars)),
        Route::SetConfigVars => match set_config_vars(shared, &body) {
            Ok(vars) => answer(StatusCode::OK, vars),
            Err(message) => answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"id": "invalid_params", "message": message}),
            ),
        },
        Route::Logplex(_) | Route::Unknown => answer(StatusCode::NOT_FOUND, not_found("resource")),
    }
}

/// The token, `Accept` and app checks: the refusal, if any.
fn check(headers: &HeaderMap, shared: &Shared, app: Option<&str>) -> Option<(StatusCode, Value)> {
    let header = |name: http::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = format!("Bearer {}", shared.config.token);
    if header(http::header::AUTHORIZATION) != Some(bearer.as_str()) {
        return Some((
            StatusCode::UNAUTHORIZED,
            json!({"id": "unauthorized", "message": "Invalid credentials provided."}),
        ));
    }
    let accept = header(http::header::ACCEPT).unwrap_or_default();
    if !accept.split(',').any(|a| a.trim() == ACCEPT) {
        return Some((
            StatusCode::NOT_ACCEPTABLE,
            json!({"id": "not_acceptable", "message": format!("Accept must be `{ACCEPT}`.")}),
        ));
    }
    if app.is_some_and(|a| a != shared.config.app) {
        return Some((StatusCode::NOT_FOUND, not_found("app")));
    }
    None
}

/// `POST /apps/{app}/dynos`'s body, checked as Heroku's schema does.
fn parse_create(body: &[u8]) -> Result<Create, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_owned())?;
    let obj = v.as_object().ok_or("the body is not a JSON object")?;
    let command = obj
        .get("command")
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty())
        .ok_or("command is required")?
        .to_owned();
    let mut env = std::collections::BTreeMap::new();
    match obj.get("env") {
        None | Some(Value::Null) => {}
        Some(Value::Object(vars)) => {
            for (k, v) in vars {
                if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(format!("env key `{k}` does not match ^\\w+$"));
                }
                let v = v
                    .as_str()
                    .ok_or(format!("env value of `{k}` is not a string"))?;
                env.insert(k.clone(), v.to_owned());
            }
        }
        Some(_) => return Err("env is not an object".to_owned()),
    }
    if obj.get("attach").is_some_and(|a| !a.is_boolean()) {
        return Err("attach is not a boolean".to_owned());
    }
    let size = match obj.get("size") {
        None | Some(Value::Null) => "Basic".to_owned(),
        Some(Value::String(s)) if s.parse::<linedee::Machine>().is_ok() => s.clone(),
        Some(s) => return Err(format!("no such size: {s}")),
    };
    let kind = match obj.get("type") {
        None | Some(Value::Null) => "run".to_owned(),
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err("type is not a string".to_owned()),
    };
    let time_to_live = match obj.get("time_to_live") {
        None | Some(Value::Null) => None,
        Some(t) => Some(
            t.as_u64()
                .filter(|t| (1..=86_400).contains(t))
                .ok_or("time_to_live must be an integer from 1 to 86400")?,
        ),
    };
    Ok(Create {
        command,
        env,
        size,
        kind,
        time_to_live,
    })
}

/// `GET /apps/{app}/formation`: a process type per Procfile line, none running.
fn formation(shared: &Shared) -> Value {
    let procfile =
        std::fs::read_to_string(shared.config.app_dir.join("Procfile")).unwrap_or_default();
    let list: Vec<Value> = procfile
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(kind, cmd)| (kind.trim(), cmd.trim()))
        .filter(|(kind, _)| !kind.is_empty() && !kind.starts_with('#'))
        .map(|(kind, cmd)| json!({"type": kind, "command": cmd, "quantity": 0, "size": "Basic"}))
        .collect();
    Value::Array(list)
}

/// `PATCH /apps/{app}/config-vars`: merges the body's strings, unsets its `null`s; answers
/// every config var.
fn set_config_vars(shared: &Shared, body: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| "the body is not JSON".to_owned())?;
    let obj = v.as_object().ok_or("the body is not a JSON object")?;
    if let Some((k, _)) = obj.iter().find(|(_, v)| !(v.is_string() || v.is_null())) {
        return Err(format!("the value of `{k}` is not a string or null"));
    }
    let mut state = shared.state();
    for (k, v) in obj {
        match v.as_str() {
            Some(s) => state.config_vars.insert(k.clone(), s.to_owned()),
            None => state.config_vars.remove(k),
        };
    }
    let vars = json!(state.config_vars);
    let now = state.config_vars.clone();
    state.config_history.push(now);
    drop(state);
    shared.changed();
    Ok(vars)
}

/// `POST /apps/{app}/log-sessions`: a session for one dyno (the fake needs `dyno`).
fn log_session(shared: &Shared, body: &[u8], remaining: u64) -> Response<Full<Bytes>> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(dyno) = v.get("dyno").and_then(Value::as_str) else {
        return api_answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({"id": "invalid_params", "message": "the fake needs `dyno`"}),
            remaining,
        );
    };
    let lines = v
        .get("lines")
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(100);
    let source = v.get("source").and_then(Value::as_str).map(str::to_owned);
    let id = format!("{:032x}", rand::random::<u128>());
    shared
        .state()
        .sessions
        .insert(id.clone(), (dyno.to_owned(), lines, source));
    let url = format!("{}/logplex/{dyno}?srv={id}", shared.url);
    api_answer(
        StatusCode::CREATED,
        &json!({"id": id, "logplex_url": url}),
        remaining,
    )
}

/// An injected answer: 429 is Heroku's rate-limit answer.
fn injected(status: u16, remaining: u64) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status == StatusCode::TOO_MANY_REQUESTS {
        return api_answer(
            status,
            &json!({"id": "rate_limit", "message": RATE_LIMITED}),
            0,
        );
    }
    let id = status
        .canonical_reason()
        .unwrap_or("error")
        .to_lowercase()
        .replace(' ', "_");
    api_answer(
        status,
        &json!({"id": id, "message": "injected by the fake"}),
        remaining,
    )
}

fn not_found(what: &str) -> Value {
    json!({"id": "not_found", "message": format!("Couldn't find that {what}.")})
}

fn api_answer(status: StatusCode, body: &Value, remaining: u64) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert("ratelimit-remaining", http::HeaderValue::from(remaining));
    resp
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The value of `name` in a query string.
fn query(q: Option<&str>, name: &str) -> Option<String> {
    q?.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}
