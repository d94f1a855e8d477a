//! The journal's tests: commits, syncs, projections, schema changes.

use super::*;
use crate::machine::Machine;
use std::time::Duration;

fn syncs(path: &Path) -> i64 {
    let c = Connection::open(path).expect("open");
    c.query_row("SELECT coalesce(max(n), 0) FROM ld_durable", [], |r| {
        r.get(0)
    })
    .expect("ld_durable")
}

fn batch(run_id: &str) -> Batch {
    let trigger = Trigger {
        bucket: "b".to_owned(),
        key: format!("in/{run_id}"),
        etag: None,
        kind: TriggerKind::LdRun,
    };
    let (record, _) = Machine::default().create(run_id, trigger, Err("x".to_owned()), false, 1);
    Batch {
        create: vec![NewRun {
            record,
            dedup: run_id.to_owned(),
        }],
        save: Vec::new(),
    }
}

#[test]
fn opening_a_journal_drops_the_indexes_no_query_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.sqlite");
    {
        // A journal made by an earlier version, with its three indexes.
        let c = open(&path, false).expect("open");
        c.execute_batch(SCHEMA).expect("schema");
        c.execute_batch(
            "CREATE INDEX ld_runs_finished ON ld_runs (finished_ms) WHERE finished_ms IS NOT NULL;
             CREATE INDEX ld_attempts_started ON ld_attempts (started_ms);
             CREATE INDEX ld_runs_created ON ld_runs (created_ms);",
        )
        .expect("old indexes");
    }
    drop(SqliteJournal::open(&path, false).expect("open"));
    let journal = SqliteJournal::open(&path, false).expect("and again");
    let indexes: Vec<String> = lock(&journal.reader)
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'ld_%'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("indexes");
    for gone in ["ld_runs_finished", "ld_attempts_started", "ld_runs_created"] {
        assert!(!indexes.iter().any(|i| i == gone), "{gone} in {indexes:?}");
    }
    assert!(indexes.iter().any(|i| i == "ld_runs_finished_status"));
}

#[test]
fn a_save_that_changes_no_projected_column_writes_the_record_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = open(&dir.path().join("j.sqlite"), false).expect("open");
    c.execute_batch(SCHEMA).expect("schema");
    let new = batch("r1").create.remove(0);
    let mut record = new.record.clone();
    let tx = c.transaction().expect("begin");
    assert!(insert(&tx, &new).expect("insert"));
    tx.commit().expect("commit");
    let wal_frames = |c: &Connection, mode: &str| -> i64 {
        c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(1))
            .expect("checkpoint")
    };
    wal_frames(&c, "TRUNCATE");
    let saved = |c: &mut Connection, r: &RunRecord| {
        let tx = c.transaction().expect("begin");
        save(&tx, r).expect("save");
        tx.commit().expect("commit");
    };
    let row = |c: &Connection| -> (String, String, Option<String>) {
        c.query_row(
            "SELECT record, status, error FROM ld_runs WHERE run_id = 'r1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("row")
    };

    // Only the record changes (no projected column holds the trigger's ETag).
    record.trigger.etag = Some("\"e\"".to_owned());
    saved(&mut c, &record);
    assert_eq!(
        wal_frames(&c, "PASSIVE"),
        1,
        "one table page, no index page"
    );
    assert_eq!(row(&c).0, record.to_json());

    // A projected column that changes is written, with its indexes.
    record.error = Some("changed".to_owned());
    saved(&mut c, &record);
    let (json, status, error) = row(&c);
    assert_eq!(json, record.to_json());
    assert_eq!(
        (status.as_str(), error.as_deref()),
        (record.status.as_str(), Some("changed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_while_the_writer_is_held_waits_for_it_on_the_pool() {
    let dir = tempfile::tempdir().expect("tempdir");
    let j = SqliteJournal::open(&dir.path().join("j.sqlite"), true).expect("open");
    // Another holder (as a sync through its fsync) keeps the writer until told.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let writer = Arc::clone(&j.writer);
    let holder = std::thread::spawn(move || {
        let _held = lock(&writer);
        held_tx.send(()).expect("tell");
        let _ = release_rx.recv();
    });
    held_rx.recv().expect("held");
    let commit = tokio::spawn({
        let j = SqliteJournal {
            writer: Arc::clone(&j.writer),
            reader: Arc::clone(&j.reader),
            durability: Arc::clone(&j.durability),
        };
        async move { j.commit(batch("r1")).await }
    });
    tokio::task::yield_now().await;
    assert!(!commit.is_finished(), "the commit waits for the writer");
    release_tx.send(()).expect("release");
    holder.join().expect("holder");
    assert_eq!(commit.await.expect("task").expect("commit"), vec![true]);
    assert!(j.load("r1").await.expect("load").is_some());
}

#[tokio::test]
async fn callers_waiting_together_share_one_sync_and_nothing_new_needs_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.sqlite");
    let j = SqliteJournal::open(&path, true).expect("journal");
    j.commit(batch("R1")).await.expect("commit");
    let waiting: Vec<_> = (0..10)
        .map(|_| {
            let j = j.clone();
            tokio::spawn(async move { j.sync().await })
        })
        .collect();
    for w in waiting {
        w.await.expect("task").expect("sync");
    }
    assert_eq!(syncs(&path), 1, "one FULL commit covers all ten callers");
    j.sync().await.expect("sync");
    assert_eq!(syncs(&path), 1, "no commit since: nothing to sync");
    j.commit(batch("R2")).await.expect("commit");
    j.sync().await.expect("sync");
    assert_eq!(syncs(&path), 2);
}

#[tokio::test]
async fn without_fsync_there_is_nothing_to_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.sqlite");
    let j = SqliteJournal::open(&path, false).expect("journal");
    j.commit(batch("R1")).await.expect("commit");
    j.sync().await.expect("sync");
    assert_eq!(syncs(&path), 0);
}

#[tokio::test]
async fn commits_are_not_synced_on_their_own_and_sync_restores_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.sqlite");
    let j = SqliteJournal::open(&path, true).expect("journal");
    j.commit(batch("R1")).await.expect("commit");
    j.sync().await.expect("sync");
    // 1 = NORMAL: commits are not fsynced one by one; the FULL of a sync does not stay.
    let mode: i64 = SqliteJournal::on(&j.writer, |c| {
        c.query_row("PRAGMA synchronous", [], |r| r.get(0))
    })
    .await
    .expect("pragma");
    assert_eq!(mode, 1);
}

