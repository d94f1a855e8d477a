//! `linedee dashboard`: the dashboard for any line^d bucket (one served by `linedee serve`,
//! say), on loopback, read from the bucket's status documents and logs with the `LD_*`
//! variables. Cancel and retry go to the serving engine through the bucket.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::DashboardArgs;
use crate::env::Config;
use crate::exit;
use crate::local::{init_tracing, listen_for_signals, on_signal};

/// `linedee dashboard`.
pub(crate) async fn run(config: &Config, args: DashboardArgs) -> anyhow::Result<u8> {
    init_tracing(false);
    let client = config.client()?;
    client.check().await?;
    let signals = listen_for_signals()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| {
            exit::bad_input(format!(
                "cannot listen on 127.0.0.1:{} ({e}); pass --port (0: any free port)",
                args.port
            ))
        })?;
    let addr = listener.local_addr()?;
    let token = linedee_engine::dashboard::new_token();
    println!(
        "dashboard for bucket {}: http://{addr}/?token={token}#/runs (Ctrl-C stops)",
        client.bucket()
    );
    let stop = CancellationToken::new();
    tokio::spawn(on_signal(signals, stop.clone()));
    linedee_engine::dashboard::serve_bucket(client, listener, token, async move {
        stop.cancelled().await;
    })
    .await
    .context("the dashboard stopped with an error")?;
    Ok(exit::OK)
}
