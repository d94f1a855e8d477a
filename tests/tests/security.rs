//! Security end to end: requests that are not signed by the store's credentials change
//! nothing, keys cannot reach outside the data dir, options cannot override the engine's
//! variables, the servers stay on loopback unless told otherwise, and no secret reaches a
//! log, `line_D`, a status document, the dashboard or an error message.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use linedee::Workflow;
use linedee::credentials::{Credentials, StaticProvider};
use linedee::status::RunState;
use linedee_tests::{LinedeeLocal, TestEngine};

const WAIT: Duration = Duration::from_secs(60);

/// The store's credentials as the engine hands them to tasks.
struct Keys {
    access: String,
    secret: String,
    token: String,
    bucket: String,
}

fn keys(t: &TestEngine) -> Keys {
    let env: HashMap<String, String> = t.engine.app_env(&t.endpoint).into_iter().collect();
    Keys {
        access: env["LD_AWS_ACCESS_KEY_ID"].clone(),
        secret: env["LD_AWS_SECRET_ACCESS_KEY"].clone(),
        token: env["LD_AWS_SESSION_TOKEN"].clone(),
        bucket: env["LD_S3_BUCKET"].clone(),
    }
}

/// A SigV4-signed S3 request, as the AWS SDKs send it (payload hash in `x-amz-content-sha256`).
fn signed(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    (access, secret, token): (&str, &str, Option<&str>),
    time: SystemTime,
) -> http::Request<Vec<u8>> {
    let mut req = http::Request::builder().method(method).uri(url);
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .expect("host");
    req = req.header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(body.to_vec()).expect("request");
    let identity = aws_credential_types::Credentials::new(
        access,
        secret,
        token.map(str::to_owned),
        None,
        "test",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(time)
        .settings(settings)
        .build()
        .expect("signing params")
        .into();
    let header_pairs: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().expect("ascii").to_owned()))
        .collect();
    let signable = SignableRequest::new(
        method,
        url,
        header_pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body),
    )
    .expect("signable");
    let (instructions, _) = sign(signable, &params).expect("signs").into_parts();
    instructions.apply_to_request_http1x(&mut req);
    req
}

/// Sends `req`; the status and the body.
async fn send(req: http::Request<Vec<u8>>) -> (u16, String) {
    let req = reqwest::Request::try_from(req).expect("reqwest request");
    let resp = reqwest::Client::new().execute(req).await.expect("sent");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test]
