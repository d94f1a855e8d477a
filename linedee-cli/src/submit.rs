//! `linedee submit` (`ld_run`) and `linedee upload` (`ld_code`), optionally waiting for the run.

use std::io::IsTerminal as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use linedee::status::RunState;
use linedee::{Body, Client, Submission, Workflow};

use crate::cli::{SubmitArgs, UploadArgs, WaitArgs};
use crate::env::Config;
use crate::exit;
use crate::runs;

/// Files above this size get a progress bar (when stderr is a terminal).
const PROGRESS_ABOVE: u64 = 8 * 1024 * 1024;

/// `linedee submit workflow.json [--key K] [--wait]`.
pub(crate) async fn submit(config: &Config, args: SubmitArgs) -> anyhow::Result<u8> {
    let workflow = read_workflow(&args.workflow)?;
    let key = args.key.unwrap_or_else(|| default_key(&args.workflow));
    let client = config.client()?;
    let submission = client
        .submit(&key, &workflow)
        .await
        .with_context(|| format!("cannot submit {}", args.workflow.display()))?;
    announce(&client, &submission);
    finish(&client, &submission, &args.wait).await
}

/// `linedee upload FILE --workflow wf.json [--key K] [--wait]`.
pub(crate) async fn upload(config: &Config, args: UploadArgs) -> anyhow::Result<u8> {
    let workflow = read_workflow(&args.workflow)?;
    let meta = std::fs::metadata(&args.file)
        .map_err(|e| exit::bad_input(format!("cannot read {}: {e}", args.file.display())))?;
    if !meta.is_file() {
        return Err(exit::bad_input(format!(
            "{} is not a regular file",
            args.file.display()
        )));
    }
    let key = args.key.unwrap_or_else(|| default_key(&args.file));
    let client = config.client()?;
    let bar = (meta.len() > PROGRESS_ABOVE && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(meta.len());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} uploading {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(key.clone());
        bar
    });
    // The file's parts are read as they are sent; the bar moves as parts complete.
    let mut up = client
        .upload(&key, Body::from_path(&args.file))
        .workflow(&workflow);
    if let Some(bar) = &bar {
        let bar = bar.clone();
        up = up.on_progress(move |done| bar.set_position(done));
    }
    if let Some(ct) = args.content_type {
        up = up.content_type(ct);
    }
    let sent = up.send().await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let submission = sent.with_context(|| format!("cannot upload {}", args.file.display()))?;
    announce(&client, &submission);
    finish(&client, &submission, &args.wait).await
}

/// Reads and checks a workflow file: every problem with its JSON path.
pub(crate) fn read_workflow(path: &Path) -> anyhow::Result<Workflow> {
    let text = read_text(path)?;
    Workflow::parse(&text).with_context(|| path.display().to_string())
}

/// Reads a text file; a missing or unreadable file is bad input.
pub(crate) fn read_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| exit::bad_input(format!("cannot read {}: {e}", path.display())))
}

fn default_key(file: &Path) -> String {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workflow.json".to_owned());
    format!("in/{name}")
}

fn announce(client: &Client, submission: &Submission) {
    println!(
        "run {} submitted: s3://{}/{}",
        submission.run_id(),
        client.bucket(),
        submission.key()
    );
}

async fn finish(client: &Client, submission: &Submission, wait: &WaitArgs) -> anyhow::Result<u8> {
    if !wait.wait {
        println!(
            "follow it with: linedee run {} --watch",
            submission.run_id()
        );
        return Ok(exit::OK);
    }
    let status = wait_for(
        client,
        submission.run_id(),
        Duration::from_secs(wait.timeout),
    )
    .await?;
    runs::print_status(&status);
    Ok(if status.status == RunState::Succeeded {
        exit::OK
    } else {
        exit::FAILURE
    })
}

/// Polls the status document until the run finishes, with a spinner on a terminal.
pub(crate) async fn wait_for(
    client: &Client,
    run_id: &str,
    timeout: Duration,
) -> anyhow::Result<linedee::RunStatus> {
    let spinner = ProgressBar::new_spinner();
    if !std::io::stderr().is_terminal() {
        spinner.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner.set_message(format!("run {run_id}: waiting for the engine"));
    let start = Instant::now();
    let mut delay = Duration::from_millis(50);
    let result = loop {
        match client.run(run_id).await {
            Ok(status) if status.status.is_finished() => break Ok(status),
            Ok(status) => {
                let done = status
                    .tasks()
                    .filter(|t| t.status == linedee::TaskState::Succeeded)
                    .count();
                spinner.set_message(format!(
                    "run {run_id}: {} ({done}/{} tasks done)",
                    status.status,
                    status.tasks().count()
                ));
            }
            Err(linedee::Error::RunNotFound { .. }) => {}
            Err(e) => break Err(anyhow::Error::new(e)),
        }
        if start.elapsed() >= timeout {
            break Err(anyhow::anyhow!(
                "run {run_id} did not finish within {}s; follow it with `linedee run {run_id} --watch`",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    };
    spinner.finish_and_clear();
    result
}
