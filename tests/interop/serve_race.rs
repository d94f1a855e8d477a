//! Replicas racing: three `Serve` replicas share one queue (moto's SQS) and one bucket (the
//! embedded store, whose conditional writes check and write in one transaction, as S3 does;
//! moto's do not). Every trigger event is delivered several times, in shuffled order, among
//! S3 test events and events for objects that do not exist. Exactly one run per trigger; every
//! run succeeds; no task runs twice.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use linedee::credentials::{Credentials, StaticProvider};
use linedee::{Client, RunState, Task, TaskGroup, Workflow};
use linedee_engine::serve::Serve;
use linedee_engine::store::{Store, StoreOptions};
use linedee_engine::{Console, RetryPolicy};
use linedee_tests::example_tasks;
use tokio_util::sync::CancellationToken;

use super::support::{DEADLINE, Moto, eventually};

const BUCKET: &str = "ld-race";
const REPLICAS: usize = 3;
const TRIGGERS: usize = 12;

fn record(key: &str, etag: &str, sequencer: &str) -> String {
    serde_json::json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-12-02T00:00:00.000Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "ld",
            "bucket": {"name": BUCKET, "arn": format!("arn:aws:s3:::{BUCKET}")},
            "object": {"key": key.replace(' ', "+"), "size": 1, "eTag": etag, "sequencer": sequencer}}
    }]})
    .to_string()
}

