//! Engine benchmarks (issue 5), each beside its baseline from the same run.
//!
//! `cargo bench -p linedee-tests --bench engine` prints a Markdown table for BENCHMARKS.md.
//! Set `LINEDEE_BENCH_QUICK=1` for a smaller run.

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
    use nix::sys::resource::{UsageWho, getrusage};
    [UsageWho::RUSAGE_SELF, UsageWho::RUSAGE_CHILDREN]
        .into_iter()
        .filter_map(|who| getrusage(who).ok())
        .map(|u| {
            let (user, sys) = (u.user_time(), u.system_time());
            user.tv_sec() as f64
                + sys.tv_sec() as f64
                + (user.tv_usec() + sys.tv_usec()) as f64 / 1e6
        })
        .sum()
}

/// Wall and CPU seconds of one arm of the throughput benchmark.
struct Arm {
    wall: f64,
    cpu: f64,
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

/// From the PutObject response to the task process running, one run at a time.
async fn latency(runs: usize) -> (f64, f64, f64) {
    let t = TestEngine::start("").await;
    let starts = t.app_dir.join("starts");
    let wf =
        Workflow::new().step(Task::new(format!("date +%s%N >> {}", starts.display())).no_output());
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        t.client
            .submit(format!("in/lat/{i}"), &wf)
            .await
            .expect("submit");
        let acked = now_ns();
        wait_lines(&starts, i + 1).await;
        let text = std::fs::read_to_string(&starts).expect("starts");
        let started: u128 = text
            .lines()
            .nth(i)
            .and_then(|l| l.trim().parse().ok())
            .expect("a timestamp");
        samples.push(started.saturating_sub(acked) as f64 / 1e6);
    }
    samples.sort_by(f64::total_cmp);
    // Baseline: spawning the same command directly, same measurement.
    let base_file = t.app_dir.join("base");
    let mut base = Vec::with_capacity(runs);
    for i in 0..runs.min(200) {
        let t0 = now_ns();
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("date +%s%N >> {}", base_file.display()))
            .spawn()
            .expect("spawn");
        let _ = child.wait().await;
        let text = std::fs::read_to_string(&base_file).expect("base");
        let started: u128 = text
            .lines()
            .nth(i)
            .and_then(|l| l.trim().parse().ok())
            .expect("a timestamp");
        base.push(started.saturating_sub(t0) as f64 / 1e6);
    }
    base.sort_by(f64::total_cmp);
    (
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        percentile(&base, 0.5),
    )
}

