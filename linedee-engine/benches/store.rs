//! Store benchmark: 4 KiB PUT and GET ops/s against s3s-fs and moto, and a 256 MiB PUT
//! against a raw disk write of the same size, with fsync on and off. The servers take turns
//! over `LINEDEE_BENCH_ROUNDS` rounds (default 3); the table gives medians, and the lines
//! under it each round's ratios for the store with fsync on.
//!
//! `cargo bench -p linedee-engine --bench store` (set `MOTO_PYTHON` to a Python with
//! `moto[server]` installed to include moto). Prints a Markdown table.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use linedee_engine::store::{Store, StoreOptions};

const SMALL: usize = 4 * 1024;
const OPS: usize = 2000;
const CONCURRENCY: usize = 8;
const LARGE: usize = 256 * 1024 * 1024;
const BUCKET: &str = "bench";

fn client(endpoint: &str, ak: &str, sk: &str, token: Option<String>) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(ak, sk, token, None, "bench"))
        .build();
    Client::from_conf(conf)
}

/// One server under test, its client, and what stops it when dropped.
struct Server {
    name: &'static str,
    client: Client,
    /// Whether it takes the 256 MiB PUT (moto's in-memory store is left out).
    large: bool,
    /// The raw write (fsynced or not) measured after its large PUT, if any.
    raw_fsync: Option<bool>,
    _stop: Box<dyn Send>,
}

/// Aborts a server task when dropped.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Creates the bucket and warms up connections and credentials.
async fn prepare(c: &Client, bucket: &str) {
    c.create_bucket().bucket(bucket).send().await.ok();
    for i in 0..20 {
        c.put_object()
            .bucket(bucket)
            .key(format!("warm/{i}"))
            .body(ByteStream::from_static(b"w"))
            .send()
            .await
            .expect("warm-up");
    }
}

/// 4 KiB PUTs then GETs of `OPS` new keys under `prefix`, `CONCURRENCY` at a time: ops/s.
async fn small_ops(c: &Client, bucket: &str, prefix: &str) -> (f64, f64) {
    let body = Bytes::from(vec![b'x'; SMALL]);
    let run = |get: bool| {
        let t = Instant::now();
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|w| {
                let (c, body, bucket) = (c.clone(), body.clone(), bucket.to_owned());
                let prefix = prefix.to_owned();
                tokio::spawn(async move {
                    for i in (w..OPS).step_by(CONCURRENCY) {
                        let key = format!("small/{prefix}/{i}");
                        if get {
                            let out = c
                                .get_object()
                                .bucket(&bucket)
                                .key(&key)
                                .send()
                                .await
                                .expect("get");
                            let got = out.body.collect().await.expect("body").into_bytes();
                            assert_eq!(got.len(), SMALL);
                        } else {
                            c.put_object()
                                .bucket(&bucket)
                                .key(&key)
                                .body(ByteStream::from(body.clone()))
                                .send()
                                .await
                                .expect("put");
                        }
                    }
                })
            })
            .collect();
        async move {
            for t in tasks {
                t.await.expect("task");
            }
            OPS as f64 / t.elapsed().as_secs_f64()
        }
    };
    let put = run(false).await;
    let get = run(true).await;
    (put, get)
}

async fn large_put(c: &Client, bucket: &str) -> f64 {
    let body = Bytes::from(vec![7u8; LARGE]);
    let t = Instant::now();
    c.put_object()
        .bucket(bucket)
        .key("large")
        .body(ByteStream::from(body))
        .send()
        .await
        .expect("large put");
    LARGE as f64 / 1e6 / t.elapsed().as_secs_f64()
}

/// One round's figures for one server.
struct Figures {
    put_ops: f64,
    get_ops: f64,
    large_mbps: Option<f64>,
    /// A raw 256 MiB file write made right after this server's large PUT.
    raw_mbps: Option<f64>,
}

impl Figures {
    /// Each figure's median over the rounds.
    fn median(rounds: &[Figures]) -> Figures {
        let m = |f: fn(&Figures) -> Option<f64>| {
            let mut v: Vec<f64> = rounds.iter().filter_map(f).collect();
            v.sort_by(f64::total_cmp);
            match v.len() {
                0 => None,
                n if n % 2 == 1 => Some(v[n / 2]),
                n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
            }
        };
        Figures {
            put_ops: m(|f| Some(f.put_ops)).unwrap_or(f64::NAN),
            get_ops: m(|f| Some(f.get_ops)).unwrap_or(f64::NAN),
            large_mbps: m(|f| f.large_mbps),
            raw_mbps: m(|f| f.raw_mbps),
        }
    }
}

