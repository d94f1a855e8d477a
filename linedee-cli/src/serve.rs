//! `linedee serve`: one replica of line^d on AWS S3 + SQS (`docs/serve.md`). The engine's own
//! AWS access uses the standard AWS credential chain; tasks get this process's environment
//! (the app's `LD_*` variables included) plus `line_D` and their options.

use std::time::Duration;

use anyhow::Context;
use linedee_engine::serve::{Dynos, Rotation, Serve};
use linedee_engine::{Console, RetryPolicy};
use tokio_util::sync::CancellationToken;

use crate::cli::{HerokuArgs, RotateArgs, ServeArgs};
use crate::exit;
use crate::local::{init_tracing, listen_for_signals, on_signal};

/// `linedee serve`.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<u8> {
    init_tracing(args.quiet);
    let signals = listen_for_signals()?;
    let (s3, sqs) = linedee_engine::serve::aws_clients().await;
    let console = if args.quiet {
        Console::quiet()
    } else {
        Console::stdout()
    };
    let mut builder = Serve::builder();
    if args.runner == "heroku" {
        let (app, key) = app_and_key(&args.heroku, "--runner heroku")?;
        builder = builder.dynos(
            Dynos::new(app, key)
                .api_url(&args.heroku.heroku_api_url)
                .max_dynos(args.max_dynos)
                .list_interval(Duration::from_secs(args.dyno_list_interval.max(1))),
        );
    }
    if args.rotate_credentials {
        builder = builder.rotate(
            rotation(&args.heroku, &args.rotate, "--rotate-credentials")?,
            None,
        );
    }
    let serve = builder
        .bucket(&args.bucket)
        .queue_url(&args.queue_url)
        .state_prefix(&args.state_prefix)
        .clients(s3, sqs)
        .app_dir(&args.app_dir)
        .data_dir(&args.data_dir)
        .concurrency(args.concurrency)
        .retry_policy(RetryPolicy::default())
        .heartbeat(Duration::from_secs(args.heartbeat.max(1)))
        .start_grace(Duration::from_secs(args.start_grace.max(1)))
        .check_notification(!args.no_notification_check)
        .dead_letter_every(Duration::from_secs(args.dead_letter_interval.max(1)))
        .console(console)
        .build()
        .await
        .map_err(|e| exit::bad_input(format!("linedee serve cannot start: {e}")))?;
    let stop = CancellationToken::new();
    tokio::spawn(on_signal(signals, stop.clone()));
    println!(
        "linedee serve: bucket {} queue {} (Ctrl-C stops)",
        args.bucket, args.queue_url
    );
    serve
        .run(async move { stop.cancelled().await })
        .await
        .context("linedee serve stopped with an error")?;
    println!("linedee serve stopped");
    Ok(exit::OK)
}

/// The Heroku app and API key, or what to set; `what` is the option that needs them.
pub(crate) fn app_and_key(heroku: &HerokuArgs, what: &str) -> anyhow::Result<(String, String)> {
    let app = heroku
        .heroku_app
        .clone()
        .or_else(|| std::env::var("HEROKU_APP_NAME").ok())
        .ok_or_else(|| {
            exit::bad_input(format!(
                "{what} needs the app: set LD_HEROKU_APP (or pass --heroku-app)"
            ))
        })?;
    let key = heroku.heroku_api_key.clone().ok_or_else(|| {
        exit::bad_input(format!(
            "{what} needs an API key: set HEROKU_API_KEY (`heroku authorizations:create`)"
        ))
    })?;
    Ok((app, key))
}

/// The rotation the options describe; `what` is the option that asked for it.
pub(crate) fn rotation(
    heroku: &HerokuArgs,
    rotate: &RotateArgs,
    what: &str,
) -> anyhow::Result<Rotation> {
    let (app, key) = app_and_key(heroku, what)?;
    let role = rotate.rotate_role_arn.clone().ok_or_else(|| {
        exit::bad_input(format!(
            "{what} needs the role to mint credentials as: set LD_ROTATE_ROLE_ARN (or pass --rotate-role-arn)"
        ))
    })?;
    let mut rotation = Rotation::new(role, app, key)
        .api_url(&heroku.heroku_api_url)
        .interval(Duration::from_secs(rotate.rotate_interval));
    if let Some(lifetime) = rotate.rotate_lifetime {
        rotation = rotation.lifetime(Duration::from_secs(lifetime));
    }
    Ok(rotation)
}
