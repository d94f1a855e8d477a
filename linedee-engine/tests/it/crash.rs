//! Crash safety: a child process serves the store while clients write objects and
//! triggers; it is killed with SIGKILL partway; after a restart every acknowledged object
//! reads back with its bytes and metadata, every acknowledged trigger is recorded exactly
//! once, no partial object is visible and no orphan body file is left. Several rounds on
//! one data directory. Bodies are of every kind: inline in the index (up to
//! `INLINE_BODY_MAX`, the limit itself included), in body files (one byte more, and up) and
//! in the parts' files of a multipart upload.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_s3::primitives::ByteStream;
use linedee_engine::store::{Credentials, INLINE_BODY_MAX, Store, StoreOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;

const ROUNDS: usize = 3;
const WRITERS: usize = 4;
const BUCKET: &str = "crash";

fn body_for(key: &str, size: usize) -> Vec<u8> {
    let seed = key
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    (0..size)
        .map(|i| (seed.wrapping_add(i as u32).wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// The size a writer uses for its i-th object: mostly small (inline), some at either side of
/// the inline limit, some large enough to be spilled to disk in several writes (so a kill can
/// land in the middle of a body).
fn size_for(i: usize) -> usize {
    match i % 7 {
        0 => 6 * 1024 * 1024 + 17,
        1 => 256 * 1024,
        4 => INLINE_BODY_MAX + 1,
        5 => INLINE_BODY_MAX,
        _ => 1000 + i,
    }
}

/// Whether the i-th object of a writer goes up as a multipart upload (of two parts).
fn multipart(i: usize) -> bool {
    i.is_multiple_of(14)
}

/// The body files an object of `size` bytes written as the i-th of its writer has.
fn files_for(i: usize, size: usize) -> usize {
    if multipart(i) {
        2
    } else {
        usize::from(size > INLINE_BODY_MAX)
    }
}

/// The index of the write that made `key` (the `{i}` of `.../{i}-{size}`).
fn index_in(key: &str) -> usize {
    key.rsplit('/')
        .next()
        .and_then(|s| s.split('-').next())
        .and_then(|s| s.parse().ok())
        .expect("index in key")
}

/// The body size a key was written with (its last `-` field).
fn size_in(key: &str) -> usize {
    key.rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("size in key")
}

#[derive(Debug, Clone)]
struct Acked {
    key: String,
    size: usize,
    trigger: bool,
}

struct Child {
    process: tokio::process::Child,
    endpoint: String,
    creds: Credentials,
}

async fn spawn_store(dir: &Path, fsync: bool) -> Child {
    let mut process = tokio::process::Command::new(env!("CARGO_BIN_EXE_linedee-store"))
        .arg(dir)
        .args(["--bucket", BUCKET])
        .args((!fsync).then_some("--no-fsync"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn linedee-store");
    let stdout = process.stdout.take().expect("stdout");
    let line = BufReader::new(stdout)
        .lines()
        .next_line()
        .await
        .expect("read")
        .expect("a line");
    let mut words = line.split(' ');
    assert_eq!(words.next(), Some("listening"), "{line}");
    let endpoint = words.next().expect("endpoint").to_owned();
    let creds_path = words.next().expect("credentials path");
    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(creds_path).expect("credentials file"))
            .expect("json");
    let c = file["credentials"]
        .as_array()
        .and_then(|a| a.last())
        .expect("a credential");
    let field = |k: &str| c[k].as_str().expect(k).to_owned();
    let creds = Credentials {
        access_key_id: field("access_key_id"),
        secret_access_key: field("secret_access_key"),
        session_token: field("session_token"),
        expires_at: None,
    };
    Child {
        process,
        endpoint,
        creds,
    }
}

async fn writer(
    client: aws_sdk_s3::Client,
    round: usize,
    w: usize,
    acked: Arc<Mutex<Vec<Acked>>>,
    count: Arc<AtomicUsize>,
    progress: Arc<Notify>,
) {
    for i in 0.. {
        let size = size_for(i);
        let key = format!("r{round}/w{w}/{i}-{size}");
        let trigger = i.is_multiple_of(3);
        let mut metadata = HashMap::from([("n".to_owned(), i.to_string())]);
        if trigger {
            metadata.insert("ld_run".into(), "true".into());
            metadata.insert("ld_run_id".into(), format!("r{round}-w{w}-{i}"));
        }
        let body = body_for(&key, size);
        let sent = if multipart(i) {
            let parts: Vec<&[u8]> = body.chunks(5 * 1024 * 1024).collect();
            common::try_multipart(&client, BUCKET, &key, &parts, metadata)
                .await
                .map(drop)
        } else {
            client
                .put_object()
                .bucket(BUCKET)
                .key(&key)
                .body(ByteStream::from(body))
                .set_metadata(Some(metadata))
                .send()
                .await
                .map(drop)
                .map_err(|e| format!("{e:?}"))
        };
        if sent.is_err() {
            return; // the server is gone
        }
        acked
            .lock()
            .expect("lock")
            .push(Acked { key, size, trigger });
        count.fetch_add(1, Ordering::SeqCst);
        progress.notify_one();
    }
}

async fn verify(dir: &Path, acked: &[Acked]) {
    let store = Store::open(dir, StoreOptions::default()).expect("reopen after SIGKILL");
    assert_eq!(
        std::fs::read_dir(dir.join("tmp")).expect("tmp").count(),
        0,
        "temporary files are swept"
    );

    for a in acked {
        let (meta, body) = store
            .get_object(BUCKET, &a.key)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("acknowledged {} is lost", a.key));
        assert!(
            body.as_ref() == body_for(&a.key, a.size).as_slice(),
            "{} reads back its bytes",
            a.key
        );
        let n = a
            .key
            .rsplit('/')
            .next()
            .and_then(|s| s.split('-').next())
            .expect("n");
        assert_eq!(
            meta.metadata.get("n").map(String::as_str),
            Some(n),
            "{} metadata",
            a.key
        );
        assert_eq!(meta.metadata.contains_key("ld_run"), a.trigger);
    }

    // Every object in the index, acknowledged or caught in flight, is whole.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn({
        let store = store.clone();
        async move { store.serve(listener, std::future::pending()).await }
    });
    let c = common::client(&endpoint, &store.credentials().expect("creds"));
    let keys: Vec<String> = c
        .list_objects_v2()
        .bucket(BUCKET)
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("list")
        .iter()
        .flat_map(|p| {
            p.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
        })
        .collect();
    for key in &keys {
        let size = size_in(key);
        let (_, body) = store
            .get_object(BUCKET, key)
            .await
            .expect("get")
            .expect("listed");
        assert!(
            body.as_ref() == body_for(key, size).as_slice(),
            "{key} is whole"
        );
    }
    // Uploads the kill interrupted keep their parts' files, until completed or aborted.
    let mut open_parts = 0;
    let uploads = c
        .list_multipart_uploads()
        .bucket(BUCKET)
        .send()
        .await
        .expect("list uploads");
    for u in uploads.uploads() {
        let parts = c
            .list_parts()
            .bucket(BUCKET)
            .key(u.key().expect("key"))
            .upload_id(u.upload_id().expect("id"))
            .send()
            .await
            .expect("list parts");
        open_parts += parts.parts().len();
    }
    server.abort();

    // Body files: one per object too large to be inline, one per part of a multipart
    // object and of an open upload, no orphans.
    // (`tmp/` was found empty above, so these are all in `blobs/`.)
    let blob_files = common::body_files(dir);
    let in_files = keys.iter().filter(|k| size_in(k) > INLINE_BODY_MAX).count();
    assert!(
        in_files > 0 && in_files < keys.len(),
        "both kinds are written"
    );
    assert!(
        keys.iter().any(|k| multipart(index_in(k))),
        "multipart uploads are completed"
    );
    let expected: usize = keys
        .iter()
        .map(|k| files_for(index_in(k), size_in(k)))
        .sum();
    assert_eq!(
        blob_files,
        expected + open_parts,
        "a body file per object not inline (per part for a multipart one), no orphan"
    );

    // Triggers: each acknowledged one exactly once, and every recorded one is a committed object.
    let pending = store.pending_triggers().await.expect("pending");
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    for t in &pending {
        *per_key.entry(t.key.as_str()).or_default() += 1;
        let meta = store
            .head_object(BUCKET, &t.key)
            .await
            .expect("head")
            .expect("trigger's object exists");
        assert_eq!(meta.etag, t.etag);
    }
    for a in acked.iter().filter(|a| a.trigger) {
        assert_eq!(
            per_key.get(a.key.as_str()),
            Some(&1),
            "trigger {} recorded exactly once",
            a.key
        );
    }
    assert!(per_key.values().all(|n| *n == 1));
    let triggers_in_index = keys.iter().filter(|k| index_in(k).is_multiple_of(3));
    assert_eq!(
        triggers_in_index.count(),
        pending.len(),
        "a trigger row for every trigger object, no more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acknowledged() {
    sigkill_rounds(true).await;
}

/// Without fsync a power loss may lose writes, a process crash still none: what a commit
/// wrote is in the page cache, which outlives the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_nothing_acknowledged_without_fsync() {
    sigkill_rounds(false).await;
}

async fn sigkill_rounds(fsync: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all_acked: Vec<Acked> = Vec::new();
    let mut meta_seen: BTreeMap<usize, usize> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut child = spawn_store(dir.path(), fsync).await;
        let client = common::client(&child.endpoint, &child.creds);
        let acked = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let progress = Arc::new(Notify::new());
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(writer(
                    client.clone(),
                    round,
                    w,
                    Arc::clone(&acked),
                    Arc::clone(&count),
                    Arc::clone(&progress),
                ))
            })
            .collect();
        let target = 40 + 13 * round;
        while count.load(Ordering::SeqCst) < target {
            progress.notified().await;
        }
        child.process.start_kill().expect("SIGKILL");
        child.process.wait().await.expect("wait");
        for w in writers {
            w.await.expect("writer");
        }
        let acked = acked.lock().expect("lock").clone();
        meta_seen.insert(round, acked.len());
        all_acked.extend(acked);
        verify(dir.path(), &all_acked).await;
    }
    assert!(meta_seen.values().all(|n| *n >= 40), "{meta_seen:?}");
}
