//! The publisher's tests: coalescing, settling, and what is recorded as published.

use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use linedee::status::{RunState, Trigger, TriggerKind};

use super::*;
use crate::error::{Error, Result};
use crate::journal::{Batch, NewRun, SqliteJournal};
use crate::machine::Machine;
use crate::runner::LogBody;

/// A bucket that keeps documents in memory, and refuses them while `fail` is set.
#[derive(Default)]
struct Documents {
    fail: AtomicBool,
    written: Mutex<Vec<(String, Vec<u8>)>>,
    /// How many documents had been written at each call of `durable`, in order.
    durable_after: Mutex<Vec<usize>>,
    /// `durable` fails while set.
    not_durable: AtomicBool,
    wrote: Notify,
}

impl Documents {
    /// The statuses written so far, in order, with their run ids.
    fn statuses(&self) -> Vec<(String, RunState)> {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written
            .iter()
            .map(|(_, body)| {
                let doc: linedee::RunStatus =
                    serde_json::from_slice(body).expect("a whole document");
                (doc.run_id, doc.status)
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Bucket for Documents {
    async fn output(&self, _: &str, _: &str) -> Result<Option<Option<String>>> {
        Ok(None)
    }
    async fn body(&self, _: &str, _: &str) -> Result<Option<Bytes>> {
        Ok(None)
    }
    async fn durable(&self) -> Result<()> {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner()).len();
        self.durable_after
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(written);
        if self.not_durable.load(Ordering::SeqCst) {
            return Err(Error::Internal("the bucket could not sync".to_owned()));
        }
        Ok(())
    }
    async fn put_json(&self, _: &str, key: &str, body: Vec<u8>) -> Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Internal("the bucket refused the write".to_owned()));
        }
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.push((key.to_owned(), body));
        self.wrote.notify_waiters();
        Ok(())
    }
    async fn put_log(&self, _: &str, _: &str, _: LogBody) -> Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_document_that_was_not_written_is_not_recorded_as_published() {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal =
        Arc::new(SqliteJournal::open(&dir.path().join("j.sqlite"), false).expect("journal"));
    let trigger = Trigger {
        bucket: "b".to_owned(),
        key: "in/x".to_owned(),
        etag: None,
        kind: TriggerKind::LdRun,
    };
    let (record, _) = Machine::default().create("R1", trigger, Err("invalid".to_owned()), false, 1);
    assert_eq!(record.status, RunState::Failed);
    let batch = Batch {
        create: vec![NewRun {
            record: record.clone(),
            dedup: "d1".to_owned(),
        }],
        save: Vec::new(),
    };
    journal.commit(batch).await.expect("commit");
    let bucket = Arc::new(Documents::default());
    let publisher = Arc::new(Publisher::new(bucket.clone(), journal.clone()));
    let stop = CancellationToken::new();
    let writer = tokio::spawn({
        let (publisher, stop) = (Arc::clone(&publisher), stop.clone());
        async move { publisher.run(stop).await }
    });
    let snapshot = |seq| Snapshot {
        seq,
        doc: record.status_document(),
        processes_running: false,
        succeeded_by_outputs: false,
    };

    bucket.fail.store(true, Ordering::SeqCst);
    publisher.publish_now(snapshot(1)).await;
    assert_eq!(journal.unpublished().await.expect("unpublished"), ["R1"]);

    // Written but not known durable: not recorded either, so a restart writes it again.
    bucket.fail.store(false, Ordering::SeqCst);
    bucket.not_durable.store(true, Ordering::SeqCst);
    publisher.publish_now(snapshot(2)).await;
    assert_eq!(journal.unpublished().await.expect("unpublished"), ["R1"]);

    bucket.not_durable.store(false, Ordering::SeqCst);
    publisher.publish_now(snapshot(3)).await;
    assert!(journal.unpublished().await.expect("unpublished").is_empty());
    let written = bucket
        .written
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert_eq!(written.len(), 2);
    let (key, body) = &written[1];
    assert_eq!(key, "ld/runs/R1.json");
    let doc: linedee::RunStatus = serde_json::from_slice(body).expect("a whole document");
    assert_eq!((doc.run_id.as_str(), doc.status), ("R1", RunState::Failed));
    stop.cancel();
    writer.await.expect("the publisher stops");
}

/// A publisher over an in-memory bucket and a journal, its writing loop running.
struct Running {
    bucket: Arc<Documents>,
    journal: Arc<SqliteJournal>,
    publisher: Arc<Publisher>,
    stop: CancellationToken,
    writer: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

fn running() -> Running {
    running_on(false)
}

/// [`running`], with the journal's `fsync` as given (its file is `j.sqlite` in `dir`).
fn running_on(fsync: bool) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let journal =
        Arc::new(SqliteJournal::open(&dir.path().join("j.sqlite"), fsync).expect("journal"));
    let bucket = Arc::new(Documents::default());
    let publisher = Arc::new(Publisher::new(bucket.clone(), journal.clone()));
    let stop = CancellationToken::new();
    let writer = tokio::spawn({
        let (publisher, stop) = (Arc::clone(&publisher), stop.clone());
        async move { publisher.run(stop).await }
    });
    Running {
        bucket,
        journal,
        publisher,
        stop,
        writer,
        dir,
    }
}

/// Snapshot `seq` of run `run_id` showing `status`.
fn at(run_id: &str, seq: u64, status: RunState) -> Snapshot {
    let trigger = Trigger {
        bucket: "b".to_owned(),
        key: format!("in/{run_id}"),
        etag: None,
        kind: TriggerKind::LdRun,
    };
    let (record, _) = Machine::default().create(run_id, trigger, Err("x".to_owned()), false, 1);
    let mut doc = record.status_document();
    doc.status = status;
    Snapshot {
        seq,
        doc,
        processes_running: false,
        succeeded_by_outputs: false,
    }
}

/// [`at`], for a run with a process still running.
fn running_at(run_id: &str, seq: u64, status: RunState) -> Snapshot {
    Snapshot {
        processes_running: true,
        ..at(run_id, seq, status)
    }
}

#[tokio::test]
async fn a_run_that_finishes_within_the_settling_time_of_starting_gets_one_more_document() {
    let r = running();
    r.publisher.offer(at("R1", 2, RunState::Running));
    r.publisher.offer(at("R1", 3, RunState::Succeeded));
    // Stopping writes whatever is still pending, so an intermediate document left pending
    // would show up here too.
    r.stop.cancel();
    r.writer.await.expect("the publisher stops");
    assert_eq!(
        r.bucket.statuses(),
        [("R1".to_owned(), RunState::Succeeded)]
    );
}

#[tokio::test]
async fn an_unfinished_status_is_written_once_it_has_settled() {
    let r = running();
    let wrote = r.bucket.wrote.notified();
    let offered = tokio::time::Instant::now();
    r.publisher.offer(at("R1", 1, RunState::Running));
    wrote.await;
    assert!(
        offered.elapsed() >= SETTLE,
        "written after {:?}",
        offered.elapsed()
    );
    assert_eq!(r.bucket.statuses(), [("R1".to_owned(), RunState::Running)]);
    r.stop.cancel();
    r.writer.await.expect("the publisher stops");
}

#[tokio::test]
async fn publish_now_returns_once_the_newest_document_is_written() {
    let r = running();
    r.publisher.offer(at("R1", 1, RunState::Running));
    r.publisher.offer(at("R2", 2, RunState::Running));
    // The request's snapshot replaces the pending one and does not wait to settle.
    r.publisher
        .publish_now(at("R1", 3, RunState::Cancelled))
        .await;
    assert_eq!(
        r.bucket.statuses(),
        [("R1".to_owned(), RunState::Cancelled)]
    );
    r.stop.cancel();
    r.writer.await.expect("the publisher stops");
    // R2 was still settling: written at the stop, not lost.
    assert_eq!(
        r.bucket.statuses(),
        [
            ("R1".to_owned(), RunState::Cancelled),
            ("R2".to_owned(), RunState::Running)
        ]
    );
    // Only the final status waits to be durable, right after it is written.
    let durable = r
        .bucket
        .durable_after
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    assert_eq!(*durable, [1]);
}

#[tokio::test]
async fn a_document_ends_on_the_newest_snapshot_however_offers_and_requests_interleave() {
    let r = running();
    let mut requests = Vec::new();
    for seq in 1..=60u64 {
        let status = if seq == 60 {
            RunState::Succeeded
        } else {
            RunState::Running
        };
        if seq % 3 == 0 {
            requests.push(r.publisher.publish_now(at("R1", seq, status)));
        } else {
            r.publisher.offer(at("R1", seq, status));
        }
    }
    for written in requests {
        written.await;
    }
    r.stop.cancel();
    r.writer.await.expect("the publisher stops");
    let statuses = r.bucket.statuses();
    assert_eq!(
        statuses.last(),
        Some(&("R1".to_owned(), RunState::Succeeded))
    );
}

#[tokio::test]
async fn a_new_runs_queued_document_does_not_wait_to_settle() {
    let r = running();
    let wrote = r.bucket.wrote.notified();
    r.publisher.offer(at("R1", 1, RunState::Queued));
    r.publisher.offer(at("R2", 2, RunState::Running));
    wrote.await;
    // The first write is R1's, due at once; R2's settles.
    assert_eq!(r.bucket.statuses()[0], ("R1".to_owned(), RunState::Queued));
    r.stop.cancel();
    r.writer.await.expect("the publisher stops");
}

#[tokio::test]
async fn a_final_status_waits_for_its_processes_exit_and_is_written_once() {
    let r = running();
    // Decided by its output while its process still runs; the exit follows.
    r.publisher.offer(running_at("R1", 1, RunState::Succeeded));
    // R2's queued document is due at once: once it is written, the publisher has looked at
    // R1's pending document at least once, and left it to settle.
    let wrote = r.bucket.wrote.notified();
    r.publisher.offer(at("R2", 2, RunState::Queued));
    wrote.await;
    r.publisher.offer(at("R1", 3, RunState::Succeeded));
    r.stop.cancel();
    r.writer.await.expect("the publisher stops");
    assert_eq!(
        r.bucket.statuses(),
        [
            ("R2".to_owned(), RunState::Queued),
            ("R1".to_owned(), RunState::Succeeded)
        ]
    );
}

#[tokio::test]
async fn a_final_status_whose_process_does_not_exit_is_written_once_it_has_settled() {
    let r = running();
    let wrote = r.bucket.wrote.notified();
    let offered = tokio::time::Instant::now();
    r.publisher.offer(running_at("R1", 1, RunState::Succeeded));
    wrote.await;
    assert!(
        offered.elapsed() >= SETTLE,
        "written after {:?}",
        offered.elapsed()
    );
    assert_eq!(
        r.bucket.statuses(),
        [("R1".to_owned(), RunState::Succeeded)]
    );
    r.stop.cancel();
    r.writer.await.expect("the publisher stops");
}

/// How many times the journal at `path` was synced.
fn syncs(path: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(path).expect("open the journal");
    c.query_row("SELECT coalesce(max(n), 0) FROM ld_durable", [], |r| {
        r.get(0)
    })
    .expect("ld_durable")
}

#[tokio::test]
async fn a_run_that_succeeded_by_its_outputs_is_published_without_waiting_for_a_journal_sync() {
    let r = running_on(true);
    let path = r.dir.path().join("j.sqlite");
    // (run, status, proven by outputs alone, whether the journal must be synced first)
    let cases = [
        ("R1", RunState::Succeeded, true, false),
        ("R2", RunState::Succeeded, false, true),
        ("R3", RunState::Failed, false, true),
    ];
    for (seq, (run_id, status, by_outputs, synced)) in (1..).zip(cases) {
        // A commit the journal has not synced yet.
        let snapshot = at(run_id, seq, status);
        let (record, _) = Machine::default().create(
            run_id,
            snapshot.doc.trigger.clone(),
            Err("x".to_owned()),
            false,
            1,
        );
        let create = vec![NewRun {
            record,
            dedup: run_id.to_owned(),
        }];
        let batch = Batch {
            create,
            save: Vec::new(),
        };
        r.journal.commit(batch).await.expect("commit");
        let before = syncs(&path);
        r.publisher
            .publish_now(Snapshot {
                succeeded_by_outputs: by_outputs,
                ..snapshot
            })
            .await;
        assert_eq!(syncs(&path) > before, synced, "{run_id}");
        assert_eq!(
            r.bucket.statuses().last(),
            Some(&(run_id.to_owned(), status)),
            "{run_id} is written"
        );
    }
    r.stop.cancel();
    r.writer.await.expect("the publisher stops");
}

#[test]
fn the_due_snapshots_are_taken_in_due_order_past_the_runs_being_written() {
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut p = Pending::default();
    for (i, due) in [(1, 30), (2, 10), (3, 20), (4, 500)] {
        p.add(at(&format!("r{i}"), i, RunState::Queued), ms(due));
    }
    // A newer snapshot keeps the earlier due time; an earlier due time moves the run up.
    p.add(at("r3", 5, RunState::Running), ms(40));
    p.add(at("r4", 6, RunState::Running), ms(5));
    let busy: HashSet<String> = ["r4".to_owned()].into();

    let (ready, next) = p.take_due(ms(25), &busy, 8);
    let taken: Vec<(String, u64)> = ready
        .iter()
        .map(|s| (s.doc.run_id.clone(), s.seq))
        .collect();
    assert_eq!(taken, [("r2".to_owned(), 2), ("r3".to_owned(), 5)]);
    assert_eq!(next, Some(ms(30)), "r1's; r4 is being written");

    let (ready, next) = p.take_due(ms(100), &HashSet::new(), 0);
    assert!(ready.is_empty(), "no room");
    assert_eq!(next, Some(ms(5)));
    let (ready, next) = p.take_due(ms(100), &HashSet::new(), 1);
    assert_eq!(ready[0].doc.run_id, "r4");
    assert_eq!(next, Some(ms(30)));
    let (ready, next) = p.take_due(ms(100), &HashSet::new(), 8);
    assert_eq!(ready.len(), 1);
    assert_eq!((next, p.runs.len(), p.by_due.len()), (None, 0, 0));
}
