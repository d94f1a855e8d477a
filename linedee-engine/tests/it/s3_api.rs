//! aws-sdk-s3 (default configuration: aws-chunked bodies with trailing CRC32 checksums)
//! against the served store over HTTP, for every supported operation.

use crate::common;

use std::collections::HashMap;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, MetadataDirective, ObjectIdentifier,
};
use common::{Served, code, status};
use linedee_engine::store::{StoreOptions, TriggerKind};

async fn served() -> Served {
    Served::start(StoreOptions {
        default_bucket: Some("ld-test".into()),
        ..StoreOptions::default()
    })
    .await
}

async fn put(c: &aws_sdk_s3::Client, key: &str, body: &[u8]) -> String {
    c.put_object()
        .bucket("ld-test")
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e:?}"))
        .e_tag
        .expect("etag")
}

#[tokio::test]
async fn buckets_create_head_list_location() {
    let s = served().await;
    let c = s.client();
    c.create_bucket()
        .bucket("second")
        .send()
        .await
        .expect("create");
    let err = c
        .create_bucket()
        .bucket("second")
        .send()
        .await
        .expect_err("exists");
    assert_eq!(code(&err), "BucketAlreadyOwnedByYou");
    c.head_bucket().bucket("second").send().await.expect("head");
    let err = c
        .head_bucket()
        .bucket("missing")
        .send()
        .await
        .expect_err("missing");
    assert_eq!(status(&err), 404);
    let names: Vec<_> = c
        .list_buckets()
        .send()
        .await
        .expect("list")
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_owned))
        .collect();
    assert_eq!(names, ["ld-test", "second"]);
    let loc = c
        .get_bucket_location()
        .bucket("second")
        .send()
        .await
        .expect("location");
    assert!(
        loc.location_constraint()
            .is_none_or(|l| l.as_str().is_empty())
    );
    let err = c
        .put_object()
        .bucket("missing")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("no bucket");
    assert_eq!(code(&err), "NoSuchBucket");
    s.stop().await;
}

#[tokio::test]
async fn put_get_head_with_metadata_and_default_checksums() {
    let s = served().await;
    let (c, wire) = common::recording_client(&s.endpoint, &s.store.credentials().expect("creds"));
    let body = vec![7u8; 300_000];
    let out = c
        .put_object()
        .bucket("ld-test")
        .key("in/example")
        .body(ByteStream::from(body.clone()))
        .content_type("application/json")
        .metadata("ld_run", "true")
        .metadata("Mixed_Case", "v")
        .send()
        .await
        .expect("put");
    let etag = out.e_tag().expect("etag").to_owned();
    assert_eq!(etag, format!("\"{:x}\"", md5_of(&body)));
    // The SDK's defaults: an in-memory body goes with a signed payload and its CRC32 in a
    // header; a streaming body (a file) goes aws-chunked, signed chunk by chunk, with the
    // CRC32 in a signed trailer. Both are verified by the store.
    let tmp = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(tmp.path(), &body).expect("write");
    let from_file = ByteStream::from_path(tmp.path()).await.expect("file body");
    let out = c
        .put_object()
        .bucket("ld-test")
        .key("from-file")
        .body(from_file)
        .send()
        .await
        .expect("put file");
    assert_eq!(out.e_tag(), Some(etag.as_str()));
    assert_eq!(common::get(&c, "ld-test", "from-file", None).await, body);
    let sent = wire.0.lock().expect("lock").clone();
    assert_eq!(sent[0].1, "", "in-memory body: checksum in a header");
    assert_eq!(
        (sent[1].0.as_str(), sent[1].1.as_str()),
        (
            "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
            "x-amz-checksum-crc32"
        ),
        "file body: aws-chunked with a trailing checksum"
    );
    let got = c
        .get_object()
        .bucket("ld-test")
        .key("in/example")
        .send()
        .await
        .expect("get");
    assert_eq!(got.e_tag(), Some(etag.as_str()));
    assert_eq!(got.content_type(), Some("application/json"));
    let meta = got.metadata().cloned().unwrap_or_default();
    assert_eq!(meta.get("ld_run").map(String::as_str), Some("true"));
    assert_eq!(meta.get("mixed_case").map(String::as_str), Some("v"));
    assert_eq!(
        got.body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .as_ref(),
        body.as_slice()
    );
    let head = c
        .head_object()
        .bucket("ld-test")
        .key("in/example")
        .send()
        .await
        .expect("head");
    assert_eq!(head.content_length(), Some(300_000));
    assert_eq!(head.e_tag(), Some(etag.as_str()));
    let err = c
        .head_object()
        .bucket("ld-test")
        .key("missing")
        .send()
        .await
        .expect_err("missing");
    assert_eq!(status(&err), 404);
    let err = c
        .get_object()
        .bucket("ld-test")
        .key("missing")
        .send()
        .await
        .expect_err("missing");
    assert_eq!(code(&err), "NoSuchKey");
    // A declared checksum that does not match the body is refused, and nothing is stored.
    let err = c
        .put_object()
        .bucket("ld-test")
        .key("bad-sum")
        .body(ByteStream::from_static(b"hello"))
        .checksum_crc32("AAAAAA==")
        .send()
        .await
        .expect_err("bad checksum");
    assert_eq!(code(&err), "BadDigest");
    assert!(
        s.store
            .head_object("ld-test", "bad-sum")
            .await
            .expect("head")
            .is_none()
    );
    // Metadata over S3's 2 KB limit is refused with S3's error.
    let err = c
        .put_object()
        .bucket("ld-test")
        .key("big-meta")
        .body(ByteStream::from_static(b"x"))
        .metadata("ld_code", "x".repeat(2100))
        .send()
        .await
        .expect_err("metadata too large");
    assert_eq!(code(&err), "MetadataTooLarge");
    s.stop().await;
}