/// A tiny deterministic shuffle (xorshift), so a failure replays.
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_replicas_start_each_run_once_and_each_task_once() {
    let moto = Moto::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(
        dir.path().join("store"),
        StoreOptions {
            fsync: false,
            default_bucket: Some(BUCKET.to_owned()),
            ..StoreOptions::default()
        },
    )
    .expect("store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let stop_store = CancellationToken::new();
    {
        let (store, stop) = (store.clone(), stop_store.clone());
        tokio::spawn(async move { store.serve(listener, stop.cancelled_owned()).await });
    }
    let c = store.credentials().expect("credentials");
    let client = Client::builder()
        .bucket(BUCKET)
        .endpoint(&endpoint)
        .credentials_provider(StaticProvider::new(Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            Some(c.session_token.clone()),
            None,
        )))
        .build()
        .expect("client");

    // The app: tasks record each execution, then run the example `get-data` task, which
    // writes its output to the store with the app's `.env` credentials (as config vars).
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).expect("app");
    let executions = dir.path().join("executions.log");
    std::fs::write(
        app.join("Procfile"),
        format!(
            "get-data: bash -c 'echo \"$line_D\" >> {log}; exec {bin} get-data'\n",
            log = executions.display(),
            bin = example_tasks().display()
        ),
    )
    .expect("Procfile");
    std::fs::write(
        app.join(".env"),
        format!(
            "LD_S3_BUCKET={BUCKET}\nLD_S3_ENDPOINT={endpoint}\nLD_REGION=us-east-1\nLD_AWS_ACCESS_KEY_ID={}\nLD_AWS_SECRET_ACCESS_KEY={}\nLD_AWS_SESSION_TOKEN={}\n",
            c.access_key_id, c.secret_access_key, c.session_token
        ),
    )
    .expect(".env");

    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .endpoint_url(&moto.endpoint)
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "AKIAMOTO", "secret", None, None, "test",
            ))
            .build(),
    );
    let queue_url = sqs
        .create_queue()
        .queue_name("ld-race")
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .force_path_style(true)
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                Some(c.session_token.clone()),
                None,
                "store",
            ))
            .build(),
    );

    let stop = CancellationToken::new();
    let mut replicas = Vec::new();
    for i in 0..REPLICAS {
        let serve = Serve::builder()
            .bucket(BUCKET)
            .queue_url(&queue_url)
            .clients(s3.clone(), sqs.clone())
            .check_notification(false)
            .app_dir(&app)
            .data_dir(dir.path().join(format!("replica-{i}")))
            .console(Console::quiet())
            .retry_policy(RetryPolicy {
                retries: 0,
                ..RetryPolicy::default()
            })
            .heartbeat(Duration::from_secs(1))
            .build()
            .await
            .expect("a replica starts");
        let stop = stop.clone();
        replicas.push(tokio::spawn(async move {
            serve.run(stop.cancelled_owned()).await
        }));
    }

    // Triggers: half name their run (`ld_run_id`, as the SDK's submit does), half leave the
    // engine to derive the id from the event.
    let wf = Workflow::new()
        .step(Task::new("get_data").option("endpoint", "posts"))
        .step(TaskGroup::new(
            ["users", "comments"].map(|e| Task::new("get_data").option("endpoint", e)),
        ));
    let mut bodies = Vec::new();
    let mut named = BTreeSet::new();
    for i in 0..TRIGGERS {
        let key = format!("in/race {i}");
        if i % 2 == 0 {
            let s = client.submit(&key, &wf).await.expect("submit");
            named.insert(s.run_id().to_owned());
        } else {
            client
                .put(&key, wf.to_json())
                .metadata("ld_run", "true")
                .send()
                .await
                .expect("put");
        }
        let head = client.head(&key).await.expect("head");
        let etag = head.etag.unwrap_or_default().trim_matches('"').to_owned();
        let rec = record(&key, &etag, &format!("{:016X}", i + 1));
        // Three copies of each event.
        bodies.extend([rec.clone(), rec.clone(), rec]);
    }
    let test_event = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-12-02T00:00:00.000Z","Bucket":"ld-race","RequestId":"R","HostId":"H"}"#;
    bodies.extend([test_event.to_owned(), test_event.to_owned()]);
    bodies.push(record("in/never written", "0", "01"));
    bodies.push(record("out/nope.0.0", "0", "01"));
    shuffle(&mut bodies, 0x5EED);
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(b)
                    .build()
                    .expect("entry")
            })
            .collect::<Vec<_>>();
        sqs.send_message_batch()
            .queue_url(&queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("send batch");
    }

    // Exactly one state object per trigger, and every run succeeds.
    let states = eventually("a state object per trigger", || async {
        let states = client.list("ld/engine/runs/").await.ok()?;
        (states.len() >= TRIGGERS).then_some(states)
    })
    .await;
    assert_eq!(states.len(), TRIGGERS, "{states:#?}");
    let run_ids: BTreeSet<String> = states
        .iter()
        .map(|o| {
            o.key
                .trim_start_matches("ld/engine/runs/")
                .trim_end_matches(".json")
                .to_owned()
        })
        .collect();
    assert!(named.is_subset(&run_ids), "{named:?} ⊄ {run_ids:?}");
    let mut runs = BTreeMap::new();
    for run_id in &run_ids {
        let run = eventually(&format!("run {run_id} finished"), || async {
            let s = client.run(run_id).await.ok()?;
            s.status.is_finished().then_some(s)
        })
        .await;
        assert_eq!(run.status, RunState::Succeeded, "{run:#?}");
        runs.insert(run_id.clone(), run);
    }
    let keys: BTreeSet<&str> = runs.values().map(|r| r.trigger.key.as_str()).collect();
    assert_eq!(keys.len(), TRIGGERS, "one run per trigger: {keys:?}");
    // Every task ran exactly once.
    let log = std::fs::read_to_string(&executions).expect("executions");
    let mut per_task: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("line_D");
        *per_task
            .entry(v["task_id"].as_str().expect("task_id").to_owned())
            .or_default() += 1;
    }
    let tasks: BTreeSet<String> = runs
        .values()
        .flat_map(|r| r.tasks().map(|t| t.task_id.clone()))
        .collect();
    assert_eq!(tasks.len(), TRIGGERS * 3);
    assert_eq!(per_task.keys().cloned().collect::<BTreeSet<_>>(), tasks);
    let twice: Vec<_> = per_task.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "tasks run more than once: {twice:?}");
    assert!(
        runs.values()
            .flat_map(|r| r.tasks())
            .all(|t| t.attempts == 1)
    );

    stop.cancel();
    for r in replicas {
        tokio::time::timeout(DEADLINE, r)
            .await
            .expect("a replica stops")
            .expect("join")
            .expect("a replica ends cleanly");
    }
    stop_store.cancel();
}
