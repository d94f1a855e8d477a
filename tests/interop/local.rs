//! The product document's Python examples and the AWS CLI against a real `linedee local`,
//! changed only by `endpoint_url` and path-style addressing.

use std::collections::HashMap;

use linedee::status::{RunState, TaskState, TriggerKind, log_key};
use linedee::{Client, Task, Workflow};
use linedee_tests::LinedeeLocal;
use serde_json::{Value, json};

use super::support::{
    DEADLINE, aws_env, files_under, finished_run_for, objects_of, py_dir, run_ok, settled,
    venv_bin, venv_cmd,
};

/// A `linedee local` whose app runs the Python `get_json` task and the example `process_image`,
/// in a temporary directory with a scratch folder for the scripts.
struct Setup {
    local: LinedeeLocal,
    client: Client,
    dir: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let (data, app) = (dir.path().join("data"), dir.path().join("app"));
        std::fs::create_dir_all(&app).expect("app dir");
        std::fs::create_dir_all(dir.path().join("work")).expect("work dir");
        // `_` in a cmd also finds the `-` process type (protocol §9).
        let procfile = format!(
            "get-json: {} {}\nprocess-image: {} process-image\n",
            venv_bin("python").display(),
            py_dir().join("get_json.py").display(),
            linedee_tests::example_tasks().display(),
        );
        std::fs::write(app.join("Procfile"), procfile).expect("Procfile");
        let local = LinedeeLocal::start(&data, &app, &["--quiet"]);
        let client = local.client();
        Setup { local, client, dir }
    }

    /// The scripts' working directory.
    fn work(&self) -> std::path::PathBuf {
        self.dir.path().join("work")
    }

    /// `python <py>/<script>` with exactly the env file's `LD_*` variables, as an app would.
    fn python(&self, script: &str) {
        let ld: HashMap<String, String> = self
            .local
            .env
            .iter()
            .filter(|(k, _)| k.starts_with("LD_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        run_ok(venv_cmd("python", &self.work(), &ld).arg(py_dir().join(script)));
    }

    /// `aws ARGS --endpoint-url <endpoint>` with the env file's credentials.
    fn aws(&self, args: &[&str]) -> String {
        let out = run_ok(
            venv_cmd("aws", &self.work(), &aws_env(&self.local.env))
                .args(args)
                .args(["--endpoint-url", self.local.endpoint()]),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn bucket(&self) -> &str {
        &self.local.env["LD_S3_BUCKET"]
    }
}

#[track_caller]
fn assert_succeeded(run: &linedee::RunStatus, steps: usize) {
    assert_eq!(run.status, RunState::Succeeded, "{run:#?}");
    assert_eq!(run.steps.len(), steps, "{run:#?}");
    for task in run.tasks() {
        assert_eq!(task.status, TaskState::Succeeded, "{run:#?}");
    }
}

async fn log_of(client: &Client, task_id: &str, attempt: u32) -> String {
    let log = client.get(&log_key(task_id, attempt)).await.expect("log");
    String::from_utf8_lossy(&log.bytes().await.expect("log body")).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn quickstart_starter_workflow_runs_both_steps() {
    let s = Setup::start();
    s.python("starter_workflow.py");
    let run = finished_run_for(&s.client, "in/example").await;
    assert_succeeded(&run, 2);
    assert_eq!(run.title.as_deref(), Some("Example 2-step workflow"));
    assert_eq!(run.trigger.kind, TriggerKind::LdRun);
    let run = settled(&s.client, &run.run_id).await;
    for (i, task) in run.tasks().enumerate() {
        let log = log_of(&s.client, &task.task_id, task.attempts).await;
        assert!(log.contains(&format!("Do Step {}", i + 1)), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn media_upload_with_ld_code_runs_process_image_and_its_state_is_visible() {
    let s = Setup::start();
    s.python("process_media.py");
    let run = finished_run_for(&s.client, "in/img/example_img.jpg").await;
    assert_succeeded(&run, 1);
    assert_eq!(run.title.as_deref(), Some("Process media files"));
    assert_eq!(run.trigger.kind, TriggerKind::LdCode);
    let task = run.tasks().next().expect("one task");
    assert_eq!(task.cmd, "process_image");
    // The document's example uploads an empty file.
    assert_eq!(task.state, Some(json!({ "bytes": 0 })), "{run:#?}");
    let out = s.client.task_output(&task.task_id).await.expect("output");
    assert_eq!(out.state, Some(json!({ "bytes": 0 })));
    let summary: Value = serde_json::from_slice(&out.bytes().await.expect("body")).expect("JSON");
    assert_eq!(summary["input"], "in/img/example_img.jpg");
    assert_eq!(summary["format"], "empty");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_get_json_task_writes_its_output_and_state_through_boto3() {
    let s = Setup::start();
    let wf = Workflow::new()
        .title("Fetch posts")
        .step(Task::new("get_json"));
    let submission = s.client.submit("in/posts", &wf).await.expect("submit");
    let run = submission.wait(DEADLINE).await.expect("the run finishes");
    assert_succeeded(&run, 1);
    let task = run.tasks().next().expect("one task");
    let records: Value =
        serde_json::from_slice(&std::fs::read(py_dir().join("posts.json")).expect("posts.json"))
            .expect("posts.json is JSON");
    let count = records.as_array().expect("an array").len();
    let state = task
        .state
        .as_ref()
        .expect("the state in the status document");
    assert_eq!(state["num_records"], count, "{state}");
    assert_eq!(state["resp_status_code"], 200, "{state}");
    let out = s.client.task_output(&task.task_id).await.expect("output");
    assert_eq!(out.state.as_ref(), Some(state));
    let body: Value = serde_json::from_slice(&out.bytes().await.expect("body")).expect("JSON");
    assert_eq!(body, records);
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_cli_put_object_with_ld_run_metadata_triggers_a_run() {
    let s = Setup::start();
    let wf = json!({"title": "From the AWS CLI",
                    "run": [{"cmd": "echo from-the-cli", "no_output": true}]});
    let path = s.work().join("wf.json");
    std::fs::write(&path, wf.to_string()).expect("wf.json");
    s.aws(&[
        "s3api",
        "put-object",
        "--bucket",
        s.bucket(),
        "--key",
        "in/cli",
        "--body",
        "wf.json",
        "--metadata",
        "ld_run=true",
    ]);
    let run = finished_run_for(&s.client, "in/cli").await;
    assert_succeeded(&run, 1);
    assert_eq!(run.title.as_deref(), Some("From the AWS CLI"));
    assert_eq!(run.trigger.kind, TriggerKind::LdRun);
    let run = settled(&s.client, &run.run_id).await;
    let task = run.tasks().next().expect("one task");
    assert!(
        log_of(&s.client, &task.task_id, task.attempts)
            .await
            .contains("from-the-cli")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_s3_sync_exports_the_bucket_with_its_ld_history_byte_identical() {
    let s = Setup::start();
    // Some history: a finished run with output, state, a status document and logs.
    let wf = Workflow::new()
        .title("Fetch posts")
        .step(Task::new("get_json"))
        .step(Task::new("echo second step").no_output());
    let submission = s.client.submit("in/posts", &wf).await.expect("submit");
    let run = submission.wait(DEADLINE).await.expect("the run finishes");
    assert_succeeded(&run, 2);
    let run = settled(&s.client, &run.run_id).await;
    s.client
        .put("etl/users.json", r#"[{"id":1}]"#)
        .send()
        .await
        .expect("put");

    // What the SDK reads before and after the sync must agree, so both saw the same bucket
    // (the engine may still rewrite a status document, e.g. with an exit code).
    let export = s.dir.path().join("s3_export");
    let start = std::time::Instant::now();
    let synced = loop {
        let before = objects_of(&s.client).await;
        s.aws(&[
            "s3",
            "sync",
            &format!("s3://{}", s.bucket()),
            export.to_str().expect("UTF-8 path"),
        ]);
        let after = objects_of(&s.client).await;
        if before == after {
            let synced = files_under(&export);
            let keys: Vec<_> = synced.keys().collect();
            assert_eq!(keys, after.keys().collect::<Vec<_>>());
            assert!(synced == after, "the synced bytes differ from the SDK's");
            break synced;
        }
        assert!(start.elapsed() < DEADLINE, "the bucket never held still");
        std::fs::remove_dir_all(&export).expect("clear the export");
    };
    let keys: Vec<_> = synced.keys().collect();
    let status = linedee::status::status_key(&run.run_id);
    assert!(synced.contains_key(&status), "{keys:?}");
    for task in run.tasks() {
        assert!(
            synced.contains_key(&log_key(&task.task_id, task.attempts)),
            "{keys:?}"
        );
    }
    assert!(synced.contains_key("in/posts") && synced.contains_key("etl/users.json"));
    assert!(synced.contains_key(&format!("out/{}.0.0", run.run_id)));

    // The SDK's own export writes the same tree.
    let exported = s.dir.path().join("sdk_export");
    let report = s.client.export(&exported).send().await.expect("export");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(report.objects, synced.len());
    assert_eq!(files_under(&exported), synced);
}
