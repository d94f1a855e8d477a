//! The overview's aggregates: run counts, durations, a time series and per-`cmd` figures for a
//! window, computed by the journal's SQLite with indexed queries (no run is loaded into
//! memory; percentiles are picked by `ROW_NUMBER()` over an index scan, in SQL).
//!
//! Every figure of an [`Overview`] is optional: a source that cannot compute one cheaply
//! (status documents, for a future `linedee serve`) answers `None` for it and says why in
//! [`Overview::unavailable`], and the dashboard shows "not available" rather than a wrong
//! number. The local journal computes them all.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

/// The span of time an [`Overview`] covers, ending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Window {
    /// The last hour (30 intervals of 2 minutes).
    #[serde(rename = "1h")]
    Hour,
    /// The last 24 hours (24 intervals of 1 hour).
    #[serde(rename = "24h")]
    Day,
    /// The last 7 days (28 intervals of 6 hours).
    #[serde(rename = "7d")]
    Week,
}

impl Window {
    /// Its name in URLs and on the command line: `1h`, `24h` or `7d`.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "1h",
            Window::Day => "24h",
            Window::Week => "7d",
        }
    }

    /// Its length in milliseconds.
    pub fn span_ms(self) -> i64 {
        const HOUR: i64 = 3_600_000;
        match self {
            Window::Hour => HOUR,
            Window::Day => 24 * HOUR,
            Window::Week => 7 * 24 * HOUR,
        }
    }

    /// The length of one interval of its time series, in milliseconds.
    pub fn interval_ms(self) -> i64 {
        const MINUTE: i64 = 60_000;
        match self {
            Window::Hour => 2 * MINUTE,
            Window::Day => 60 * MINUTE,
            Window::Week => 6 * 60 * MINUTE,
        }
    }
}

impl std::str::FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "1h" => Ok(Window::Hour),
            "24h" => Ok(Window::Day),
            "7d" => Ok(Window::Week),
            _ => Err(format!("`{s}` is not a window; expected 1h, 24h or 7d")),
        }
    }
}

/// Runs by status: `queued` and `running` as they are now, the finished ones by the time they
/// finished (within the window).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Waiting to start, now.
    pub queued: u64,
    /// Running, now.
    pub running: u64,
    /// Succeeded within the window.
    pub succeeded: u64,
    /// Failed within the window.
    pub failed: u64,
    /// Cancelled within the window.
    pub cancelled: u64,
}

/// Percentiles of a duration (nearest rank); `None` when nothing finished in the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Percentiles {
    /// Median, ms.
    pub p50_ms: Option<i64>,
    /// 95th percentile, ms.
    pub p95_ms: Option<i64>,
}

/// One interval of the time series.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Bucket {
    /// Its start, ms since the epoch.
    pub t: i64,
    /// Runs started in it.
    pub started: u64,
    /// Runs that finished in it, succeeded.
    pub succeeded: u64,
    /// Runs that finished in it, failed.
    pub failed: u64,
    /// Runs that finished in it, cancelled.
    pub cancelled: u64,
}

/// Runs started and finished per interval, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Series {
    /// The length of each interval, ms.
    pub interval_ms: i64,
    /// The intervals, covering the window.
    pub buckets: Vec<Bucket>,
}

/// The attempts of one `cmd` (task type) started within the window.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CmdStats {
    /// The task's `cmd`.
    pub cmd: String,
    /// Runs with at least one such attempt.
    pub runs: u64,
    /// Attempts.
    pub attempts: u64,
    /// Attempts that failed (not counting timeouts).
    pub failures: u64,
    /// Attempts after a task's first (retries and redrives).
    pub retries: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Median duration of its finished attempts, ms.
    pub p50_ms: Option<i64>,
    /// 95th percentile duration of its finished attempts, ms.
    pub p95_ms: Option<i64>,
}

/// Activity as a whole over a [`Window`]: what the dashboard's overview and `linedee stats`
/// show. A figure that is `None` is not available from this source (see `unavailable`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Overview {
    /// The window.
    pub window: Window,
    /// Its start, ms since the epoch.
    pub since_ms: i64,
    /// Its end (when the figures were computed), ms since the epoch.
    pub now_ms: i64,
    /// Runs by status.
    pub counts: Option<Counts>,
    /// Runs waiting to start now (the queue's depth).
    pub queued_now: Option<u64>,
    /// Durations of the runs that finished within the window (start to finish).
    pub duration: Option<Percentiles>,
    /// Runs started and finished per interval.
    pub series: Option<Series>,
    /// Per `cmd`, the most attempts first.
    pub cmds: Option<Vec<CmdStats>>,
    /// For each figure that is `None`, why it is not available.
    pub unavailable: BTreeMap<String, String>,
}

