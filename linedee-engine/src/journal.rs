//! The durable journal: where a driver keeps each run's record between events.
//!
//! [`Journal`] is what a driver needs; [`SqliteJournal`] is the local engine's, a SQLite file of
//! its own (`journal.sqlite` in the data directory). Each run's record is stored as the
//! machine's JSON, and projected into indexed rows (runs and attempts) for listings and the
//! dashboard (`journal/rows.rs`: the tables and that projection).
//!
//! The projection lags the records by at most [`PROJECT_WITHIN`], and never for a reader: it
//! is brought up to date before every read of it (`journal/projection.rs`: what waits for it).
//! So a short run's index entries are written once, after it ended, in a commit shared with
//! other runs, instead of at each of its transitions.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension};

use crate::error::{JournalError, Result};
use linedee::status::{Trigger, TriggerKind};

use crate::machine::RunRecord;

mod projection;
mod rows;

pub(crate) use projection::PROJECT_WITHIN;
use projection::{Projection, project_marked};
pub(crate) use rows::SCHEMA;
use rows::{insert, save};

/// A run to resume at start.
#[derive(Debug)]
pub(crate) enum Resumable {
    /// Its record.
    Record(RunRecord),
    /// Its record cannot be read; what is known of it from the journal's own columns.
    Unreadable {
        run_id: String,
        trigger: Trigger,
        reason: String,
    },
}

/// A new run and the opaque key of the delivery that triggered it.
#[derive(Debug, Clone)]
pub(crate) struct NewRun {
    pub(crate) record: RunRecord,
    /// Two deliveries with the same key are the same trigger (an outbox row, an S3 event).
    pub(crate) dedup: String,
}

/// What one turn of a driver writes, atomically.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) create: Vec<NewRun>,
    pub(crate) save: Vec<RunRecord>,
}

/// Where a driver keeps runs' records.
#[async_trait::async_trait]
pub(crate) trait Journal: Send + Sync + 'static {
    /// Writes a batch atomically. Returns, for each `create`, whether it was created: `false`
    /// when its run id or its dedup key was seen before (a duplicate trigger).
    async fn commit(&self, batch: Batch) -> Result<Vec<bool>>;
    /// A run's record. A record that cannot be read is an error naming the run, never `None`.
    async fn load(&self, run_id: &str) -> Result<Option<RunRecord>>;
    /// Runs to resume at start: unfinished, or with processes that may have outlived the
    /// engine.
    async fn resumable(&self) -> Result<Vec<Resumable>>;
    /// Finished runs whose status document may not show their final status.
    async fn unpublished(&self) -> Result<Vec<String>>;
    /// Records which final status each run's document shows (run id, status), soon, in one
    /// write. Losing it is harmless: at start, a finished run not marked has its document
    /// rewritten.
    async fn published(&self, marks: Vec<(String, String)>) -> Result<()>;
    /// Makes every commit that returned before this call durable across power loss. A driver
    /// carries most effects out right after a commit, before it is durable (a power loss
    /// stops the processes it started too, and the run resumes from the journal); it waits for
    /// this before the effects that cannot be taken back: acknowledging a trigger, answering a
    /// request, writing a final status.
    async fn sync(&self) -> Result<()>;
    /// Like [`Journal::sync`], for an effect that can wait: waits up to `within` for a sync
    /// another caller makes anyway (before a final status, say), and syncs itself only if
    /// none came.
    async fn sync_soon(&self, within: std::time::Duration) -> Result<()> {
        let _ = within;
        self.sync().await
    }
    /// Writes what the journal holds back in memory (listings, published marks), for a
    /// graceful stop: the next start then has nothing of it to catch up on. Losing it is
    /// harmless, as for [`Journal::published`].
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// The local journal: a SQLite file with a writer connection and a reader connection of its
/// own (WAL), so listings never wait behind a write.
#[derive(Clone)]
pub(crate) struct SqliteJournal {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
    durability: Arc<Durability>,
    projection: Arc<Projection>,
}