/// One round on one server: the small PUTs and GETs, the large PUT, then the raw write it is
/// compared with, so that both meet the disk in the same state.
async fn measure(s: &Server, round: usize, dir: &Path) -> Figures {
    let (put_ops, get_ops) = small_ops(&s.client, BUCKET, &format!("r{round}")).await;
    let large_mbps = if s.large {
        Some(large_put(&s.client, BUCKET).await)
    } else {
        None
    };
    let raw_mbps = s.raw_fsync.map(|fsync| raw_write(dir, fsync));
    eprintln!(
        "round {round}, {}: put {put_ops:.0}/s get {get_ops:.0}/s large {large_mbps:?} MB/s raw {raw_mbps:?} MB/s",
        s.name
    );
    Figures {
        put_ops,
        get_ops,
        large_mbps,
        raw_mbps,
    }
}

async fn linedee(name: &'static str, dir: &Path, fsync: bool) -> Server {
    let store = Store::open(
        dir,
        StoreOptions {
            fsync,
            ..StoreOptions::default()
        },
    )
    .expect("open");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn({
        let store = store.clone();
        async move {
            let _ = store.serve(listener, std::future::pending()).await;
        }
    });
    let cr = store.credentials().expect("creds");
    let client = client(
        &endpoint,
        &cr.access_key_id,
        &cr.secret_access_key,
        Some(cr.session_token.clone()),
    );
    Server {
        name,
        client,
        large: true,
        raw_fsync: Some(fsync),
        _stop: Box::new(Abort(server)),
    }
}

async fn s3s_fs(dir: &Path) -> Server {
    std::fs::create_dir_all(dir).expect("mkdir");
    let fs = s3s_fs::FileSystem::new(dir).expect("s3s-fs");
    let service = {
        let mut b = s3s::service::S3ServiceBuilder::new(fs);
        b.set_auth(s3s::auth::SimpleAuth::from_single("AKBENCH", "secretbench"));
        b.build()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(TokioIo::new(stream), service.clone())
                .into_owned();
            tokio::spawn(conn);
        }
    });
    Server {
        name: "s3s-fs 0.14 (no fsync)",
        client: client(&endpoint, "AKBENCH", "secretbench", None),
        large: true,
        raw_fsync: Some(false),
        _stop: Box::new(Abort(server)),
    }
}

async fn moto(python: &Path) -> Server {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let child = tokio::process::Command::new(python)
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own process group, stopped whole: `MOTO_PYTHON` may be a wrapper (a shell
        // script, `uv run`) whose python outlives a kill of the wrapper alone.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start moto with MOTO_PYTHON={}: {e}",
                python.display()
            )
        });
    let group = Group(child.id().and_then(|id| i32::try_from(id).ok()));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    // Readiness: wait until moto accepts connections.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Server {
        name: "moto server",
        client: client(&format!("http://{addr}"), "testing", "testing", None),
        large: false,
        raw_fsync: None,
        // The group's kill comes first (fields drop in order), then the child is reaped.
        _stop: Box::new((group, child)),
    }
}