fn md5_of(data: &[u8]) -> u128 {
    use md5::Digest;
    u128::from_be_bytes(md5::Md5::digest(data).into())
}

#[tokio::test]
async fn get_ranges() {
    let s = served().await;
    let c = s.client();
    let body: Vec<u8> = (0..=255u8).cycle().take(3 * 1024 * 1024).collect();
    put(&c, "r", &body).await;
    for (range, want) in [
        ("bytes=2-5", &body[2..=5]),
        ("bytes=-10", &body[body.len() - 10..]),
        ("bytes=3000000-", &body[3_000_000..]),
        ("bytes=0-2000000", &body[..=2_000_000]),
    ] {
        let got = c
            .get_object()
            .bucket("ld-test")
            .key("r")
            .range(range)
            .send()
            .await
            .expect("range");
        assert!(got.content_range().is_some(), "{range}: content-range");
        let bytes = got.body.collect().await.expect("body").into_bytes();
        assert_eq!(bytes.as_ref(), want, "{range}");
    }
    let err = c
        .get_object()
        .bucket("ld-test")
        .key("r")
        .range("bytes=9999999-")
        .send()
        .await
        .expect_err("416");
    assert_eq!(status(&err), 416);
    s.stop().await;
}

#[tokio::test]
async fn delete_and_delete_objects() {
    let s = served().await;
    let c = s.client();
    for k in ["d/1", "d/2", "d/3"] {
        put(&c, k, b"x").await;
    }
    c.delete_object()
        .bucket("ld-test")
        .key("d/1")
        .send()
        .await
        .expect("delete");
    c.delete_object()
        .bucket("ld-test")
        .key("d/never")
        .send()
        .await
        .expect("delete missing is fine");
    let delete = Delete::builder()
        .objects(ObjectIdentifier::builder().key("d/2").build().expect("id"))
        .objects(ObjectIdentifier::builder().key("d/3").build().expect("id"))
        .build()
        .expect("delete");
    let out = c
        .delete_objects()
        .bucket("ld-test")
        .delete(delete)
        .send()
        .await
        .expect("delete objects");
    let mut deleted: Vec<_> = out.deleted().iter().filter_map(|d| d.key()).collect();
    deleted.sort_unstable();
    assert_eq!(deleted, ["d/2", "d/3"]);
    let list = c
        .list_objects_v2()
        .bucket("ld-test")
        .prefix("d/")
        .send()
        .await
        .expect("list");
    assert!(list.contents().is_empty());
    s.stop().await;
}

