//! `linedee runs` (the list: from the local engine's journal, else from `ld/runs/*.json`) and
//! `linedee run ID [--watch]`.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::time::Duration;

use futures_util::{StreamExt as _, TryStreamExt as _};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use linedee::status::{RunState, RunStatus, TaskState, TaskStatus};
use linedee::{Client, Error};
use time::OffsetDateTime;

use crate::cli::{RunArgs, RunsArgs};
use crate::control::{dashboard_client, dashboard_get};
use crate::env::{Config, DASHBOARD_URL_VAR};
use crate::exit;

/// Status documents fetched at once.
const FETCH_CONCURRENCY: usize = 16;

/// `linedee runs [--status S] [--limit N]`: newest first. From the local engine's journal
/// (through its dashboard API, an indexed query) when there is a local engine; else from the
/// bucket's status documents.
pub(crate) async fn list(config: &Config, args: RunsArgs) -> anyhow::Result<u8> {
    let rows = match config.get(DASHBOARD_URL_VAR) {
        Some(base) => {
            // The same right as reading the documents: credentials the bucket refuses get no
            // listing from the engine either.
            config.client()?.check().await?;
            from_engine(base, &args).await?
        }
        None => from_bucket(config, &args).await?,
    };
    if rows.is_empty() {
        eprintln!("no runs");
        return Ok(exit::OK);
    }
    println!(
        "{:<28} {:<10} {:<20} {:>9}  TITLE",
        "RUN", "STATUS", "CREATED", "DURATION"
    );
    for r in &rows {
        println!(
            "{:<28} {:<10} {:<20} {:>9}  {}",
            r.run_id,
            r.status,
            short_time(r.created),
            duration(r.started.or(Some(r.created)), r.finished),
            r.title.as_deref().unwrap_or("")
        );
    }
    Ok(exit::OK)
}

/// One line of `linedee runs`.
struct Row {
    run_id: String,
    status: String,
    title: Option<String>,
    created: OffsetDateTime,
    started: Option<OffsetDateTime>,
    finished: Option<OffsetDateTime>,
}

/// Most runs the dashboard API gives per page.
const API_PAGE: usize = 500;