/// Nearest-rank position (1-based) of percentile `p` (in percent) among `n` values.
const RANK: &str = "((n * ?p + 99) / 100)";

/// Computes the overview of `window` ending at `now_ms` from the journal's rows.
pub(crate) fn overview(
    conn: &Connection,
    window: Window,
    now_ms: i64,
) -> rusqlite::Result<Overview> {
    let since = now_ms - window.span_ms();
    let counts = counts(conn, since)?;
    Ok(Overview {
        window,
        since_ms: since,
        now_ms,
        queued_now: Some(counts.queued),
        counts: Some(counts),
        duration: Some(run_durations(conn, since)?),
        series: Some(series(conn, window, since)?),
        cmds: Some(cmds(conn, since)?),
        unavailable: BTreeMap::new(),
    })
}

fn counts(conn: &Connection, since: i64) -> rusqlite::Result<Counts> {
    let mut c = Counts::default();
    // Two index-only scans: (status, seq) for the unfinished, (finished_ms, status, …) for
    // the window.
    let mut now = conn.prepare_cached(
        "SELECT status, COUNT(*) FROM ld_runs WHERE status IN ('queued', 'running') GROUP BY status",
    )?;
    let mut done = conn.prepare_cached(
        "SELECT status, COUNT(*) FROM ld_runs WHERE finished_ms >= ?1 GROUP BY status",
    )?;
    let rows = now
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .chain(done.query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?);
    for row in rows {
        let (status, n) = row?;
        let n = u64::try_from(n).unwrap_or(0);
        match status.as_str() {
            "queued" => c.queued = n,
            "running" => c.running = n,
            "succeeded" => c.succeeded = n,
            "failed" => c.failed = n,
            "cancelled" => c.cancelled = n,
            _ => {}
        }
    }
    Ok(c)
}

fn run_durations(conn: &Connection, since: i64) -> rusqlite::Result<Percentiles> {
    let sql = format!(
        "SELECT rn, d FROM (
             SELECT finished_ms - started_ms AS d,
                    ROW_NUMBER() OVER (ORDER BY finished_ms - started_ms) AS rn,
                    COUNT(*) OVER () AS n
             FROM ld_runs WHERE finished_ms >= ?1 AND started_ms IS NOT NULL)
         WHERE rn = {p50} OR rn = {p95}",
        p50 = RANK.replace("?p", "50"),
        p95 = RANK.replace("?p", "95"),
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let picked: Vec<(i64, i64)> = stmt
        .query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(percentiles(&picked))
}

/// The two picked rows, `(rank, value)`: the lower rank is p50 (they coincide for small n).
fn percentiles(picked: &[(i64, i64)]) -> Percentiles {
    let lo = picked.iter().min_by_key(|(rn, _)| *rn).map(|(_, d)| *d);
    let hi = picked.iter().max_by_key(|(rn, _)| *rn).map(|(_, d)| *d);
    Percentiles {
        p50_ms: lo,
        p95_ms: hi,
    }
}

fn series(conn: &Connection, window: Window, since: i64) -> rusqlite::Result<Series> {
    let interval = window.interval_ms();
    let n = usize::try_from(window.span_ms() / interval).unwrap_or(1);
    let mut buckets: Vec<Bucket> = (0..n)
        .map(|i| Bucket {
            t: since + i as i64 * interval,
            ..Bucket::default()
        })
        .collect();
    let slot = |i: i64| usize::try_from(i).unwrap_or(0).min(n - 1);
    let mut started = conn.prepare_cached(
        "SELECT (started_ms - ?1) / ?2, COUNT(*) FROM ld_runs WHERE started_ms >= ?1 GROUP BY 1",
    )?;
    for row in started.query_map(params![since, interval], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (i, count) = row?;
        buckets[slot(i)].started += u64::try_from(count).unwrap_or(0);
    }
    let mut finished = conn.prepare_cached(
        "SELECT (finished_ms - ?1) / ?2, status, COUNT(*) FROM ld_runs WHERE finished_ms >= ?1
         GROUP BY 1, 2",
    )?;
    for row in finished.query_map(params![since, interval], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })? {
        let (i, status, count) = row?;
        let b = &mut buckets[slot(i)];
        let count = u64::try_from(count).unwrap_or(0);
        match status.as_str() {
            "succeeded" => b.succeeded += count,
            "failed" => b.failed += count,
            "cancelled" => b.cancelled += count,
            _ => {}
        }
    }
    Ok(Series {
        interval_ms: interval,
        buckets,
    })
}

