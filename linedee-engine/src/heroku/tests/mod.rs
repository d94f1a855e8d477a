//! The Heroku runner against a wiremock Platform API: requests as sent, the rate limit and
//! errors here; exits, slots, `alive` and logs in `runner`.

mod runner;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{body_partial_json, header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::api::backoff;
use super::*;
use crate::runner::{AttemptSpec, Exit, LogBody, OnExit, Runner, StartError};

const TOKEN: &str = "tok-5ecret-never-shown";
const DYNOS: &str = "/apps/demo/dynos";
/// The list interval of the tests of the poll loop.
const POLL: Duration = Duration::from_millis(20);
/// Generous: a deadline for what should happen in milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);

/// A config for `server`. No list is fetched on its own within a test (a long interval):
/// tests of the poll loop set [`POLL`].
fn config(server: &MockServer) -> HerokuConfig {
    HerokuConfig::new("demo", Secret::new(TOKEN))
        .api_url(server.uri())
        .list_interval(Duration::from_secs(600))
        .retry_base(Duration::from_millis(5))
        .max_retries(3)
}

fn spec(task_id: &str, attempt: u32) -> AttemptSpec {
    AttemptSpec {
        task_id: task_id.to_owned(),
        attempt,
        cmd: "worker --fast".to_owned(),
        name: None,
        machine: "standard-2x".to_owned(),
        timeout: 300,
        options: vec![("COLOR".to_owned(), "blue".to_owned())],
        bucket: "b".to_owned(),
        line_d: format!(r#"{{"task_id":"{task_id}"}}"#),
    }
}

fn dyno(id: &str, name: &str, state: &str) -> Value {
    json!({
        "id": id, "name": name, "state": state, "size": "Standard-2X", "type": "run",
        "command": "worker --fast", "attach_url": null,
        "app": {"id": "a1", "name": "demo"},
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
    })
}

fn created(id: &str, name: &str) -> ResponseTemplate {
    ResponseTemplate::new(201)
        .set_body_json(dyno(id, name, "starting"))
        .insert_header("RateLimit-Remaining", "4000")
}

/// An `on_exit` that counts its calls and sends the exit.
fn on_exit(calls: &Arc<AtomicUsize>) -> (OnExit, oneshot::Receiver<Exit>) {
    let (tx, rx) = oneshot::channel();
    let calls = Arc::clone(calls);
    let f: OnExit = Box::new(move |exit| {
        calls.fetch_add(1, Ordering::SeqCst);
        let _ = tx.send(exit);
    });
    (f, rx)
}

fn ignore_exit() -> OnExit {
    Box::new(|_| {})
}

/// `GET /apps/demo/dynos` answering the dynos the test sets, and telling each time it did.
#[derive(Clone)]
struct ListResponder {
    dynos: Arc<Mutex<Vec<Value>>>,
    served: mpsc::UnboundedSender<usize>,
}

impl Respond for ListResponder {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let dynos = self.dynos.lock().expect("lock").clone();
        let _ = self.served.send(dynos.len());
        ResponseTemplate::new(200).set_body_json(dynos)
    }
}

async fn mount_list(
    server: &MockServer,
) -> (Arc<Mutex<Vec<Value>>>, mpsc::UnboundedReceiver<usize>) {
    let dynos = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::unbounded_channel();
    Mock::given(method("GET"))
        .and(path(DYNOS))
        .respond_with(ListResponder {
            dynos: Arc::clone(&dynos),
            served: tx,
        })
        .mount(server)
        .await;
    (dynos, rx)
}

async fn requests(server: &MockServer, m: &str, p: &str) -> usize {
    server
        .received_requests()
        .await
        .expect("recording")
        .iter()
        .filter(|r| r.method.as_str() == m && r.url.path() == p)
        .count()
}

#[test]
fn machines_map_to_heroku_sizes_and_time_to_live_is_capped() {
    assert_eq!(heroku_size("standard-1x").as_deref(), Some("Standard-1X"));
    assert_eq!(heroku_size("standard-2x").as_deref(), Some("Standard-2X"));
    assert_eq!(
        heroku_size("performance-m").as_deref(),
        Some("Performance-M")
    );
    assert_eq!(
        heroku_size("performance-l-ram").as_deref(),
        Some("Performance-L-RAM")
    );
    assert_eq!(heroku_size("private-2xl").as_deref(), Some("Private-2XL"));
    assert_eq!(heroku_size("basic").as_deref(), Some("Basic"));
    assert_eq!(heroku_size("eco").as_deref(), Some("Eco"));
    assert_eq!(heroku_size("huge"), None);
    for m in linedee::Machine::ALL {
        assert!(heroku_size(m.as_str()).is_some(), "{m}");
    }
    let c = HerokuConfig::new("demo", Secret::new(TOKEN)).ttl_grace(Duration::from_secs(60));
    assert_eq!(c.time_to_live(300), 360);
    assert_eq!(c.time_to_live(86_390), 86_400);
    assert_eq!(c.time_to_live(u64::MAX), 86_400);
}

#[test]
fn backoff_doubles_up_to_a_minute_and_honours_retry_after() {
    let base = Duration::from_secs(1);
    assert_eq!(backoff(base, 0, None), Duration::from_secs(1));
    assert_eq!(backoff(base, 3, None), Duration::from_secs(8));
    assert_eq!(backoff(base, 40, None), Duration::from_secs(60));
    assert_eq!(
        backoff(base, 0, Some(Duration::from_secs(7))),
        Duration::from_secs(7)
    );
    assert_eq!(
        backoff(base, 5, Some(Duration::from_secs(7))),
        Duration::from_secs(32)
    );
    assert_eq!(
        backoff(base, 0, Some(Duration::from_secs(9999))),
        Duration::from_secs(300)
    );
}

#[tokio::test]
async fn start_sends_the_headers_and_the_body_heroku_expects() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .and(header("Accept", "application/vnd.heroku+json; version=3"))
        .and(header("Authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("Content-Type", "application/json"))
        .and(body_partial_json(json!({
            "command": "worker --fast",
            "attach": false,
            "size": "Standard-2X",
            "time_to_live": 360,
            "env": {"line_D": r#"{"task_id":"t.1.0"}"#, "COLOR": "blue"},
        })))
        .respond_with(created("d-1", "run.1"))
        .expect(1)
        .mount(&server)
        .await;
    let runner = HerokuRunner::new(config(&server));
    let reference = runner
        .start(spec("t.1.0", 1), CancellationToken::new(), ignore_exit())
        .await
        .expect("started");
    assert_eq!(reference, "d-1");
    let sent = server.received_requests().await.expect("recording");
    let body: Value = sent[0].body_json().expect("JSON body");
    let env = body["env"].as_object().expect("env object");
    assert_eq!(env.len(), 2, "line_D and the one option: {env:?}");
    assert_eq!(runner.calls(), 1);
}

#[tokio::test]
async fn an_env_name_heroku_refuses_fails_the_start_naming_it() {
    let server = MockServer::start().await;
    let runner = HerokuRunner::new(config(&server));
    let mut bad = spec("t.1.0", 1);
    bad.options.push(("BAD-NAME".to_owned(), "x".to_owned()));
    let err = runner
        .start(bad, CancellationToken::new(), ignore_exit())
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, StartError::Failed(m) if m.contains("`BAD-NAME`")),
        "{err:?}"
    );
    assert_eq!(runner.calls(), 0, "nothing was sent");
}

#[tokio::test]
async fn a_429_is_retried_after_the_wait() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .respond_with(
            ResponseTemplate::new(429)
                .set_body_json(json!({"id": "rate_limit", "message": "Your account reached the API rate limit"}))
                .insert_header("RateLimit-Remaining", "0"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .respond_with(created("d-1", "run.1"))
        .mount(&server)
        .await;
    let runner = HerokuRunner::new(config(&server).retry_base(Duration::from_millis(80)));
    let began = tokio::time::Instant::now();
    let reference = runner
        .start(spec("t.1.0", 1), CancellationToken::new(), ignore_exit())
        .await
        .expect("started after the retry");
    assert_eq!(reference, "d-1");
    assert_eq!(requests(&server, "POST", DYNOS).await, 2);
    assert_eq!(runner.calls(), 2);
    assert!(
        began.elapsed() >= Duration::from_millis(80),
        "the backoff was waited"
    );
}

#[tokio::test]
async fn an_exhausted_rate_limit_holds_the_next_request_back() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .respond_with(created("d-1", "run.1").insert_header("RateLimit-Remaining", "0"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{DYNOS}/d-1/actions/stop")))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    let runner = HerokuRunner::new(config(&server).retry_base(Duration::from_millis(80)));
    let reference = runner
        .start(spec("t.1.0", 1), CancellationToken::new(), ignore_exit())
        .await
        .expect("started");
    let began = tokio::time::Instant::now();
    runner.stop(&reference).await;
    assert!(
        began.elapsed() >= Duration::from_millis(70),
        "the stop waited its turn"
    );
    assert_eq!(runner.calls(), 2);
}

#[tokio::test]
async fn a_5xx_is_retried_and_retries_end() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .respond_with(
            ResponseTemplate::new(503)
                .set_body_json(json!({"id": "unavailable", "message": "down"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .respond_with(created("d-1", "run.1"))
        .mount(&server)
        .await;
    let runner = HerokuRunner::new(config(&server));
    runner
        .start(spec("t.1.0", 1), CancellationToken::new(), ignore_exit())
        .await
        .expect("started after the retry");
    assert_eq!(requests(&server, "POST", DYNOS).await, 2);

    // Always 429: the first try and three retries, then the error says why.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .respond_with(ResponseTemplate::new(429).set_body_json(
            json!({"id": "rate_limit", "message": "Your account reached the API rate limit"}),
        ))
        .mount(&server)
        .await;
    let runner = HerokuRunner::new(config(&server));
    let err = runner
        .start(spec("t.1.0", 1), CancellationToken::new(), ignore_exit())
        .await
        .expect_err("gave up");
    assert_eq!(requests(&server, "POST", DYNOS).await, 4);
    assert!(
        matches!(&err, StartError::Failed(m) if m.contains("429 (rate_limit)")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_401_fails_at_once_and_no_message_holds_the_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(DYNOS))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"id": "unauthorized", "message": "Invalid credentials provided."}),
        ))
        .mount(&server)
        .await;
    let runner = HerokuRunner::new(config(&server));
    let err = runner
        .start(spec("t.1.0", 1), CancellationToken::new(), ignore_exit())
        .await
        .expect_err("refused");
    let StartError::Failed(message) = err else {
        panic!("not a failure: {err:?}");
    };
    assert_eq!(
        message,
        "Heroku answered 401 (unauthorized) to POST /apps/demo/dynos: Invalid credentials provided."
    );
    assert_eq!(requests(&server, "POST", DYNOS).await, 1, "not retried");
    assert!(!format!("{runner:?}").contains(TOKEN));
    assert!(!format!("{:?}", config(&server)).contains(TOKEN));
}

#[tokio::test]
async fn stop_posts_the_stop_action_and_a_gone_dyno_is_fine() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("{DYNOS}/d-1/actions/stop")))
        .and(header("Authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(202).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{DYNOS}/d-2/actions/stop")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"id": "not_found"})))
        .expect(1)
        .mount(&server)
        .await;
    let runner = HerokuRunner::new(config(&server));
    runner.stop("d-1").await;
    runner.stop_stale("d-2", "t.1.0").await;
    // Not a dyno reference: nothing is sent.
    runner.stop("../../account").await;
    assert_eq!(runner.calls(), 2);
}
