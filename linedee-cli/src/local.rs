//! `linedee local`: the store, the engine and the dashboard in one process.
//!
//! The data dir is held with an exclusive `flock` on `<dir>/lock`, so a second `linedee local`
//! on it is refused. Once both listeners are bound, the environment applications need is
//! written to `<dir>/env` (mode 0600) and the dashboard's token to `<dir>/dashboard-token`
//! (0600); then `linedee local ready` is printed. Ctrl-C or SIGTERM stop it gracefully.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;
use linedee_engine::{Console, Engine};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::LocalArgs;
use crate::env::{DASHBOARD_URL_VAR, ENV_FILE};
use crate::exit;

/// The file holding the dashboard's bearer token.
pub(crate) const TOKEN_FILE: &str = "dashboard-token";

/// The line printed once everything is up.
pub(crate) const READY_LINE: &str = "linedee local ready";

/// Values never printed, only written to the env file.
const SECRET_VARS: &[&str] = &["LD_AWS_SECRET_ACCESS_KEY", "LD_AWS_SESSION_TOKEN"];

/// Runs until Ctrl-C or SIGTERM.
pub(crate) async fn run(dir: &Path, args: LocalArgs) -> anyhow::Result<u8> {
    init_tracing(args.quiet);
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    let _lock = lock_dir(dir)?;
    if let Some(p) = &args.procfile
        && !p.is_file()
    {
        return Err(exit::bad_input(format!(
            "no Procfile at {}; pass an existing file to --procfile, or leave it out",
            p.display()
        )));
    }
    let mut builder = Engine::builder()
        .data_dir(dir)
        .app_dir(&args.app_dir)
        .bucket(&args.bucket)
        .concurrency(args.concurrency)
        .console(if args.quiet {
            Console::quiet()
        } else {
            Console::stdout()
        });
    if let Some(p) = &args.procfile {
        builder = builder.procfile(p);
    }
    let engine = builder.build().context("cannot start the engine")?;

    if !args.bind.is_loopback() {
        eprintln!(
            "warning: --bind {} exposes the S3 endpoint and the dashboard beyond this machine: \
             anyone who can reach them can read every run and its logs",
            args.bind
        );
    }
    let store_listener = bind(args.bind, args.port, "--port").await?;
    let dashboard_listener = bind(args.bind, args.dashboard_port, "--dashboard-port").await?;
    let endpoint = format!("http://{}", store_listener.local_addr()?);
    let dashboard_url = format!("http://{}", dashboard_listener.local_addr()?);
    let mut env = engine.app_env(&endpoint);
    env.push((DASHBOARD_URL_VAR.to_owned(), dashboard_url.clone()));
    let token = engine.store().dashboard_token();
    let env_path = dir.join(ENV_FILE);
    write_private(&env_path, &dotenv(&env))?;
    write_private(&dir.join(TOKEN_FILE), &format!("{token}\n"))?;

    println!("dashboard: {dashboard_url}");
    println!(
        "environment for applications (written to {}):",
        env_path.display()
    );
    for (k, v) in &env {
        if SECRET_VARS.contains(&k.as_str()) {
            println!("  {k}=<secret, in {}>", env_path.display());
        } else {
            println!("  {k}={v}");
        }
    }
    println!(
        "load it in a shell with: set -a; . {}; set +a",
        env_path.display()
    );
    let signals = listen_for_signals()?;
    println!("{READY_LINE}");

    let stop = CancellationToken::new();
    tokio::spawn(on_signal(signals, stop.clone()));
    let (ran, served) = tokio::join!(
        async {
            let r = engine.run(store_listener, stop.cancelled()).await;
            stop.cancel();
            r
        },
        async {
            let r = linedee_engine::dashboard::serve(
                engine.clone(),
                dashboard_listener,
                token,
                stop.clone().cancelled_owned(),
            )
            .await;
            stop.cancel();
            r
        },
    );
    ran.context("the engine stopped with an error")?;
    served.context("the dashboard stopped with an error")?;
    println!("linedee local stopped");
    Ok(exit::OK)
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from the moment this returns.
pub(crate) type Signals = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);

/// Installs the handlers before the ready line is printed, so a signal sent as soon as it
/// appears stops the engine gracefully instead of killing it.
pub(crate) fn listen_for_signals() -> anyhow::Result<Signals> {
    use tokio::signal::unix::{SignalKind, signal};
    let int = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok((int, term))
}

/// Cancels `stop` on the first Ctrl-C or SIGTERM; a second one exits at once.
pub(crate) async fn on_signal((mut int, mut term): Signals, stop: CancellationToken) {
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("shutting down: running tasks get a grace period (Ctrl-C again to stop at once)");
    stop.cancel();
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("stopping at once; unfinished tasks resume at the next start");
    std::process::exit(130);
}

pub(crate) fn init_tracing(quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // s3s logs whole requests (session token included) at debug: never below info.
    let filter = match "s3s=info".parse() {
        Ok(cap) => filter.add_directive(cap),
        Err(_) => filter,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Takes `<dir>/lock` exclusively (held until the process ends) and writes our pid in it.
fn lock_dir(dir: &Path) -> anyhow::Result<Flock<File>> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0)?;
            lock.rewind()?;
            writeln!(lock, "{}", std::process::id())?;
            Ok(lock)
        }
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let by = match pid.trim() {
                "" => String::new(),
                p => format!(" (pid {p})"),
            };
            Err(exit::bad_input(format!(
                "{} is in use by another `linedee local`{by}; stop it first, or pass another --dir",
                dir.display()
            )))
        }
        Err((_, errno)) => {
            Err(anyhow::Error::new(errno).context(format!("cannot lock {}", path.display())))
        }
    }
}

async fn bind(ip: std::net::IpAddr, port: u16, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind((ip, port)).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            exit::bad_input(format!(
                "port {port} is in use; pass another {flag}, or {flag} 0 for any free port"
            ))
        } else {
            anyhow::Error::new(e).context(format!(
                "cannot listen on {}",
                std::net::SocketAddr::new(ip, port)
            ))
        }
    })
}

/// `KEY=value` lines; values that need it are double-quoted.
fn dotenv(vars: &[(String, String)]) -> String {
    let mut out = String::from("# written by `linedee local`; secret, do not commit\n");
    for (k, v) in vars {
        let plain = v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:+=@,".contains(c));
        if plain {
            out.push_str(&format!("{k}={v}\n"));
        } else {
            let quoted = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            out.push_str(&format!("{k}=\"{quoted}\"\n"));
        }
    }
    out
}

/// Writes a file readable by its owner only, through a temporary file and a rename.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_env_file_reads_back_with_the_engine_parser() {
        let vars = vec![
            (
                "LD_S3_ENDPOINT".to_owned(),
                "http://127.0.0.1:9400".to_owned(),
            ),
            ("LD_AWS_SESSION_TOKEN".to_owned(), "a b\"c\\d#e".to_owned()),
        ];
        let parsed = linedee_engine::parse_dotenv(&dotenv(&vars)).expect("parses");
        assert_eq!(parsed, vars);
    }
}
