//! `linedee cloud check`: one line per item of a `linedee serve` deployment, `ok` or `FAIL`
//! with the fix (docs/serve.md). The AWS credentials are the standard chain's.

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
    }
}
