//! The journal's tests: commits, syncs, projections, schema changes.

use super::rows::project;
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

fn wal_frames(c: &Connection, mode: &str) -> i64 {
    c.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(1))
        .expect("checkpoint")
}

/// The run's projected status and error, and whether it is marked unprojected.
fn projected(c: &Connection, run_id: &str) -> (String, Option<String>, bool) {
    c.query_row(
        "SELECT status, error, EXISTS (SELECT 1 FROM ld_unprojected u WHERE u.run_id = r.run_id)
         FROM ld_runs r WHERE run_id = ?1",
        [run_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .expect("row")
}

#[test]
fn a_save_writes_the_record_and_a_mark_and_its_projection_follows_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = open(&dir.path().join("j.sqlite"), false).expect("open");
    c.execute_batch(SCHEMA).expect("schema");
    let new = batch("r1").create.remove(0);
    let mut record = new.record.clone();
    let tx = c.transaction().expect("begin");
    assert!(insert(&tx, &new).expect("insert"));
    tx.commit().expect("commit");
    wal_frames(&c, "TRUNCATE");
    let saved = |c: &mut Connection, r: &RunRecord, marked: bool| {
        let tx = c.transaction().expect("begin");
        save(&tx, r, marked).expect("save");
        tx.commit().expect("commit");
    };

    // A projected column changes, but the save writes no index page: the run's table page and
    // the marks' page.
    record.error = Some("changed".to_owned());
    saved(&mut c, &record, false);
    assert_eq!(wal_frames(&c, "PASSIVE"), 2, "the record and the mark");
    wal_frames(&c, "TRUNCATE");
    let stored: String = c
        .query_row("SELECT record FROM ld_runs WHERE run_id = 'r1'", [], |r| {
            r.get(0)
        })
        .expect("record");
    assert_eq!(stored, record.to_json());
    assert_eq!(
        projected(&c, "r1"),
        (
            record.status.as_str().to_owned(),
            Some("x".to_owned()),
            true
        ),
        "the projection lags until projected"
    );
    // Saved again while marked: the table page alone.
    record.trigger.etag = Some("\"e\"".to_owned());
    saved(&mut c, &record, true);
    assert_eq!(wal_frames(&c, "PASSIVE"), 1, "one table page");

    let tx = c.transaction().expect("begin");
    project(&tx, [&record]).expect("project");
    tx.commit().expect("commit");
    assert_eq!(
        projected(&c, "r1"),
        (
            record.status.as_str().to_owned(),
            Some("changed".to_owned()),
            false
        )
    );
}

#[tokio::test]
async fn a_saved_record_is_projected_before_a_read_and_soon_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.sqlite");
    let j = SqliteJournal::open(&path, false).expect("open");
    let new = batch("r1").create.remove(0);
    let mut record = new.record.clone();
    j.commit(Batch {
        create: vec![new],
        save: Vec::new(),
    })
    .await
    .expect("create");
    let raw = Connection::open(&path).expect("open");

    record.error = Some("first".to_owned());
    j.commit(Batch {
        create: Vec::new(),
        save: vec![record.clone()],
    })
    .await
    .expect("save");
    let error: Option<String> = j
        .read(|c| {
            c.query_row("SELECT error FROM ld_runs WHERE run_id = 'r1'", [], |r| {
                r.get(0)
            })
        })
        .await
        .expect("read");
    assert_eq!(
        error.as_deref(),
        Some("first"),
        "a read sees every save before it"
    );
    assert!(!projected(&raw, "r1").2, "and the mark is gone");

    record.error = Some("second".to_owned());
    j.commit(Batch {
        create: Vec::new(),
        save: vec![record.clone()],
    })
    .await
    .expect("save");
    // Nobody reads: the projection comes by itself, within PROJECT_WITHIN.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while projected(&raw, "r1").1.as_deref() != Some("second") {
        assert!(tokio::time::Instant::now() < deadline, "never projected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!projected(&raw, "r1").2);
}

#[test]
fn opening_the_journal_projects_the_runs_a_crash_left_unprojected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("j.sqlite");
    let new = batch("r1").create.remove(0);
    let mut record = new.record.clone();
    {
        // Saved, then the process died before projecting.
        let mut c = open(&path, false).expect("open");
        c.execute_batch(SCHEMA).expect("schema");
        let tx = c.transaction().expect("begin");
        assert!(insert(&tx, &new).expect("insert"));
        record.error = Some("saved".to_owned());
        save(&tx, &record, false).expect("save");
        tx.commit().expect("commit");
        assert_eq!(projected(&c, "r1").1.as_deref(), Some("x"));
    }
    drop(SqliteJournal::open(&path, false).expect("open"));
    let c = Connection::open(&path).expect("open");
    assert_eq!(
        projected(&c, "r1"),
        (
            record.status.as_str().to_owned(),
            Some("saved".to_owned()),
            false
        )
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
        let j = j.clone();
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
fn a_projection_sets_only_the_columns_that_change_so_an_exit_rewrites_no_other_index() {
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
    // Frames a save of `event`'s outcome and its projection write together.
    let mut step = |record: &mut RunRecord, at: i64, event: Event| -> i64 {
        let _ = machine.handle(record, at, event);
        wal_frames(&c, "TRUNCATE");
        let tx = c.transaction().expect("begin");
        save(&tx, record, true).expect("save");
        project(&tx, [&*record]).expect("project");
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
