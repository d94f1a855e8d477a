//! Object bodies on disk: files named by a random id (never by the key), written to
//! `tmp/`, fsynced and renamed into `blobs/{id[..2]}/{id}` (and the rename fsynced) before
//! the index commit that makes them visible. Unreferenced files are swept at start.
//!
//! A reader of a body in parts opens its files one at a time, so it pins them ([`Pin`])
//! instead: removing a pinned file waits until its last reader lets go.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use md5::{Digest, Md5};
use rand::RngCore;

use crate::{Error, Result};

/// The body files of one store.
#[derive(Debug)]
pub(crate) struct Blobs {
    root: PathBuf,
    tmp: PathBuf,
    fsync: bool,
    pins: Arc<Pins>,
}

/// The body files that readers hold, by id.
#[derive(Debug)]
struct Pins {
    root: PathBuf,
    held: Mutex<HashMap<String, Held>>,
}

/// One pinned body file.
#[derive(Debug, Default)]
struct Held {
    readers: usize,
    /// Removed while pinned: the last reader removes it.
    removed: bool,
}

/// Keeps body files in place while a reader reads them: [`Blobs::remove`] of a pinned file
/// is carried out when the last pin on it is dropped.
#[derive(Debug)]
pub(crate) struct Pin {
    pins: Arc<Pins>,
    ids: Vec<String>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut doomed = Vec::new();
        {
            let mut held = self.pins.lock();
            for id in &self.ids {
                if let Some(h) = held.get_mut(id) {
                    h.readers -= 1;
                    if h.readers == 0 {
                        if h.removed {
                            doomed.push(id.clone());
                        }
                        held.remove(id);
                    }
                }
            }
        }
        for id in &doomed {
            unlink(&self.pins.root, id);
        }
    }
}

impl Pins {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Removes blob `id` under `root`. Failures only leave an orphan, which the next start sweeps.
fn unlink(root: &Path, id: &str) {
    if !valid_id(id) {
        return;
    }
    let path = root.join(&id[..2]).join(id);
    if let Err(e) = fs::remove_file(&path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(blob = id, error = %e, "could not remove an unreferenced body file");
    }
}

/// Whether `id` is a blob id this module made (32 lowercase hex digits); nothing else
/// can be turned into a path.
fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(Error::io(path))
}

