//! An attempt's log on this machine: held in memory while it is short and young, then a file
//! `logs/{task_id}.{attempt}.log` that grows while the attempt runs.
//!
//! Most attempts are short and print a few lines. Their output stays in memory, and is stored
//! (`ld/logs/…`) straight from there when the attempt ends: no file is created, read back or
//! looked up. Output moves to the file ("spills") as soon as it passes [`SPILL_BYTES`], or
//! once the attempt has run for [`SPILL_AFTER`], so a long attempt's log can be followed in
//! the file (the dashboard and `linedee logs` read it) and memory stays bounded. The cost: an
//! engine that dies (a crash, `kill -9`) loses what its running attempts printed in their
//! first second. A file was never synced either, so a power loss could already lose it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Output beyond this many bytes goes to the log file.
pub(crate) const SPILL_BYTES: usize = 64 * 1024;

/// How long an attempt's output may stay in memory only.
pub(crate) const SPILL_AFTER: Duration = Duration::from_secs(1);

/// Where an attempt's output is.
#[derive(Debug)]
enum Held {
    /// Not spilled (yet): every byte printed so far, at most [`SPILL_BYTES`].
    Memory(Vec<u8>),
    /// In the file; new output is appended to it.
    File(std::fs::File),
}

/// What an attempt printed, once it ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Captured {
    /// Nothing: no file was made.
    Nothing,
    /// The whole log, which never went to a file.
    Memory(Vec<u8>),
    /// The whole log is in the file ([`log_path`]).
    File,
}

/// An attempt's log, written by its output pumps.
#[derive(Debug)]
pub(crate) struct Log {
    path: PathBuf,
    held: Held,
    spill_at: Instant,
    /// A spill failed: the memory keeps what fits and later output is dropped, so a log that
    /// cannot be written never grows without bound.
    failed: bool,
}

impl Log {
    /// A log held in memory until [`SPILL_AFTER`] from now, to spill to `path`.
    pub(crate) fn new(path: PathBuf) -> Self {
        Log {
            path,
            held: Held::Memory(Vec::new()),
            spill_at: Instant::now() + SPILL_AFTER,
            failed: false,
        }
    }

    /// When the output held in memory is due to go to the file.
    pub(crate) fn spill_at(&self) -> Instant {
        self.spill_at
    }

