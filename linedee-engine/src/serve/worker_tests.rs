//! The tick schedule: when a change sends a new tick, and when the live one stands.

use std::sync::Arc;
use std::time::Duration;

use linedee::status::{Trigger, TriggerKind};
use linedee::{Task, Workflow};

use super::*;
use crate::machine::{Machine, RunRecord};
use crate::serve::queue::Queue;
use crate::serve::s3::S3;
use crate::serve::state::{StateDoc, States, TickState};

const NOW: Millis = 1_800_000_000_000;

/// A worker whose clients point nowhere: `schedule` makes no request.
fn worker() -> Worker {
    worker_at(None)
}

/// A worker whose S3 client talks to `endpoint` (the queue's points nowhere).
fn worker_at(endpoint: Option<&str>) -> Worker {
    let mut s3 = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"));
    if let Some(endpoint) = endpoint {
        s3 = s3
            .endpoint_url(endpoint)
            .force_path_style(true)
            .credentials_provider(aws_credential_types::Credentials::new(
                "AKIDTEST", "secret", None, None, "test",
            ));
    }
    let s3 = aws_sdk_s3::Client::from_conf(s3.build());
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .build(),
    );
    let s3 = S3::new(s3);
    Worker::new(
        Machine::default(),
        States::new(s3.clone(), "b".into(), "ld/engine/".into()),
        s3,
        Queue::new(sqs, "http://nowhere".into()),
        Arc::new(NoRunner),
        Pace {
            heartbeat: Duration::from_secs(60),
            start_grace: Duration::from_secs(300),
            lost_tick: Duration::from_secs(90),
        },
    )
}

struct NoRunner;

#[async_trait::async_trait]
impl crate::runner::Runner for NoRunner {
    async fn start(
        &self,
        _: crate::runner::AttemptSpec,
        _: tokio_util::sync::CancellationToken,
        _: crate::runner::OnExit,
    ) -> std::result::Result<String, crate::runner::StartError> {
        Err(crate::runner::StartError::Cancelled)
    }
    async fn stop(&self, _: &str) {}
    async fn stop_stale(&self, _: &str, _: &str) {}
    async fn log(&self, _: &str, _: u32) -> Option<crate::runner::LogBody> {
        None
    }
    async fn stop_all(&self) {}
}

fn created(w: &Worker, timeout: u64) -> (StateDoc, Vec<Effect>) {
    let wf = Workflow::new().step(Task::new("t").timeout(Duration::from_secs(timeout)));
    let trigger = Trigger {
        bucket: "b".into(),
        key: "in/x".into(),
        etag: None,
        kind: TriggerKind::LdRun,
    };
    let (record, effects): (RunRecord, _) = w.machine.create("R1", trigger, Ok(wf), false, NOW);
    let mut doc = StateDoc::new("m1", record);
    w.bookkeep(&mut doc, &effects, NOW);
    (doc, effects)
}

#[test]
fn a_new_run_gets_tick_1_due_at_its_first_deadline() {
    let w = worker();
    let (mut doc, _) = created(&w, 30);
    let before = doc.clone();
    let tick = w.schedule(&before, &mut doc, NOW).expect("a tick to send");
    assert_eq!(
        (tick.tick, tick.due_ms),
        (1, NOW + 60_000),
        "the heartbeat comes first"
    );
    assert_eq!(
        doc.tick,
        Some(TickState {
            id: 1,
            due_ms: NOW + 60_000,
            last: false
        })
    );
    assert_eq!(doc.starts.len(), 1, "the start asked for is kept: {doc:?}");
}

#[test]
fn the_live_tick_stands_unless_something_is_due_before_it() {
    let w = worker();
    let (mut doc, _) = created(&w, 30);
    let before = doc.clone();
    w.schedule(&before, &mut doc, NOW);
    // Started: a timeout at +30 s, before the tick at +60 s: a new tick is sent.
    let started = crate::machine::Event::AttemptStarted {
        task_id: "R1.0.0".into(),
        attempt: 1,
        runner: "p".into(),
    };
    let before = doc.clone();
    let effects = w
        .machine
        .handle(&mut doc.record, NOW + 1_000, started)
        .expect("applies");
    w.bookkeep(&mut doc, &effects, NOW + 1_000);
    assert_eq!(doc.timers.len(), 1, "{doc:?}");
    assert!(
        doc.starts.is_empty(),
        "a granted start is no longer owed: {doc:?}"
    );
    let tick = w
        .schedule(&before, &mut doc, NOW + 1_000)
        .expect("an earlier tick");
    assert_eq!((tick.tick, tick.due_ms), (2, NOW + 31_000));
    // Nothing new due: the live tick stands.
    let before = doc.clone();
    assert_eq!(w.schedule(&before, &mut doc, NOW + 2_000), None);
    assert_eq!(doc.tick.map(|t| t.id), Some(2));
}

