//! [`Client::export`]: download the whole bucket, as the product document's
//! `aws s3 sync s3://$LD_S3_BUCKET ./s3_export` does.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use crate::client::Client;
use crate::error::{Error, Result};

/// Progress of an export, reported after each object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportProgress {
    /// Objects done so far (written or skipped).
    pub objects_done: usize,
    /// Objects in the bucket.
    pub objects_total: usize,
    /// Bytes written so far.
    pub bytes_done: u64,
    /// Bytes in the bucket.
    pub bytes_total: u64,
}

/// What an export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportReport {
    /// Objects written.
    pub objects: usize,
    /// Bytes written.
    pub bytes: u64,
    /// Objects not written, with the reason (a key that cannot be a local path, such as
    /// `../x`, or that clashes with a folder).
    pub skipped: Vec<(String, String)>,
}

type ProgressFn<'a> = Box<dyn FnMut(&ExportProgress) + Send + 'a>;

/// An export in preparation; see [`Client::export`].
#[must_use = "an Export does nothing until `.send().await`"]
pub struct Export<'a> {
    client: &'a Client,
    dir: PathBuf,
    prefix: String,
    progress: Option<ProgressFn<'a>>,
}

impl std::fmt::Debug for Export<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("dir", &self.dir)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Client {
    /// Downloads every object (including the `ld/` run history) into `dir`, keeping the key's
    /// folders. Each file is written through a temporary file and renamed.
    ///
    /// ```no_run
    /// # async fn demo(client: linedee::Client) -> linedee::Result<()> {
    /// let report = client
    ///     .export("./s3_export")
    ///     .on_progress(|p| eprintln!("{}/{} objects", p.objects_done, p.objects_total))
    ///     .send()
    ///     .await?;
    /// println!("{} objects, {} bytes", report.objects, report.bytes);
    /// # Ok(()) }
    /// ```
    pub fn export(&self, dir: impl Into<PathBuf>) -> Export<'_> {
        Export {
            client: self,
            dir: dir.into(),
            prefix: String::new(),
            progress: None,
        }
    }
}

impl<'a> Export<'a> {
    /// Only keys under this prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Called after each object.
    pub fn on_progress(mut self, f: impl FnMut(&ExportProgress) + Send + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Runs the export: up to the client's download concurrency at once
    /// ([`ClientBuilder::download_concurrency`](crate::ClientBuilder::download_concurrency)),
    /// each object streamed to a temporary file and renamed. A key under another key (`a` and
    /// `a/b`) is skipped, whatever order the downloads end in. The first error stops it.
    pub async fn send(mut self) -> Result<ExportReport> {
        use futures_util::StreamExt as _;

        let objects = self.client.list(&self.prefix).await?;
        let mut progress = ExportProgress {
            objects_done: 0,
            objects_total: objects.len(),
            bytes_done: 0,
            bytes_total: objects.iter().map(|o| o.size).sum(),
        };
        let mut report = ExportReport::default();
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| Error::io("cannot create", &self.dir, e))?;
        let keys: HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let mut todo = Vec::with_capacity(objects.len());
        for object in &objects {
            match local_path(&self.dir, &object.key) {
                Err(reason) => report.skipped.push((object.key.clone(), reason.to_owned())),
                Ok(_) if under_another_key(&keys, &object.key) => {
                    report.skipped.push((object.key.clone(), CLASH.to_owned()));
                }
                Ok(path) => todo.push((object.key.clone(), path)),
            }
        }
        progress.objects_done = report.skipped.len();
        let client = self.client;
        let mut downloads = futures_util::stream::iter(todo)
            .map(|(key, path)| async move {
                let done = download(client, &key, &path).await;
                (key, done)
            })
            .buffer_unordered(client.inner.download_concurrency);
        while let Some((key, done)) = downloads.next().await {
            match done {
                Ok(n) => {
                    report.objects += 1;
                    report.bytes += n;
                    progress.bytes_done += n;
                }
                // A file or folder of that name already in the export directory.
                Err(Error::Io { source, .. }) if clash(&source) => {
                    report.skipped.push((key, CLASH.to_owned()));
                }
                Err(e) => return Err(e),
            }
            progress.objects_done += 1;
            if let Some(f) = self.progress.as_mut() {
                f(&progress);
            }
        }
        Ok(report)
    }
}

/// Why a key under another key is skipped.
const CLASH: &str =
    "clashes with a folder of the same name (keys `a` and `a/b` cannot both be files)";

/// Whether a proper prefix of `key` ending before a `/` is itself a key (`a` for `a/b`).
fn under_another_key(keys: &HashSet<&str>, key: &str) -> bool {
    key.match_indices('/')
        .any(|(i, _)| keys.contains(&key[..i]))
}

async fn download(client: &Client, key: &str, path: &Path) -> Result<u64> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| Error::io("cannot create", parent, e))?;
    }
    client.get(key).await?.save_to(path).await
}

fn clash(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::IsADirectory
            | std::io::ErrorKind::NotADirectory
            | std::io::ErrorKind::AlreadyExists
    )
}

/// Maps a key to a path under `dir`, refusing anything that could leave it.
pub(crate) fn local_path(dir: &Path, key: &str) -> Result<PathBuf, &'static str> {
    if key.is_empty() || key.ends_with('/') {
        return Err("a folder marker, not a file");
    }
    let mut path = dir.to_path_buf();
    for part in key.split('/') {
        let comp = Path::new(part).components().next();
        match comp {
            _ if part.is_empty() => return Err("the key has an empty path segment (`//`)"),
            Some(Component::Normal(_))
                if Path::new(part).components().count() == 1 && !part.contains('\0') =>
            {
                path.push(part)
            }
            _ => return Err("the key has a `.` or `..` segment, which cannot be a local path"),
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_under_another_key_is_found_at_any_depth() {
        let keys: HashSet<&str> = ["a", "a/b", "x/y", "x/y/z/w", "m/n"].into();
        assert!(!under_another_key(&keys, "a"));
        assert!(under_another_key(&keys, "a/b"));
        assert!(!under_another_key(&keys, "x/y"));
        assert!(under_another_key(&keys, "x/y/z/w"));
        assert!(!under_another_key(&keys, "m/n"));
    }

    #[test]
    fn keys_never_leave_the_export_dir() {
        let d = Path::new("/x");
        assert_eq!(
            local_path(d, "ld/runs/a.json").unwrap(),
            Path::new("/x/ld/runs/a.json")
        );
        assert_eq!(
            local_path(d, "in/img/é.jpg").unwrap(),
            Path::new("/x/in/img/é.jpg")
        );
        for bad in ["../x", "a/../../x", "./a", "a//b", "a/", "", "/abs", "a/."] {
            assert!(local_path(d, bad).is_err(), "{bad}");
        }
    }
}
