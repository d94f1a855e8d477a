//! Bodies large enough to be hashed on a thread of their own and spilled to disk while more of
//! them arrives: the ETag is still the body's MD5, a declared checksum is still checked, and a
//! refused body leaves nothing behind (no object, no temporary file).

use crate::common;

use aws_sdk_s3::primitives::ByteStream;
use common::{Served, code};
use linedee_engine::store::StoreOptions;
use md5::{Digest, Md5};

/// Over the 1 MiB hashing threshold and the 4 MiB spill size, not a multiple of either.
const LEN: usize = 9 * 1024 * 1024 + 12_345;

fn body() -> Vec<u8> {
    (0..LEN)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

async fn served() -> Served {
    Served::start(StoreOptions {
        default_bucket: Some("ld-test".into()),
        ..StoreOptions::default()
    })
    .await
}

#[tokio::test]
async fn a_large_body_keeps_its_md5_etag_and_reads_back_whole() {
    let s = served().await;
    let c = s.client();
    let body = body();
    let out = c
        .put_object()
        .bucket("ld-test")
        .key("big")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .expect("put");
    let md5 = hex::encode(Md5::digest(&body));
    assert_eq!(out.e_tag(), Some(format!("\"{md5}\"").as_str()));
    let got = c
        .get_object()
        .bucket("ld-test")
        .key("big")
        .send()
        .await
        .expect("get")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert!(got.as_ref() == body.as_slice(), "byte-identical");
}

#[tokio::test]
async fn a_large_body_with_a_wrong_checksum_is_refused_and_leaves_nothing() {
    let s = served().await;
    let c = s.client();
    let err = c
        .put_object()
        .bucket("ld-test")
        .key("bad-big")
        .body(ByteStream::from(body()))
        .checksum_crc32("AAAAAA==")
        .send()
        .await
        .expect_err("a wrong checksum");
    assert_eq!(code(&err), "BadDigest");
    assert!(
        s.store
            .head_object("ld-test", "bad-big")
            .await
            .expect("head")
            .is_none()
    );
    let left: Vec<_> = std::fs::read_dir(s.dir.path().join("tmp"))
        .expect("tmp dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}
