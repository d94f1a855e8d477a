//! The fake Heroku Platform API (`linedee_tests::fake_heroku`): its dynos are real processes,
//! listed, stopped, expired and logged as Heroku's are, and none outlives the fake.

use std::time::Duration;

use linedee_tests::fake_heroku::{DynoInfo, FakeConfig, FakeHeroku};
use nix::sys::signal::killpg;
use nix::unistd::Pid;
use serde_json::{Value, json};

const TOKEN: &str = "fake-token";
const ACCEPT: &str = "application/vnd.heroku+json; version=3";
/// Generous: what should take milliseconds.
const DEADLINE: Duration = Duration::from_secs(20);

const PROCFILE: &str = "\
echoer: echo \"line_D=$line_D\" && echo \"color=$COLOR dyno=$DYNO cfg=$CFG args:\"
sleeper: sleep 600
";

/// A fake for app `demo` whose app directory holds [`PROCFILE`], and its temporary directory.
async fn fake() -> (FakeHeroku, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("Procfile"), PROCFILE).expect("Procfile");
    let mut config = FakeConfig::new("demo", TOKEN, dir.path());
    config.env = vec![("CFG".to_owned(), "from-config".to_owned())];
    (FakeHeroku::start(config).await, dir)
}

/// A request with the token and the `Accept` header.
fn api(fake: &FakeHeroku, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{}{path}", fake.url()))
        .header("Accept", ACCEPT)
        .bearer_auth(TOKEN)
}

async fn create(fake: &FakeHeroku, body: Value) -> Value {
    let resp = api(fake, reqwest::Method::POST, "/apps/demo/dynos")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 201);
    resp.json().await.expect("a dyno object")
}

async fn list(fake: &FakeHeroku) -> Vec<Value> {
    let resp = api(fake, reqwest::Method::GET, "/apps/demo/dynos")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("a list")
}

fn dyno<'a>(dynos: &'a [DynoInfo], id: &str) -> Option<&'a DynoInfo> {
    dynos.iter().find(|d| d.id == id)
}

/// Whether a process of group `pgid` is left.
fn group_alive(pgid: i32) -> bool {
    killpg(Pid::from_raw(pgid), None).is_ok()
}

/// Waits (bounded) until no process of group `pgid` is left; whether none is.
async fn group_gone(pgid: i32) -> bool {
    let end = tokio::time::Instant::now() + DEADLINE;
    while group_alive(pgid) && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !group_alive(pgid)
}

#[tokio::test]
async fn a_procfile_type_runs_with_line_d_and_the_options_then_its_log_is_served() {
    let (fake, _dir) = fake().await;
    let created = create(
        &fake,
        json!({
            "command": "echoer one two",
            "attach": false,
            "size": "Standard-2X",
            "time_to_live": 60,
            "env": {"line_D": r#"{"task_id":"t.1.0"}"#, "COLOR": "blue"},
        }),
    )
    .await;
    assert_eq!(created["state"], "starting");
    assert_eq!(created["name"], "run.1");
    assert_eq!(created["type"], "run");
    assert_eq!(created["size"], "Standard-2X");
    assert_eq!(created["command"], "echoer one two");
    assert_eq!(created["app"]["name"], "demo");
    assert!(created["attach_url"].is_null());
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(id.len(), 36, "UUID-shaped: {id}");

    assert!(
        fake.wait_until(DEADLINE, |d| dyno(d, &id).is_some_and(|d| !d.listed()))
            .await,
        "the dyno ended"
    );
    let info = fake.dynos().remove(0);
    assert_eq!((info.state.as_str(), info.exit_code), ("complete", Some(0)));
    assert_eq!(info.env["COLOR"], "blue");
    assert!(
        list(&fake).await.is_empty(),
        "a one-off that exited 0 is gone"
    );
    let gone = api(
        &fake,
        reqwest::Method::GET,
        &format!("/apps/demo/dynos/{id}"),
    )
    .send()
    .await
    .expect("sent");
    assert_eq!(gone.status(), 404);

    let session: Value = api(&fake, reqwest::Method::POST, "/apps/demo/log-sessions")
        .json(&json!({"dyno": "run.1", "lines": 1500, "source": "app", "tail": false}))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("a log session");
    let url = session["logplex_url"].as_str().expect("a URL");
    assert!(
        url.starts_with(&format!("{}/logplex/run.1", fake.url())),
        "{url}"
    );
    // No token on a log session's URL.
    let log = reqwest::get(url)
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].ends_with(r#" app[run.1]: line_D={"task_id":"t.1.0"}"#),
        "{log}"
    );
    assert!(
        lines[1].ends_with(" app[run.1]: color=blue dyno=run.1 cfg=from-config args: one two"),
        "{log}"
    );
    assert!(
        lines[0].starts_with("20") && lines[0].contains("+00:00 app[run.1]"),
        "{log}"
    );
    let counts = fake.requests();
    assert_eq!(counts.to("POST /apps/{app}/dynos"), 1);
    assert_eq!(counts.to("GET /logplex/{dyno}"), 1);
}

