//! Where an object's body lives: small bodies inline in the object's index row, committed
//! with it (no file, no file or directory fsync); larger ones in a body file (`blobs.rs`); a
//! completed multipart upload in its parts' body files, read one after another, so that
//! completing an upload copies nothing. Reading a body, or a range of it, whichever kind it is.
//!
//! The index keeps the kind in `objects.blob` ([`Body::columns`], [`Body::from_columns`]):
//! empty for an inline body (`objects.body` holds it), a body file's id, or
//! `parts:` and each part's `{id}:{size}`, comma-separated, in order.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use super::blobs::{Blobs, Pin};
use crate::{Error, Result};

/// Bodies of up to this many bytes are stored inline in the index: a PUT of one costs no file
/// write and no fsync of its own, only its share of the group-committed WAL fsync. Larger
/// bodies go to body files. Measured (fsync on, ext4, 8 concurrent clients): inline PUTs
/// beat body files clearly up to 16 KiB, break even near 32 KiB and lose from 48 KiB (every
/// 4 KiB page of an inline body is written to the WAL, then again by a checkpoint, under
/// the index lock), so the limit is 16 KiB.
pub const INLINE_BODY_MAX: usize = 16 * 1024;

/// Ranges up to this size are read in one go; larger ones are streamed.
const READ_AT_ONCE: u64 = 1024 * 1024;

/// How `objects.blob` marks a body made of parts.
const PARTS_PREFIX: &str = "parts:";

/// One body file of a body made of parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartFile {
    /// The body file's id.
    pub(crate) id: String,
    /// Its size in bytes.
    pub(crate) size: u64,
}

/// An object's body, as its index row holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// A body file, by id.
    File(String),
    /// The bytes themselves, in the row.
    Inline(Bytes),
    /// The body files of a completed multipart upload, in order: the body is their
    /// concatenation.
    Parts(Arc<[PartFile]>),
}

impl Body {
    /// `data` inline when it is small enough, else written to a new durable body file.
    /// Blocking.
    pub(crate) fn store(blobs: &Blobs, data: Bytes) -> Result<Body> {
        if data.len() <= INLINE_BODY_MAX {
            Ok(Body::Inline(data))
        } else {
            blobs.write_all(&data).map(Body::File)
        }
    }

    /// The body files the body is in (none for an inline body).
    pub(crate) fn files(&self) -> Vec<&str> {
        match self {
            Body::File(id) => vec![id],
            Body::Inline(_) => Vec::new(),
            Body::Parts(parts) => parts.iter().map(|p| p.id.as_str()).collect(),
        }
    }

    /// The `objects.blob` and `objects.body` columns that hold this body.
    pub(crate) fn columns(&self) -> (String, Option<&[u8]>) {
        match self {
            Body::File(id) => (id.clone(), None),
            Body::Inline(data) => (String::new(), Some(data)),
            Body::Parts(parts) => {
                let mut blob = String::with_capacity(PARTS_PREFIX.len() + parts.len() * 45);
                blob.push_str(PARTS_PREFIX);
                for (i, p) in parts.iter().enumerate() {
                    if i > 0 {
                        blob.push(',');
                    }
                    blob.push_str(&p.id);
                    blob.push(':');
                    blob.push_str(&p.size.to_string());
                }
                (blob, None)
            }
        }
    }

    /// The body that the `objects.blob` and `objects.body` columns hold.
    pub(crate) fn from_columns(blob: String, inline: Option<Vec<u8>>) -> Result<Body> {
        match inline {
            Some(data) => Ok(Body::Inline(data.into())),
            None if blob.is_empty() => Err(Error::corrupt("an object row without a body")),
            None => match blob.strip_prefix(PARTS_PREFIX) {
                None => Ok(Body::File(blob)),
                Some(list) => list
                    .split(',')
                    .map(|part| {
                        part.split_once(':')
                            .and_then(|(id, size)| {
                                Some(PartFile {
                                    id: id.to_owned(),
                                    size: size.parse().ok()?,
                                })
                            })
                            .ok_or_else(|| Error::corrupt(format!("a body part `{part}`")))
                    })
                    .collect::<Result<Arc<[PartFile]>>>()
                    .map(Body::Parts),
            },
        }
    }

