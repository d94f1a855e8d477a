//! The product document's tasks as a linedee task app.
//!
//! - `process-image`: the `ld_code` example. Streams the media file that started the run
//!   (bounded memory), and writes a small summary (size, format, checksum) with the state
//!   `{"bytes":N}`.
//! - `get-json`: the "Managing Task Output and Status" example. Writes the posts as JSON
//!   with the state `{"resp_status_code":200,"num_records":N,"resp_time":"…"}`. The
//!   records come from `data/`, compiled in (no network).
//! - `get-data`: the parallel group's task; option `endpoint=posts|users|comments`.
//!
//! `linedee-example-tasks procfile` prints the committed `Procfile`, and
//! `linedee-example-tasks quickstart` runs the product document's examples end to end on the
//! embedded engine (see `quickstart.rs`).

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::time::Instant;

use anyhow::{Context as _, bail};
use linedee_task::{Json, Output, TaskContext, ld_task};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

/// The records the document fetches from jsonplaceholder, shipped with the example.
const DATA: &[(&str, &str)] = &[
    ("posts", include_str!("../data/posts.json")),
    ("users", include_str!("../data/users.json")),
    ("comments", include_str!("../data/comments.json")),
];

/// Summarises the input media file: its size, format and an FNV-1a checksum.
#[ld_task(timeout = 30)]
async fn process_image(ctx: TaskContext) -> anyhow::Result<Output> {
    let dir = ctx.option("dir").unwrap_or_else(|| "out".to_owned());
    let input = ctx.input().await?;
    let key = input.key().to_owned();
    let content_type = input.content_type().map(str::to_owned);
    let mut reader = input.into_reader();
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes, mut hash, mut head) = (0u64, FNV_OFFSET, Vec::new());
    loop {
        let n = reader.read(&mut buf).await.context("reading the input")?;
        if n == 0 {
            break;
        }
        if head.len() < 8 {
            head.extend(buf[..n].iter().take(8 - head.len()));
        }
        hash = fnv1a(hash, &buf[..n]);
        bytes += n as u64;
    }
    tracing::info!(key, bytes, "input read");
    let summary = json!({
        "input": key,
        "dir": dir,
        "bytes": bytes,
        "format": format_of(&head),
        "content_type": content_type,
        "fnv1a": format!("{hash:016x}"),
    });
    Ok(Output::json(&summary).state(&json!({ "bytes": bytes })))
}

/// Writes the posts, with the document's monitoring state.
#[ld_task]
async fn get_json(ctx: TaskContext) -> anyhow::Result<()> {
    let started = Instant::now();
    let records = records("posts")?;
    let state = json!({
        "resp_status_code": 200,
        "num_records": records.len(),
        "resp_time": format!("{:?}", started.elapsed()),
    });
    ctx.output().json(&records).state(&state).send().await?;
    Ok(())
}

/// Writes the records of the `endpoint` option: `posts`, `users` or `comments`.
#[ld_task]
async fn get_data(ctx: TaskContext) -> anyhow::Result<Json<Vec<Value>>> {
    let endpoint: String = ctx.require_option("endpoint")?;
    Ok(Json(records(&endpoint)?))
}

fn records(endpoint: &str) -> anyhow::Result<Vec<Value>> {
    let Some((_, text)) = DATA.iter().find(|(name, _)| *name == endpoint) else {
        let known: Vec<_> = DATA.iter().map(|(name, _)| *name).collect();
        bail!(
            "unknown endpoint `{endpoint}`: expected one of {}",
            known.join(", ")
        );
    };
    serde_json::from_str(text).with_context(|| format!("data/{endpoint}.json is not a JSON array"))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

fn format_of(head: &[u8]) -> &'static str {
    match head {
        [0xff, 0xd8, 0xff, ..] => "jpeg",
        [0x89, b'P', b'N', b'G', ..] => "png",
        [b'G', b'I', b'F', b'8', ..] => "gif",
        [] => "empty",
        _ => "unknown",
    }
}

mod quickstart;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("quickstart") {
        std::process::exit(quickstart::main(&args[2..]));
    }
    linedee_task::main()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_parse() {
        assert_eq!(records("posts").unwrap().len(), 5);
        assert_eq!(records("users").unwrap().len(), 3);
        assert_eq!(records("comments").unwrap().len(), 6);
        let err = records("albums").unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown endpoint `albums`: expected one of posts, users, comments"
        );
    }

    #[test]
    fn formats_and_checksum() {
        assert_eq!(format_of(&[0xff, 0xd8, 0xff, 0xe0]), "jpeg");
        assert_eq!(format_of(b"\x89PNG\r\n"), "png");
        assert_eq!(format_of(b""), "empty");
        // FNV-1a test vector: "a".
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn handles_carry_the_defaults() {
        assert_eq!(process_image::task().cmd, "process-image");
        assert_eq!(process_image::task().timeout, 30);
        assert_eq!(get_data::task().option("endpoint", "users").cmd, "get-data");
        assert_eq!(get_json::task().cmd, "get-json");
    }
}
