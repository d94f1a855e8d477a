//! The embedded S3 store.
//!
//! - `mod.rs`: [`Store`], [`StoreOptions`], opening, and the in-process API (`read.rs`: its
//!   object reads).
//! - `index.rs`: the SQLite index (buckets, objects); `list.rs`: ListObjectsV2;
//!   `multipart.rs`: multipart uploads.
//! - `body.rs`: where a body lives (inline in its index row when small, else a body file,
//!   or a completed upload's part files) and reading it; `blobs.rs`: body files (temporary
//!   file, fsync, rename, sweep, pins); `ingest.rs`: receiving request bodies with their
//!   checksums; `direct.rs`: writing large ones past the page cache.
//! - `outbox.rs`: triggers, committed in the same transaction as their object;
//!   `group.rs`: group commit of concurrent writes.
//! - `auth.rs`: credentials, rotation, SigV4 enforcement.
//! - `s3.rs`: the s3s `S3` implementation (`s3_list.rs`: its listings, `s3_multipart.rs`:
//!   its multipart operations, `conditions.rs`: conditional reads, `s3_types.rs`: errors,
//!   ETags, preconditions and metadata as s3s has them); `serve.rs`: HTTP serving;
//!   `config_vars.rs`: the Heroku-shaped config-vars endpoint.

mod auth;
mod blobs;
mod body;
mod conditions;
mod config_vars;
mod direct;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzzing;
mod group;
mod index;
mod ingest;
mod list;
mod multipart;
mod outbox;
mod put_file;
mod read;
mod s3;
mod s3_list;
mod s3_multipart;
mod s3_types;
mod serve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rusqlite::Connection;
use tokio::sync::broadcast;

pub use auth::Credentials;
pub(crate) use auth::random as random_token;
pub use body::INLINE_BODY_MAX;
pub(crate) use group::Commit;
pub use index::ObjectMeta;
pub use outbox::{ENGINE_PREFIX, ObjectEvent, Trigger, TriggerKind, trigger_kind};

use crate::{Error, Result, StoreError};

/// User metadata S3 allows per object: UTF-8 bytes of every key plus value.
pub const METADATA_LIMIT: usize = 2048;

/// How a [`Store`] is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Fsync body files, their directories and the SQLite WAL before answering a write
    /// (default `true`). Off, a power loss may lose acknowledged writes; a process crash
    /// still loses nothing. (`docs/architecture.md`, "Embedded store: durability", has the
    /// argument.)
    pub fsync: bool,
    /// When set, credentials are session credentials that expire after this long and are
    /// replaced at half their lifetime; an expired one gets `ExpiredToken`.
    pub credential_lifetime: Option<Duration>,
    /// The region the store reports (default `us-east-1`).
    pub region: String,
    /// A bucket created at open, and reported as `LD_S3_BUCKET`.
    pub default_bucket: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            fsync: true,
            credential_lifetime: None,
            region: "us-east-1".to_owned(),
            default_bucket: None,
        }
    }
}

/// The embedded S3 store: cheap to clone, shared by the S3 server and the engine.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    dir: PathBuf,
    options: StoreOptions,
    db: Mutex<Connection>,
    blobs: Arc<blobs::Blobs>,
    auth: Arc<auth::Auth>,
    triggers: broadcast::Sender<Trigger>,
    objects: broadcast::Sender<ObjectEvent>,
    /// Writes waiting for the committer thread (`group.rs`).
    group: Arc<group::Queue>,
    /// How far the committer's batches are committed, and synced (`group.rs`).
    commits: tokio::sync::watch::Sender<group::Commits>,
}

pub(crate) const CHANNEL: usize = 4096;

fn validate_bucket(name: &str) -> Result<()> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-'))
        && name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
        && name
            .as_bytes()
            .last()
            .is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidBucketName {
            name: name.to_owned(),
        }
        .into())
    }
}

pub(crate) fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 1024 {
        return Err(StoreError::InvalidKey { len: key.len() }.into());
    }
    Ok(())
}

/// Lowercases metadata keys and checks S3's size limit.
pub(crate) fn normalize_metadata<I>(metadata: I) -> Result<BTreeMap<String, String>>
where
    I: IntoIterator<Item = (String, String)>,
{
    let map: BTreeMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect();
    let size: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > METADATA_LIMIT {
        return Err(StoreError::MetadataTooLarge {
            size,
            limit: METADATA_LIMIT,
        }
        .into());
    }
    Ok(map)
}