#[test]
fn a_lost_tick_is_replaced_and_a_tick_chains_past_the_queues_longest_delay() {
    let w = worker();
    // A task with a 2 h timeout, its tick lost (due long ago).
    let (mut doc, _) = created(&w, 7_200);
    doc.tick = Some(TickState {
        id: 7,
        due_ms: NOW - 10 * 60_000,
        last: false,
    });
    doc.starts.clear();
    doc.timers.push(super::super::state::Armed {
        at: NOW + 7_200_000,
        timer: crate::machine::Timer::Timeout {
            task_id: "R1.0.0".into(),
            attempt: 1,
        },
    });
    let before = doc.clone();
    // Without the heartbeat the timer alone would be due in 2 h: the tick is at most a
    // heartbeat away, and its message waits at most 900 s in the queue.
    let tick = w.schedule(&before, &mut doc, NOW).expect("a new tick");
    assert_eq!((tick.tick, tick.due_ms), (8, NOW + 60_000));
    assert_eq!(
        delay_s(NOW + 7_200_000, NOW),
        900,
        "chained: sent on when it comes"
    );
    assert_eq!(delay_s(NOW + 1_500, NOW), 2);
    assert_eq!(delay_s(NOW - 5_000, NOW), 0);
}

#[test]
fn a_finished_run_marks_its_live_tick_last_and_a_redrive_starts_a_new_chain() {
    let w = worker();
    let (mut doc, _) = created(&w, 30);
    let before = doc.clone();
    w.schedule(&before, &mut doc, NOW);
    let before = doc.clone();
    let fx = w
        .machine
        .handle(
            &mut doc.record,
            NOW + 1,
            crate::machine::Event::CancelRequested,
        )
        .expect("cancel");
    w.bookkeep(&mut doc, &fx, NOW + 1);
    assert!(doc.record.status.is_finished());
    assert_eq!(
        w.schedule(&before, &mut doc, NOW + 1),
        None,
        "no new message"
    );
    assert_eq!(
        doc.tick,
        Some(TickState {
            id: 1,
            due_ms: NOW + 60_000,
            last: true
        })
    );
    let before = doc.clone();
    let fx = w
        .machine
        .handle(
            &mut doc.record,
            NOW + 2,
            crate::machine::Event::RedriveRequested,
        )
        .expect("redrive");
    w.bookkeep(&mut doc, &fx, NOW + 2);
    let tick = w.schedule(&before, &mut doc, NOW + 2).expect("a new chain");
    assert_eq!(tick.tick, 2);
    assert_eq!(doc.tick.map(|t| t.last), Some(false));
}

#[tokio::test]
async fn a_final_status_whose_process_has_not_exited_waits_for_the_exit_and_is_written_once() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let w = Arc::new(worker_at(Some(&server.uri())));
    let (mut doc, _) = created(&w, 30);
    let task_id = "R1.0.0".to_owned();
    for (at, event) in [
        (
            NOW + 1,
            crate::machine::Event::AttemptStarted {
                task_id: task_id.clone(),
                attempt: 1,
                runner: "p".into(),
            },
        ),
        (
            NOW + 2,
            crate::machine::Event::OutputLanded {
                task_id: task_id.clone(),
                state: None,
            },
        ),
    ] {
        w.machine
            .handle(&mut doc.record, at, event)
            .expect("applies");
    }
    // Its output decided the run; its process exits a moment later.
    assert!(doc.record.status.is_finished() && doc.record.has_live_processes());
    w.publish(&doc.record);
    // The writer runs up to its first wait (this runtime has one thread): the document waits
    // for the exit rather than being written.
    tokio::task::yield_now().await;
    assert!(
        lock(&w.publishing)
            .get("R1")
            .is_some_and(|pending| pending.is_some()),
        "the final status is written before its process has exited"
    );
    let exited = crate::machine::Event::Exited {
        task_id,
        attempt: 1,
        code: Some(0),
        detail: None,
    };
    w.machine
        .handle(&mut doc.record, NOW + 3, exited)
        .expect("applies");
    w.publish(&doc.record);
    w.tasks.close();
    w.tasks.wait().await;
    let puts: Vec<String> = server
        .received_requests()
        .await
        .expect("requests are recorded")
        .into_iter()
        .filter(|r| r.url.path().ends_with("/ld/runs/R1.json"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert!(
        puts[0].contains(r#""status":"succeeded""#) && puts[0].contains(r#""exit_code":0"#),
        "{}",
        puts[0]
    );
}
