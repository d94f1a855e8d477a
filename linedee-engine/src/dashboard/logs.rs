//! Reading a slice of an attempt's local log, for the run page's live tail.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Most bytes returned by one read.
pub(crate) const CHUNK: u64 = 64 * 1024;

/// A slice of a log.
#[derive(Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Slice {
    /// The text (invalid UTF-8 replaced; a character cut at the end is left for the next read).
    pub(crate) text: String,
    /// Where the slice starts.
    pub(crate) offset: u64,
    /// Where the next read starts.
    pub(crate) next_offset: u64,
    /// The file's size when read.
    pub(crate) size: u64,
}

/// Is `id` a task id, `{run_id}.{step}.{task}` with a valid run id and decimal indices? Only
/// such ids name a log file, so a request cannot reach outside the logs directory.
pub(crate) fn valid_task_id(id: &str) -> bool {
    let mut parts = id.rsplitn(3, '.');
    let (Some(task), Some(step), Some(run)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let index = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    index(task) && index(step) && linedee::metadata::is_valid_run_id(run)
}

/// Parses an attempt number: decimal, 1 or more.
pub(crate) fn parse_attempt(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n >= 1)
}

/// Up to [`CHUNK`] bytes of a whole log held in memory (a stored one), from `offset`.
pub(crate) fn slice(bytes: &[u8], offset: u64) -> Slice {
    let size = bytes.len() as u64;
    let start = usize::try_from(offset.min(size)).unwrap_or(bytes.len());
    let end = start.saturating_add(CHUNK as usize).min(bytes.len());
    let mut keep = end;
    // A character cut at the end is left for the next read.
    if let Err(e) = std::str::from_utf8(&bytes[start..end])
        && e.error_len().is_none()
    {
        keep = start + e.valid_up_to();
    }
    Slice {
        text: String::from_utf8_lossy(&bytes[start..keep]).into_owned(),
        offset: start as u64,
        next_offset: keep as u64,
        size,
    }
}

/// Reads up to [`CHUNK`] bytes of `path` from `offset`. `Ok(None)` when there is no such file.
pub(crate) fn read(path: &Path, offset: u64) -> std::io::Result<Option<Slice>> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    let offset = offset.min(size);
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.take(CHUNK).read_to_end(&mut buf)?;
    let mut keep = buf.len();
    if let Err(e) = std::str::from_utf8(&buf)
        && e.error_len().is_none()
        && offset + (buf.len() as u64) < size
    {
        // A character cut by the chunk's end: leave it for the next read.
        keep = e.valid_up_to();
    }
    let text = String::from_utf8_lossy(&buf[..keep]).into_owned();
    Ok(Some(Slice {
        text,
        offset,
        next_offset: offset + keep as u64,
        size,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids() {
        assert!(valid_task_id("01JDX3Q7ZK6Q.1.0"));
        assert!(valid_task_id("my-run_1.12.3"));
        for bad in [
            "", "..", "a..0", "a.0", "../x.0.0", "a/b.0.0", "a.0.0/..", ".0.0", "a.-1.0", "a.0.0 ",
            "a.0.x",
        ] {
            assert!(!valid_task_id(bad), "{bad}");
        }
    }

    #[test]
    fn attempts() {
        assert_eq!(parse_attempt("1"), Some(1));
        assert_eq!(parse_attempt("0"), None);
        assert_eq!(parse_attempt("-1"), None);
        assert_eq!(parse_attempt("1.log"), None);
        assert_eq!(parse_attempt("99999999999"), None);
    }

    #[test]
    fn reads_in_chunks_without_cutting_characters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("1.log");
        assert_eq!(read(&path, 0).expect("read"), None);
        // 'é' is two bytes; put one across the chunk boundary.
        let mut body = "a".repeat(CHUNK as usize - 1);
        body.push('é');
        body.push_str("tail");
        std::fs::write(&path, &body).expect("write");
        let first = read(&path, 0).expect("read").expect("exists");
        assert_eq!(first.next_offset, CHUNK - 1);
        assert_eq!(first.size, body.len() as u64);
        let second = read(&path, first.next_offset)
            .expect("read")
            .expect("exists");
        assert_eq!(second.text, "étail");
        assert_eq!(second.next_offset, body.len() as u64);
        let past = read(&path, 1 << 40).expect("read").expect("exists");
        assert_eq!((past.text.as_str(), past.offset), ("", body.len() as u64));
    }
}
