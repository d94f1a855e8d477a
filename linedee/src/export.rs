//! [`Client::export`]: download the whole bucket, as the product document's
//! `aws s3 sync s3://$LD_S3_BUCKET ./s3_export` does.

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

    /// Runs the export.
    pub async fn send(mut self) -> Result<ExportReport> {
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
        for object in objects {
            match local_path(&self.dir, &object.key) {
                Err(reason) => report.skipped.push((object.key.clone(), reason.to_owned())),
                Ok(path) => match self.download(&object.key, &path).await {
                    Ok(n) => {
                        report.objects += 1;
                        report.bytes += n;
                        progress.bytes_done += n;
                    }
                    Err(Error::Io { source, .. }) if clash(&source) => report.skipped.push((
                        object.key.clone(),
                        "clashes with a folder of the same name (keys `a` and `a/b` cannot both be files)".to_owned(),
                    )),
                    Err(e) => return Err(e),
                },
            }
            progress.objects_done += 1;
            if let Some(f) = self.progress.as_mut() {
                f(&progress);
            }
        }
        Ok(report)
    }

    async fn download(&self, key: &str, path: &Path) -> Result<u64> {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| Error::io("cannot create", parent, e))?;
        }
        self.client.get(key).await?.save_to(path).await
    }
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
