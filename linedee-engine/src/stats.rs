//! The overview's aggregates: run counts, durations, a time series and per-`cmd` figures for a
//! window, computed by the journal's SQLite with indexed queries (no run is loaded into
//! memory: counts are index range counts, and a percentile is one `ORDER BY … LIMIT 1
//! OFFSET k` row, over a duration index when the window holds many rows).
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

/// Up to this many rows, a percentile sorts the window's rows; beyond, it walks a duration
/// index in order instead (no sort; its cost is bounded by the rows ever journaled).
const SORT_LIMIT: u64 = 10_000;

/// Nearest-rank offset (0-based) of percentile `p` (in percent) among `n > 0` values.
fn rank(n: u64, p: u64) -> i64 {
    i64::try_from((n * p).div_ceil(100).max(1) - 1).unwrap_or(0)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Computes the overview of `window` ending at `now_ms` from the journal's rows.
pub(crate) fn overview(
    conn: &Connection,
    window: Window,
    now_ms: i64,
) -> rusqlite::Result<Overview> {
    let since = now_ms - window.span_ms();
    let series = series(conn, window, since)?;
    let finished = |f: fn(&Bucket) -> u64| series.buckets.iter().map(f).sum::<u64>();
    let mut unfinished = conn.prepare_cached("SELECT COUNT(*) FROM ld_runs WHERE status = ?1")?;
    let mut now = |status: &str| unfinished.query_row([status], |r| r.get(0)).map(count);
    let counts = Counts {
        queued: now("queued")?,
        running: now("running")?,
        succeeded: finished(|b| b.succeeded),
        failed: finished(|b| b.failed),
        cancelled: finished(|b| b.cancelled),
    };
    Ok(Overview {
        window,
        since_ms: since,
        now_ms,
        queued_now: Some(counts.queued),
        counts: Some(counts),
        duration: Some(run_durations(conn, since)?),
        series: Some(series),
        cmds: Some(cmds(conn, since)?),
        unavailable: BTreeMap::new(),
    })
}

fn run_durations(conn: &Connection, since: i64) -> rusqlite::Result<Percentiles> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM ld_runs WHERE finished_ms >= ?1 AND started_ms IS NOT NULL",
        )?
        .query_row([since], |r| r.get(0))?;
    let n = count(n);
    if n == 0 {
        return Ok(Percentiles::default());
    }
    let index = if n <= SORT_LIMIT {
        "ld_runs_finished_status"
    } else {
        "ld_runs_duration"
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT finished_ms - started_ms FROM ld_runs INDEXED BY {index}
         WHERE finished_ms >= ?1 AND finished_ms IS NOT NULL AND started_ms IS NOT NULL
         ORDER BY finished_ms - started_ms LIMIT 1 OFFSET ?2"
    ))?;
    let mut at = |p| stmt.query_row(params![since, rank(n, p)], |r| r.get(0));
    Ok(Percentiles {
        p50_ms: Some(at(50)?),
        p95_ms: Some(at(95)?),
    })
}

fn series(conn: &Connection, window: Window, since: i64) -> rusqlite::Result<Series> {
    let interval = window.interval_ms();
    let n = window.span_ms() / interval;
    // Each figure is a count over an index range: no rows are read, no GROUP BY sorts.
    let mut started = conn.prepare_cached(
        "SELECT COUNT(*) FROM ld_runs WHERE started_ms >= ?1 AND started_ms < ?2",
    )?;
    let mut finished = conn.prepare_cached(
        "SELECT COUNT(*) FROM ld_runs
         WHERE status = ?1 AND finished_ms >= ?2 AND finished_ms < ?3",
    )?;
    let mut buckets = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for i in 0..n {
        let t = since + i * interval;
        // The last interval also takes what ends after `now` (a clock read a moment later).
        let end = if i + 1 == n { i64::MAX } else { t + interval };
        let mut done = |status: &str| {
            finished
                .query_row(params![status, t, end], |r| r.get(0))
                .map(count)
        };
        buckets.push(Bucket {
            t,
            succeeded: done("succeeded")?,
            failed: done("failed")?,
            cancelled: done("cancelled")?,
            started: count(started.query_row(params![t, end], |r| r.get(0))?),
        });
    }
    Ok(Series {
        interval_ms: interval,
        buckets,
    })
}