    /// Appends `chunk`: in memory while the log is short and young, else in the file. An error
    /// means the file could not be written: what fits is kept in memory, the rest is not
    /// logged (it is still shown on the console).
    pub(crate) fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        if let Held::Memory(bytes) = &mut self.held {
            let fits = bytes.len() + chunk.len() <= SPILL_BYTES;
            if fits && (self.failed || Instant::now() < self.spill_at) {
                bytes.extend_from_slice(chunk);
                return Ok(());
            }
            if self.failed {
                return Err(std::io::Error::other("the log file could not be made"));
            }
            if let Err(e) = self.move_to_file() {
                if let (true, Held::Memory(bytes)) = (fits, &mut self.held) {
                    bytes.extend_from_slice(chunk);
                }
                return Err(e);
            }
        }
        match &mut self.held {
            Held::File(file) => file.write_all(chunk),
            Held::Memory(_) => Ok(()),
        }
    }

    /// Moves the output held in memory to the file, now. Nothing printed yet: nothing to do
    /// (the file is made by the first output).
    pub(crate) fn spill(&mut self) -> std::io::Result<()> {
        match &self.held {
            Held::Memory(bytes) if !bytes.is_empty() && !self.failed => self.move_to_file(),
            _ => Ok(()),
        }
    }

    /// Creates the file with what memory holds, and writes there from now on. A failure is
    /// not tried again: the memory keeps what fits.
    fn move_to_file(&mut self) -> std::io::Result<()> {
        use std::io::Write as _;
        let Held::Memory(bytes) = &self.held else {
            return Ok(());
        };
        let made = create_log(&self.path).and_then(|mut file| {
            file.write_all(bytes)?;
            Ok(file)
        });
        match made {
            Ok(file) => {
                self.held = Held::File(file);
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// The log, once the attempt ended (the memory is handed over).
    pub(crate) fn finish(&mut self) -> Captured {
        match &mut self.held {
            Held::File(_) => Captured::File,
            Held::Memory(bytes) if bytes.is_empty() => Captured::Nothing,
            Held::Memory(bytes) => Captured::Memory(std::mem::take(bytes)),
        }
    }
}

/// The local log file of an attempt: `logs/{task_id}.{attempt}.log`, one flat directory, so
/// an attempt's log costs one file, not a directory as well.
pub(crate) fn log_path(data_dir: &Path, task_id: &str, attempt: u32) -> PathBuf {
    data_dir
        .join("logs")
        .join(format!("{task_id}.{attempt}.log"))
}

/// The local log file of an attempt to read: [`log_path`], or where earlier engines wrote
/// it (`logs/{task_id}/{attempt}.log`) when only that one exists.
pub(crate) fn existing_log_path(data_dir: &Path, task_id: &str, attempt: u32) -> PathBuf {
    let path = log_path(data_dir, task_id, attempt);
    let legacy = data_dir
        .join("logs")
        .join(task_id)
        .join(format!("{attempt}.log"));
    if !path.exists() && legacy.exists() {
        legacy
    } else {
        path
    }
}

/// Creates (or truncates) a log file, and the logs directory if need be.
pub(crate) fn create_log(path: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::File::create(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::File::create(path)
        }
        created => created,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_young_log_stays_in_memory_and_makes_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_path(dir.path(), "R.0.0", 1);
        let mut log = Log::new(path.clone());
        assert_eq!(log.finish(), Captured::Nothing);
        log.write(b"one\n").expect("write");
        log.write(b"two\n").expect("write");
        assert_eq!(log.finish(), Captured::Memory(b"one\ntwo\n".to_vec()));
        assert!(!path.exists() && !dir.path().join("logs").exists());
    }

    #[test]
    fn a_log_spills_whole_past_its_size_or_when_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_path(dir.path(), "R.0.0", 1);
        let mut log = Log::new(path.clone());
        let big = vec![b'x'; SPILL_BYTES];
        log.write(b"first\n").expect("write");
        log.write(&big).expect("write");
        log.write(b"last\n").expect("write");
        assert_eq!(log.finish(), Captured::File);
        let text = std::fs::read(&path).expect("log");
        assert_eq!(text.len(), 6 + SPILL_BYTES + 5);
        assert!(text.starts_with(b"first\nxx") && text.ends_with(b"xlast\n"));

        let path = log_path(dir.path(), "R.0.0", 2);
        let mut log = Log::new(path.clone());
        log.spill().expect("nothing to spill");
        assert!(!path.exists(), "printing nothing costs no file");
        log.write(b"started\n").expect("write");
        log.spill().expect("spill");
        log.write(b"later\n").expect("write");
        assert_eq!(std::fs::read(&path).expect("log"), b"started\nlater\n");
        assert_eq!(log.finish(), Captured::File);
    }

    #[test]
    fn output_after_the_spill_time_goes_to_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = log_path(dir.path(), "R.0.0", 1);
        let mut log = Log::new(path.clone());
        log.spill_at = Instant::now();
        log.write(b"late\n").expect("write");
        assert_eq!(std::fs::read(&path).expect("log"), b"late\n");
    }

    #[test]
    fn a_log_file_that_cannot_be_made_keeps_the_memory_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The logs directory's place is taken by a file: nothing can be created under it.
        std::fs::write(dir.path().join("logs"), "not a directory").expect("write");
        let mut log = Log::new(log_path(dir.path(), "R.0.0", 1));
        log.write(b"kept\n").expect("write");
        assert!(log.spill().is_err());
        assert!(log.write(&vec![b'x'; SPILL_BYTES]).is_err(), "dropped");
        log.write(b"also kept\n").expect("write");
        assert_eq!(
            log.finish(),
            Captured::Memory(b"kept\nalso kept\n".to_vec())
        );
    }

    #[test]
    fn a_log_is_read_where_an_earlier_engine_wrote_it_when_only_that_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flat = log_path(dir.path(), "R.0.0", 2);
        assert_eq!(flat, dir.path().join("logs/R.0.0.2.log"));
        assert_eq!(existing_log_path(dir.path(), "R.0.0", 2), flat);
        let legacy = dir.path().join("logs/R.0.0/2.log");
        std::fs::create_dir_all(legacy.parent().expect("parent")).expect("mkdir");
        std::fs::write(&legacy, "old").expect("write");
        assert_eq!(existing_log_path(dir.path(), "R.0.0", 2), legacy);
        std::fs::write(&flat, "new").expect("write");
        assert_eq!(existing_log_path(dir.path(), "R.0.0", 2), flat);
    }
}