impl Blobs {
    /// Opens (creating) `dir/blobs` and `dir/tmp`.
    pub(crate) fn open(dir: &Path, fsync: bool) -> Result<Self> {
        let root = dir.join("blobs");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp).map_err(Error::io(&tmp))?;
        for i in 0..=255u8 {
            let sub = root.join(format!("{i:02x}"));
            fs::create_dir_all(&sub).map_err(Error::io(&sub))?;
        }
        if fsync {
            sync_dir(&root)?;
            sync_dir(dir)?;
        }
        let pins = Arc::new(Pins {
            root: root.clone(),
            held: Mutex::default(),
        });
        Ok(Self {
            root,
            tmp,
            fsync,
            pins,
        })
    }

    /// The final path of blob `id`.
    pub(crate) fn path(&self, id: &str) -> Result<PathBuf> {
        if !valid_id(id) {
            return Err(Error::corrupt(format!("blob id `{id}`")));
        }
        Ok(self.root.join(&id[..2]).join(id))
    }

    fn tmp_path(&self, id: &str) -> PathBuf {
        self.tmp.join(id)
    }

    /// Creates the temporary file for a new blob.
    pub(crate) fn create_tmp(&self, id: &str) -> Result<File> {
        let path = self.tmp_path(id);
        File::create_new(&path).map_err(Error::io(path))
    }

    /// Creates the temporary file for a new blob, to be written past the page cache
    /// (`direct.rs`).
    pub(crate) fn create_tmp_direct(&self, id: &str) -> Result<super::direct::DirectFile> {
        super::direct::DirectFile::create(&self.tmp_path(id))
    }

    /// Makes a written temporary file durable, renames it to its final place and makes the
    /// rename durable (directory fsync). Nothing refers to the blob until the index commit
    /// that follows, so a crash at any point here leaves only an orphan for the sweep.
    pub(crate) fn publish(&self, id: &str, file: File) -> Result<()> {
        let tmp = self.tmp_path(id);
        if self.fsync {
            file.sync_all().map_err(Error::io(&tmp))?;
        }
        drop(file);
        let dest = self.path(id)?;
        fs::rename(&tmp, &dest).map_err(Error::io(&dest))?;
        if self.fsync
            && let Some(parent) = dest.parent()
        {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Writes `data` as a new durable blob; returns its id.
    pub(crate) fn write_all(&self, data: &[u8]) -> Result<String> {
        let id = new_id();
        let mut file = self.create_tmp(&id)?;
        if let Err(e) = file.write_all(data) {
            self.discard_tmp(&id);
            return Err(Error::io(self.tmp_path(&id))(e));
        }
        self.publish(&id, file)?;
        Ok(id)
    }

    /// New blobs with the same bytes as each of `srcs`, in order, for a copy. Each is a hard
    /// link made in its final place: its bytes are durable already, being the same file, so
    /// only the new names need to be, and each directory that got one is fsynced once for
    /// all of them. Where a link fails, the bytes are copied and published. On failure,
    /// what was made is removed. Nothing refers to the new blobs until the caller commits.
    pub(crate) fn duplicate_all(&self, srcs: &[&str]) -> Result<Vec<String>> {
        let mut made = Vec::with_capacity(srcs.len());
        let mut dirs = BTreeSet::new();
        let linked = (|| {
            for src in srcs {
                let from = self.path(src)?;
                let id = new_id();
                let dest = self.path(&id)?;
                if fs::hard_link(&from, &dest).is_ok() {
                    dirs.insert(dest.parent().map(Path::to_path_buf).unwrap_or_default());
                    made.push(id);
                } else {
                    let tmp = self.tmp_path(&id);
                    if let Err(e) = fs::copy(&from, &tmp) {
                        self.discard_tmp(&id);
                        return Err(Error::io(&from)(e));
                    }
                    let file = File::open(&tmp).map_err(Error::io(&tmp))?;
                    self.publish(&id, file)?;
                    made.push(id);
                }
            }
            if self.fsync {
                for dir in &dirs {
                    sync_dir(dir)?;
                }
            }
            Ok(())
        })();
        match linked {
            Ok(()) => Ok(made),
            Err(e) => {
                for id in &made {
                    self.remove(id);
                }
                Err(e)
            }
        }
    }

    /// Removes a temporary file that will not be published.
    pub(crate) fn discard_tmp(&self, id: &str) {
        let _ = fs::remove_file(self.tmp_path(id));
    }

    /// Removes a blob no index row refers to any more, at once, or when its last reader
    /// lets go when it is pinned. Failures only leave an orphan, which the next start sweeps.
    pub(crate) fn remove(&self, id: &str) {
        if let Some(h) = self.pins.lock().get_mut(id) {
            h.removed = true;
            return;
        }
        unlink(&self.root, id);
    }

    /// Pins `ids` until the returned [`Pin`] is dropped. Called under the index lock, like
    /// opening a body file, so no removal that follows a commit can come first.
    pub(crate) fn pin(&self, ids: Vec<String>) -> Pin {
        let mut held = self.pins.lock();
        for id in &ids {
            held.entry(id.clone()).or_default().readers += 1;
        }
        drop(held);
        Pin {
            pins: Arc::clone(&self.pins),
            ids,
        }
    }

    /// Deletes every temporary file and every blob not in `live`; returns how many.
    pub(crate) fn sweep(&self, live: &HashSet<String>) -> Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp).map_err(Error::io(&self.tmp))? {
            let entry = entry.map_err(Error::io(&self.tmp))?;
            fs::remove_file(entry.path()).map_err(Error::io(entry.path()))?;
            removed += 1;
        }
        for sub in fs::read_dir(&self.root).map_err(Error::io(&self.root))? {
            let sub = sub.map_err(Error::io(&self.root))?.path();
            if !sub.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&sub).map_err(Error::io(&sub))? {
                let entry = entry.map_err(Error::io(&sub))?;
                let name = entry.file_name();
                if !name.to_str().is_some_and(|n| live.contains(n)) {
                    fs::remove_file(entry.path()).map_err(Error::io(entry.path()))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// The MD5 of `data` in hex: a single-part object's ETag.
pub(crate) fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_only_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::open(dir.path(), false).expect("open");
        assert!(blobs.path("../x").is_err());
        assert!(blobs.path("a/b").is_err());
        let id = blobs.write_all(b"hello").expect("write");
        let path = blobs.path(&id).expect("path");
        assert!(path.starts_with(dir.path()));
        assert_eq!(fs::read(&path).expect("read"), b"hello");
    }

    /// Every body file under `blobs/`.
    fn count(dir: &Path) -> usize {
        fs::read_dir(dir.join("blobs"))
            .expect("blobs")
            .flatten()
            .map(|sub| fs::read_dir(sub.path()).expect("sub").count())
            .sum()
    }

    #[test]
    fn copies_are_links_with_the_same_bytes_and_a_failed_copy_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::open(dir.path(), true).expect("open");
        let srcs: Vec<String> = (0..3u8)
            .map(|i| blobs.write_all(&[i; 100]).expect("write"))
            .collect();
        let refs: Vec<&str> = srcs.iter().map(String::as_str).collect();
        let copies = blobs.duplicate_all(&refs).expect("copy");
        assert_eq!(count(dir.path()), 6);
        for (i, (src, copy)) in srcs.iter().zip(&copies).enumerate() {
            assert_ne!(src, copy);
            blobs.remove(src);
            let bytes = fs::read(blobs.path(copy).expect("path")).expect("read");
            assert_eq!(bytes, vec![i as u8; 100], "a copy outlives its source");
        }
        let missing = new_id();
        let err = blobs.duplicate_all(&[copies[0].as_str(), missing.as_str()]);
        assert!(err.is_err());
        assert_eq!(
            count(dir.path()),
            3,
            "the first link of the failed copy was removed"
        );
    }

    #[test]
    fn sweep_removes_orphans_and_tmp_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = Blobs::open(dir.path(), false).expect("open");
        let keep = blobs.write_all(b"keep").expect("write");
        let orphan = blobs.write_all(b"orphan").expect("write");
        drop(blobs.create_tmp(&new_id()).expect("tmp"));
        let live = HashSet::from([keep.clone()]);
        assert_eq!(blobs.sweep(&live).expect("sweep"), 2);
        assert!(blobs.path(&keep).expect("path").exists());
        assert!(!blobs.path(&orphan).expect("path").exists());
    }
}
