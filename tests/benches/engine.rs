//! Engine benchmarks (issue 5), each beside its baseline from the same run.
//!
//! `cargo bench -p linedee-tests --bench engine` prints a Markdown table for BENCHMARKS.md.
//! Set `LINEDEE_BENCH_QUICK=1` for a smaller run, `LINEDEE_BENCH_THROUGHPUT_ONLY=1` for the
//! latency and throughput rows only, `LINEDEE_BENCH_QUEUE_ONLY=1` for the queue rows only,
//! `LINEDEE_BENCH_P2_ONLY=1` for the throughput row with fsync on only (to profile, or to
//! compare two builds quickly), `LINEDEE_BENCH_P1_ONLY=1` for the latency row only.
//! `LINEDEE_BENCH_SLICES=10` has the throughput rows' two arms
//! take turns, a tenth of the runs at a time, so that the machine's swings fall on both.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use linedee::status::RunState;
use linedee::{Task, Workflow};
use linedee_engine::store::StoreOptions;
use linedee_tests::{TestEngine, example_tasks};

fn quick() -> bool {
    std::env::var_os("LINEDEE_BENCH_QUICK").is_some()
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Peak resident memory of this process (VmHWM), in MB.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time (user + system) of this process and its waited-for children so far, in seconds.
fn cpu_secs() -> f64 {
    use nix::sys::resource::UsageWho;
    cpu_of(UsageWho::RUSAGE_SELF) + cpu_of(UsageWho::RUSAGE_CHILDREN)
}

/// CPU time (user + system) of `who` so far, in seconds.
fn cpu_of(who: nix::sys::resource::UsageWho) -> f64 {
    nix::sys::resource::getrusage(who).map_or(0.0, |u| {
        let (user, sys) = (u.user_time(), u.system_time());
        user.tv_sec() as f64 + sys.tv_sec() as f64 + (user.tv_usec() + sys.tv_usec()) as f64 / 1e6
    })
}

/// Wall and CPU seconds of one arm of the throughput benchmark.
#[derive(Default)]
struct Arm {
    wall: f64,
    /// This process and the tasks.
    cpu: f64,
    /// This process alone: the engine, its store and the submitting client (in the direct arm,
    /// the store serving the tasks' output PUTs).
    own_cpu: f64,
}

impl Arm {
    fn start() -> (Instant, f64, f64) {
        (
            Instant::now(),
            cpu_secs(),
            cpu_of(nix::sys::resource::UsageWho::RUSAGE_SELF),
        )
    }

    fn add(&mut self, turn: Arm) {
        self.wall += turn.wall;
        self.cpu += turn.cpu;
        self.own_cpu += turn.own_cpu;
    }

    fn since((start, cpu0, own0): (Instant, f64, f64)) -> Arm {
        Arm {
            wall: start.elapsed().as_secs_f64(),
            cpu: cpu_secs() - cpu0,
            own_cpu: cpu_of(nix::sys::resource::UsageWho::RUSAGE_SELF) - own0,
        }
    }
}

async fn wait_lines(path: &Path, n: usize) {
    loop {
        if std::fs::read_to_string(path)
            .map(|s| s.lines().count())
            .unwrap_or(0)
            >= n
        {
            return;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// The `n`th timestamp `date +%s%N` appended to `path`.
fn nth_timestamp(path: &Path, n: usize) -> u128 {
    std::fs::read_to_string(path)
        .expect("timestamps")
        .lines()
        .nth(n)
        .and_then(|l| l.trim().parse().ok())
        .expect("a timestamp")
}

/// P1's figures, in ms.
struct Latency {
    p50: f64,
    p99: f64,
    /// The direct spawns made in turn with the engine's runs.
    direct_p50: f64,
    direct_p99: f64,
    /// Direct spawns one after another, each waited for (the baseline before session 13).
    tight_p50: f64,
}

/// From the PutObject response to the task process running, one run at a time, against
/// spawning the same command directly.
///
/// The two arms take turns, one run each, and each waits only for its process's timestamp
/// before the next turn, so that what the machine is doing (a CPU waking from idle, the last
/// process exiting) falls on both alike. The direct spawn is made as the engine makes it: its
/// own process group, output piped.
async fn latency(runs: usize) -> Latency {
    let t = TestEngine::start("").await;
    let (starts, direct) = (t.app_dir.join("starts"), t.app_dir.join("direct"));
    let wf =
        Workflow::new().step(Task::new(format!("date +%s%N >> {}", starts.display())).no_output());
    let (mut samples, mut base) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let mut exits = tokio::task::JoinSet::new();
    for i in 0..runs {
        t.client
            .submit(format!("in/lat/{i}"), &wf)
            .await
            .expect("submit");
        let acked = now_ns();
        wait_lines(&starts, i + 1).await;
        samples.push(nth_timestamp(&starts, i).saturating_sub(acked) as f64 / 1e6);

        let t0 = now_ns();
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("date +%s%N >> {}", direct.display()))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        // Reaped meanwhile, as the engine reaps its task.
        exits.spawn(async move { child.wait().await });
        wait_lines(&direct, i + 1).await;
        base.push(nth_timestamp(&direct, i).saturating_sub(t0) as f64 / 1e6);
    }
    while exits.join_next().await.is_some() {}
    // The baseline until session 13: direct spawns back to back, each waited for.
    let tight_file = t.app_dir.join("tight");
    let mut tight = Vec::with_capacity(runs.min(200));
    for i in 0..runs.min(200) {
        let t0 = now_ns();
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("date +%s%N >> {}", tight_file.display()))
            .spawn()
            .expect("spawn");
        let _ = child.wait().await;
        tight.push(nth_timestamp(&tight_file, i).saturating_sub(t0) as f64 / 1e6);
    }
    for v in [&mut samples, &mut base, &mut tight] {
        v.sort_by(f64::total_cmp);
    }
    Latency {
        p50: percentile(&samples, 0.5),
        p99: percentile(&samples, 0.99),
        direct_p50: percentile(&base, 0.5),
        direct_p99: percentile(&base, 0.99),
        tight_p50: percentile(&tight, 0.5),
    }
}

fn print_latency(runs: usize, l: &Latency) {
    println!(
        "| PutObject response → task process start, {runs} runs | p50 {:.2} ms, p99 {:.2} ms | direct `sh -c` spawn in turn: p50 {:.2} ms, p99 {:.2} ms (back to back: p50 {:.2} ms) | p50 {:.2}×, p99 {:.2}× its p50 and {:.2}× its p99 | p50 ≤ 1.5×, p99 ≤ 3× |",
        l.p50,
        l.p99,
        l.direct_p50,
        l.direct_p99,
        l.tight_p50,
        l.p50 / l.direct_p50,
        l.p99 / l.direct_p50,
        l.p99 / l.direct_p99,
    );
}

/// 1,000 one-task runs whose task writes its output, against spawning the same processes.
/// With `slices` above 1, the two arms take turns, `runs / slices` runs at a time, and each
/// arm's figures are the sums of its turns: a swing of the machine's speed then falls on both.
async fn throughput(runs: usize, concurrency: usize, fsync: bool, slices: usize) -> (Arm, Arm) {
    let bin = example_tasks();
    let t = TestEngine::start_with(&format!("get-json: {} get-json\n", bin.display()), |b| {
        b.concurrency(concurrency).store_options(StoreOptions {
            fsync,
            ..StoreOptions::default()
        })
    })
    .await;
    let wf = Workflow::new().step(Task::new("get_json"));
    let env: HashMap<String, String> = t.engine.app_env(&t.endpoint).into_iter().collect();
    let slices = slices.clamp(1, runs);
    let (mut engine, mut direct) = (Arm::default(), Arm::default());
    for slice in 0..slices {
        let range = slice * runs / slices..(slice + 1) * runs / slices;
        // Every object write is announced; subscribed before the first submission, so none
        // of this turn's final status documents can be missed.
        let mut written = t.engine.store().subscribe_objects();
        let started = Arm::start();
        let mut pending = std::collections::HashSet::with_capacity(range.len());
        for i in range.clone() {
            let submitted = t
                .client
                .submit(format!("in/tp/{i}"), &wf)
                .await
                .expect("submit");
            pending.insert(linedee::status::status_key(submitted.run_id()));
        }
        // The turn ends when every run's final status document is written, so that no engine
        // work of this turn falls into the next direct one. Waiting on the store's
        // announcements costs the engine nothing and notices the end at once, as the direct
        // arm notices a process's exit.
        let bucket = &env["LD_S3_BUCKET"];
        while !pending.is_empty() {
            let keys: Vec<String> = match written.recv().await {
                Ok(event) if pending.contains(&event.key) => vec![event.key],
                Ok(_) => continue,
                // Too far behind to have seen every announcement: look at each run left.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    pending.iter().cloned().collect()
                }
                Err(e) => panic!("the store's announcements ended: {e}"),
            };
            for key in keys {
                if final_status(&t, bucket, &key).await {
                    pending.remove(&key);
                }
            }
        }
        // Final documents are written unsynced and become durable with a later synced
        // commit. The turn pays for that commit, made now (the engine would make it after
        // 20 ms when no other comes), not the next direct turn.
        t.engine
            .store()
            .durable_within(Duration::ZERO)
            .await
            .expect("durable");
        engine.add(Arm::since(started));

        // Baseline: the same processes, the same environment, spawned directly,
        // `concurrency` at a time.
        let started = Arm::start();
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
        let mut handles = Vec::with_capacity(range.len());
        for i in range {
            let permit = sem.clone().acquire_owned().await.expect("permit");
            let (bin, env) = (bin.clone(), env.clone());
            handles.push(tokio::spawn(async move {
                let line_d =
                    format!(r#"{{"task_id":"base{i}.0.0","run_id":"base{i}","attempt":1}}"#);
                let status = tokio::process::Command::new(&bin)
                    .arg("get-json")
                    .envs(&env)
                    .env("line_D", line_d)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
                    .await
                    .expect("spawn");
                assert!(status.success());
                drop(permit);
            }));
        }
        for h in handles {
            h.await.expect("baseline task");
        }
        direct.add(Arm::since(started));
    }
    (engine, direct)
}

/// Whether the status document at `key` shows its run finished; a run that did not succeed
/// fails the benchmark.
async fn final_status(t: &TestEngine, bucket: &str, key: &str) -> bool {
    let Ok(Some((_, body))) = t.engine.store().get_object(bucket, key).await else {
        return false;
    };
    let doc: linedee::status::RunStatus = serde_json::from_slice(&body).expect("a status document");
    match doc.status {
        RunState::Succeeded => true,
        RunState::Failed | RunState::Cancelled => panic!("benchmark run {key} failed"),
        _ => false,
    }
}

/// `LINEDEE_BENCH_SLICES`: how many turns the throughput arms take (1, one after the other,
/// unless set).
fn slices() -> usize {
    match std::env::var("LINEDEE_BENCH_SLICES") {
        Err(_) => 1,
        Ok(s) => s.parse().ok().filter(|s| *s > 0).unwrap_or_else(|| {
            panic!("LINEDEE_BENCH_SLICES={s:?}: expected a whole number of turns, 1 or more")
        }),
    }
}

/// What the queue benchmark measured.
struct Queue {
    /// VmHWM before the engine started and once every run was queued, MB.
    rss_before: f64,
    rss_peak: f64,
    /// Seconds to submit and queue them all.
    fill_secs: f64,
    /// `GET /api/runs` (the dashboard's runs page) p50 and p95, ms: empty engine, full queue.
    api_empty: (f64, f64),
    api_full: (f64, f64),
    /// `linedee runs`, the whole process, p50 and p95, ms: empty engine, full queue.
    cli_empty: (f64, f64),
    cli_full: (f64, f64),
}

fn p50_p95(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (percentile(&ms, 0.5), percentile(&ms, 0.95))
}

/// `GET {dashboard}/api/runs`, `n` times.
async fn time_api(http: &reqwest::Client, dashboard: &str, n: usize) -> (f64, f64) {
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let page: serde_json::Value = http
            .get(format!("{dashboard}/api/runs"))
            .send()
            .await
            .expect("GET /api/runs")
            .json()
            .await
            .expect("a runs page");
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        assert!(page["runs"].is_array(), "{page}");
    }
    p50_p95(ms)
}

/// `linedee runs`, `n` times, each a new process.
fn time_cli(cli: &Path, env: &[(String, String)], n: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("an empty --dir");
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let out = std::process::Command::new(cli)
            .arg("--dir")
            .arg(dir.path())
            .arg("runs")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("linedee runs");
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    p50_p95(ms)
}

/// `runs` runs waiting behind one slot held by a long task: peak RSS, and the runs page and
/// `linedee runs` with the queue empty and full.
async fn queue(runs: usize) -> Queue {
    let cli = linedee_tests::binary("linedee-cli", "linedee");
    let rss_before = peak_rss_mb();
    let t = TestEngine::start_with("", |b| b.concurrency(1)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let dashboard = format!("http://{}", listener.local_addr().expect("addr"));
    let stop_dashboard = tokio_util::sync::CancellationToken::new();
    tokio::spawn({
        let (engine, stop) = (t.engine.clone(), stop_dashboard.clone());
        async move {
            linedee_engine::dashboard::serve(engine, listener, "t".repeat(32), async move {
                stop.cancelled().await;
            })
            .await
        }
    });
    let mut env = t.engine.app_env(&t.endpoint);
    env.push(("LD_DASHBOARD_URL".to_owned(), dashboard.clone()));
    let http = reqwest::Client::new();
    // Holds the only slot for the whole benchmark (stopped with the engine).
    let hold = Workflow::new().step(Task::new("sleep 3600").no_output());
    t.client.submit("in/hold", &hold).await.expect("submit");
    let api_empty = time_api(&http, &dashboard, 50).await;
    let cli_empty = time_cli(&cli, &env, 20);

    let start = Instant::now();
    let wf = Workflow::new().step(Task::new("true").no_output());
    let mut submitting = tokio::task::JoinSet::new();
    for i in 0..runs {
        if submitting.len() >= 16 {
            submitting
                .join_next()
                .await
                .expect("a submission")
                .expect("submit");
        }
        let (client, wf) = (t.client.clone(), wf.clone());
        submitting.spawn(async move {
            client
                .submit(format!("in/q/{i}"), &wf)
                .await
                .map(drop)
                .expect("submit")
        });
    }
    while let Some(done) = submitting.join_next().await {
        done.expect("submit");
    }
    // Every trigger taken in: the outbox is empty (then every run is queued). One row is
    // asked for, not the whole outbox.
    while !t
        .engine
        .store()
        .pending_triggers_after(0, 1)
        .await
        .expect("outbox")
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fill_secs = start.elapsed().as_secs_f64();
    let (queued, _) = t
        .engine
        .runs(Some(RunState::Queued), None, runs + 1)
        .await
        .expect("runs");
    assert_eq!(queued.len(), runs, "every run waits");
    let rss_peak = peak_rss_mb();
    let api_full = time_api(&http, &dashboard, 50).await;
    let cli_full = time_cli(&cli, &env, 20);
    stop_dashboard.cancel();
    Queue {
        rss_before,
        rss_peak,
        fill_secs,
        api_empty,
        api_full,
        cli_empty,
        cli_full,
    }
}

#[tokio::main]
async fn main() {
    let (lat_runs, tp_runs, queued) = if quick() {
        (100, 100, 2000)
    } else {
        (500, 1000, 100_000)
    };
    if std::env::var_os("LINEDEE_BENCH_QUEUE_ONLY").is_some() {
        let q = queue(queued).await;
        print_queue(queued, &q);
        return;
    }
    if std::env::var_os("LINEDEE_BENCH_P2_ONLY").is_some() {
        let (engine, direct) = throughput(tp_runs, 8, true, slices()).await;
        print_throughput(tp_runs, ", fsync on", &engine, &direct);
        return;
    }
    let lat = latency(lat_runs).await;
    if std::env::var_os("LINEDEE_BENCH_P1_ONLY").is_some() {
        print_latency(lat_runs, &lat);
        return;
    }
    let only_throughput = std::env::var_os("LINEDEE_BENCH_THROUGHPUT_ONLY").is_some();
    if only_throughput {
        print_latency(lat_runs, &lat);
        for fsync in [true, false] {
            let (engine, direct) = throughput(tp_runs, 8, fsync, slices()).await;
            let label = if fsync { ", fsync on" } else { ", fsync off" };
            print_throughput(tp_runs, label, &engine, &direct);
        }
        return;
    }
    let (engine, direct) = throughput(tp_runs, 8, true, slices()).await;
    let q = queue(queued).await;
    println!("| benchmark | linedee | baseline | ratio | goal |");
    println!("|---|---|---|---|---|");
    print_latency(lat_runs, &lat);
    print_throughput(tp_runs, "", &engine, &direct);
    print_queue(queued, &q);
}

fn print_throughput(runs: usize, label: &str, engine: &Arm, direct: &Arm) {
    println!(
        "| {runs} one-task runs writing output, concurrency 8{label} | {:.2} s ({:.0} runs/s), CPU {:.2} s (this process {:.2} s) | same processes spawned directly: {:.2} s, CPU {:.2} s (this process {:.2} s) | {:.2} (CPU {:.2}) | ≤ 1.3 |",
        engine.wall,
        runs as f64 / engine.wall,
        engine.cpu,
        engine.own_cpu,
        direct.wall,
        direct.cpu,
        direct.own_cpu,
        engine.wall / direct.wall,
        engine.cpu / direct.cpu,
    );
}

fn print_queue(queued: usize, q: &Queue) {
    println!(
        "| peak RSS with {queued} runs queued (engine + client in one process; queued in {:.0} s) | {:.0} MB | before the engine started: {:.0} MB | +{:.0} MB | ≤ 200 MB |",
        q.fill_secs,
        q.rss_peak,
        q.rss_before,
        q.rss_peak - q.rss_before
    );
    println!(
        "| runs page (`GET /api/runs`, 50 requests) with {queued} runs queued | p50 {:.1} ms, p95 {:.1} ms | one run: p50 {:.1} ms, p95 {:.1} ms | p95 {:.1}× | p95 ≤ 50 ms |",
        q.api_full.0,
        q.api_full.1,
        q.api_empty.0,
        q.api_empty.1,
        q.api_full.1 / q.api_empty.1
    );
    println!(
        "| `linedee runs` (a new process each, 20 times) with {queued} runs queued | p50 {:.1} ms, p95 {:.1} ms | one run: p50 {:.1} ms, p95 {:.1} ms | p95 {:.1}× | p95 ≤ 50 ms |",
        q.cli_full.0,
        q.cli_full.1,
        q.cli_empty.0,
        q.cli_empty.1,
        q.cli_full.1 / q.cli_empty.1
    );
}
