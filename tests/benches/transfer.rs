//! Transfer benchmarks (issue 16, P4 and P6), for BENCHMARKS.md: the `linedee` CLI against the
//! AWS CLI on the same embedded store (fsync on), each a child process whose wall time and
//! peak RSS are measured, alternating, three times each; medians are reported.
//!
//! - P4: `linedee upload` of a 1 GiB file with its workflow (`ld_code`) vs `aws s3 cp` of the
//!   same file, on loopback and through a proxy that delays each answer by 20 ms
//!   ([`linedee_tests::latency::LatencyProxy`]).
//! - P6: `linedee export` of 2,000 objects of 2 KiB vs `aws s3 sync` of the same bucket.
//!
//! Each child runs under this bench's own binary (`--measure`), whose only child it is, so
//! `getrusage(RUSAGE_CHILDREN)` there is that child's peak RSS.
//!
//! `cargo bench -p linedee-tests --bench transfer` (needs Python 3 and PyPI for the pinned
//! AWS CLI, as the interop tests). `LINEDEE_BENCH_QUICK=1`: 256 MiB and 500 objects.
//! `LINEDEE_BENCH_BEFORE_BIN=path/to/linedee`: an earlier build, measured in the same run.
//! `BENCH_DIR` (default: a temporary directory) holds the store and the files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linedee::credentials::{Credentials, StaticProvider};
use linedee::{Client, Task, Workflow};
use linedee_engine::store::{Store, StoreOptions};
use linedee_tests::latency::LatencyProxy;
use linedee_tests::{binary, workspace_root};
use tokio_util::sync::CancellationToken;

const BUCKET: &str = "ld-transfer";
const RUNS: usize = 3;

fn quick() -> bool {
    std::env::var_os("LINEDEE_BENCH_QUICK").is_some()
}

/// One child's wall time and peak RSS (KiB).
#[derive(Debug, Clone, Copy)]
struct Measured {
    wall: Duration,
    rss_kib: i64,
}

/// Runs `cmd` to completion through this bench's own binary (`--measure`), which spawns it,
/// waits, and reports its children's peak RSS: the only child's. Fails unless it succeeded.
fn measure(cmd: &mut Command) -> Measured {
    let mut wrapped = Command::new(std::env::current_exe().expect("the bench binary"));
    wrapped
        .arg("--measure")
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .env_clear()
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))));
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    if !cmd.get_envs().any(|(k, _)| k == "PATH") {
        wrapped.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    }
    let started = Instant::now();
    let out = wrapped
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("the measuring helper runs");
    let wall = started.elapsed();
    assert!(out.status.success(), "{cmd:?} failed");
    let rss_kib = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the helper prints the peak RSS");
    Measured { wall, rss_kib }
}

/// `--measure PROGRAM ARGS…`: runs it (stdout to null) and prints its peak RSS in KiB.
fn measure_child(args: &[std::ffi::OsString]) -> ! {
    let status = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("spawn");
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage");
    println!("{}", usage.max_rss());
    std::process::exit(if status.success() { 0 } else { 1 });
}

fn median(mut xs: Vec<Measured>) -> Measured {
    xs.sort_by_key(|m| m.wall);
    let wall = xs[xs.len() / 2].wall;
    let mut rss: Vec<i64> = xs.iter().map(|m| m.rss_kib).collect();
    rss.sort_unstable();
    Measured {
        wall,
        rss_kib: rss[rss.len() / 2],
    }
}