async fn unsigned_and_forged_requests_are_refused_and_change_nothing() {
    let t = TestEngine::start("").await;
    let k = keys(&t);
    let wf = r#"{"run":[{"cmd":"true","no_output":true}]}"#;
    let url = |key: &str| format!("{}/{}/{key}", t.endpoint, k.bucket);
    let good = (k.access.as_str(), k.secret.as_str(), Some(k.token.as_str()));
    let trigger = [("x-amz-meta-ld_run", "true")];
    let now = SystemTime::now();

    // The control: the same request, correctly signed, is accepted.
    let (code, body) = send(signed(
        "PUT",
        &url("in/signed"),
        &trigger,
        wf.as_bytes(),
        good,
        now,
    ))
    .await;
    assert_eq!(code, 200, "{body}");

    let mut refused: Vec<(&str, http::Request<Vec<u8>>, &str)> = Vec::new();
    // No signature at all.
    let unsigned = http::Request::builder()
        .method("PUT")
        .uri(url("in/unsigned"))
        .header("x-amz-meta-ld_run", "true")
        .body(wf.as_bytes().to_vec())
        .expect("request");
    refused.push(("unsigned", unsigned, "in/unsigned"));
    // Signed with the right key id and a wrong secret.
    let forged = (k.access.as_str(), "not-the-secret", Some(k.token.as_str()));
    let req = signed(
        "PUT",
        &url("in/forged"),
        &trigger,
        wf.as_bytes(),
        forged,
        now,
    );
    refused.push(("wrong secret", req, "in/forged"));
    // A key id the store never issued.
    let unknown = ("AKIDNOTISSUED", k.secret.as_str(), Some(k.token.as_str()));
    let req = signed(
        "PUT",
        &url("in/unknown"),
        &trigger,
        wf.as_bytes(),
        unknown,
        now,
    );
    refused.push(("unknown key id", req, "in/unknown"));
    // The right keys without the session token, or with another one.
    let req = signed(
        "PUT",
        &url("in/no-token"),
        &trigger,
        wf.as_bytes(),
        (&k.access, &k.secret, None),
        now,
    );
    refused.push(("no session token", req, "in/no-token"));
    let req = signed(
        "PUT",
        &url("in/other-token"),
        &trigger,
        wf.as_bytes(),
        (&k.access, &k.secret, Some("another-token")),
        now,
    );
    refused.push(("wrong session token", req, "in/other-token"));
    // Correctly signed, then the body is replaced in transit.
    let mut req = signed(
        "PUT",
        &url("in/tampered-body"),
        &trigger,
        wf.as_bytes(),
        good,
        now,
    );
    *req.body_mut() = br#"{"run":[{"cmd":"rm -rf ~","no_output":true}]}"#.to_vec();
    refused.push(("tampered body", req, "in/tampered-body"));
    // Correctly signed, then a signed header is changed in transit.
    let mut req = signed(
        "PUT",
        &url("in/tampered-header"),
        &[("x-amz-meta-ld_run", "false")],
        wf.as_bytes(),
        good,
        now,
    );
    req.headers_mut()
        .insert("x-amz-meta-ld_run", http::HeaderValue::from_static("true"));
    refused.push(("tampered signed header", req, "in/tampered-header"));
    // Correctly signed an hour ago: a replay.
    let req = signed(
        "PUT",
        &url("in/replayed"),
        &trigger,
        wf.as_bytes(),
        good,
        now - Duration::from_secs(3600),
    );
    refused.push(("signed an hour ago", req, "in/replayed"));
    // Correctly signed for another key, sent to this one.
    let mut req = signed(
        "PUT",
        &url("in/elsewhere"),
        &trigger,
        wf.as_bytes(),
        good,
        now,
    );
    *req.uri_mut() = url("in/redirected").parse().expect("uri");
    refused.push(("signed for another key", req, "in/redirected"));

    for (what, req, key) in refused {
        let (code, body) = send(req).await;
        assert!(
            code == 403 || code == 400,
            "{what}: expected a refusal, got {code}: {body}"
        );
        assert!(
            body.contains("<Code>"),
            "{what}: an S3 error document: {body}"
        );
        assert!(
            matches!(
                t.client.head(key).await,
                Err(linedee::Error::NotFound { .. })
            ),
            "{what}: {key} was written"
        );
    }
    // A GET without a signature reads nothing.
    let resp = reqwest::get(url("in/signed")).await.expect("sent");
    assert_eq!(resp.status().as_u16(), 403);
    assert!(!resp.text().await.unwrap_or_default().contains("no_output"));

    // Only the signed trigger started a run.
    let deadline = tokio::time::Instant::now() + WAIT;
    let runs = loop {
        let (runs, _) = t.engine.runs(None, None, 100).await.expect("runs");
        if !runs.is_empty() && runs.iter().all(|r| r.finished_ms.is_some()) {
            break runs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].trigger_key, "in/signed");
}

#[tokio::test]
async fn the_config_vars_endpoint_needs_the_api_token() {
    let t = TestEngine::start("").await;
    let k = keys(&t);
    let url = format!("{}/apps/linedee-local/config-vars", t.endpoint);
    let http = reqwest::Client::new();
    // The dashboard's token is a secret of its own: it does not unlock the credentials.
    let dashboard = format!("Bearer {}", t.engine.store().dashboard_token());
    for auth in [
        None,
        Some("Bearer not-the-token".to_owned()),
        Some(dashboard),
    ] {
        let mut req = http.get(&url);
        if let Some(a) = &auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.expect("sent");
        assert!(
            matches!(resp.status().as_u16(), 401 | 403),
            "{auth:?}: {}",
            resp.status()
        );
        let body = resp.text().await.unwrap_or_default();
        assert!(
            !body.contains(&k.secret) && !body.contains(&k.token),
            "{body}"
        );
    }
    let resp = http
        .get(&url)
        .header(
            "authorization",
            format!("Bearer {}", t.engine.store().api_token()),
        )
        .header("accept", "application/vnd.heroku+json; version=3")
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    let vars: HashMap<String, String> = resp.json().await.expect("json");
    assert_eq!(vars["LD_AWS_SECRET_ACCESS_KEY"], k.secret);
}