/// A process group, killed when dropped (also when the benchmark panics).
struct Group(Option<i32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.filter(|p| *p > 1) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn raw_write(dir: &Path, fsync: bool) -> f64 {
    use std::io::Write;
    let path = dir.join(format!("raw-{fsync}"));
    let chunk = vec![7u8; 1024 * 1024];
    let t = Instant::now();
    let mut f = std::fs::File::create(&path).expect("create");
    for _ in 0..LARGE / chunk.len() {
        f.write_all(&chunk).expect("write");
    }
    if fsync {
        f.sync_all().expect("fsync");
    }
    let mbps = LARGE as f64 / 1e6 / t.elapsed().as_secs_f64();
    std::fs::remove_file(path).expect("remove");
    mbps
}

fn row(name: &str, f: &Figures, s3s: &Figures, moto: Option<&Figures>) {
    let vs_moto = |x: f64, m: Option<f64>| m.map_or("n/a".to_owned(), |m| format!("{:.1}×", x / m));
    println!(
        "| {name} | {:.0} | {:.2}× | {} | {:.0} | {:.2}× | {} | {} | {} |",
        f.put_ops,
        f.put_ops / s3s.put_ops,
        vs_moto(f.put_ops, moto.map(|m| m.put_ops)),
        f.get_ops,
        f.get_ops / s3s.get_ops,
        vs_moto(f.get_ops, moto.map(|m| m.get_ops)),
        f.large_mbps.map_or("n/a".into(), |x| format!("{x:.0}")),
        match (f.large_mbps, f.raw_mbps) {
            (Some(x), Some(r)) => format!("{r:.0} ({:.2}×)", x / r),
            _ => "n/a".into(),
        },
    );
}

/// The workspace root, where `cargo bench` is run; the benchmark itself runs in the package's
/// directory.
fn workspace_root() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `BENCH_DIR`, a relative one taken from the workspace root; else the workspace root.
fn bench_dir() -> std::path::PathBuf {
    let root = workspace_root();
    std::env::var_os("BENCH_DIR").map_or_else(|| root.clone(), |d| root.join(d))
}

/// `MOTO_PYTHON`: a relative path (`target/interop-venv/bin/python`) is taken from the
/// workspace root, as `BENCH_DIR` is; a bare name (`python3`) is looked up in `PATH`.
fn moto_python() -> Option<std::path::PathBuf> {
    let python = std::path::PathBuf::from(std::env::var_os("MOTO_PYTHON")?);
    Some(if python.is_relative() && python.components().count() > 1 {
        workspace_root().join(python)
    } else {
        python
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches` probes
    }
    let rounds: usize = match std::env::var("LINEDEE_BENCH_ROUNDS") {
        Err(_) => 3,
        Ok(r) => r.parse().ok().filter(|r| *r > 0).unwrap_or_else(|| {
            panic!("LINEDEE_BENCH_ROUNDS={r:?}: expected a whole number of rounds, 1 or more")
        }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = bench_dir();
        let root = tempfile::tempdir_in(&dir)
            .unwrap_or_else(|e| panic!("BENCH_DIR {}: {e}", dir.display()));
        let mut servers = vec![
            linedee("linedee, fsync on", &root.path().join("on"), true).await,
            linedee("linedee, fsync off", &root.path().join("off"), false).await,
            s3s_fs(&root.path().join("s3s-fs")).await,
        ];
        if let Some(python) = moto_python() {
            servers.push(moto(&python).await);
        }
        for s in &servers {
            prepare(&s.client, BUCKET).await;
        }
        // Rounds, each server in turn and the first one rotating, so that every server meets
        // the machine's and the disk's slow and fast spells alike.
        let mut figures: Vec<Vec<Figures>> = servers.iter().map(|_| Vec::new()).collect();
        for round in 0..rounds {
            for k in 0..servers.len() {
                let i = (round + k) % servers.len();
                figures[i].push(measure(&servers[i], round, root.path()).await);
            }
        }
        let names: Vec<&str> = servers.iter().map(|s| s.name).collect();
        drop(servers);
        let med: Vec<Figures> = figures.iter().map(|f| Figures::median(f)).collect();
        let (on, s3s, moto) = (&figures[0], &figures[2], figures.get(3));
        println!("| server | 4 KiB PUT ops/s | vs s3s-fs | vs moto | 4 KiB GET ops/s | vs s3s-fs | vs moto | 256 MiB PUT MB/s | raw disk write MB/s (ratio) |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for (name, f) in names.iter().zip(&med) {
            row(name, f, &med[2], med.get(3));
        }
        println!("\nMedians of {rounds} rounds; {OPS} requests of 4 KiB per figure, {CONCURRENCY} concurrent clients; raw disk: 256 MiB in 1 MiB writes, right after each large PUT (fsync on after linedee's fsync-on PUT).");
        println!("\nlinedee (fsync on), round by round:");
        for r in 0..rounds {
            let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
                (Some(x), Some(y)) => format!("{:.2}×", x / y),
                _ => "n/a".into(),
            };
            let put = Some(on[r].put_ops);
            println!(
                "- round {r}: 4 KiB PUT {:.0}/s, {} s3s-fs ({:.0}/s), {} moto ({}/s); 256 MiB PUT {:.0} MB/s, {} raw ({:.0} MB/s), {} s3s-fs ({:.0} MB/s)",
                on[r].put_ops,
                ratio(put, Some(s3s[r].put_ops)),
                s3s[r].put_ops,
                ratio(put, moto.map(|m| m[r].put_ops)),
                moto.map_or("n/a".into(), |m| format!("{:.0}", m[r].put_ops)),
                on[r].large_mbps.unwrap_or(f64::NAN),
                ratio(on[r].large_mbps, on[r].raw_mbps),
                on[r].raw_mbps.unwrap_or(f64::NAN),
                ratio(on[r].large_mbps, s3s[r].large_mbps),
                s3s[r].large_mbps.unwrap_or(f64::NAN),
            );
        }
    });
}