impl Store {
    /// Opens (creating) the store in `dir`: the SQLite index, the body files (sweeping
    /// orphans left by a crash), the credentials, and the default bucket.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> linedee_engine::Result<()> {
    /// use linedee_engine::store::{Store, StoreOptions, TriggerKind};
    ///
    /// let dir = tempfile::tempdir().expect("tempdir");
    /// let store = Store::open(dir.path(), StoreOptions {
    ///     default_bucket: Some("ld-example".into()),
    ///     ..StoreOptions::default()
    /// })?;
    /// let mut triggers = store.subscribe_triggers();
    /// let metadata = [("ld_run".to_owned(), "true".to_owned())].into();
    /// store.put_object("ld-example", "in/example", r#"{"run":[]}"#.into(), None, metadata).await?;
    /// let trigger = triggers.recv().await.expect("a trigger");
    /// assert_eq!((trigger.key.as_str(), trigger.kind), ("in/example", TriggerKind::LdRun));
    /// assert_eq!(store.pending_triggers().await?, vec![trigger.clone()]);
    /// store.ack_trigger(trigger.id).await?;
    /// assert!(store.pending_triggers().await?.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let blobs = blobs::Blobs::open(&dir, options.fsync)?;
        let conn = index::open(&dir.join("index.sqlite"), options.fsync)?;
        let live = index::live_blobs(&conn)?;
        let swept = blobs.sweep(&live)?;
        if swept > 0 {
            tracing::info!(
                swept,
                "removed body files left behind by an interrupted write"
            );
        }
        let auth = auth::Auth::open(&dir, options.credential_lifetime, options.fsync)?;
        if let Some(bucket) = &options.default_bucket {
            validate_bucket(bucket)?;
            index::create_bucket(&conn, bucket)?;
        }
        let (triggers, _) = broadcast::channel(CHANNEL);
        let (objects, _) = broadcast::channel(CHANNEL);
        let group = Arc::new(group::Queue::default());
        let inner = Arc::new(Inner {
            dir,
            options,
            db: Mutex::new(conn),
            blobs: Arc::new(blobs),
            auth: Arc::new(auth),
            triggers,
            objects,
            group: Arc::clone(&group),
            commits: tokio::sync::watch::Sender::new(group::Commits::default()),
        });
        group::start(group, Arc::downgrade(&inner))
            .map_err(|e| Error::Internal(format!("cannot start the store's committer: {e}")))?;
        Ok(Store { inner })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.inner.options
    }

    /// The current S3 credentials (rotated when a lifetime is set). Their `Debug` output
    /// hides the secrets.
    pub fn credentials(&self) -> Result<Credentials> {
        self.inner.auth.current()
    }

    /// The bearer token of the config-vars endpoint (which hands out the store's
    /// credentials). Secret.
    pub fn api_token(&self) -> String {
        self.inner.auth.api_token()
    }

    /// The bearer token of the dashboard's cancel and retry: a secret of its own, which does
    /// not unlock the config-vars endpoint. Secret.
    pub fn dashboard_token(&self) -> String {
        self.inner.auth.dashboard_token()
    }

    /// Committed triggers, pushed as they commit. A receiver that lags loses messages
    /// (`RecvError::Lagged`); it then re-reads [`Store::pending_triggers`].
    pub fn subscribe_triggers(&self) -> broadcast::Receiver<Trigger> {
        self.inner.triggers.subscribe()
    }

    /// Every committed object write, pushed as it commits.
    pub fn subscribe_objects(&self) -> broadcast::Receiver<ObjectEvent> {
        self.inner.objects.subscribe()
    }

    /// Triggers not yet acknowledged, oldest first (after a restart: the ones to run).
    pub async fn pending_triggers(&self) -> Result<Vec<Trigger>> {
        self.blocking(|i| outbox::pending(&i.db())).await
    }

    /// Up to `limit` pending triggers with an id above `after`, oldest first: a long outbox
    /// read a page at a time.
    pub async fn pending_triggers_after(&self, after: i64, limit: usize) -> Result<Vec<Trigger>> {
        self.blocking(move |i| outbox::pending_after(&i.db(), after, limit))
            .await
    }

    /// Marks a trigger consumed; returns whether it was still pending.
    pub async fn ack_trigger(&self, id: i64) -> Result<bool> {
        self.blocking(move |i| outbox::ack(&i.db(), id)).await
    }

    /// Marks triggers consumed in one transaction; returns how many were still pending. The
    /// commit is not synced on its own: it is durable against a crash of the process at once,
    /// and against power loss with the store's next synced write. A trigger whose mark a power
    /// loss undid is delivered again, and the engine, whose journal already has its run,
    /// ignores it.
    pub async fn ack_triggers(&self, ids: Vec<i64>) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        // With the committer's next batch: no thread and no commit of its own.
        self.inner.queue_ack(ids).await
    }

    /// One trigger by id, consumed or not.
    pub async fn trigger(&self, id: i64) -> Result<Option<Trigger>> {
        self.blocking(move |i| outbox::get(&i.db(), id)).await
    }

    /// Creates a bucket; does nothing when it exists.
    pub async fn create_bucket(&self, bucket: &str) -> Result<()> {
        validate_bucket(bucket)?;
        let bucket = bucket.to_owned();
        self.blocking(move |i| index::create_bucket(&i.db(), &bucket).map(drop))
            .await
    }

    /// Writes an object (a trigger, when its metadata makes it one); returns its ETag
    /// (quoted, as S3 sends it).
    pub async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: Option<&str>,
        metadata: BTreeMap<String, String>,
    ) -> Result<String> {
        self.put_object_with(bucket, key, body, content_type, metadata, Commit::Synced)
            .await
    }

    /// [`Store::put_object`], committed as `commit` says (an unsynced write is made durable
    /// across power loss by the next synced one, see [`Inner::unsynced_on`]).
    pub(crate) async fn put_object_with(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        content_type: Option<&str>,
        metadata: BTreeMap<String, String>,
        commit: Commit,
    ) -> Result<String> {
        validate_key(key)?;
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        let (size, etag) = (body.len() as u64, blobs::md5_hex(&body));
        let content_type = content_type.map(str::to_owned);
        let metadata = normalize_metadata(metadata)?;
        // A small body goes inline with its row: no file, and no trip to the blocking pool.
        let body = if body.len() <= INLINE_BODY_MAX {
            body::Body::Inline(body)
        } else {
            self.blocking(move |i| body::Body::store(&i.blobs, body))
                .await?
        };
        let obj = index::NewObject {
            bucket,
            key,
            body,
            size,
            etag,
            content_type,
            metadata,
        };
        self.commit_queued(obj, index::Precondition::None, commit)
            .await
            .map(|c| c.meta.etag)
    }

    /// Returns once every write answered before the call survives power loss (with fsync off,
    /// a crash of the process: at once). A synced commit made since for another write covers
    /// it; when none comes within `within`, the committer makes one for it. An S3 PUT is
    /// durable when answered already; what this waits for are the writes the engine makes
    /// unsynced (status documents, task logs, trigger acknowledgements), for a caller that
    /// must not go on before they would survive a power loss.
    pub async fn durable_within(&self, within: std::time::Duration) -> Result<()> {
        let mut commits = self.inner.commits.subscribe();
        let target = commits.borrow().committed;
        let covered = |c: &group::Commits| c.synced >= target;
        if covered(&commits.borrow()) {
            return Ok(());
        }
        if let Ok(Ok(_)) = tokio::time::timeout(within, commits.wait_for(covered)).await {
            return Ok(());
        }
        self.inner.queue_sync().await
    }

    /// Commits a write through the committer thread, awaiting its answer (`group.rs`).
    pub(crate) async fn commit_queued(
        &self,
        obj: index::NewObject,
        cond: index::Precondition,
        commit: Commit,
    ) -> Result<index::Committed> {
        self.inner.queue_commit(obj, cond, commit).await
    }

    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner)).await?
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.group.close();
    }
}