    /// The body files named by an `objects.blob` column (for the sweep and for deletes).
    pub(crate) fn files_in_column(blob: String) -> Result<Vec<String>> {
        if blob.is_empty() {
            return Ok(Vec::new());
        }
        let body = Body::from_columns(blob, None)?;
        Ok(body.files().into_iter().map(str::to_owned).collect())
    }

    /// A new body with the same bytes, for a copy: an inline body's bytes, or each body file
    /// linked under a new id ([`Blobs::duplicate_all`]). Called under the index lock, which
    /// keeps the source files in place. Blocking.
    pub(crate) fn duplicate(&self, blobs: &Blobs) -> Result<Body> {
        let copies = blobs.duplicate_all(&self.files())?;
        Ok(match self {
            Body::Inline(_) => self.clone(),
            Body::File(_) => match copies.into_iter().next() {
                Some(id) => Body::File(id),
                None => return Err(Error::Internal("a copy of a body file made no file".into())),
            },
            Body::Parts(parts) => Body::Parts(
                parts
                    .iter()
                    .zip(copies)
                    .map(|(p, id)| PartFile { id, size: p.size })
                    .collect(),
            ),
        })
    }

    /// Opens the body for reading. Called under the index lock: a body file is opened, or
    /// the files of a body in parts pinned ([`Blobs::pin`]), before a concurrent overwrite
    /// or delete can remove them (which happens only after its commit). Blocking.
    pub(crate) fn open(&self, blobs: &Blobs) -> Result<Reader> {
        match self {
            Body::Inline(data) => Ok(Reader::Bytes(data.clone())),
            Body::File(id) => {
                let path = blobs.path(id)?;
                let file = std::fs::File::open(&path).map_err(Error::io(&path))?;
                Ok(Reader::File(file, path))
            }
            Body::Parts(parts) => {
                let files = parts
                    .iter()
                    .map(|p| Ok((blobs.path(&p.id)?, p.size)))
                    .collect::<Result<Vec<_>>>()?;
                let pin = blobs.pin(parts.iter().map(|p| p.id.clone()).collect());
                Ok(Reader::Parts(files, pin))
            }
        }
    }
}

/// An opened body.
#[derive(Debug)]
pub(crate) enum Reader {
    /// An inline body.
    Bytes(Bytes),
    /// A body file, and its path for errors.
    File(std::fs::File, PathBuf),
    /// The files of a body in parts with their sizes, in order, pinned while this (or what
    /// is read from it) lives.
    Parts(Vec<(PathBuf, u64)>, Pin),
}

/// `len` bytes of one body file, from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) path: PathBuf,
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

impl Reader {
    /// The whole body, in memory. Blocking.
    pub(crate) fn read_all(self) -> Result<Bytes> {
        match self {
            Reader::Bytes(data) => Ok(data),
            Reader::File(mut file, path) => {
                let mut buf = Vec::new();
                file.read_to_end(&mut buf).map_err(Error::io(&path))?;
                Ok(Bytes::from(buf))
            }
            Reader::Parts(files, _pin) => {
                let size = files.iter().map(|(_, size)| size).sum();
                read_segments(&segments(&files, 0, size)?)
            }
        }
    }

    /// `len` bytes from `start` (within the body's size): in memory when inline or small,
    /// else the file positioned at `start`, or the stretches of the parts' files. Blocking.
    pub(crate) fn range(self, start: u64, len: u64) -> Result<Opened> {
        let (mut file, path) = match self {
            Reader::Bytes(data) => {
                let range = usize::try_from(start)
                    .ok()
                    .zip(usize::try_from(start + len).ok())
                    .filter(|(_, end)| *end <= data.len())
                    .ok_or_else(|| Error::corrupt("a range past an inline body's end"))?;
                return Ok(Opened::Bytes(data.slice(range.0..range.1)));
            }
            Reader::Parts(files, pin) => {
                let segments = segments(&files, start, len)?;
                return if len > READ_AT_ONCE {
                    Ok(Opened::Parts(segments, pin))
                } else {
                    read_segments(&segments).map(Opened::Bytes)
                };
            }
            Reader::File(file, path) => (file, path),
        };
        file.seek(SeekFrom::Start(start))
            .map_err(Error::io(&path))?;
        if len > READ_AT_ONCE {
            return Ok(Opened::File(file, len));
        }
        let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        file.take(len)
            .read_to_end(&mut buf)
            .map_err(Error::io(&path))?;
        Ok(Opened::Bytes(Bytes::from(buf)))
    }
}