#[tokio::test]
async fn requests_without_the_token_the_accept_header_or_for_another_app_are_refused() {
    let (fake, _dir) = fake().await;
    let url = format!("{}/apps/demo/dynos", fake.url());
    let http = reqwest::Client::new();
    let no_token = http
        .get(&url)
        .header("Accept", ACCEPT)
        .send()
        .await
        .expect("sent");
    assert_eq!(no_token.status(), 401);
    assert!(no_token.headers().contains_key("ratelimit-remaining"));
    let body: Value = no_token.json().await.expect("JSON");
    assert_eq!(body["id"], "unauthorized");
    let wrong = http
        .get(&url)
        .header("Accept", ACCEPT)
        .bearer_auth("not-the-token")
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), 401);
    let no_accept = http
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(no_accept.status(), 406);
    let other = api(&fake, reqwest::Method::GET, "/apps/other/dynos")
        .send()
        .await
        .expect("sent");
    assert_eq!(other.status(), 404);
    let body: Value = other.json().await.expect("JSON");
    assert_eq!(body["id"], "not_found");
    // A body Heroku's schema refuses.
    let bad = api(&fake, reqwest::Method::POST, "/apps/demo/dynos")
        .json(&json!({"command": "echo", "env": {"BAD-KEY": "x"}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(bad.status(), 422);
    let bad = api(&fake, reqwest::Method::POST, "/apps/demo/dynos")
        .json(&json!({"env": {}}))
        .send()
        .await
        .expect("sent");
    assert_eq!(bad.status(), 422);
    assert!(fake.dynos().is_empty());
    assert_eq!(fake.requests().total, 6);
}

#[tokio::test]
async fn stop_kills_a_sleeping_dyno_and_it_is_gone() {
    let (fake, _dir) = fake().await;
    let created = create(&fake, json!({"command": "sleeper"})).await;
    let id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(fake.running(), 1);
    let listed = list(&fake).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "up");
    let pgid = fake.dynos()[0].pgid.expect("a process group");
    assert!(group_alive(pgid));

    let stop = api(
        &fake,
        reqwest::Method::POST,
        &format!("/apps/demo/dynos/{id}/actions/stop"),
    )
    .send()
    .await
    .expect("sent");
    assert!(stop.status().is_success());
    assert_eq!(stop.json::<Value>().await.expect("JSON"), json!({}));
    assert!(
        fake.wait_until(DEADLINE, |d| dyno(d, &id)
            .is_some_and(|d| d.state == "down"))
            .await,
        "the dyno is down"
    );
    assert!(list(&fake).await.is_empty());
    assert_eq!(fake.running(), 0);
    assert!(group_gone(pgid).await, "no process of the dyno is left");
    let again = api(
        &fake,
        reqwest::Method::POST,
        "/apps/demo/dynos/run.1/actions/stop",
    )
    .send()
    .await
    .expect("sent");
    assert_eq!(again.status(), 404, "a gone dyno is not found");
}

#[tokio::test]
async fn time_to_live_kills_the_dyno() {
    let (fake, _dir) = fake().await;
    let created = create(&fake, json!({"command": "sleep 600", "time_to_live": 1})).await;
    let id = created["id"].as_str().expect("an id").to_owned();
    let pgid = fake.dynos()[0].pgid.expect("a process group");
    assert!(
        fake.wait_until(DEADLINE, |d| dyno(d, &id).is_some_and(|d| !d.listed()))
            .await,
        "the dyno expired"
    );
    assert_eq!(fake.dynos()[0].state, "down");
    assert!(group_gone(pgid).await);
}

#[tokio::test]
async fn a_dyno_that_exits_non_zero_stays_listed_as_crashed() {
    let (fake, _dir) = fake().await;
    let created = create(&fake, json!({"command": "echo oops >&2; exit 3"})).await;
    let id = created["id"].as_str().expect("an id").to_owned();
    assert!(
        fake.wait_until(DEADLINE, |d| dyno(d, &id)
            .is_some_and(|d| d.state == "crashed"))
            .await
    );
    assert_eq!(fake.dynos()[0].exit_code, Some(3));
    let listed = list(&fake).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "crashed");
    let one: Value = api(&fake, reqwest::Method::GET, "/apps/demo/dynos/run.1")
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("JSON");
    assert_eq!(one["id"], id.as_str());
}