#[tokio::test]
async fn copy_object_copy_and_replace() {
    let s = served().await;
    let c = s.client();
    c.put_object()
        .bucket("ld-test")
        .key("src")
        .body(ByteStream::from_static(b"source body"))
        .content_type("text/plain")
        .metadata("a", "1")
        .send()
        .await
        .expect("put");
    c.copy_object()
        .bucket("ld-test")
        .key("dst-copy")
        .copy_source("ld-test/src")
        .send()
        .await
        .expect("copy");
    let h = c
        .head_object()
        .bucket("ld-test")
        .key("dst-copy")
        .send()
        .await
        .expect("head");
    assert_eq!(
        h.metadata().and_then(|m| m.get("a")).map(String::as_str),
        Some("1")
    );
    assert_eq!(h.content_type(), Some("text/plain"));
    c.copy_object()
        .bucket("ld-test")
        .key("dst-replace")
        .copy_source("ld-test/src")
        .metadata_directive(MetadataDirective::Replace)
        .metadata("b", "2")
        .content_type("application/octet-stream")
        .send()
        .await
        .expect("copy replace");
    let h = c
        .head_object()
        .bucket("ld-test")
        .key("dst-replace")
        .send()
        .await
        .expect("head");
    let meta = h.metadata().cloned().unwrap_or_default();
    assert_eq!(meta, HashMap::from([("b".to_owned(), "2".to_owned())]));
    assert_eq!(h.content_type(), Some("application/octet-stream"));
    assert_eq!(
        common::get(&c, "ld-test", "dst-replace", None).await,
        b"source body"
    );
    // Overwriting the source leaves the copies intact (each has its own body file).
    put(&c, "src", b"changed").await;
    assert_eq!(
        common::get(&c, "ld-test", "dst-copy", None).await,
        b"source body"
    );
    let err = c
        .copy_object()
        .bucket("ld-test")
        .key("src")
        .copy_source("ld-test/src")
        .send()
        .await
        .expect_err("self copy");
    assert_eq!(code(&err), "InvalidRequest");
    let err = c
        .copy_object()
        .bucket("ld-test")
        .key("x")
        .copy_source("ld-test/missing")
        .send()
        .await
        .expect_err("missing");
    assert_eq!(code(&err), "NoSuchKey");
    s.stop().await;
}

#[tokio::test]
async fn list_objects_v2_prefix_delimiter_pages_start_after() {
    let s = served().await;
    let c = s.client();
    let keys = ["a", "a/b", "a/c/d", "b/1", "b/2", "b/3", "c", "d/x/y"];
    for k in keys {
        put(&c, k, b"x").await;
    }
    let out = c
        .list_objects_v2()
        .bucket("ld-test")
        .delimiter("/")
        .send()
        .await
        .expect("list");
    let ks: Vec<_> = out.contents().iter().filter_map(|o| o.key()).collect();
    let ps: Vec<_> = out
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(ks, ["a", "c"]);
    assert_eq!(ps, ["a/", "b/", "d/"]);
    let out = c
        .list_objects_v2()
        .bucket("ld-test")
        .prefix("b/")
        .send()
        .await
        .expect("list");
    let ks: Vec<_> = out.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(ks, ["b/1", "b/2", "b/3"]);
    let out = c
        .list_objects_v2()
        .bucket("ld-test")
        .start_after("b/1")
        .max_keys(3)
        .send()
        .await
        .expect("list");
    let ks: Vec<_> = out.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(ks, ["b/2", "b/3", "c"]);
    assert_eq!(out.is_truncated(), Some(true));
    // Paging two at a time with continuation tokens visits every key once, in order.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let out = c
            .list_objects_v2()
            .bucket("ld-test")
            .max_keys(2)
            .set_continuation_token(token.clone())
            .send()
            .await
            .expect("page");
        assert!(out.contents().len() <= 2);
        seen.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        token = out.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            assert_eq!(out.is_truncated(), Some(false));
            break;
        }
    }
    assert_eq!(seen, keys);
    // The SDK's paginator agrees, with a delimiter too.
    let pages: Vec<_> = c
        .list_objects_v2()
        .bucket("ld-test")
        .delimiter("/")
        .max_keys(1)
        .into_paginator()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("paginate");
    let mut all: Vec<String> = Vec::new();
    for p in &pages {
        all.extend(
            p.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned)),
        );
        all.extend(
            p.common_prefixes()
                .iter()
                .filter_map(|o| o.prefix().map(str::to_owned)),
        );
    }
    assert_eq!(all, ["a", "a/", "b/", "c", "d/"]);
    s.stop().await;
}