/// Commits are durable against a crash of the process when they return (SQLite's WAL with
/// `synchronous=NORMAL`) and against power loss once a later commit with `synchronous=FULL`
/// has synced the WAL, which holds them all: [`Journal::sync`] makes one, shared by every
/// caller waiting at the time.
#[derive(Debug)]
struct Durability {
    /// Durable across power loss at all (the store's fsync option).
    fsync: bool,
    /// Commits that have returned.
    commits: std::sync::atomic::AtomicU64,
    /// Of those, how many are known durable.
    durable: std::sync::atomic::AtomicU64,
    syncing: tokio::sync::Mutex<()>,
    /// Told after each sync.
    synced: tokio::sync::Notify,
}

impl std::fmt::Debug for SqliteJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJournal").finish_non_exhaustive()
    }
}

/// Commits between two checkpoints of the journal's WAL. SQLite's own (every 1,000 WAL pages,
/// inside the commit that crosses the mark, with its fsyncs) is off, so that no commit made
/// on the calling thread ([`SqliteJournal::on_now`]) waits for the disk; this one runs on
/// the blocking pool. A one-task run's commits write about 16 pages in all (WAL frames,
/// counted with strace in the P2 benchmark).
const CHECKPOINT_EVERY: u64 = 256;

/// Most rows a write may have to run on the calling thread ([`SqliteJournal::on_now`]): a
/// turn's few records, not a burst of new runs.
const INLINE_ROWS: usize = 16;

fn open(path: &Path, fsync: bool) -> Result<Connection, JournalError> {
    let conn = Connection::open(path).map_err(JournalError::Sqlite)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(JournalError::Sqlite)?;
    conn.pragma_update(None, "synchronous", if fsync { "NORMAL" } else { "OFF" })
        .map_err(JournalError::Sqlite)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(JournalError::Sqlite)?;
    // A save's `UPDATE` names only the columns that change (`rows.rs`): a handful of
    // statements more than rusqlite's default cache of 16 holds.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Runs `f` on `conn` if nobody holds it; else gives `f` back.
fn run_if_free<T, F>(conn: &Mutex<Connection>, f: F) -> Result<rusqlite::Result<T>, F>
where
    F: FnOnce(&mut Connection) -> rusqlite::Result<T>,
{
    match conn.try_lock() {
        Ok(mut c) => Ok(f(&mut c)),
        Err(std::sync::TryLockError::Poisoned(p)) => Ok(f(&mut p.into_inner())),
        Err(std::sync::TryLockError::WouldBlock) => Err(f),
    }
}

fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SqliteJournal {
    /// Opens (or creates) the journal at `path`. Every commit survives a crash of the process
    /// when it returns; with `fsync`, [`Journal::sync`] makes commits durable across power loss.
    pub(crate) fn open(path: &Path, fsync: bool) -> Result<Self> {
        let mut writer = open(path, fsync)?;
        writer.execute_batch(SCHEMA).map_err(JournalError::Sqlite)?;
        // Checkpoints run on the blocking pool instead (`committed`).
        writer
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(JournalError::Sqlite)?;
        project_marked(&mut writer).map_err(JournalError::Sqlite)?;
        let reader = open(path, fsync)?;
        Ok(SqliteJournal {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
            durability: Arc::new(Durability {
                fsync,
                commits: 0.into(),
                durable: 0.into(),
                syncing: tokio::sync::Mutex::new(()),
                synced: tokio::sync::Notify::new(),
            }),
            projection: Arc::default(),
        })
    }

    /// Projects every record saved so far, now.
    pub(crate) async fn project(&self) -> Result<()> {
        let p = &self.projection;
        p.scheduled.store(false, Ordering::Release);
        let rows = {
            let pending = p.pending();
            if pending.is_empty() {
                return Ok(());
            }
            pending.records.len() + pending.published.len()
        };
        let p = Arc::clone(p);
        self.write(rows, move |c: &mut Connection| p.project_on(c))
            .await
    }

    /// Projects the records saved so far within [`PROJECT_WITHIN`], unless that is scheduled.
    fn project_soon(&self) {
        if self.projection.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let journal = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PROJECT_WITHIN).await;
            if let Err(e) = journal.project().await {
                tracing::warn!(error = %e, "cannot project the journal's records; the next read or save tries again");
            }
        });
    }

    /// Counts a commit that returned, for [`Journal::sync`]; every [`CHECKPOINT_EVERY`]
    /// commits, checkpoints the WAL on the blocking pool.
    fn committed(&self) {
        let n = self
            .durability
            .commits
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        if n.is_multiple_of(CHECKPOINT_EVERY) {
            let writer = Arc::clone(&self.writer);
            tokio::task::spawn_blocking(move || {
                // PASSIVE: copies what no reader still needs, waits for no one. A checkpoint
                // that cannot finish now leaves the rest to the next.
                let checkpoint =
                    lock(&writer).query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                if let Err(e) = checkpoint {
                    tracing::warn!(error = %e, "cannot checkpoint the journal's WAL; the next checkpoint tries again");
                }
            });
        }
    }

    async fn on<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(conn);
        let r = tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .map_err(|e| JournalError::Task(e.to_string()))?;
        Ok(r.map_err(JournalError::Sqlite)?)
    }

    /// Like [`SqliteJournal::on`], but a short statement on a connection nobody holds runs
    /// right here: a trip to the blocking pool (waking a thread, and the task again) costs more
    /// than such a statement. One that would wait for the connection (held through a sync's
    /// fsync, say) still goes to the pool.
    async fn on_now<T, F>(conn: &Arc<Mutex<Connection>>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        match run_if_free(conn, f) {
            Ok(done) => Ok(done.map_err(JournalError::Sqlite)?),
            Err(f) => Self::on(conn, f).await,
        }
    }

    /// Runs a write of `rows` rows on the writer connection: right here when that is at most
    /// [`INLINE_ROWS`] and nobody holds the connection ([`SqliteJournal::on_now`]), else on
    /// the blocking pool.
    async fn write<T, F>(&self, rows: usize, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        if rows <= INLINE_ROWS {
            Self::on_now(&self.writer, f).await
        } else {
            Self::on(&self.writer, f).await
        }
    }

    /// Runs a read on the reader connection, off the async threads, once every record saved
    /// before the call is projected.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.project().await?;
        Self::on(&self.reader, f).await
    }
}