/// The venv of the interop tests (its pinned AWS CLI).
fn venv() -> PathBuf {
    if let Some(v) = std::env::var_os("LINEDEE_INTEROP_VENV") {
        return PathBuf::from(v);
    }
    let out = Command::new(workspace_root().join("tests/interop/setup-venv"))
        .stderr(Stdio::inherit())
        .output()
        .expect("setup-venv runs");
    assert!(out.status.success(), "setup-venv failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

struct Env {
    endpoint: String,
    creds: (String, String, String),
    aws: PathBuf,
    work: PathBuf,
}

impl Env {
    /// `linedee ARGS` against `endpoint`; `one_at_a_time` sets both concurrencies to 1, as
    /// before issue 16. Otherwise `LD_UPLOAD_CONCURRENCY`, `LD_DOWNLOAD_CONCURRENCY` and
    /// `LD_PART_SIZE` pass through from the bench's environment (to try other settings).
    fn linedee(&self, endpoint: &str, args: &[&str], one_at_a_time: bool) -> Command {
        let mut cmd = match before_bin() {
            Some(before) if one_at_a_time => Command::new(before),
            _ => Command::new(binary("linedee-cli", "linedee")),
        };
        if one_at_a_time {
            cmd.env("LD_UPLOAD_CONCURRENCY", "1")
                .env("LD_DOWNLOAD_CONCURRENCY", "1");
        } else {
            for knob in [
                "LD_UPLOAD_CONCURRENCY",
                "LD_DOWNLOAD_CONCURRENCY",
                "LD_PART_SIZE",
            ] {
                if let Ok(v) = std::env::var(knob) {
                    cmd.env(knob, v);
                }
            }
        }
        cmd.current_dir(&self.work)
            .arg("--dir")
            .arg(self.work.join("no-local"))
            .args(args)
            .env("LD_S3_BUCKET", BUCKET)
            .env("LD_S3_ENDPOINT", endpoint)
            .env("LD_AWS_ACCESS_KEY_ID", &self.creds.0)
            .env("LD_AWS_SECRET_ACCESS_KEY", &self.creds.1)
            .env("LD_AWS_SESSION_TOKEN", &self.creds.2)
            .env("LD_REGION", "us-east-1");
        cmd
    }

    fn aws(&self, endpoint: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.aws);
        cmd.current_dir(&self.work)
            .args(args)
            .args(["--endpoint-url", endpoint, "--only-show-errors"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &self.work)
            .env("AWS_ACCESS_KEY_ID", &self.creds.0)
            .env("AWS_SECRET_ACCESS_KEY", &self.creds.1)
            .env("AWS_SESSION_TOKEN", &self.creds.2)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    }
}

/// A file of `len` bytes that no compression could shortcut.
fn noise_file(path: &Path, len: usize) {
    use std::io::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for b in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(block.len());
        f.write_all(&block[..n]).expect("write");
        left -= n;
    }
    f.flush().expect("flush");
}

/// A table row: linedee now, linedee one request at a time (before), the AWS CLI, and the
/// ratios of the wall times to the AWS CLI's.
fn row(what: &str, now: Measured, before: Measured, aws: Measured, goal: &str) {
    let cell = |m: Measured| format!("{:.2} s, {} MiB", m.wall.as_secs_f64(), m.rss_kib / 1024);
    let ratio = |m: Measured| m.wall.as_secs_f64() / aws.wall.as_secs_f64();
    println!(
        "| {what} | {} | {} | {} | **{:.2}×** ({:.2}×) | {goal} |",
        cell(now),
        cell(before),
        cell(aws),
        ratio(now),
        ratio(before),
    );
}

/// `LINEDEE_BENCH_BEFORE_BIN`: an earlier build of `linedee` for the "before" column (else
/// this build with one request at a time).
fn before_bin() -> Option<PathBuf> {
    std::env::var_os("LINEDEE_BENCH_BEFORE_BIN").map(PathBuf::from)
}

fn header() -> String {
    let before = match before_bin() {
        Some(b) => format!("before (`{}`)", b.display()),
        None => "this build, one request at a time".to_owned(),
    };
    format!(
        "| | linedee | linedee {before} | AWS CLI | linedee / AWS CLI wall time | goal |\n|---|---|---|---|---|---|"
    )
}

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "--measure") {
        measure_child(&args[2..]);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let aws = venv().join("bin/aws");
    // A relative `BENCH_DIR` is taken from the workspace root, where `cargo bench` is run (the
    // benchmark itself runs in the package's directory).
    let dir = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, |d| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(d)
    });
    let tmp =
        tempfile::tempdir_in(&dir).unwrap_or_else(|e| panic!("BENCH_DIR {}: {e}", dir.display()));
    let store = Store::open(
        tmp.path().join("store"),
        StoreOptions {
            default_bucket: Some(BUCKET.to_owned()),
            ..StoreOptions::default()
        },
    )
    .expect("store");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    {
        let (store, stop) = (store.clone(), stop.clone());
        tokio::spawn(async move { store.serve(listener, stop.cancelled_owned()).await });
    }
    let c = store.credentials().expect("credentials");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let env = Env {
        endpoint: endpoint.clone(),
        creds: (
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            c.session_token.clone(),
        ),
        aws,
        work: work.clone(),
    };
    // Built before anything is timed.
    let _ = binary("linedee-cli", "linedee");

    // ---- P4: a big upload ----
    let size = if quick() { 256 << 20 } else { 1 << 30 };
    let file = work.join("big.bin");
    noise_file(&file, size);
    let workflow = work.join("workflow.json");
    let wf = Workflow::new()
        .title("Process media files")
        .step(Task::new("process_image"));
    std::fs::write(&workflow, serde_json::to_vec(&wf).expect("json")).expect("workflow");
    let proxy = LatencyProxy::start(&endpoint, Duration::from_millis(20)).await;
    println!(
        "P4: {} MiB, {RUNS} runs each, alternating; medians\n",
        size >> 20
    );
    println!("{}", header());
    for (name, at, goal) in [
        (
            "`linedee upload` vs `aws s3 cp`, loopback",
            env.endpoint.clone(),
            "≤ 0.8×, ≤ 64 MiB",
        ),
        (
            "the same, 20 ms per answer",
            proxy.endpoint.clone(),
            "≤ 0.7×",
        ),
    ] {
        let (mut now, mut before, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..RUNS {
            let f = file.to_str().expect("path");
            let wf = workflow.to_str().expect("path");
            for (one, out) in [(false, &mut now), (true, &mut before)] {
                let key = format!("in/ld-{one}-{i}.bin");
                out.push(measure(&mut env.linedee(
                    &at,
                    &["upload", f, "--workflow", wf, "--key", &key],
                    one,
                )));
            }
            theirs.push(measure(&mut env.aws(
                &at,
                &["s3", "cp", f, &format!("s3://{BUCKET}/in/aws-{i}.bin")],
            )));
        }
        row(name, median(now), median(before), median(theirs), goal);
    }
    std::fs::remove_file(&file).expect("remove the big file");

    // ---- P6: an export of many small objects ----
    let n = if quick() { 500 } else { 2000 };
    let client = Client::builder()
        .bucket(BUCKET)
        .endpoint(&endpoint)
        .credentials_provider(StaticProvider::new(Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            Some(c.session_token.clone()),
            None,
        )))
        .build()
        .expect("client");
    // Only the small objects: the uploads above go.
    for o in client.list("").await.expect("list") {
        client.delete(&o.key).await.expect("delete");
    }
    let mut puts = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = client.clone();
        puts.spawn(async move {
            let body = vec![u8::try_from(i % 251).unwrap_or(0); 2048];
            client
                .put(format!("data/{:02}/obj-{i:05}.json", i % 40), body)
                .send()
                .await
                .expect("put");
        });
        if puts.len() >= 16 {
            puts.join_next().await;
        }
    }
    while puts.join_next().await.is_some() {}
    println!("\nP6: {n} objects of 2 KiB, {RUNS} runs each, alternating; medians\n");
    println!("{}", header());
    let (mut now, mut before, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..RUNS {
        for (one, out) in [(false, &mut now), (true, &mut before)] {
            let to = work.join(format!("ld-export-{one}-{i}"));
            out.push(measure(&mut env.linedee(
                &env.endpoint,
                &["export", to.to_str().expect("path")],
                one,
            )));
        }
        let to = work.join(format!("aws-sync-{i}"));
        theirs.push(measure(&mut env.aws(
            &env.endpoint,
            &[
                "s3",
                "sync",
                &format!("s3://{BUCKET}"),
                to.to_str().expect("path"),
            ],
        )));
    }
    row(
        "`linedee export` vs `aws s3 sync`, loopback",
        median(now),
        median(before),
        median(theirs),
        "≤ 0.25×",
    );
    let count = |d: &Path| walk(d);
    assert_eq!(
        count(&work.join("ld-export-false-0")),
        n,
        "the export is whole"
    );
    assert_eq!(
        count(&work.join("ld-export-true-0")),
        n,
        "the export is whole"
    );
    assert_eq!(count(&work.join("aws-sync-0")), n, "the sync is whole");
    stop.cancel();
    drop(proxy);
}

/// Files under `dir`.
fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| {
                let p = e.path();
                if p.is_dir() { walk(&p) } else { 1 }
            })
            .sum()
    })
}