#[tokio::test]
async fn multipart_64_mib_with_metadata_on_the_final_object() {
    let s = served().await;
    let c = s.client();
    let mut triggers = s.store.subscribe_triggers();
    let part_size = 8 * 1024 * 1024;
    let body: Vec<u8> = (0..64 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let up = c
        .create_multipart_upload()
        .bucket("ld-test")
        .key("in/big.bin")
        .content_type("application/x-big")
        .metadata("ld_code", "{\"run\":[]}")
        .metadata("ld_run_id", "big-run")
        .send()
        .await
        .expect("create");
    let id = up.upload_id().expect("upload id").to_owned();
    let mut parts = Vec::new();
    for (i, chunk) in body.chunks(part_size).enumerate() {
        let n = i32::try_from(i + 1).expect("part number");
        let out = c
            .upload_part()
            .bucket("ld-test")
            .key("in/big.bin")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .expect("upload part");
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().expect("etag"))
                .build(),
        );
    }
    let listed = c
        .list_parts()
        .bucket("ld-test")
        .key("in/big.bin")
        .upload_id(&id)
        .send()
        .await
        .expect("list parts");
    assert_eq!(listed.parts().len(), 8);
    assert!(
        listed
            .parts()
            .iter()
            .all(|p| p.size() == Some(8 * 1024 * 1024))
    );
    let done = c
        .complete_multipart_upload()
        .bucket("ld-test")
        .key("in/big.bin")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("complete");
    assert!(done.e_tag().expect("etag").ends_with("-8\""));
    let got = c
        .get_object()
        .bucket("ld-test")
        .key("in/big.bin")
        .send()
        .await
        .expect("get");
    assert_eq!(got.content_type(), Some("application/x-big"));
    assert_eq!(
        got.metadata()
            .and_then(|m| m.get("ld_run_id"))
            .map(String::as_str),
        Some("big-run")
    );
    assert_eq!(got.content_length(), Some(64 * 1024 * 1024));
    let bytes = got.body.collect().await.expect("body").into_bytes();
    assert!(bytes.as_ref() == body.as_slice(), "64 MiB body reads back");
    let t = triggers.recv().await.expect("trigger");
    assert_eq!(
        (t.key.as_str(), t.kind, t.run_id.as_deref()),
        ("in/big.bin", TriggerKind::LdCode, Some("big-run"))
    );
    let err = c
        .list_parts()
        .bucket("ld-test")
        .key("in/big.bin")
        .upload_id(&id)
        .send()
        .await
        .expect_err("completed");
    assert_eq!(code(&err), "NoSuchUpload");
    s.stop().await;
}

#[tokio::test]
async fn multipart_abort_and_small_parts() {
    let s = served().await;
    let c = s.client();
    let id = c
        .create_multipart_upload()
        .bucket("ld-test")
        .key("m")
        .send()
        .await
        .expect("create")
        .upload_id
        .expect("id");
    let mut parts = Vec::new();
    for n in 1..=2 {
        let out = c
            .upload_part()
            .bucket("ld-test")
            .key("m")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from_static(b"tiny"))
            .send()
            .await
            .expect("part");
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().expect("etag"))
                .build(),
        );
    }
    let err = c
        .complete_multipart_upload()
        .bucket("ld-test")
        .key("m")
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect_err("too small");
    assert_eq!(code(&err), "EntityTooSmall");
    c.abort_multipart_upload()
        .bucket("ld-test")
        .key("m")
        .upload_id(&id)
        .send()
        .await
        .expect("abort");
    let err = c
        .abort_multipart_upload()
        .bucket("ld-test")
        .key("m")
        .upload_id(&id)
        .send()
        .await
        .expect_err("gone");
    assert_eq!(code(&err), "NoSuchUpload");
    assert!(
        s.store
            .head_object("ld-test", "m")
            .await
            .expect("head")
            .is_none()
    );
    s.stop().await;
}