#[async_trait::async_trait]
impl Journal for SqliteJournal {
    async fn commit(&self, batch: Batch) -> Result<Vec<bool>> {
        if batch.create.is_empty() && batch.save.is_empty() {
            return Ok(Vec::new());
        }
        let rows = batch.create.len() + batch.save.len();
        let saved = !batch.save.is_empty();
        let projection = Arc::clone(&self.projection);
        let commit = move |c: &mut Connection| {
            let tx = c.transaction()?;
            let mut created = Vec::with_capacity(batch.create.len());
            for new in &batch.create {
                created.push(insert(&tx, new)?);
            }
            {
                let pending = projection.pending();
                let mut marked = std::collections::HashSet::new();
                for r in &batch.save {
                    let known =
                        pending.records.contains_key(&r.run_id) || !marked.insert(&r.run_id);
                    save(&tx, r, known)?;
                }
            }
            tx.commit()?;
            let mut pending = projection.pending();
            for r in batch.save {
                pending.records.insert(r.run_id.clone(), r);
            }
            Ok(created)
        };
        let created = self.write(rows, commit).await;
        self.committed();
        if saved {
            self.project_soon();
        }
        created
    }

    async fn load(&self, run_id: &str) -> Result<Option<RunRecord>> {
        let id = run_id.to_owned();
        let json: Option<String> = Self::on_now(&self.reader, move |c| {
            c.prepare_cached("SELECT record FROM ld_runs WHERE run_id = ?1")?
                .query_row([id], |r| r.get(0))
                .optional()
        })
        .await?;
        json.map(|j| {
            RunRecord::from_json(&j).map_err(|reason| {
                JournalError::Unreadable {
                    run_id: run_id.to_owned(),
                    reason,
                }
                .into()
            })
        })
        .transpose()
    }