/// Every file under `dir` (recursively), relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("under dir").to_owned());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn keys_cannot_escape_the_data_dir() {
    let t = TestEngine::start("").await;
    let root = t.app_dir.parent().expect("temp root").to_owned();
    let data = root.join("data");
    // Everything outside the data dir, before.
    let outside = |root: &Path| -> Vec<PathBuf> {
        files(root)
            .into_iter()
            .filter(|p| !p.starts_with("data"))
            .collect()
    };
    let before = outside(&root);
    let hostile = [
        "../escape",
        "../../escape",
        "../../../../../../tmp/linedee-escape",
        "/etc/linedee-escape",
        "a/../../../escape",
        "./../escape",
        "..",
        "%2e%2e/escape",
        "..\\..\\escape",
        "data/../../escape",
        "ld/../../escape",
        "in/\u{0}/escape",
    ];
    for (i, key) in hostile.iter().enumerate() {
        let body = format!("body {i}");
        t.client
            .put(*key, body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key:?}: {e}"));
        let got = t.client.get(key).await.expect("get").bytes().await.unwrap();
        assert_eq!(got, body.as_bytes(), "{key:?} reads back what was written");
    }
    assert_eq!(
        outside(&root),
        before,
        "a file appeared outside the data dir"
    );
    assert!(!Path::new("/tmp/linedee-escape").exists());
    assert!(!Path::new("/etc/linedee-escape").exists());
    // Inside the data dir, bodies live under id-named files: no key became a path.
    for f in files(&data) {
        let s = f.to_string_lossy();
        assert!(!s.contains("escape"), "a key became a path: {s}");
    }

    // Exported, they are skipped (and said so), never written outside the target dir.
    let export_root = tempfile::tempdir().expect("tempdir");
    let target = export_root.path().join("export");
    let report = t.client.export(&target).send().await.expect("export");
    let exported = files(export_root.path());
    for f in &exported {
        assert!(f.starts_with("export"), "export wrote {}", f.display());
    }
    assert!(
        report.skipped.len() >= 8,
        "hostile keys are reported as skipped: {report:?}"
    );
}

