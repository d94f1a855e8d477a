//! Test helper: serves a store from a data directory.
//!
//! `linedee-store <dir> [--no-fsync] [--bucket NAME] [--lifetime-secs N]`
//!
//! Binds `127.0.0.1:0` and prints one line to stdout once it accepts connections:
//! `listening http://127.0.0.1:PORT <dir>/credentials.json`. Runs until killed or until
//! stdin closes.

use std::process::ExitCode;
use std::time::Duration;

use linedee_engine::store::{Store, StoreOptions};
use tokio::io::AsyncReadExt;

fn usage() -> ExitCode {
    eprintln!("usage: linedee-store <dir> [--no-fsync] [--bucket NAME] [--lifetime-secs N]");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        return usage();
    };
    let mut options = StoreOptions::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--no-fsync" => options.fsync = false,
            "--bucket" => options.default_bucket = args.next(),
            "--lifetime-secs" => {
                let Some(secs) = args.next().and_then(|s| s.parse().ok()) else {
                    return usage();
                };
                options.credential_lifetime = Some(Duration::from_secs(secs));
            }
            _ => return usage(),
        }
    }
    let store = match Store::open(&dir, options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("linedee-store: cannot open {dir}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("linedee-store: cannot bind 127.0.0.1:0: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("linedee-store: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "listening http://{addr} {}",
        store.dir().join("credentials.json").display()
    );
    let stdin_closed = async {
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    };
    match store.serve(listener, stdin_closed).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("linedee-store: {e}");
            ExitCode::FAILURE
        }
    }
}
