//! `linedee export DIR`: every object of the bucket, `ld/` history included, with progress.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::ExportArgs;
use crate::env::Config;
use crate::exit;

/// Runs `linedee export`.
pub(crate) async fn run(config: &Config, args: ExportArgs) -> anyhow::Result<u8> {
    let client = config.client()?;
    let bar = ProgressBar::new(0);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} exporting [{bar:30}] {bytes}/{total_bytes} {msg} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let progress = bar.clone();
    let report = client
        .export(&args.out)
        .prefix(args.prefix.clone())
        .on_progress(move |p| {
            progress.set_length(p.bytes_total);
            progress.set_position(p.bytes_done);
            progress.set_message(format!("{}/{} objects", p.objects_done, p.objects_total));
        })
        .send()
        .await;
    bar.finish_and_clear();
    let report = report.with_context(|| {
        format!(
            "cannot export s3://{} to {}",
            client.bucket(),
            args.out.display()
        )
    })?;
    for (key, reason) in &report.skipped {
        eprintln!("warning: skipped `{key}`: {reason}");
    }
    println!(
        "exported {} objects ({} bytes) from s3://{} to {}{}",
        report.objects,
        report.bytes,
        client.bucket(),
        args.out.display(),
        if report.skipped.is_empty() {
            String::new()
        } else {
            format!(", skipped {}", report.skipped.len())
        }
    );
    Ok(exit::OK)
}
