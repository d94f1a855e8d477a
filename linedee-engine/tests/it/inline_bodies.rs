//! Bodies up to `INLINE_BODY_MAX` live in the index row and leave no body file; larger ones
//! are files. Every operation works on both kinds and between them: reads and ranges,
//! overwrites either way (the replaced file goes), copies, deletes, multipart completion,
//! `put_file`, and a restart (whose sweep keeps every live file).

use crate::common;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::MetadataDirective;
use common::{Served, status};
use linedee_engine::store::{INLINE_BODY_MAX, Store, StoreOptions};
use md5::{Digest, Md5};

const BUCKET: &str = "ld-test";

async fn served() -> Served {
    Served::start(StoreOptions {
        default_bucket: Some(BUCKET.into()),
        ..StoreOptions::default()
    })
    .await
}

fn body(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn etag_of(data: &[u8]) -> String {
    format!("\"{}\"", hex::encode(Md5::digest(data)))
}

async fn put(c: &Client, key: &str, data: &[u8]) -> String {
    c.put_object()
        .bucket(BUCKET)
        .key(key)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"))
        .e_tag
        .expect("etag")
}

#[tokio::test]
async fn bodies_up_to_the_limit_are_inline_and_one_byte_more_is_a_file() {
    let s = served().await;
    let c = s.client();
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let mut files = 0;
    for (i, (len, in_a_file)) in [
        (0, false),
        (1, false),
        (4096, false),
        (INLINE_BODY_MAX, false),
        (INLINE_BODY_MAX + 1, true),
        (5 * 1024 * 1024, true),
    ]
    .into_iter()
    .enumerate()
    {
        let data = body(len, i as u8);
        // Through S3, through the API, and from a local file.
        let key = format!("s3/{len}");
        assert_eq!(put(&c, &key, &data).await, etag_of(&data), "{key}");
        let api = format!("api/{len}");
        let etag = s
            .store
            .put_object(BUCKET, &api, data.clone().into(), None, Default::default())
            .await
            .expect("put_object");
        assert_eq!(etag, etag_of(&data), "{api}");
        let local = elsewhere.path().join("local");
        std::fs::write(&local, &data).expect("write local");
        let from_file = format!("file/{len}");
        let etag = s
            .store
            .put_file(BUCKET, &from_file, &local, None)
            .await
            .expect("put_file");
        assert_eq!(etag, etag_of(&data), "{from_file}");
        files += 3 * usize::from(in_a_file);
        assert_eq!(
            common::body_files(s.dir.path()),
            files,
            "after the {len}-byte bodies"
        );
        for key in [&key, &api, &from_file] {
            assert!(
                common::get(&c, BUCKET, key, None).await == data,
                "{key} reads back"
            );
            let (meta, read) = s
                .store
                .get_object(BUCKET, key)
                .await
                .expect("get_object")
                .expect("exists");
            assert!(read.as_ref() == data.as_slice(), "{key} through the API");
            assert_eq!(meta.size, len as u64);
            let head = c
                .head_object()
                .bucket(BUCKET)
                .key(key)
                .send()
                .await
                .expect("head");
            assert_eq!(head.content_length(), Some(len as i64), "{key}");
            assert_eq!(head.e_tag(), Some(etag_of(&data).as_str()), "{key}");
        }
    }
    let listed = c
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix("s3/")
        .send()
        .await
        .expect("list");
    let sizes: Vec<_> = listed.contents().iter().filter_map(|o| o.size()).collect();
    let mut want = vec![
        0,
        1,
        4096,
        INLINE_BODY_MAX as i64,
        INLINE_BODY_MAX as i64 + 1,
    ];
    want.push(5 * 1024 * 1024);
    want.sort_by_key(|n| n.to_string()); // keys sort as text
    assert_eq!(sizes, want);
    s.stop().await;
}

#[tokio::test]
async fn ranges_of_an_inline_body() {
    let s = served().await;
    let c = s.client();
    let data = body(1000, 7);
    put(&c, "r", &data).await;
    assert_eq!(common::body_files(s.dir.path()), 0, "inline");
    for (range, want) in [
        ("bytes=0-0", &data[..1]),
        ("bytes=10-99", &data[10..100]),
        ("bytes=-5", &data[995..]),
        ("bytes=990-", &data[990..]),
        ("bytes=500-5000", &data[500..]),
    ] {
        assert_eq!(
            common::get(&c, BUCKET, "r", Some(range)).await,
            want,
            "{range}"
        );
    }
    let err = c
        .get_object()
        .bucket(BUCKET)
        .key("r")
        .range("bytes=1000-")
        .send()
        .await
        .expect_err("past the end");
    assert_eq!(status(&err), 416);
    s.stop().await;
}

#[tokio::test]
async fn overwrites_between_kinds_leave_only_the_live_body_file() {
    let s = served().await;
    let c = s.client();
    let large = body(INLINE_BODY_MAX + 1, 1);
    let small = body(INLINE_BODY_MAX, 2);
    let larger = body(300_000, 3);
    put(&c, "k", &large).await;
    assert_eq!(common::body_files(s.dir.path()), 1);
    put(&c, "k", &small).await;
    assert_eq!(
        common::body_files(s.dir.path()),
        0,
        "file -> inline removes the file"
    );
    assert!(common::get(&c, BUCKET, "k", None).await == small);
    put(&c, "k", &large).await;
    assert_eq!(common::body_files(s.dir.path()), 1, "inline -> file");
    assert!(common::get(&c, BUCKET, "k", None).await == large);
    put(&c, "k", &larger).await;
    assert_eq!(
        common::body_files(s.dir.path()),
        1,
        "file -> file removes the old file"
    );
    assert!(common::get(&c, BUCKET, "k", None).await == larger);
    put(&c, "k", b"tiny").await;
    put(&c, "k", b"tinier").await;
    assert_eq!(common::body_files(s.dir.path()), 0, "inline -> inline");
    assert_eq!(common::get(&c, BUCKET, "k", None).await, b"tinier");
    put(&c, "file", &large).await;
    c.delete_object()
        .bucket(BUCKET)
        .key("k")
        .send()
        .await
        .expect("delete inline");
    assert_eq!(common::body_files(s.dir.path()), 1);
    c.delete_object()
        .bucket(BUCKET)
        .key("file")
        .send()
        .await
        .expect("delete file");
    assert_eq!(common::body_files(s.dir.path()), 0);
    s.stop().await;
}

#[tokio::test]
async fn a_copy_of_an_inline_object_is_inline_and_independent() {
    let s = served().await;
    let c = s.client();
    let data = body(5000, 9);
    c.put_object()
        .bucket(BUCKET)
        .key("src")
        .body(ByteStream::from(data.clone()))
        .content_type("text/plain")
        .metadata("a", "1")
        .send()
        .await
        .expect("put");
    let out = c
        .copy_object()
        .bucket(BUCKET)
        .key("copy")
        .copy_source(format!("{BUCKET}/src"))
        .send()
        .await
        .expect("copy");
    let etag = out.copy_object_result().and_then(|r| r.e_tag());
    assert_eq!(etag, Some(etag_of(&data).as_str()));
    c.copy_object()
        .bucket(BUCKET)
        .key("replaced")
        .copy_source(format!("{BUCKET}/src"))
        .metadata_directive(MetadataDirective::Replace)
        .metadata("b", "2")
        .send()
        .await
        .expect("copy replace");
    assert_eq!(
        common::body_files(s.dir.path()),
        0,
        "copies of inline bodies are inline"
    );
    put(&c, "src", b"changed").await;
    c.delete_object()
        .bucket(BUCKET)
        .key("src")
        .send()
        .await
        .expect("delete");
    for key in ["copy", "replaced"] {
        assert!(
            common::get(&c, BUCKET, key, None).await == data,
            "{key} keeps its bytes"
        );
    }
    let h = c
        .head_object()
        .bucket(BUCKET)
        .key("copy")
        .send()
        .await
        .expect("head");
    assert_eq!(h.content_type(), Some("text/plain"));
    assert_eq!(
        h.metadata().and_then(|m| m.get("a")).map(String::as_str),
        Some("1")
    );
    let h = c
        .head_object()
        .bucket(BUCKET)
        .key("replaced")
        .send()
        .await
        .expect("head");
    assert_eq!(
        h.metadata().and_then(|m| m.get("b")).map(String::as_str),
        Some("2")
    );
    s.stop().await;
}

#[tokio::test]
async fn multipart_objects_replace_and_are_replaced_by_inline_ones() {
    let s = served().await;
    let c = s.client();
    put(&c, "m", b"inline first").await;
    let tiny = body(10, 4);
    let etag = common::multipart(&c, BUCKET, "m", &[&tiny]).await;
    assert!(etag.ends_with("-1\""), "{etag}");
    assert!(common::get(&c, BUCKET, "m", None).await == tiny);
    assert_eq!(
        common::body_files(s.dir.path()),
        1,
        "the completed object is its one part's file"
    );
    let first = body(5 * 1024 * 1024, 5);
    common::multipart(&c, BUCKET, "m", &[&first, &tiny]).await;
    assert!(common::get(&c, BUCKET, "m", None).await == [first.as_slice(), &tiny].concat());
    assert_eq!(
        common::body_files(s.dir.path()),
        2,
        "its two parts' files; the earlier multipart object's file went"
    );
    put(&c, "m", b"inline again").await;
    assert_eq!(common::body_files(s.dir.path()), 0);
    assert_eq!(common::get(&c, BUCKET, "m", None).await, b"inline again");
    s.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_both_kinds_and_sweeps_only_orphans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || StoreOptions {
        default_bucket: Some(BUCKET.into()),
        ..StoreOptions::default()
    };
    let small = body(100, 1);
    let large = body(INLINE_BODY_MAX * 2, 2);
    let store = Store::open(dir.path(), options()).expect("open");
    for (key, data) in [("small", &small), ("large", &large)] {
        store
            .put_object(BUCKET, key, data.clone().into(), None, Default::default())
            .await
            .expect("put");
    }
    drop(store);
    let orphan = dir.path().join("blobs").join("ab").join("ab".repeat(16));
    std::fs::write(&orphan, b"left by a crash").expect("orphan");
    let leftover = dir.path().join("tmp").join("cd".repeat(16));
    std::fs::write(&leftover, b"half a body").expect("tmp");
    let store = Store::open(dir.path(), options()).expect("reopen");
    assert!(!orphan.exists() && !leftover.exists(), "orphans are swept");
    for (key, data) in [("small", &small), ("large", &large)] {
        let (_, read) = store
            .get_object(BUCKET, key)
            .await
            .expect("get")
            .expect("still there");
        assert!(read.as_ref() == data.as_slice(), "{key}");
    }
}

#[tokio::test]
async fn a_store_made_before_inline_bodies_opens_and_reads_its_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = "0123456789abcdef0123456789abcdef";
    let file = dir.path().join("blobs").join(&id[..2]).join(id);
    std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
    std::fs::write(&file, b"old body").expect("body file");
    // The index as the first version made it: `objects` without the inline `body` column.
    rusqlite::Connection::open(dir.path().join("index.sqlite"))
        .and_then(|c| {
            c.execute_batch(&format!(
                "PRAGMA journal_mode = WAL;
                 CREATE TABLE buckets (name TEXT PRIMARY KEY, created_ms INTEGER NOT NULL);
                 CREATE TABLE objects (
                     bucket TEXT NOT NULL, key TEXT NOT NULL, blob TEXT NOT NULL,
                     size INTEGER NOT NULL, etag TEXT NOT NULL, content_type TEXT,
                     metadata TEXT NOT NULL, modified_ms INTEGER NOT NULL,
                     PRIMARY KEY (bucket, key)
                 ) WITHOUT ROWID;
                 INSERT INTO buckets VALUES ('{BUCKET}', 0);
                 INSERT INTO objects VALUES ('{BUCKET}', 'old', '{id}', 8,
                     '{}', NULL, '{{\"a\":\"1\"}}', 0);",
                hex::encode(Md5::digest(b"old body"))
            ))
        })
        .expect("old index");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    assert!(file.exists(), "the old object's file is live, not swept");
    let (meta, read) = store
        .get_object(BUCKET, "old")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read.as_ref(), b"old body");
    assert_eq!(meta.metadata.get("a").map(String::as_str), Some("1"));
    assert_eq!(meta.etag, etag_of(b"old body"));
    store
        .put_object(BUCKET, "old", "new body".into(), None, Default::default())
        .await
        .expect("overwrite inline");
    assert!(!file.exists(), "the replaced file is removed");
    let (_, read) = store
        .get_object(BUCKET, "old")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(read.as_ref(), b"new body");
}