#[tokio::test]
async fn list_multipart_uploads_shows_open_uploads_by_key_with_prefixes_and_pages() {
    let s = served().await;
    let c = s.client();
    let mut ids = Vec::new();
    for key in ["out", "in/x/1", "in/a b"] {
        let id = c
            .create_multipart_upload()
            .bucket("ld-test")
            .key(key)
            .send()
            .await
            .expect("create")
            .upload_id
            .expect("id");
        ids.push((key.to_owned(), id));
    }
    ids.sort();

    let rolled = c
        .list_multipart_uploads()
        .bucket("ld-test")
        .prefix("in/")
        .delimiter("/")
        .send()
        .await
        .expect("list with a delimiter");
    let keys: Vec<_> = rolled.uploads().iter().filter_map(|u| u.key()).collect();
    let prefixes: Vec<_> = rolled
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!((keys, prefixes), (vec!["in/a b"], vec!["in/x/"]));

    // One upload a page, following NextKeyMarker and NextUploadIdMarker.
    let (mut seen, mut key_marker, mut id_marker) = (Vec::new(), None, None);
    loop {
        let page = c
            .list_multipart_uploads()
            .bucket("ld-test")
            .max_uploads(1)
            .set_key_marker(key_marker)
            .set_upload_id_marker(id_marker)
            .send()
            .await
            .expect("list a page");
        for u in page.uploads() {
            assert!(u.initiated().is_some(), "{u:?}");
            seen.push((
                u.key().unwrap().to_owned(),
                u.upload_id().unwrap().to_owned(),
            ));
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_owned);
        id_marker = page.next_upload_id_marker().map(str::to_owned);
    }
    assert_eq!(seen, ids);

    let (key, id) = &ids[2];
    c.abort_multipart_upload()
        .bucket("ld-test")
        .key(key)
        .upload_id(id)
        .send()
        .await
        .expect("abort");
    let left = c
        .list_multipart_uploads()
        .bucket("ld-test")
        .send()
        .await
        .expect("list");
    let left: Vec<_> = left.uploads().iter().filter_map(|u| u.key()).collect();
    assert_eq!(left, ["in/a b", "in/x/1"]);

    let err = c
        .list_multipart_uploads()
        .bucket("no-such-bucket")
        .send()
        .await
        .expect_err("no bucket");
    assert_eq!(code(&err), "NoSuchBucket");
    s.stop().await;
}

#[tokio::test]
async fn conditional_writes() {
    let s = served().await;
    let c = s.client();
    let first = c
        .put_object()
        .bucket("ld-test")
        .key("cond")
        .body(ByteStream::from_static(b"one"))
        .if_none_match("*")
        .send()
        .await
        .expect("create-only on a new key");
    let err = c
        .put_object()
        .bucket("ld-test")
        .key("cond")
        .body(ByteStream::from_static(b"two"))
        .if_none_match("*")
        .send()
        .await
        .expect_err("exists");
    assert_eq!(status(&err), 412);
    let err = c
        .put_object()
        .bucket("ld-test")
        .key("cond")
        .body(ByteStream::from_static(b"two"))
        .if_match("\"0123456789abcdef0123456789abcdef\"")
        .send()
        .await
        .expect_err("wrong etag");
    assert_eq!(status(&err), 412);
    c.put_object()
        .bucket("ld-test")
        .key("cond")
        .body(ByteStream::from_static(b"three"))
        .if_match(first.e_tag().expect("etag"))
        .send()
        .await
        .expect("matching etag");
    assert_eq!(common::get(&c, "ld-test", "cond", None).await, b"three");
    let err = c
        .put_object()
        .bucket("ld-test")
        .key("cond-missing")
        .body(ByteStream::from_static(b"x"))
        .if_match("\"0123456789abcdef0123456789abcdef\"")
        .send()
        .await
        .expect_err("no object");
    assert_eq!(status(&err), 412);
    s.stop().await;
}