fn cmds(conn: &Connection, since: i64) -> rusqlite::Result<Vec<CmdStats>> {
    let mut stmt = conn.prepare_cached(
        "SELECT cmd, COUNT(DISTINCT run_id), COUNT(*),
                COUNT(CASE WHEN outcome = 'failed' THEN 1 END),
                COUNT(CASE WHEN attempt > 1 THEN 1 END),
                COUNT(CASE WHEN outcome = 'timed_out' THEN 1 END)
         FROM ld_attempts WHERE started_ms >= ?1 GROUP BY cmd ORDER BY 3 DESC, 1",
    )?;
    let n = |i: i64| u64::try_from(i).unwrap_or(0);
    let mut out: Vec<CmdStats> = stmt
        .query_map([since], |r| {
            Ok(CmdStats {
                cmd: r.get(0)?,
                runs: n(r.get(1)?),
                attempts: n(r.get(2)?),
                failures: n(r.get(3)?),
                retries: n(r.get(4)?),
                timeouts: n(r.get(5)?),
                p50_ms: None,
                p95_ms: None,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    // Both percentiles of every cmd in one sort.
    let sql = format!(
        "SELECT cmd, rn, d FROM (
             SELECT cmd, finished_ms - started_ms AS d,
                    ROW_NUMBER() OVER (PARTITION BY cmd ORDER BY finished_ms - started_ms) AS rn,
                    COUNT(*) OVER (PARTITION BY cmd) AS n
             FROM ld_attempts WHERE started_ms >= ?1 AND finished_ms IS NOT NULL)
         WHERE rn = {p50} OR rn = {p95}",
        p50 = RANK.replace("?p", "50"),
        p95 = RANK.replace("?p", "95"),
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut picked: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for row in stmt.query_map([since], |r| {
        Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?))
    })? {
        let (cmd, rn, d) = row?;
        picked.entry(cmd).or_default().push((rn, d));
    }
    for c in &mut out {
        if let Some(p) = picked.get(&c.cmd) {
            let p = percentiles(p);
            (c.p50_ms, c.p95_ms) = (p.p50_ms, p.p95_ms);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_cover_their_span() {
        for w in [Window::Hour, Window::Day, Window::Week] {
            assert_eq!(w.as_str().parse::<Window>(), Ok(w));
            assert_eq!(w.span_ms() % w.interval_ms(), 0, "{w:?}");
        }
        assert!(
            "2h".parse::<Window>()
                .is_err_and(|e| e.contains("1h, 24h or 7d"))
        );
    }

    #[test]
    fn percentiles_are_nearest_rank_over_an_index() {
        let c = Connection::open_in_memory().expect("sqlite");
        c.execute_batch(crate::journal::SCHEMA).expect("schema");
        // Runs finishing at 1000 + i, each taking i * 10 ms, i = 1..=20, in a shuffled order.
        for i in [
            7, 3, 19, 1, 12, 20, 5, 9, 14, 2, 18, 6, 11, 4, 16, 8, 13, 10, 17, 15,
        ] {
            c.execute(
                "INSERT INTO ld_runs (run_id, bucket, trigger_key, kind, status, created_ms,
                     started_ms, finished_ms, record)
                 VALUES (?1, 'b', 'in/x', 'ld_run', 'succeeded', 0, ?2, ?3, '{}')",
                params![format!("r{i}"), 1000 + i - i * 10, 1000 + i],
            )
            .expect("insert");
        }
        let o = overview(&c, Window::Hour, 2000).expect("overview");
        // Nearest rank: p50 of 20 values is the 10th, p95 the 19th.
        assert_eq!(
            o.duration,
            Some(Percentiles {
                p50_ms: Some(100),
                p95_ms: Some(190)
            })
        );
        assert_eq!(o.counts.expect("counts").succeeded, 20);
        let series = o.series.expect("series");
        assert_eq!(series.buckets.len(), 30);
        let total: u64 = series.buckets.iter().map(|b| b.succeeded).sum();
        assert_eq!(total, 20);
    }
}