#[tokio::test]
async fn sync_soon_rides_a_sync_made_for_something_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.sqlite");
    let j = SqliteJournal::open(&path, true).expect("journal");
    j.commit(batch("R1")).await.expect("commit");
    let soon = tokio::spawn({
        let j = j.clone();
        async move { j.sync_soon(Duration::from_secs(600)).await }
    });
    j.sync().await.expect("sync");
    tokio::time::timeout(Duration::from_secs(60), soon)
        .await
        .expect("answered by the other sync, long before its own wait ends")
        .expect("task")
        .expect("sync_soon");
    assert_eq!(syncs(&path), 1, "no sync of its own");
}

#[tokio::test]
async fn sync_soon_syncs_itself_when_no_other_sync_comes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.sqlite");
    let j = SqliteJournal::open(&path, true).expect("journal");
    j.sync_soon(Duration::from_millis(1))
        .await
        .expect("sync_soon");
    assert_eq!(syncs(&path), 0, "nothing committed: nothing to sync");
    j.commit(batch("R1")).await.expect("commit");
    j.sync_soon(Duration::from_millis(20))
        .await
        .expect("sync_soon");
    assert_eq!(syncs(&path), 1);
}

#[test]
fn a_save_sets_only_the_projected_columns_that_change_so_an_exit_rewrites_no_other_index() {
    use crate::machine::Event;
    use linedee::{Task, Workflow};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = open(&dir.path().join("j.sqlite"), false).expect("open");
    c.execute_batch(SCHEMA).expect("schema");
    let machine = Machine::default();
    let trigger = Trigger {
        bucket: "b".to_owned(),
        key: "in/r1".to_owned(),
        etag: None,
        kind: TriggerKind::LdRun,
    };
    let workflow = Workflow::new().step(Task::new("work"));
    let (mut record, _) = machine.create("r1", trigger, Ok(workflow), false, 1);
    let task_id = record.tasks[0].task_id.clone();
    let tx = c.transaction().expect("begin");
    assert!(
        insert(
            &tx,
            &NewRun {
                record: record.clone(),
                dedup: "r1".to_owned(),
            },
        )
        .expect("insert")
    );
    tx.commit().expect("commit");
    let wal_frames = |c: &Connection, mode: &str| -> i64 {
        c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(1))
            .expect("checkpoint")
    };
    // Frames one save of `event`'s outcome writes.
    let mut step = |record: &mut RunRecord, at: i64, event: Event| -> i64 {
        let _ = machine.handle(record, at, event);
        wal_frames(&c, "TRUNCATE");
        let tx = c.transaction().expect("begin");
        save(&tx, record).expect("save");
        tx.commit().expect("commit");
        wal_frames(&c, "PASSIVE")
    };
    step(
        &mut record,
        2,
        Event::AttemptStarted {
            task_id: task_id.clone(),
            attempt: 1,
            runner: "1".to_owned(),
        },
    );
    let landed = step(
        &mut record,
        3,
        Event::OutputLanded {
            task_id: task_id.clone(),
            state: None,
        },
    );
    // The process exits after its output decided the run: only `live` and the attempt's exit
    // code change.
    let exited = step(
        &mut record,
        4,
        Event::Exited {
            task_id: task_id.clone(),
            attempt: 1,
            code: Some(0),
            detail: None,
        },
    );
    assert_eq!(
        exited, 3,
        "the run's table page, its live index and the attempt's row (an exit landed first wrote {landed})"
    );

    let row: (String, Option<i64>, Option<i64>, bool, String) = c
        .query_row(
            "SELECT status, started_ms, finished_ms, live, record FROM ld_runs WHERE run_id = 'r1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .expect("run row");
    assert_eq!(
        row,
        (
            "succeeded".to_owned(),
            Some(2),
            record.finished_ms,
            false,
            record.to_json()
        )
    );
    let attempt: (i64, Option<i64>, Option<String>, Option<i32>) = c
        .query_row(
            "SELECT started_ms, finished_ms, outcome, exit_code FROM ld_attempts
             WHERE task_id = ?1 AND attempt = 1",
            [&task_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("attempt row");
    assert_eq!(attempt, (2, Some(3), Some("succeeded".to_owned()), Some(0)));
}