#[tokio::test]
async fn an_option_or_dotenv_cannot_override_the_engine_variables() {
    // The app's own `.env` tries to set the engine's variables: the engine's values win.
    let app = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        app.path().join("Procfile"),
        "show: bash -c 'echo \"dyno=$DYNO bucket=$LD_S3_BUCKET secret_is_fake=$([ \"$LD_AWS_SECRET_ACCESS_KEY\" = fake ] && echo yes || echo no) line_d_is_fake=$([ \"$line_D\" = fake ] && echo yes || echo no) mine=$mine\"'\n",
    )
    .expect("Procfile");
    std::fs::write(
        app.path().join(".env"),
        "LD_AWS_SECRET_ACCESS_KEY=fake\nLD_S3_BUCKET=fake\nDYNO=fake\nline_D=fake\nmine=from-dotenv\n",
    )
    .expect(".env");
    let t = TestEngine::start_with("", |b| b.app_dir(app.path())).await;
    let wf = Workflow::new().step(linedee::Task::new("show"));
    let run = t.client.submit("in/show", &wf).await.expect("submit");
    let status = run.wait(WAIT).await.expect("finishes");
    // `show` writes no output: it fails for that, but its log says what it saw.
    let task = status.tasks().next().expect("a task").task_id.clone();
    let key = linedee::status::log_key(&task, 1);
    let log = t
        .client
        .get(&key)
        .await
        .expect("log")
        .bytes()
        .await
        .expect("log");
    let log = String::from_utf8_lossy(&log);
    assert!(log.contains("dyno=run."), "{log}");
    assert!(
        log.contains(&format!("bucket={}", t.engine.bucket())),
        "{log}"
    );
    assert!(log.contains("secret_is_fake=no"), "{log}");
    assert!(log.contains("line_d_is_fake=no"), "{log}");
    assert!(
        log.contains("mine=from-dotenv"),
        "`.env` still sets the app's own: {log}"
    );

    // Options naming reserved variables are refused, each with its path.
    let body = r#"{"run":[{"cmd":"true","no_output":true,"options":["line_D={}","DYNO=web.1","PORT=80","LD_AWS_SECRET_ACCESS_KEY=x","LD_S3_BUCKET=other","ok=1"]}]}"#;
    t.client
        .put("in/reserved", body)
        .metadata("ld_run", "true")
        .metadata("ld_run_id", "reserved-1")
        .send()
        .await
        .expect("put");
    let status = wait_run(&t, "reserved-1").await;
    assert_eq!(status.status, RunState::Failed);
    let error = status.error.expect("a reason");
    for (i, name) in [
        "line_D",
        "DYNO",
        "PORT",
        "LD_AWS_SECRET_ACCESS_KEY",
        "LD_S3_BUCKET",
    ]
    .iter()
    .enumerate()
    {
        assert!(
            error.contains(&format!(
                "run[0].options[{i}]: option name `{name}` is reserved"
            )),
            "{error}"
        );
    }
    assert!(!error.contains("options[5]"), "{error}");
}

async fn wait_run(t: &TestEngine, run_id: &str) -> linedee::RunStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(s) = t.client.run(run_id).await
            && s.status.is_finished()
        {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "{run_id} not done");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_servers_bind_loopback_unless_told_otherwise_and_then_warn() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let app = tmp.path().join("app");
    std::fs::create_dir_all(&app).expect("app");

    let mut local = LinedeeLocal::start(&tmp.path().join("a"), &app, &["--quiet"]);
    assert!(
        local.endpoint().starts_with("http://127.0.0.1:"),
        "{}",
        local.endpoint()
    );
    assert!(local.dashboard_url().starts_with("http://127.0.0.1:"));
    assert_eq!(local.stop(), 0);
    assert!(
        !local.stderr().contains("warning"),
        "no warning on loopback: {}",
        local.stderr()
    );

    let mut exposed = LinedeeLocal::start(
        &tmp.path().join("b"),
        &app,
        &["--quiet", "--bind", "0.0.0.0"],
    );
    assert!(exposed.endpoint().starts_with("http://0.0.0.0:"));
    // It serves (on every interface, loopback included).
    let port = exposed
        .endpoint()
        .rsplit(':')
        .next()
        .expect("port")
        .to_owned();
    let client = {
        let mut env = exposed.env.clone();
        env.insert("LD_S3_ENDPOINT".into(), format!("http://127.0.0.1:{port}"));
        client_from(&env)
    };
    client.check().await.expect("reachable");
    assert_eq!(exposed.stop(), 0);
    let stderr = exposed.stderr();
    assert!(
        stderr.contains("warning: --bind 0.0.0.0 exposes the S3 endpoint and the dashboard"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the store listens on a non-loopback address"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the dashboard listens on a non-loopback address"),
        "{stderr}"
    );
}

fn client_from(env: &HashMap<String, String>) -> linedee::Client {
    linedee::Client::builder()
        .bucket(&env["LD_S3_BUCKET"])
        .endpoint(&env["LD_S3_ENDPOINT"])
        .credentials_provider(StaticProvider::new(Credentials::new(
            env["LD_AWS_ACCESS_KEY_ID"].clone(),
            env["LD_AWS_SECRET_ACCESS_KEY"].clone(),
            env.get("LD_AWS_SESSION_TOKEN").cloned(),
            None,
        )))
        .build()
        .expect("client")
}