fn cmds(conn: &Connection, since: i64) -> rusqlite::Result<Vec<CmdStats>> {
    let attempts: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM ld_attempts WHERE started_ms >= ?1")?
        .query_row([since], |r| r.get(0))?;
    // A few attempts: read the window's range and group; many: walk the index in `cmd` order.
    let index = if count(attempts) <= SORT_LIMIT {
        "ld_attempts_window"
    } else {
        "ld_attempts_cmd"
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT cmd, COUNT(DISTINCT run_id), COUNT(*),
                COUNT(CASE WHEN outcome = 'failed' THEN 1 END),
                COUNT(CASE WHEN attempt > 1 THEN 1 END),
                COUNT(CASE WHEN outcome = 'timed_out' THEN 1 END),
                COUNT(finished_ms)
         FROM ld_attempts INDEXED BY {index} WHERE started_ms >= ?1 GROUP BY cmd"
    ))?;
    let mut out: Vec<(CmdStats, u64)> = stmt
        .query_map([since], |r| {
            Ok((
                CmdStats {
                    cmd: r.get(0)?,
                    runs: count(r.get(1)?),
                    attempts: count(r.get(2)?),
                    failures: count(r.get(3)?),
                    retries: count(r.get(4)?),
                    timeouts: count(r.get(5)?),
                    p50_ms: None,
                    p95_ms: None,
                },
                count(r.get(6)?),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (c, finished) in &mut out {
        if *finished == 0 {
            continue;
        }
        let index = if *finished <= SORT_LIMIT {
            "ld_attempts_cmd"
        } else {
            "ld_attempts_cmd_duration"
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT finished_ms - started_ms FROM ld_attempts INDEXED BY {index}
             WHERE cmd = ?1 AND started_ms >= ?2 AND finished_ms IS NOT NULL
             ORDER BY finished_ms - started_ms LIMIT 1 OFFSET ?3"
        ))?;
        let mut at = |p| stmt.query_row(params![c.cmd, since, rank(*finished, p)], |r| r.get(0));
        c.p50_ms = Some(at(50)?);
        c.p95_ms = Some(at(95)?);
    }
    let mut out: Vec<CmdStats> = out.into_iter().map(|(c, _)| c).collect();
    out.sort_by(|a, b| b.attempts.cmp(&a.attempts).then_with(|| a.cmd.cmp(&b.cmd)));
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

    #[test]
    fn past_the_sort_limit_percentiles_walk_the_duration_indexes() {
        let c = Connection::open_in_memory().expect("sqlite");
        c.execute_batch(crate::journal::SCHEMA).expect("schema");
        let n: i64 = 12_000;
        assert!(n as u64 > SORT_LIMIT);
        let tx = c.unchecked_transaction().expect("tx");
        for i in 1..=n {
            // Durations 1..=n ms in a scrambled order (7919 is prime to n).
            let d = (i * 7919) % n + 1;
            let id = format!("r{i}");
            tx.execute(
                "INSERT INTO ld_runs (run_id, bucket, trigger_key, kind, status, created_ms,
                     started_ms, finished_ms, record)
                 VALUES (?1, 'b', 'in/x', 'ld_run', 'failed', 0, ?2, ?3, '{}')",
                params![id, 100_000 - d, 100_000],
            )
            .expect("run");
            tx.execute(
                "INSERT INTO ld_attempts (task_id, attempt, run_id, step, idx, cmd, started_ms,
                     finished_ms, outcome)
                 VALUES (?1, 1, ?2, 0, 0, 'work', ?3, 100000, 'timed_out')",
                params![format!("{id}.0.0"), id, 100_000 - d],
            )
            .expect("attempt");
        }
        tx.commit().expect("commit");
        let o = overview(&c, Window::Hour, 200_000).expect("overview");
        let want = Percentiles {
            p50_ms: Some(6_000),
            p95_ms: Some(11_400),
        };
        assert_eq!(o.duration, Some(want.clone()));
        let cmds = o.cmds.expect("cmds");
        assert_eq!(cmds.len(), 1);
        let w = &cmds[0];
        assert_eq!(
            (w.runs, w.attempts, w.timeouts, w.failures, w.retries),
            (12_000, 12_000, 12_000, 0, 0)
        );
        assert_eq!((w.p50_ms, w.p95_ms), (want.p50_ms, want.p95_ms));
        assert_eq!(o.counts.expect("counts").failed, 12_000);
    }
}