#[tokio::test]
async fn injected_429s_answer_as_heroku_with_the_rate_limit_headers() {
    let (fake, _dir) = fake().await;
    let first = api(&fake, reqwest::Method::GET, "/apps/demo/dynos")
        .send()
        .await
        .expect("sent");
    assert_eq!(first.headers()["ratelimit-remaining"], "4499");
    fake.fail_next(2, 429);
    for _ in 0..2 {
        let resp = api(&fake, reqwest::Method::GET, "/apps/demo/dynos")
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 429);
        assert_eq!(resp.headers()["ratelimit-remaining"], "0");
        let body: Value = resp.json().await.expect("JSON");
        assert_eq!(
            body,
            json!({"id": "rate_limit", "message": "Your account reached the API rate limit"})
        );
    }
    fake.fail_next(1, 503);
    let resp = api(&fake, reqwest::Method::GET, "/apps/demo/dynos")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 503);
    let ok = api(&fake, reqwest::Method::GET, "/apps/demo/dynos")
        .send()
        .await
        .expect("sent");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["ratelimit-remaining"], "4495");
    assert_eq!(fake.requests().to("GET /apps/{app}/dynos"), 5);
}

#[tokio::test]
async fn a_spent_budget_answers_429() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = FakeConfig::new("demo", TOKEN, dir.path());
    config.budget = 1;
    let fake = FakeHeroku::start(config).await;
    let first = api(&fake, reqwest::Method::GET, "/apps/demo/dynos")
        .send()
        .await
        .expect("sent");
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["ratelimit-remaining"], "0");
    let second = api(&fake, reqwest::Method::GET, "/apps/demo/dynos")
        .send()
        .await
        .expect("sent");
    assert_eq!(second.status(), 429);
}

#[tokio::test]
async fn dropping_the_fake_leaves_no_process() {
    let (fake, _dir) = fake().await;
    create(&fake, json!({"command": "sleeper"})).await;
    // A dyno whose shell has children of its own.
    create(&fake, json!({"command": "sleep 600 & sleep 600 & wait"})).await;
    assert_eq!(fake.running(), 2);
    let pgids: Vec<i32> = fake.dynos().iter().filter_map(|d| d.pgid).collect();
    assert_eq!(pgids.len(), 2);
    assert!(pgids.iter().all(|p| group_alive(*p)));
    drop(fake);
    for pgid in pgids {
        assert!(group_gone(pgid).await, "group {pgid} outlived the fake");
    }
}