/// The newest runs from the local engine: `GET {dashboard}/api/runs`, page after page.
async fn from_engine(base: &str, args: &RunsArgs) -> anyhow::Result<Vec<Row>> {
    #[derive(serde::Deserialize)]
    struct Page {
        runs: Vec<Summary>,
        next: Option<i64>,
    }
    #[derive(serde::Deserialize)]
    struct Summary {
        run_id: String,
        title: Option<String>,
        status: String,
        created_ms: i64,
        started_ms: Option<i64>,
        finished_ms: Option<i64>,
    }
    let time = |ms: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok();
    let http = dashboard_client()?;
    let mut rows = Vec::new();
    let mut before: Option<i64> = None;
    while rows.len() < args.limit {
        let mut url = format!(
            "/api/runs?limit={}",
            (args.limit - rows.len()).min(API_PAGE)
        );
        if let Some(status) = &args.status {
            url.push_str(&format!("&status={status}"));
        }
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let body = dashboard_get(&http, base, &url).await?;
        let page: Page = serde_json::from_str(&body).map_err(|e| {
            anyhow::anyhow!(
                "the dashboard at {base} sent a runs page that is not the expected JSON: {e}"
            )
        })?;
        for s in page.runs {
            let Some(created) = time(s.created_ms) else {
                continue;
            };
            rows.push(Row {
                run_id: s.run_id,
                status: s.status,
                title: s.title,
                created,
                started: s.started_ms.and_then(time),
                finished: s.finished_ms.and_then(time),
            });
        }
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    rows.truncate(args.limit);
    Ok(rows)
}

/// The newest runs from the bucket: every status document under `ld/runs/` is read, so this
/// takes time in proportion to the runs the bucket holds.
async fn from_bucket(config: &Config, args: &RunsArgs) -> anyhow::Result<Vec<Row>> {
    let client = config.client()?;
    let keys: Vec<String> = client
        .list("ld/runs/")
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter_map(|k| {
            k.strip_prefix("ld/runs/")
                .and_then(|k| k.strip_suffix(".json"))
                .map(str::to_owned)
        })
        .collect();
    let mut runs: Vec<RunStatus> = futures_util::stream::iter(keys)
        .map(|id| {
            let client = client.clone();
            async move {
                match client.run(&id).await {
                    Ok(s) => Ok(Some(s)),
                    // Deleted meanwhile, or not a run document: leave it out.
                    Err(Error::RunNotFound { .. } | Error::Malformed { .. }) => Ok(None),
                    Err(Error::InvalidRunId(_)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .buffer_unordered(FETCH_CONCURRENCY)
        .try_filter_map(|s| async move { Ok(s) })
        .try_collect()
        .await?;
    if let Some(wanted) = &args.status {
        runs.retain(|r| r.status.as_str() == wanted);
    }
    runs.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.run_id.cmp(&a.run_id))
    });
    runs.truncate(args.limit);
    Ok(runs
        .into_iter()
        .map(|r| Row {
            status: r.status.as_str().to_owned(),
            run_id: r.run_id,
            title: r.title,
            created: r.created_at,
            started: r.started_at,
            finished: r.finished_at,
        })
        .collect())
}

/// `linedee run ID [--watch]`.
pub(crate) async fn show(config: &Config, args: RunArgs) -> anyhow::Result<u8> {
    let client = config.client()?;
    let status = fetch(&client, &args.run_id).await?;
    if !args.watch {
        print_status(&status);
        return Ok(exit::OK);
    }
    let status = watch(&client, status).await?;
    print_status(&status);
    Ok(if status.status == RunState::Succeeded {
        exit::OK
    } else {
        exit::FAILURE
    })
}

/// A run's status; an unknown run is "not found" with a hint.
pub(crate) async fn fetch(client: &Client, run_id: &str) -> anyhow::Result<RunStatus> {
    client.run(run_id).await.map_err(|e| match e {
        Error::RunNotFound { .. } => exit::not_found(format!(
            "no run `{run_id}` in bucket `{}`; list the runs with `linedee runs`",
            client.bucket()
        )),
        e => e.into(),
    })
}

/// Follows a run until it finishes: a spinner per running task on a terminal, otherwise one
/// line per task transition.
async fn watch(client: &Client, mut status: RunStatus) -> anyhow::Result<RunStatus> {
    let live = std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if live {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let header = multi.add(ProgressBar::new_spinner());
    header.enable_steady_tick(Duration::from_millis(120));
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut seen: BTreeMap<String, (TaskState, u32)> = BTreeMap::new();
    loop {
        header.set_message(format!(
            "run {} {}{}",
            status.run_id,
            status.status,
            status
                .title
                .as_deref()
                .map(|t| format!(" — {t}"))
                .unwrap_or_default()
        ));
        for task in status.tasks() {
            let bar = bars.entry(task.task_id.clone()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar
            });
            bar.set_message(task_line(task));
            match task.status {
                TaskState::Running => bar.enable_steady_tick(Duration::from_millis(120)),
                _ => {
                    bar.disable_steady_tick();
                    bar.tick();
                }
            }
            let now = (task.status, task.attempts);
            if !live && seen.get(&task.task_id) != Some(&now) {
                println!("{}", task_line(task));
            }
            seen.insert(task.task_id.clone(), now);
        }
        if status.status.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        status = fetch(client, &status.run_id).await?;
    }
    for bar in bars.values() {
        bar.finish_and_clear();
    }
    header.finish_and_clear();
    let _ = multi.clear();
    Ok(status)
}

fn task_line(t: &TaskStatus) -> String {
    let mut line = format!("{:<32} {:<9}", t.task_id, t.status.as_str());
    if t.attempts > 0 {
        line.push_str(&format!(" attempt {}", t.attempts));
    }
    if let Some(code) = t.exit_code {
        line.push_str(&format!(" exit {code}"));
    }
    line.push_str(&format!(
        " {}",
        duration(t.started_at, t.finished_at).trim()
    ));
    line.push_str(&format!("  {}", t.name.as_deref().unwrap_or(&t.cmd)));
    line
}

/// Prints a run: its state, its trigger, its error, and every task.
pub(crate) fn print_status(s: &RunStatus) {
    println!(
        "run {} {}{}",
        s.run_id,
        s.status,
        s.title
            .as_deref()
            .map(|t| format!(" — {t}"))
            .unwrap_or_default()
    );
    let kind = match s.trigger.kind {
        linedee::status::TriggerKind::LdRun => "ld_run",
        linedee::status::TriggerKind::LdCode => "ld_code",
        _ => "trigger",
    };
    println!(
        "  trigger   {kind} s3://{}/{}",
        s.trigger.bucket, s.trigger.key
    );
    println!(
        "  created   {}   duration {}",
        short_time(s.created_at),
        duration(s.started_at, s.finished_at).trim()
    );
    if let Some(e) = &s.error {
        println!("  error     {}", e.replace('\n', "\n            "));
    }
    for (i, step) in s.steps.iter().enumerate() {
        let name = step.name.as_deref().unwrap_or("");
        let kind = if step.parallel { " (parallel)" } else { "" };
        println!("  step {i}{kind} {name}");
        for t in &step.tasks {
            println!("    {}", task_line(t));
            if let Some(e) = &t.error {
                println!("      error: {}", e.replace('\n', "\n             "));
            }
            if let Some(state) = &t.state {
                println!("      state: {state}");
            }
        }
    }
    let failed: Vec<_> = s
        .tasks()
        .filter(|t| t.status == TaskState::Failed)
        .collect();
    if let Some(t) = failed.first() {
        println!("  see the log with: linedee logs {}", t.task_id);
    }
}

fn short_time(t: OffsetDateTime) -> String {
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s) = t.to_hms();
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// `12.3s`, `4m05s`, or `-` when not started; a run still going counts up to now.
fn duration(start: Option<OffsetDateTime>, end: Option<OffsetDateTime>) -> String {
    let Some(start) = start else {
        return "-".to_owned();
    };
    let end = end.unwrap_or_else(OffsetDateTime::now_utc);
    let secs = (end - start).as_seconds_f64().max(0.0);
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3600.0 {
        format!("{}m{:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (secs / 3600.0) as u64,
            ((secs % 3600.0) / 60.0) as u64
        )
    }
}