/// 1,000 one-task runs whose task writes its output, against spawning the same processes.
async fn throughput(runs: usize, concurrency: usize, fsync: bool) -> (Arm, Arm) {
    let bin = example_tasks();
    let t = TestEngine::start_with(&format!("get-json: {} get-json\n", bin.display()), |b| {
        b.concurrency(concurrency).store_options(StoreOptions {
            fsync,
            ..StoreOptions::default()
        })
    })
    .await;
    let wf = Workflow::new().step(Task::new("get_json"));
    let (start, cpu0) = (Instant::now(), cpu_secs());
    let mut run_ids = Vec::with_capacity(runs);
    for i in 0..runs {
        let submitted = t
            .client
            .submit(format!("in/tp/{i}"), &wf)
            .await
            .expect("submit");
        run_ids.push(submitted.run_id().to_owned());
    }
    // One run's record at a time (cheap), so waiting costs the engine next to nothing.
    for run_id in &run_ids {
        loop {
            match t.engine.status(run_id).await.map(|s| s.status) {
                Ok(RunState::Succeeded) => break,
                Ok(RunState::Failed | RunState::Cancelled) => {
                    panic!("benchmark run {run_id} failed")
                }
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    let engine = Arm {
        wall: start.elapsed().as_secs_f64(),
        cpu: cpu_secs() - cpu0,
    };

    // Baseline: the same processes, the same environment, spawned directly, `concurrency` at a time.
    let env: HashMap<String, String> = t.engine.app_env(&t.endpoint).into_iter().collect();
    let (start, cpu0) = (Instant::now(), cpu_secs());
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut handles = Vec::with_capacity(runs);
    for i in 0..runs {
        let permit = sem.clone().acquire_owned().await.expect("permit");
        let (bin, env) = (bin.clone(), env.clone());
        handles.push(tokio::spawn(async move {
            let line_d = format!(r#"{{"task_id":"base{i}.0.0","run_id":"base{i}","attempt":1}}"#);
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
    let direct = Arm {
        wall: start.elapsed().as_secs_f64(),
        cpu: cpu_secs() - cpu0,
    };
    (engine, direct)
}

/// Peak RSS while `runs` runs wait behind one slot held by a long task.
async fn queued_rss(runs: usize) -> (f64, f64) {
    let before = peak_rss_mb();
    let t = TestEngine::start_with("", |b| b.concurrency(1)).await;
    let hold = Workflow::new().step(Task::new("sleep 120").no_output());
    t.client.submit("in/hold", &hold).await.expect("submit");
    let wf = Workflow::new().step(Task::new("true").no_output());
    for i in 0..runs {
        t.client
            .submit(format!("in/q/{i}"), &wf)
            .await
            .expect("submit");
    }
    loop {
        let (queued, _) = t
            .engine
            .runs(Some(RunState::Queued), None, runs)
            .await
            .expect("runs");
        if queued.len() >= runs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (before, peak_rss_mb())
}

#[tokio::main]
async fn main() {
    let (lat_runs, tp_runs, queued) = if quick() {
        (100, 100, 1000)
    } else {
        (500, 1000, 10_000)
    };
    let (p50, p99, base_p50) = latency(lat_runs).await;
    let only_throughput = std::env::var_os("LINEDEE_BENCH_THROUGHPUT_ONLY").is_some();
    if only_throughput {
        for fsync in [true, false] {
            let (engine, direct) = throughput(tp_runs, 8, fsync).await;
            println!(
                "| {tp_runs} one-task runs writing output, concurrency 8, fsync {} | {:.2} s ({:.0} runs/s), CPU {:.2} s | same processes spawned directly: {:.2} s, CPU {:.2} s | {:.2} (CPU {:.2}) | ≤ 1.3 |",
                if fsync { "on" } else { "off" },
                engine.wall,
                tp_runs as f64 / engine.wall,
                engine.cpu,
                direct.wall,
                direct.cpu,
                engine.wall / direct.wall,
                engine.cpu / direct.cpu,
            );
        }
        return;
    }
    let (engine, direct) = throughput(tp_runs, 8, true).await;
    let (rss_before, rss_peak) = queued_rss(queued).await;
    println!("| benchmark | linedee | baseline | ratio | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| PutObject response → task process start, {lat_runs} runs | p50 {p50:.2} ms, p99 {p99:.2} ms | direct `sh -c` spawn p50 {base_p50:.2} ms | p50 {:.1}× | p50 ≤ 10 ms, p99 ≤ 50 ms |",
        p50 / base_p50
    );
    println!(
        "| {tp_runs} one-task runs writing output, concurrency 8 | {:.2} s ({:.0} runs/s), CPU {:.2} s | same processes spawned directly: {:.2} s, CPU {:.2} s | {:.2} (CPU {:.2}) | ≤ 1.3 |",
        engine.wall,
        tp_runs as f64 / engine.wall,
        engine.cpu,
        direct.wall,
        direct.cpu,
        engine.wall / direct.wall,
        engine.cpu / direct.cpu,
    );
    println!(
        "| peak RSS with {queued} runs queued (engine + client in one process) | {rss_peak:.0} MB | before the engine started: {rss_before:.0} MB | +{:.0} MB | ≤ 200 MB |",
        rss_peak - rss_before
    );
}