    async fn resumable(&self) -> Result<Vec<Resumable>> {
        type Row = (String, String, String, Option<String>, String, String);
        self.project().await?;
        let rows: Vec<Row> = Self::on(&self.reader, |c| {
            let mut stmt = c.prepare(
                "SELECT run_id, bucket, trigger_key, trigger_etag, kind, record FROM ld_runs
                 WHERE status IN ('queued', 'running') OR live = 1 ORDER BY seq",
            )?;
            stmt.query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect()
        })
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(run_id, bucket, key, etag, kind, json)| match RunRecord::from_json(&json) {
                    Ok(r) => Resumable::Record(r),
                    Err(reason) => Resumable::Unreadable {
                        run_id,
                        trigger: Trigger {
                            bucket,
                            key,
                            etag,
                            kind: if kind == "ld_code" {
                                TriggerKind::LdCode
                            } else {
                                TriggerKind::LdRun
                            },
                        },
                        reason,
                    },
                },
            )
            .collect())
    }

    async fn unpublished(&self) -> Result<Vec<String>> {
        self.project().await?;
        Self::on(&self.reader, |c| {
            let mut stmt = c.prepare(
                "SELECT run_id FROM ld_runs WHERE status NOT IN ('queued', 'running')
                 AND published IS NOT status ORDER BY seq",
            )?;
            stmt.query_map([], |r| r.get(0))?.collect()
        })
        .await
    }

    async fn published(&self, marks: Vec<(String, String)>) -> Result<()> {
        // Written with the next projection: losing a mark is harmless (the document is
        // written again at start), and a read sees it, as it projects first.
        self.projection.pending().published.extend(marks);
        self.project_soon();
        Ok(())
    }

    async fn sync(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        let d = &self.durability;
        let wanted = d.commits.load(Ordering::Acquire);
        if !d.fsync || d.durable.load(Ordering::Acquire) >= wanted {
            return Ok(());
        }
        let _syncing = d.syncing.lock().await;
        if d.durable.load(Ordering::Acquire) >= wanted {
            // Synced by the caller ahead in line.
            return Ok(());
        }
        // Every commit counted here has returned, so its frames are in the WAL this syncs.
        let covered = d.commits.load(Ordering::Acquire);
        Self::on(&self.writer, |c| {
            c.pragma_update(None, "synchronous", "FULL")?;
            let synced = c.execute(
                "INSERT INTO ld_durable (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1",
                [],
            );
            c.pragma_update(None, "synchronous", "NORMAL")?;
            synced.map(drop)
        })
        .await?;
        d.durable.fetch_max(covered, Ordering::AcqRel);
        d.synced.notify_waiters();
        Ok(())
    }

    async fn flush(&self) -> Result<()> {
        self.project().await
    }

    async fn sync_soon(&self, within: std::time::Duration) -> Result<()> {
        use std::sync::atomic::Ordering;
        let d = &self.durability;
        let wanted = d.commits.load(Ordering::Acquire);
        let deadline = tokio::time::Instant::now() + within;
        while d.fsync && d.durable.load(Ordering::Acquire) < wanted {
            let synced = d.synced.notified();
            tokio::pin!(synced);
            // Registered before the check, so a sync in between is not missed.
            synced.as_mut().enable();
            if d.durable.load(Ordering::Acquire) >= wanted {
                break;
            }
            if tokio::time::timeout_at(deadline, synced).await.is_err() {
                return self.sync().await;
            }
        }
        Ok(())
    }
}

/// Replaces a run's stored record with text that is not a record (for tests of the
/// engine's handling of a damaged journal).
#[cfg(test)]
pub(crate) fn damage(path: &Path, run_id: &str, text: &str) -> rusqlite::Result<()> {
    let c = Connection::open(path)?;
    c.execute(
        "UPDATE ld_runs SET record = ?2 WHERE run_id = ?1",
        rusqlite::params![run_id, text],
    )
    .map(drop)
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