/// The stretches of `files` (each with its size, in order) that bytes `start..start + len`
/// of their concatenation are in.
fn segments(files: &[(PathBuf, u64)], start: u64, len: u64) -> Result<Vec<Segment>> {
    let end = start + len;
    let mut out = Vec::new();
    let mut at = 0;
    for (path, size) in files {
        let (from, to) = (at.max(start), (at + size).min(end));
        if from < to {
            out.push(Segment {
                path: path.clone(),
                offset: from - at,
                len: to - from,
            });
        }
        at += size;
    }
    if end > at {
        return Err(Error::corrupt("a range past the end of a body in parts"));
    }
    Ok(out)
}

/// Reads `segments` into memory, one after another; a file shorter than its index row says
/// is an error, not a short body. Blocking.
fn read_segments(segments: &[Segment]) -> Result<Bytes> {
    let total: u64 = segments.iter().map(|s| s.len).sum();
    let mut buf = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for s in segments {
        let before = buf.len();
        std::fs::File::open(&s.path)
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(s.offset))?;
                f.take(s.len).read_to_end(&mut buf)
            })
            .map_err(Error::io(&s.path))?;
        if (buf.len() - before) as u64 != s.len {
            return Err(Error::corrupt(format!(
                "body file {} is shorter than its index row says",
                s.path.display()
            )));
        }
    }
    Ok(Bytes::from(buf))
}

/// A body, or a range of one, ready to send.
#[derive(Debug)]
pub(crate) enum Opened {
    /// The bytes.
    Bytes(Bytes),
    /// A file positioned at the start of the range, and the range's length.
    File(std::fs::File, u64),
    /// Stretches of a body's part files, in order, and the pin that keeps them.
    Parts(Vec<Segment>, Pin),
}

/// Chunks read from each body file.
pub(crate) const STREAM_CHUNK: usize = 256 * 1024;