#[tokio::test]
async fn key_edge_cases_stay_inside_the_store() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("store");
    let store = linedee_engine::store::Store::open(
        &dir,
        StoreOptions {
            default_bucket: Some("ld-test".into()),
            fsync: false,
            ..StoreOptions::default()
        },
    )
    .expect("open");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn({
        let store = store.clone();
        async move { store.serve(listener, std::future::pending()).await }
    });
    let c = common::client(&endpoint, &store.credentials().expect("creds"));
    let long = "k".repeat(1024);
    let keys = [
        "a",
        "a/b",
        "a/",
        "../x",
        "../../escape",
        "a/../../b",
        "./dot",
        "résumé/日本語/🎉.txt",
        "spaces and+plus&amp?q=1#frag",
        long.as_str(),
    ];
    for (i, k) in keys.iter().enumerate() {
        put(&c, k, format!("body {i}").as_bytes()).await;
    }
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            common::get(&c, "ld-test", k, None).await,
            format!("body {i}").as_bytes(),
            "{k}"
        );
    }
    let listed: Vec<String> = c
        .list_objects_v2()
        .bucket("ld-test")
        .send()
        .await
        .expect("list")
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect();
    let mut want: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    want.sort();
    assert_eq!(listed, want);
    let err = c
        .put_object()
        .bucket("ld-test")
        .key("k".repeat(1025))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect_err("too long");
    assert_eq!(status(&err), 400);
    // Nothing was written next to the store's directory, and inside it only body files
    // named by id, the index and the credentials exist.
    let siblings: Vec<_> = std::fs::read_dir(root.path())
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(siblings, [std::ffi::OsString::from("store")]);
    for entry in std::fs::read_dir(&dir).expect("read") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf8");
        assert!(
            ["blobs", "tmp", "credentials.json"].contains(&name.as_str())
                || name.starts_with("index.sqlite"),
            "unexpected {name}"
        );
    }
    server.abort();
}

#[tokio::test]
async fn unsupported_operations_answer_not_implemented() {
    let s = served().await;
    let c = s.client();
    let err = c
        .get_bucket_tagging()
        .bucket("ld-test")
        .send()
        .await
        .expect_err("not implemented");
    assert_eq!(code(&err), "NotImplemented");
    let err = c
        .list_objects()
        .bucket("ld-test")
        .send()
        .await
        .expect_err("v1 listing");
    assert_eq!(code(&err), "NotImplemented");
    s.stop().await;
}

