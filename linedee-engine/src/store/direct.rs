//! Writing a large body's file past the page cache (`O_DIRECT`, as MinIO does for large
//! objects): a body written once and read back rarely does not fill the page cache, and the
//! fsync that follows has almost nothing left to flush.
//!
//! `O_DIRECT` wants the memory, the length and the file offset of each write aligned to the
//! device's block: [`AlignedBuf`] keeps its bytes at an [`ALIGN`] boundary, and a spill writes
//! whole buffers of a size that is a multiple of it. The unaligned end of a body is written
//! through the page cache. Where a file system refuses `O_DIRECT` (at open or at the first
//! write), the file is written through the page cache instead: slower on some machines, the
//! same bytes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The alignment of memory, lengths and offsets for `O_DIRECT` (the largest logical block
/// size in common use).
pub(crate) const ALIGN: usize = 4096;

/// A byte buffer whose contents start at an [`ALIGN`] boundary in memory.
#[derive(Debug, Default)]
pub(crate) struct AlignedBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// The bytes held.
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }

    /// How many bytes are held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the bytes start at an [`ALIGN`] boundary (they do unless the platform could
    /// not say where one is; then writes go through the page cache).
    pub(crate) fn is_aligned(&self) -> bool {
        self.mem.is_empty()
            || self
                .mem
                .as_ptr()
                .wrapping_add(self.start)
                .addr()
                .is_multiple_of(ALIGN)
    }

    /// Appends as much of `data` as fits below `limit` bytes in all; returns how much.
    pub(crate) fn extend_up_to(&mut self, data: &[u8], limit: usize) -> usize {
        let n = data.len().min(limit.saturating_sub(self.len));
        let need = self.len + n;
        if self.start + need > self.mem.len() {
            // Doubling, as a Vec grows, but never past the limit.
            self.grow((2 * self.len).min(limit).max(need));
        }
        self.mem[self.start + self.len..][..n].copy_from_slice(&data[..n]);
        self.len += n;
        n
    }

    /// Empties the buffer, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Moves the contents to new memory with room for `capacity` bytes.
    fn grow(&mut self, capacity: usize) {
        let mut mem = vec![0u8; capacity + ALIGN];
        let start = mem.as_ptr().align_offset(ALIGN).min(ALIGN);
        mem[start..start + self.len].copy_from_slice(self.as_slice());
        self.mem = mem;
        self.start = start;
    }
}

/// A new body file being written, with `O_DIRECT` while the file system accepts it.
#[derive(Debug)]
pub(crate) struct DirectFile {
    file: File,
    path: PathBuf,
    direct: bool,
}

impl DirectFile {
    /// Creates the file at `path` (which must not exist).
    pub(crate) fn create(path: &Path) -> Result<DirectFile> {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        let direct = options
            .clone()
            .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
            .open(path);
        let (file, direct) = match direct {
            Ok(file) => (file, true),
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                (options.open(path).map_err(Error::io(path))?, false)
            }
            Err(e) => return Err(Error::io(path)(e)),
        };
        Ok(DirectFile {
            file,
            path: path.to_owned(),
            direct,
        })
    }

    /// Appends `buf`, whose length is a multiple of [`ALIGN`] (as every write before it was).
    pub(crate) fn write_block(&mut self, buf: &AlignedBuf) -> Result<()> {
        let data = buf.as_slice();
        if self.direct && (!buf.is_aligned() || !data.len().is_multiple_of(ALIGN)) {
            self.reopen_buffered()?;
        }
        match self.file.write_all(data) {
            Err(e) if self.direct && e.raw_os_error() == Some(nix::libc::EINVAL) => {
                // The file system took the flag at open but refuses such writes: what was
                // written stays, and the rest goes through the page cache.
                self.reopen_buffered()?;
                self.file.write_all(data).map_err(Error::io(&self.path))
            }
            written => written.map_err(Error::io(&self.path)),
        }
    }

    /// Appends `tail` (any length) through the page cache; returns the file, ready to be
    /// fsynced and published.
    pub(crate) fn finish(mut self, tail: &[u8]) -> Result<File> {
        if !tail.is_empty() {
            self.reopen_buffered()?;
            self.file.write_all(tail).map_err(Error::io(&self.path))?;
        }
        Ok(self.file)
    }

    /// Goes on through the page cache, at the end of what is written.
    fn reopen_buffered(&mut self) -> Result<()> {
        if self.direct {
            self.file = OpenOptions::new()
                .append(true)
                .open(&self.path)
                .map_err(Error::io(&self.path))?;
            self.direct = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aligned_buffer_grows_keeps_its_bytes_and_stops_at_the_limit() {
        let mut buf = AlignedBuf::default();
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut taken = 0;
        for piece in data.chunks(777) {
            taken += buf.extend_up_to(piece, 3 * ALIGN);
            assert!(buf.is_aligned());
        }
        assert_eq!(taken, 3 * ALIGN, "no more than the limit");
        assert_eq!(buf.as_slice(), &data[..3 * ALIGN]);
        buf.clear();
        assert_eq!(buf.len(), 0);
        assert_eq!(buf.extend_up_to(&data[..5], 3 * ALIGN), 5);
        assert_eq!(buf.as_slice(), &data[..5]);
    }

    #[test]
    fn blocks_then_an_unaligned_tail_make_the_whole_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut file = DirectFile::create(&path).expect("create");
        let data: Vec<u8> = (0..(4 * ALIGN + 123) as u32)
            .map(|i| (i % 253) as u8)
            .collect();
        let mut buf = AlignedBuf::default();
        for block in data[..4 * ALIGN].chunks(2 * ALIGN) {
            buf.clear();
            buf.extend_up_to(block, 2 * ALIGN);
            file.write_block(&buf).expect("block");
        }
        let file = file.finish(&data[4 * ALIGN..]).expect("tail");
        file.sync_all().expect("fsync");
        assert_eq!(std::fs::read(&path).expect("read"), data);
        assert!(
            DirectFile::create(&path).is_err(),
            "an existing file is not overwritten"
        );
    }

    #[test]
    fn an_unaligned_block_goes_through_the_page_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let mut file = DirectFile::create(&path).expect("create");
        let mut buf = AlignedBuf::default();
        buf.extend_up_to(&[7u8; 100], ALIGN);
        file.write_block(&buf).expect("unaligned length");
        assert!(!file.direct);
        let file = file.finish(b"end").expect("tail");
        drop(file);
        let mut want = vec![7u8; 100];
        want.extend_from_slice(b"end");
        assert_eq!(std::fs::read(&path).expect("read"), want);
    }
}