/// Streams `segments`, opening each file only when the previous one is done, so a body of
/// many parts holds one file open at a time; `pin` keeps the files until the stream is
/// dropped.
pub(crate) fn stream_segments(
    segments: Vec<Segment>,
    pin: Pin,
) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static {
    use futures_util::StreamExt;
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    type Current = tokio_util::io::ReaderStream<tokio::io::Take<tokio::fs::File>>;
    let state: (std::vec::IntoIter<Segment>, Option<Current>, Pin) =
        (segments.into_iter(), None, pin);
    futures_util::stream::try_unfold(state, |(mut rest, mut current, pin)| async move {
        loop {
            if let Some(reading) = current.as_mut()
                && let Some(chunk) = reading.next().await
            {
                return Ok(Some((chunk?, (rest, current, pin))));
            }
            let Some(next) = rest.next() else {
                return Ok(None);
            };
            let mut file = tokio::fs::File::open(&next.path).await?;
            file.seek(SeekFrom::Start(next.offset)).await?;
            current = Some(tokio_util::io::ReaderStream::with_capacity(
                file.take(next.len),
                STREAM_CHUNK,
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened_bytes(o: Opened) -> Bytes {
        match o {
            Opened::Bytes(b) => b,
            Opened::File(..) | Opened::Parts(..) => panic!("a small range is read into memory"),
        }
    }

    #[test]
    fn only_bodies_up_to_the_limit_are_inline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::open(dir.path(), false).expect("open");
        let at = Body::store(&blobs, Bytes::from(vec![1u8; INLINE_BODY_MAX])).expect("at");
        assert!(matches!(&at, Body::Inline(b) if b.len() == INLINE_BODY_MAX));
        let over = Body::store(&blobs, Bytes::from(vec![2u8; INLINE_BODY_MAX + 1])).expect("over");
        let Body::File(id) = &over else {
            panic!("one byte more goes to a file");
        };
        let on_disk = std::fs::read(blobs.path(id).expect("path")).expect("read");
        assert_eq!(on_disk.len(), INLINE_BODY_MAX + 1);
        let read = over.open(&blobs).and_then(Reader::read_all).expect("read");
        assert_eq!(read, on_disk);
        let empty = Body::store(&blobs, Bytes::new()).expect("empty");
        assert_eq!(empty, Body::Inline(Bytes::new()));
    }

    /// `data` as a body in parts of these sizes.
    fn in_parts(blobs: &Blobs, data: &[u8], sizes: &[usize]) -> Body {
        let mut at = 0;
        let parts: Vec<PartFile> = sizes
            .iter()
            .map(|&n| {
                let id = blobs.write_all(&data[at..at + n]).expect("part");
                at += n;
                PartFile { id, size: n as u64 }
            })
            .collect();
        assert_eq!(at, data.len());
        Body::Parts(parts.into())
    }

    #[test]
    fn ranges_read_the_same_from_every_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::open(dir.path(), false).expect("open");
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let inline = Body::Inline(Bytes::from(data.clone()));
        let file = Body::File(blobs.write_all(&data).expect("write"));
        let parts = in_parts(&blobs, &data, &[300, 500, 200]);
        for (start, len) in [
            (0, 1000),
            (0, 1),
            (999, 1),
            (100, 250),
            (1000, 0),
            (299, 2),
            (300, 500),
            (250, 700),
        ] {
            let want = &data[start..start + len];
            for body in [&inline, &file, &parts] {
                let got = opened_bytes(
                    body.open(&blobs)
                        .and_then(|r| r.range(start as u64, len as u64))
                        .expect("range"),
                );
                assert_eq!(got.as_ref(), want, "{start}+{len} of {body:?}");
            }
        }
        let all = parts.open(&blobs).and_then(Reader::read_all).expect("all");
        assert_eq!(all.as_ref(), &data[..]);
        for body in [&inline, &parts] {
            let past = body.open(&blobs).and_then(|r| r.range(990, 11));
            assert!(past.is_err(), "past the end of {body:?}");
        }
    }

    #[test]
    fn every_kind_round_trips_through_its_columns() {
        let parts = Body::Parts(
            vec![
                PartFile {
                    id: "a".repeat(32),
                    size: 5 << 20,
                },
                PartFile {
                    id: "b".repeat(32),
                    size: 7,
                },
            ]
            .into(),
        );
        for body in [
            Body::Inline(Bytes::from_static(b"x")),
            Body::File("c".repeat(32)),
            parts.clone(),
        ] {
            let (blob, inline) = body.columns();
            let back = Body::from_columns(blob.clone(), inline.map(<[u8]>::to_vec));
            assert_eq!(back.expect("parsed"), body);
            let files = Body::files_in_column(if inline.is_some() {
                String::new()
            } else {
                blob
            });
            assert_eq!(files.expect("files"), body.files());
        }
        assert_eq!(
            parts.columns().0,
            format!("parts:{}:5242880,{}:7", "a".repeat(32), "b".repeat(32))
        );
        for bad in ["parts:", "parts:abc", "parts:abc:x", "parts:abc:1,"] {
            let err = Body::from_columns(bad.into(), None).expect_err(bad);
            assert!(err.to_string().contains("body part"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn a_long_range_of_parts_streams_across_files_and_keeps_them_until_dropped() {
        use futures_util::TryStreamExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::open(dir.path(), false).expect("open");
        let size = 3 * READ_AT_ONCE as usize;
        let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        let third = size / 3;
        let body = in_parts(&blobs, &data, &[third, third, size - 2 * third]);
        let (start, len) = (10, size - 20);
        let Opened::Parts(segments, pin) = body
            .open(&blobs)
            .and_then(|r| r.range(start as u64, len as u64))
            .expect("range")
        else {
            panic!("a long range of parts is streamed");
        };
        assert_eq!(segments.len(), 3);
        // The object is overwritten while it is read: its files stay until the reader is done.
        for id in body.files() {
            blobs.remove(id);
        }
        let paths: Vec<PathBuf> = segments.iter().map(|s| s.path.clone()).collect();
        assert!(paths.iter().all(|p| p.exists()), "pinned files are kept");
        let stream = stream_segments(segments, pin);
        let chunks: Vec<Bytes> = stream.try_collect().await.expect("stream");
        assert_eq!(chunks.concat(), &data[start..start + len]);
        assert!(
            paths.iter().all(|p| !p.exists()),
            "the last reader removes what was removed while it read"
        );
    }
}
