//! A completed multipart upload is read from its parts' files, which completion hands to the
//! object without copying them: the bytes, ranges across part boundaries, copies, overwrites,
//! deletes (also while a reader is still reading) and a restart all behave as for any other
//! object, and no body file is left behind or lost.

use crate::common;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::Served;
use linedee_engine::store::StoreOptions;

const MIB: usize = 1024 * 1024;

fn options() -> StoreOptions {
    StoreOptions {
        default_bucket: Some("ld-test".into()),
        ..StoreOptions::default()
    }
}

/// `len` bytes that differ from part to part (`seed`) and along each part.
fn bytes(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

async fn upload_part(c: &Client, key: &str, id: &str, n: i32, body: Vec<u8>) -> CompletedPart {
    let out = c
        .upload_part()
        .bucket("ld-test")
        .key(key)
        .upload_id(id)
        .part_number(n)
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap_or_else(|e| panic!("part {n}: {e:?}"));
    CompletedPart::builder()
        .part_number(n)
        .e_tag(out.e_tag().expect("etag"))
        .build()
}

async fn complete(c: &Client, key: &str, id: &str, parts: Vec<CompletedPart>) {
    c.complete_multipart_upload()
        .bucket("ld-test")
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .expect("complete");
}

#[tokio::test]
async fn a_completed_upload_is_its_parts_files_read_in_order_and_survives_a_restart() {
    let s = Served::start(options()).await;
    let c = s.client();
    let key = "in/parts.bin";
    let id = c
        .create_multipart_upload()
        .bucket("ld-test")
        .key(key)
        .send()
        .await
        .expect("create")
        .upload_id
        .expect("upload id");
    let (p1, p2, p3) = (bytes(5 * MIB, 1), bytes(5 * MIB, 2), bytes(MIB + 7, 3));
    let first = upload_part(&c, key, &id, 1, p1.clone()).await;
    // Part 2 goes up twice (the second replaces the first); part 4 is never listed.
    upload_part(&c, key, &id, 2, bytes(5 * MIB, 99)).await;
    let second = upload_part(&c, key, &id, 2, p2.clone()).await;
    let third = upload_part(&c, key, &id, 3, p3.clone()).await;
    upload_part(&c, key, &id, 4, bytes(1024, 4)).await;
    complete(&c, key, &id, vec![first, second, third]).await;
    let whole = [p1, p2, p3].concat();

    assert_eq!(
        common::body_files(s.dir.path()),
        3,
        "the object is the three listed parts' files: nothing copied, nothing left over"
    );
    assert!(
        common::get(&c, "ld-test", key, None).await == whole,
        "the whole body reads back"
    );
    let boundary = 5 * MIB;
    for (start, end) in [
        (boundary - 10, boundary + 10),  // across one boundary, read at once
        (boundary - 1, boundary),        // the last byte of one part, the first of the next
        (MIB, 2 * boundary + 5),         // across both boundaries, streamed
        (2 * boundary, whole.len() - 1), // the last part alone
    ] {
        let got = common::get(&c, "ld-test", key, Some(&format!("bytes={start}-{end}"))).await;
        assert!(got == whole[start..=end], "bytes {start}-{end}");
    }
    let tail = common::get(&c, "ld-test", key, Some("bytes=-10")).await;
    assert!(tail == whole[whole.len() - 10..], "a suffix range");

    // A store opened again on the directory keeps the files (its sweep reads them from the row).
    let dir = s.stop_keeping_dir().await;
    let s = Served::start_in(dir, options()).await;
    assert_eq!(
        common::body_files(s.dir.path()),
        3,
        "the start-up sweep kept the parts' files"
    );
    let c = s.client();
    assert!(
        common::get(&c, "ld-test", key, None).await == whole,
        "the body reads back after a restart"
    );
    s.stop().await;
}

#[tokio::test]
async fn copies_overwrites_and_deletes_of_an_upload_leave_no_file_behind() {
    let s = Served::start(options()).await;
    let c = s.client();
    let whole_parts = [bytes(5 * MIB, 5), bytes(2 * MIB, 6)];
    let whole = whole_parts.concat();
    common::multipart(&c, "ld-test", "a", &[&whole_parts[0], &whole_parts[1]]).await;
    assert_eq!(common::body_files(s.dir.path()), 2);

    c.copy_object()
        .bucket("ld-test")
        .key("b")
        .copy_source("ld-test/a")
        .send()
        .await
        .expect("copy");
    assert_eq!(
        common::body_files(s.dir.path()),
        4,
        "a copy has files of its own"
    );
    c.delete_object()
        .bucket("ld-test")
        .key("a")
        .send()
        .await
        .expect("delete");
    assert_eq!(
        common::body_files(s.dir.path()),
        2,
        "a delete removes every part's file"
    );
    assert!(
        common::get(&c, "ld-test", "b", None).await == whole,
        "the copy outlives its source"
    );

    // An upload completed over an object made of parts replaces all of its files.
    let again = [bytes(5 * MIB, 7), bytes(5 * MIB, 8), bytes(10, 9)];
    common::multipart(&c, "ld-test", "b", &[&again[0], &again[1], &again[2]]).await;
    assert_eq!(common::body_files(s.dir.path()), 3);
    assert!(common::get(&c, "ld-test", "b", None).await == again.concat());
    // An overwrite with a small body removes them all.
    c.put_object()
        .bucket("ld-test")
        .key("b")
        .body(ByteStream::from_static(b"small"))
        .send()
        .await
        .expect("put");
    assert_eq!(
        common::body_files(s.dir.path()),
        0,
        "the small body is inline"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_reader_gets_every_byte_of_an_upload_deleted_while_it_reads() {
    let s = Served::start(options()).await;
    let c = s.client();
    let parts = [bytes(5 * MIB, 10), bytes(5 * MIB, 11), bytes(5 * MIB, 12)];
    let whole = parts.concat();
    common::multipart(&c, "ld-test", "big", &[&parts[0], &parts[1], &parts[2]]).await;
    // The answer's head has arrived; most of its 15 MiB has not been read.
    let reading = c
        .get_object()
        .bucket("ld-test")
        .key("big")
        .send()
        .await
        .expect("get");
    c.delete_object()
        .bucket("ld-test")
        .key("big")
        .send()
        .await
        .expect("delete");
    let err = c
        .head_object()
        .bucket("ld-test")
        .key("big")
        .send()
        .await
        .expect_err("deleted");
    assert_eq!(common::status(&err), 404);
    let got = reading.body.collect().await.expect("body").into_bytes();
    assert!(
        got.as_ref() == whole.as_slice(),
        "the reader got the body it started"
    );
    s.stop().await;
}
