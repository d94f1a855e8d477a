//! `linedee cloud check`: one line per item of a `linedee serve` deployment, `ok` or `FAIL`
//! with the fix; `linedee cloud setup`: what it lacks, created (docs/serve.md). The AWS
//! credentials are the standard chain's.

use crate::cli::CloudCommand;
use crate::exit;

/// `linedee cloud …`.
pub(crate) async fn run(cmd: CloudCommand) -> anyhow::Result<u8> {
    match cmd {
        CloudCommand::Check(args) => {
            let (s3, sqs) = linedee_engine::serve::aws_clients().await;
            let items =
                linedee_engine::serve::check(&s3, &sqs, &args.bucket, &args.queue_url).await;
            let mut all = true;
            for item in &items {
                if item.ok {
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
                args.retain_days,
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
    }
}
