//! The committer's tests: batching, answers, durability, deferred writes.

use super::*;
use crate::store::blobs::md5_hex;
use crate::store::body::Body;
use crate::store::{Store, StoreOptions};
use std::time::Duration;

/// A one-byte object (`x`) at `bkt/{key}`.
fn one_byte(key: String, body: Body) -> NewObject {
    NewObject {
        bucket: "bkt".into(),
        key,
        body,
        size: 1,
        etag: md5_hex(b"x"),
        content_type: None,
        metadata: Default::default(),
    }
}

#[test]
fn concurrent_writes_commit_independently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        StoreOptions {
            default_bucket: Some("bkt".into()),
            fsync: false,
            ..StoreOptions::default()
        },
    )
    .expect("open");
    let inner = &*store.inner;
    let results: Vec<Result<Committed>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                s.spawn(move || {
                    let blob = inner.blobs.write_all(b"x").expect("blob");
                    let (key, cond) = if i % 2 == 0 {
                        ("same".to_owned(), Precondition::IfNoneMatchAny)
                    } else {
                        (format!("k{i}"), Precondition::None)
                    };
                    inner.commit_grouped(one_byte(key, Body::File(blob)), cond, Commit::Synced)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect()
    });
    let created_same = results.iter().step_by(2).filter(|r| r.is_ok()).count();
    assert_eq!(
        created_same, 1,
        "If-None-Match: * lets exactly one writer create the key"
    );
    assert!(results.iter().skip(1).step_by(2).all(Result::is_ok));
    let live = index::live_blobs(&inner.db()).expect("live");
    assert_eq!(live.len(), 9);
    assert_eq!(
        inner.blobs.sweep(&live).expect("sweep"),
        0,
        "refused writes left no body file"
    );
}

#[test]
fn writers_queue_without_waiting_for_a_busy_index_and_are_all_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        StoreOptions {
            default_bucket: Some("bkt".into()),
            ..StoreOptions::default()
        },
    )
    .expect("open");
    let inner = &*store.inner;
    let obj = |key: String| one_byte(key, Body::Inline(bytes::Bytes::from_static(b"x")));
    let (answers, ack) = {
        // The index is busy (as during another batch's fsync): queuing does not wait.
        let _busy = inner.db();
        let writes = (0..8)
            .map(|i| {
                let obj = obj(format!("k{i}"));
                let cond = Precondition::None;
                inner.queue(Op::Write { obj, cond }, Commit::Synced)
            })
            .collect::<Vec<_>>();
        // An acknowledgement (of no pending trigger here) queues the same way.
        (writes, inner.queue(Op::Ack(vec![1]), Commit::Unsynced))
    };
    for (i, answer) in answers.into_iter().enumerate() {
        let Ok(Ok(Done::Written(committed))) = answer.blocking_recv() else {
            panic!("write {i} was not committed");
        };
        assert_eq!(committed.meta.key, format!("k{i}"));
    }
    assert!(matches!(ack.blocking_recv(), Ok(Ok(Done::Acked(0)))));
    let listed: i64 = inner
        .db()
        .query_row(
            "SELECT count(*) FROM objects WHERE bucket = 'bkt'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(listed, 8);
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynced_write_is_durable_with_the_next_synced_commit_or_one_of_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |fsync| {
        Store::open(
            dir.path().join(if fsync { "on" } else { "off" }),
            StoreOptions {
                default_bucket: Some("bkt".into()),
                fsync,
                ..StoreOptions::default()
            },
        )
        .expect("open")
    };
    let put = |store: &Store, key: &'static str, commit| {
        let store = store.clone();
        async move {
            store
                .put_object_with("bkt", key, "x".into(), None, Default::default(), commit)
                .await
                .expect("put")
        }
    };
    let own_syncs = |store: &Store| -> i64 {
        store
            .inner
            .db()
            .query_row("SELECT coalesce(max(n), 0) FROM ld_durable", [], |r| {
                r.get(0)
            })
            .expect("ld_durable")
    };
    let store = open(true);
    put(&store, "doc", Commit::Unsynced).await;
    let waiting = tokio::spawn({
        let store = store.clone();
        async move { store.durable_within(Duration::from_secs(600)).await }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished(), "not durable before a synced commit");
    // Another writer's synced commit covers it: no sync of its own.
    put(&store, "out", Commit::Synced).await;
    waiting.await.expect("task").expect("durable");
    assert_eq!(own_syncs(&store), 0);
    // None comes in time: one of its own.
    put(&store, "doc", Commit::Unsynced).await;
    store.durable_within(Duration::ZERO).await.expect("durable");
    assert_eq!(own_syncs(&store), 1);
    // Without fsync, a commit is as durable as it gets when answered.
    let store = open(false);
    put(&store, "doc", Commit::Unsynced).await;
    store.durable_within(Duration::ZERO).await.expect("durable");
    assert_eq!(own_syncs(&store), 0);
}

/// A queued change (`ld_durable`'s row, the simplest) to be committed as `commit`.
fn change(commit: Commit) -> Pending {
    let (reply, _) = oneshot::channel();
    Pending {
        op: Op::Sync,
        commit,
        reply,
    }
}

/// A queue whose deferred writes would wait an hour: a test that sees one taken saw something
/// other than the deadline take it.
fn patient() -> Arc<Queue> {
    Arc::new(Queue {
        defer_within: Duration::from_secs(3600),
        ..Queue::default()
    })
}

/// `queue.take()` on another thread, with how many changes it took; `None` after 10 s.
fn take_on_a_thread(queue: &Arc<Queue>) -> std::sync::mpsc::Receiver<Option<usize>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let queue = Arc::clone(queue);
    std::thread::spawn(move || {
        let _ = tx.send(queue.take().map(|batch| batch.len()));
    });
    rx
}

#[test]
fn a_deferred_write_goes_with_the_next_urgent_one() {
    let queue = patient();
    let taken = take_on_a_thread(&queue);
    assert!(queue.push(change(Commit::Deferred)).is_none());
    assert!(queue.push(change(Commit::Unsynced)).is_none());
    assert_eq!(
        taken.recv_timeout(Duration::from_secs(10)),
        Ok(Some(2)),
        "the urgent write woke the committer, and the deferred one went with it"
    );
    // Both were taken: the next batch starts empty, with no deadline left over.
    assert!(queue.push(change(Commit::Synced)).is_none());
    assert_eq!(
        take_on_a_thread(&queue).recv_timeout(Duration::from_secs(10)),
        Ok(Some(1))
    );
}

#[test]
fn a_deferred_write_alone_is_taken_once_it_has_waited() {
    let queue = Arc::new(Queue::default());
    let queued = std::time::Instant::now();
    assert!(queue.push(change(Commit::Deferred)).is_none());
    let batch = queue.take().expect("a batch");
    assert_eq!(batch.len(), 1);
    assert!(
        queued.elapsed() >= DEFER_WITHIN,
        "taken after {:?}",
        queued.elapsed()
    );
}

#[test]
fn closing_takes_deferred_writes_at_once() {
    let queue = patient();
    let taken = take_on_a_thread(&queue);
    assert!(queue.push(change(Commit::Deferred)).is_none());
    queue.close();
    assert_eq!(taken.recv_timeout(Duration::from_secs(10)), Ok(Some(1)));
    assert!(queue.take().is_none(), "closed and drained");
}
