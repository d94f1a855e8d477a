//! `linedee cloud check`: one line per item of a `linedee serve` deployment, `ok` or `FAIL`
//! with the fix; `linedee cloud setup`: what it lacks, created; `linedee cloud rotate`: the
//! app's credentials rotated once (docs/serve.md). The AWS credentials are the standard
//! chain's.

use std::time::Duration;

use linedee_engine::serve::{CheckItem, Rotated};

use crate::cli::{CloudCheckArgs, CloudCommand};
use crate::exit;

/// `linedee cloud …`.
pub(crate) async fn run(cmd: CloudCommand) -> anyhow::Result<u8> {
    match cmd {
        CloudCommand::Check(args) => {
            let (s3, sqs) = linedee_engine::serve::aws_clients().await;
            let items = check(&args, &s3, &sqs).await?;
            let mut all = true;
            for item in &items {
                if item.ok && item.fix.is_some() {
                    println!("skip  {}: {}", item.name, item.detail);
                } else if item.ok {
                    println!("ok    {}: {}", item.name, item.detail);
                } else {
                    all = false;
                    println!("FAIL  {}: {}", item.name, item.detail);
                    if let Some(fix) = &item.fix {
                        for (i, line) in fix.lines().enumerate() {
                            let lead = if i == 0 { "      fix: " } else { "           " };
                            println!("{lead}{line}");
                        }
                    }
                }
            }
            Ok(if all { exit::OK } else { exit::FAILURE })
        }
        CloudCommand::Setup(args) => {
            let (s3, sqs) = linedee_engine::serve::aws_clients().await;
            let steps = linedee_engine::serve::setup(
                &s3,
                &sqs,
                &args.bucket,
                &args.queue,
                args.retain_days
                    .map(|days| linedee_engine::serve::Retention {
                        days,
                        finished_runs: args.retain_runs,
                    }),
                args.dry_run,
            )
            .await
            .map_err(|e| exit::bad_input(e.to_string()))?;
            for s in &steps {
                let mark = match (s.changed, args.dry_run) {
                    (false, _) => "ok     ",
                    (true, false) => "changed",
                    (true, true) => "todo   ",
                };
                let mut lines = s.detail.lines();
                println!("{mark}  {}: {}", s.name, lines.next().unwrap_or_default());
                for line in lines {
                    println!("           {line}");
                }
            }
            if steps.iter().all(|s| !s.changed) {
                println!("nothing to change");
            }
            Ok(exit::OK)
        }
        CloudCommand::Rotate(args) => {
            let rotation =
                crate::serve::rotation(&args.heroku, &args.rotate, "linedee cloud rotate")?;
            let (s3, _) = linedee_engine::serve::aws_clients().await;
            let sts = linedee_engine::serve::sts_client().await;
            let done = linedee_engine::serve::rotate_once(
                rotation,
                &s3,
                sts,
                &args.bucket,
                &args.state_prefix,
                args.force,
            )
            .await
            .map_err(|e| match e {
                // A setting to fix (exit 2); anything else is AWS or Heroku refusing or
                // failing (exit 1), with its cause.
                linedee_engine::Error::Cloud(linedee_engine::CloudError::Config(m)) => {
                    exit::bad_input(format!("cannot rotate: {m}"))
                }
                other => anyhow::Error::new(other).context("cannot rotate"),
            })?;
            let now = std::time::SystemTime::now();
            let secs = |t: std::time::SystemTime| t.duration_since(now).map_or(0, |d| d.as_secs());
            match done {
                Rotated::Done {
                    generation,
                    access_key_id,
                    expires_at,
                } => println!(
                    "rotated: generation {generation}, access key {access_key_id}, expires in {} s",
                    secs(expires_at)
                ),
                Rotated::NotDue { next_at } => {
                    println!(
                        "not due: the next rotation is in {} s (--force rotates now)",
                        secs(next_at)
                    );
                }
                Rotated::Busy { by, until } => println!(
                    "busy: {by} is rotating (its claim holds {} s more)",
                    secs(until)
                ),
                _ => println!("nothing done"),
            }
            Ok(exit::OK)
        }
    }
}

/// Every item of `linedee cloud check`, in order; a skipped item is `ok` with a `fix` saying
/// how to include it.
async fn check(
    args: &CloudCheckArgs,
    s3: &aws_sdk_s3::Client,
    sqs: &aws_sdk_sqs::Client,
) -> anyhow::Result<Vec<CheckItem>> {
    use linedee_engine::serve;
    let skip = |name: &str, why: &str, how: &str| CheckItem {
        name: name.to_owned(),
        ok: true,
        detail: why.to_owned(),
        fix: Some(how.to_owned()),
    };
    let mut items = serve::check(s3, sqs, &args.bucket, &args.queue_url).await;
    if items
        .iter()
        .any(|i| !i.ok && (i.name == "bucket" || i.name == "queue"))
    {
        return Ok(items);
    }
    // Only the role and the lifetime matter to the check: the app need not be given.
    let rotation = args.rotate.rotate_role_arn.as_ref().map(|role| {
        let mut r = serve::Rotation::new(role, "", "")
            .interval(Duration::from_secs(args.rotate.rotate_interval));
        if let Some(lifetime) = args.rotate.rotate_lifetime {
            r = r.lifetime(Duration::from_secs(lifetime));
        }
        r
    });
    let sts = match rotation {
        Some(_) => Some(serve::sts_client().await),
        None => None,
    };
    items.extend(
        serve::probe_permissions(
            s3,
            sqs,
            sts.as_ref().zip(rotation.as_ref()),
            &args.bucket,
            &args.queue_url,
            &args.state_prefix,
        )
        .await,
    );
    if rotation.is_none() {
        items.push(skip(
            "rotation role",
            "not checked",
            "pass --rotate-role-arn (LD_ROTATE_ROLE_ARN)",
        ));
    }
    match crate::serve::app_and_key(&args.heroku, "the Heroku check") {
        Ok((app, key)) => {
            let procfile = args.app_dir.join("Procfile");
            let types: Vec<String> = match std::fs::read_to_string(&procfile) {
                Ok(text) => linedee_engine::Procfile::parse(&text)
                    .map_err(|e| exit::bad_input(format!("{}: {e}", procfile.display())))?
                    .names()
                    .map(str::to_owned)
                    .collect(),
                Err(_) => Vec::new(),
            };
            let app = serve::HerokuApp::new(app, key).api_url(&args.heroku.heroku_api_url);
            items.extend(serve::check_heroku(&app, &args.bucket, &types).await);
        }
        Err(_) => items.push(skip(
            "heroku app",
            "not checked",
            "set LD_HEROKU_APP and HEROKU_API_KEY",
        )),
    }
    items.push(if args.no_round_trip {
        skip(
            "event round trip",
            "skipped (--no-round-trip)",
            "run it once a replica runs",
        )
    } else {
        serve::round_trip(s3, &args.bucket, Duration::from_secs(args.round_trip_wait)).await
    });
    Ok(items)
}