impl Inner {
    pub(crate) fn db(&self) -> MutexGuard<'_, Connection> {
        self.db
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Commits an object whose body files belong to something else until the commit (a
    /// multipart upload's parts, which `extra` takes from their upload), on the index
    /// connection the caller holds. On failure they stay with their owner (unlike a
    /// queued write's, [`Inner::queue_commit`]); after success the caller removes the replaced body
    /// ([`Inner::remove_replaced`]) once it has let the connection go.
    pub(crate) fn commit_adopting(
        &self,
        db: &mut Connection,
        obj: &index::NewObject,
        cond: &index::Precondition,
        extra: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<()>,
    ) -> Result<index::Committed> {
        let committed = index::commit_object(db, obj, cond, extra)?;
        self.announce(&committed);
        Ok(committed)
    }

    /// Removes the body files an overwrite replaced.
    pub(crate) fn remove_replaced(&self, committed: &index::Committed) {
        for old in &committed.replaced {
            self.blobs.remove(old);
        }
    }

    /// Runs `f` on the index connection the caller holds, with its commits not synced one by
    /// one (`synchronous=NORMAL` instead of `FULL`, when the store fsyncs at all). What `f`
    /// commits is durable against a crash of the process when it returns, and against power
    /// loss once a later synced commit has synced the WAL, which holds every earlier commit in
    /// order. For writes that a power loss may undo harmlessly, or that a later synced write
    /// covers. The caller holds the lock throughout, since the setting belongs to the
    /// connection.
    pub(crate) fn unsynced_on<T>(
        &self,
        db: &mut Connection,
        f: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        if !self.options.fsync {
            return f(db);
        }
        let set = |db: &Connection, level: &str| {
            db.pragma_update(None, "synchronous", level)
                .map_err(|e| Error::Internal(format!("cannot set synchronous={level}: {e}")))
        };
        set(db, "NORMAL")?;
        let out = f(db);
        if let Err(e) = set(db, "FULL") {
            // Left at NORMAL, later writes would be answered before they are durable.
            tracing::error!(error = %e, "the store could not return to synced commits: its later writes may be answered before they survive a power loss");
            return Err(e);
        }
        out
    }

    /// Removes the body files of a write that was not committed (an inline body has none).
    pub(crate) fn discard(&self, body: &body::Body) {
        for id in body.files() {
            self.blobs.remove(id);
        }
    }

    /// Tells subscribers of a committed write; called in commit order, under the lock.
    pub(crate) fn announce(&self, committed: &index::Committed) {
        let _ = self.objects.send(ObjectEvent {
            bucket: committed.meta.bucket.clone(),
            key: committed.meta.key.clone(),
            etag: committed.meta.etag.clone(),
            size: committed.meta.size,
            metadata: committed.meta.metadata.clone(),
        });
        if let Some(t) = &committed.trigger {
            let _ = self.triggers.send(t.clone());
        }
    }
}
