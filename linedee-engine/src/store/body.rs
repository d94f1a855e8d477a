//! Where an object's body lives: small bodies inline in the object's index row, committed
//! with it (no file, no file or directory fsync); larger ones in a body file (`blobs.rs`).
//! Reading a body, or a range of it, whichever kind it is.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;

use super::blobs::Blobs;
use crate::{Error, Result};

/// Bodies of up to this many bytes are stored inline in the index: a PUT of one costs no file
/// write and no fsync of its own, only its share of the group-committed WAL fsync. Larger
/// bodies go to body files. Measured (fsync on, ext4, 8 concurrent clients): inline PUTs
/// beat body files clearly up to 16 KiB, break even near 32 KiB and lose from 48 KiB (every
/// 4 KiB page of an inline body is written to the WAL, then again by a checkpoint, under
/// the index lock), so the limit is 16 KiB.
pub const INLINE_BODY_MAX: usize = 16 * 1024;

/// Ranges of body files up to this size are read in one go; larger ones are streamed.
const READ_AT_ONCE: u64 = 1024 * 1024;

/// An object's body, as its index row holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    /// A body file, by id.
    File(String),
    /// The bytes themselves, in the row.
    Inline(Bytes),
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

    /// The body file's id, for a body in a file.
    pub(crate) fn file(&self) -> Option<&str> {
        match self {
            Body::File(id) => Some(id),
            Body::Inline(_) => None,
        }
    }

    /// Opens the body for reading. Called under the index lock: a body file is opened
    /// before a concurrent overwrite or delete can remove it (which happens only after its
    /// commit), and stays readable through the handle. Blocking.
    pub(crate) fn open(&self, blobs: &Blobs) -> Result<Reader> {
        match self {
            Body::Inline(data) => Ok(Reader::Bytes(data.clone())),
            Body::File(id) => {
                let path = blobs.path(id)?;
                let file = std::fs::File::open(&path).map_err(Error::io(&path))?;
                Ok(Reader::File(file, path))
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
        }
    }

    /// `len` bytes from `start` (within the body's size): in memory when inline or small,
    /// else the file positioned at `start`. Blocking.
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

/// A body, or a range of one, ready to send.
#[derive(Debug)]
pub(crate) enum Opened {
    /// The bytes.
    Bytes(Bytes),
    /// A file positioned at the start of the range, and the range's length.
    File(std::fs::File, u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened_bytes(o: Opened) -> Bytes {
        match o {
            Opened::Bytes(b) => b,
            Opened::File(..) => panic!("a small range is read into memory"),
        }
    }

    #[test]
    fn only_bodies_up_to_the_limit_are_inline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::open(dir.path(), false).expect("open");
        let at = Body::store(&blobs, Bytes::from(vec![1u8; INLINE_BODY_MAX])).expect("at");
        assert!(matches!(&at, Body::Inline(b) if b.len() == INLINE_BODY_MAX));
        let over = Body::store(&blobs, Bytes::from(vec![2u8; INLINE_BODY_MAX + 1])).expect("over");
        let id = over.file().expect("one byte more goes to a file");
        let on_disk = std::fs::read(blobs.path(id).expect("path")).expect("read");
        assert_eq!(on_disk.len(), INLINE_BODY_MAX + 1);
        let read = over.open(&blobs).and_then(Reader::read_all).expect("read");
        assert_eq!(read, on_disk);
        let empty = Body::store(&blobs, Bytes::new()).expect("empty");
        assert_eq!(empty, Body::Inline(Bytes::new()));
    }

    #[test]
    fn ranges_read_the_same_from_either_kind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::open(dir.path(), false).expect("open");
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let inline = Body::Inline(Bytes::from(data.clone()));
        let file = Body::File(blobs.write_all(&data).expect("write"));
        for (start, len) in [(0, 1000), (0, 1), (999, 1), (100, 250), (1000, 0)] {
            let want = &data[start..start + len];
            for body in [&inline, &file] {
                let got = opened_bytes(
                    body.open(&blobs)
                        .and_then(|r| r.range(start as u64, len as u64))
                        .expect("range"),
                );
                assert_eq!(got.as_ref(), want, "{start}+{len} of {body:?}");
            }
        }
        let past = inline.open(&blobs).and_then(|r| r.range(990, 11));
        assert!(past.is_err(), "past the end");
    }
}