#[tokio::test]
async fn triggers_and_object_events_commit_with_the_write() {
    let s = served().await;
    let c = s.client();
    let mut triggers = s.store.subscribe_triggers();
    let mut objects = s.store.subscribe_objects();
    c.put_object()
        .bucket("ld-test")
        .key("in/example")
        .body(ByteStream::from_static(b"{\"run\":[]}"))
        .metadata("ld_run", "true")
        .metadata("ld_run_id", "R1")
        .send()
        .await
        .expect("ld_run");
    c.put_object()
        .bucket("ld-test")
        .key("in/img/example_img.jpg")
        .body(ByteStream::from_static(b"jpeg"))
        .metadata("ld_code", "{\"run\":[{\"cmd\":\"x\"}]}")
        .send()
        .await
        .expect("ld_code");
    c.put_object()
        .bucket("ld-test")
        .key("ld/runs/R1.json")
        .body(ByteStream::from_static(b"{}"))
        .metadata("ld_run", "true")
        .send()
        .await
        .expect("engine prefix");
    put(&c, "out/R1.0.0", b"plain").await;

    let t1 = triggers.recv().await.expect("t1");
    assert_eq!(
        (t1.key.as_str(), t1.kind, t1.run_id.as_deref()),
        ("in/example", TriggerKind::LdRun, Some("R1"))
    );
    assert!(t1.etag.starts_with('"'));
    let t2 = triggers.recv().await.expect("t2");
    assert_eq!(
        (t2.key.as_str(), t2.kind, t2.run_id.as_deref()),
        ("in/img/example_img.jpg", TriggerKind::LdCode, None)
    );
    assert!(
        triggers.try_recv().is_err(),
        "ld/ and plain objects do not trigger"
    );
    let keys: Vec<String> = (0..4)
        .map(|_| objects.try_recv().expect("event").key)
        .collect();
    assert_eq!(
        keys,
        [
            "in/example",
            "in/img/example_img.jpg",
            "ld/runs/R1.json",
            "out/R1.0.0"
        ]
    );

    let pending = s.store.pending_triggers().await.expect("pending");
    assert_eq!(pending, vec![t1.clone(), t2.clone()]);
    assert!(s.store.ack_trigger(t1.id).await.expect("ack"));
    assert!(!s.store.ack_trigger(t1.id).await.expect("ack twice"));
    assert_eq!(s.store.pending_triggers().await.expect("pending"), vec![t2]);

    // The in-process API writes through the same path.
    let etag = s
        .store
        .put_object(
            "ld-test",
            "in/local",
            bytes::Bytes::from_static(b"{}"),
            Some("application/json"),
            [("LD_RUN".to_owned(), "True".to_owned())].into(),
        )
        .await
        .expect("put in process");
    let t3 = triggers.recv().await.expect("t3");
    assert_eq!(
        (t3.key.as_str(), t3.etag.as_str()),
        ("in/local", etag.as_str())
    );
    let (meta, body) = s
        .store
        .get_object("ld-test", "in/local")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (body.as_ref(), meta.content_type.as_deref()),
        (b"{}".as_ref(), Some("application/json"))
    );
    assert_eq!(common::get(&c, "ld-test", "in/local", None).await, b"{}");
    s.stop().await;
}

#[tokio::test]
async fn conditional_reads() {
    let s = served().await;
    let c = s.client();
    let etag = put(&c, "cr", b"content").await;
    let other = "\"0123456789abcdef0123456789abcdef\"";
    let got = c
        .get_object()
        .bucket("ld-test")
        .key("cr")
        .if_match(&etag)
        .send()
        .await
        .expect("if-match holds");
    assert_eq!(got.e_tag(), Some(etag.as_str()));
    let err = c
        .get_object()
        .bucket("ld-test")
        .key("cr")
        .if_match(other)
        .send()
        .await
        .expect_err("if-match fails");
    assert_eq!(status(&err), 412);
    let err = c
        .get_object()
        .bucket("ld-test")
        .key("cr")
        .if_none_match(&etag)
        .send()
        .await
        .expect_err("not modified");
    assert_eq!(status(&err), 304);
    c.get_object()
        .bucket("ld-test")
        .key("cr")
        .if_none_match(other)
        .send()
        .await
        .expect("modified");
    let err = c
        .head_object()
        .bucket("ld-test")
        .key("cr")
        .if_none_match(&etag)
        .send()
        .await
        .expect_err("head not modified");
    assert_eq!(status(&err), 304);
    let past = aws_sdk_s3::primitives::DateTime::from_secs(0);
    let future = aws_sdk_s3::primitives::DateTime::from_secs(4_102_444_800);
    c.get_object()
        .bucket("ld-test")
        .key("cr")
        .if_modified_since(past)
        .send()
        .await
        .expect("modified since 1970");
    let err = c
        .get_object()
        .bucket("ld-test")
        .key("cr")
        .if_modified_since(future)
        .send()
        .await
        .expect_err("not modified since 2100");
    assert_eq!(status(&err), 304);
    let err = c
        .get_object()
        .bucket("ld-test")
        .key("cr")
        .if_unmodified_since(past)
        .send()
        .await
        .expect_err("modified since 1970");
    assert_eq!(status(&err), 412);
    s.stop().await;
}
