//! Benchmark of the dashboard's overview (issue 18): `GET /api/overview` over a journal of
//! 100,000 runs, beside the runs list's first page (`GET /api/runs`) from the same run.
//!
//! ```text
//! cargo run --release -p linedee-engine --example overview_bench
//! ```
//!
//! Synthetic rows go straight into the engine's journal file (the aggregates read only the
//! projected rows, not the records): runs spread evenly over the last 7 days, 90% succeeded,
//! 8% failed, 2% cancelled, plus 20 queued and 5 running; each run has 1 to 3 attempts of one
//! of 8 `cmd`s. The dashboard is then served on loopback and every request is timed from
//! send to the last byte of the body, one at a time, after a warm-up. `LINEDEE_BENCH_RUNS`
//! changes the number of runs; `LINEDEE_BENCH_KEEP=1` keeps the data directory (its path is
//! printed) for `EXPLAIN QUERY PLAN`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};

/// Requests timed per row.
const SAMPLES: usize = 200;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

/// Inserts `runs` synthetic runs (and their attempts) into the journal at `path`.
fn fill(path: &std::path::Path, runs: u64) -> rusqlite::Result<u64> {
    let mut c = Connection::open(path)?;
    let tx = c.transaction()?;
    let now = now_ms();
    let span = 7 * 24 * 3_600_000_i64;
    let mut attempts = 0;
    {
        let mut run = tx.prepare(
            "INSERT INTO ld_runs (run_id, bucket, trigger_key, kind, title, status, error,
                 created_ms, started_ms, finished_ms, published, record)
             VALUES (?1, 'linedee-local', ?2, 'ld_run', ?3, ?4, NULL, ?5, ?6, ?7, ?4, '{}')",
        )?;
        let mut attempt = tx.prepare(
            "INSERT INTO ld_attempts (task_id, attempt, run_id, step, idx, cmd, started_ms,
                 finished_ms, outcome, exit_code, error)
             VALUES (?1, ?2, ?3, 0, 0, ?4, ?5, ?6, ?7, ?8, NULL)",
        )?;
        for i in 0..runs + 25 {
            let created = now - span + (i as i64 * span) / (runs as i64 + 25);
            // A cheap deterministic spread of statuses, durations and cmds.
            let h = i.wrapping_mul(2_654_435_761) % 1000;
            let (status, finished) = match i {
                i if i >= runs + 5 => ("queued", false),
                i if i >= runs => ("running", false),
                _ if h < 900 => ("succeeded", true),
                _ if h < 980 => ("failed", true),
                _ => ("cancelled", true),
            };
            let started = (status != "queued").then_some(created + 5);
            let took = 200 + (h as i64 * 37) % 60_000;
            let finished_ms = finished.then_some(created + 5 + took);
            let run_id = format!("bench{i:08}");
            run.execute(params![
                run_id,
                format!("in/bench/{i}"),
                format!("Bench run {}", i % 50),
                status,
                created,
                started,
                finished_ms
            ])?;
            let Some(started) = started else { continue };
            let n = match status {
                "failed" => 3,
                _ if h % 10 == 0 => 2,
                _ => 1,
            };
            let per = took / n;
            for a in 1..=n {
                let last = a == n;
                let (outcome, code) = match (status, last) {
                    (_, false) => (
                        Some(if h % 7 == 0 { "timed_out" } else { "failed" }),
                        Some(1),
                    ),
                    ("succeeded", true) => (Some("succeeded"), Some(0)),
                    ("failed", true) => (Some("failed"), Some(2)),
                    ("cancelled", true) => (Some("cancelled"), None),
                    _ => (None, None),
                };
                let a_start = started + (a - 1) * per;
                attempt.execute(params![
                    format!("{run_id}.0.0"),
                    a,
                    run_id,
                    format!("task-{}", i % 8),
                    a_start,
                    outcome.map(|_| a_start + per),
                    outcome,
                    code
                ])?;
                attempts += 1;
            }
        }
    }
    tx.commit()?;
    Ok(attempts)
}

/// p50 and p95 (nearest rank) of `samples`, in ms.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64) {
    samples.sort();
    let at = |p: usize| samples[(samples.len() * p).div_ceil(100).max(1) - 1];
    (at(50).as_secs_f64() * 1000.0, at(95).as_secs_f64() * 1000.0)
}

async fn time(client: &reqwest::Client, url: &str) -> (f64, f64, usize) {
    let mut bytes = 0;
    for _ in 0..10 {
        bytes = client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("GET")
            .bytes()
            .await
            .expect("body")
            .len();
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        let resp = client.get(url).send().await.expect("GET");
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        resp.bytes().await.expect("body");
        samples.push(start.elapsed());
    }
    let (p50, p95) = percentiles(samples);
    (p50, p95, bytes)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: u64 = std::env::var("LINEDEE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(dir.path().join("app")).expect("app dir");
    let engine = linedee_engine::Engine::builder()
        .data_dir(&data)
        .app_dir(dir.path().join("app"))
        .console(linedee_engine::Console::quiet())
        .build()
        .expect("engine");
    let started = Instant::now();
    let attempts = fill(&data.join("journal.sqlite"), runs).expect("synthetic rows");
    eprintln!(
        "inserted {runs} runs and {attempts} attempts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let token = engine.store().dashboard_token();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(linedee_engine::dashboard::serve(
        engine.clone(),
        listener,
        token,
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    println!("| request ({runs} runs, {attempts} attempts) | p50 | p95 | body |");
    println!("|---|---|---|---|");
    for path in [
        "/api/runs?limit=50",
        "/api/overview?window=1h",
        "/api/overview?window=24h",
        "/api/overview?window=7d",
    ] {
        let (p50, p95, bytes) = time(&client, &format!("{url}{path}")).await;
        println!("| `GET {path}` | {p50:.1} ms | {p95:.1} ms | {bytes} B |");
    }
    let _ = stop.send(());
    let _ = served.await;
    if std::env::var_os("LINEDEE_BENCH_KEEP").is_some() {
        eprintln!("kept {}", dir.keep().display());
    }
}
