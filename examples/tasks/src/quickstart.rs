//! `linedee-example-tasks quickstart`: the product document's three examples, end to end, on
//! the embedded engine — no AWS, no Heroku, no network.
//!
//! This program is both the app and its tasks: it starts the engine in process with a Procfile
//! generated from its own `#[ld_task]` registry (each entry runs this same binary), submits the
//! two-step starter workflow (`ld_run`), uploads a media file with `process_image` attached
//! (`ld_code`), uploads the parallel `get_data` workflow, waits, and prints a summary.

use std::time::Duration;

use anyhow::Context as _;
use linedee::credentials::{Credentials, StaticProvider};
use linedee::status::RunState;
use linedee::{Body, Client, RunStatus, Task, TaskGroup, Workflow};
use linedee_engine::{Console, Engine};

/// How long the quickstart waits for its runs.
const WAIT: Duration = Duration::from_secs(120);

/// Entry point of the `quickstart` subcommand.
/// Returns the exit code: 0 when every run succeeded, 1 when one did not, 2 on an error.
pub(crate) fn main(args: &[String]) -> i32 {
    let keep = args.iter().any(|a| a == "--keep-dashboard");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    match runtime.block_on(run(keep)) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

/// The three workflows of the product document, with the typed task handles.
fn workflows() -> (Workflow, Workflow, Workflow) {
    let starter = Workflow::new()
        .title("Example 2-step workflow")
        .step(Task::new(r#"bash -c 'echo "Do Step 1"'"#).no_output())
        .step(Task::new(r#"bash -c 'echo "Do Step 2"'"#).no_output());
    let media = Workflow::new()
        .title("Process media files")
        .step(crate::process_image::task().timeout(Duration::from_secs(30)));
    let parallel = Workflow::new().title("Fetch records").step(
        TaskGroup::new(
            ["posts", "users", "comments"].map(|e| crate::get_data::task().option("endpoint", e)),
        )
        .name("Run a parallel Task Group"),
    );
    (starter, media, parallel)
}

async fn run(keep: bool) -> anyhow::Result<bool> {
    let dir = tempfile::Builder::new()
        .prefix("linedee-quickstart-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).context("cannot create the app directory")?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let procfile: String = linedee_task::tasks()
        .iter()
        .map(|def| format!("{}: {} {}\n", def.spec.name, exe.display(), def.spec.name))
        .collect();
    std::fs::write(app.join("Procfile"), &procfile).context("cannot write the Procfile")?;
    println!("Procfile (generated from the #[ld_task] registry):\n{procfile}");

    let engine = Engine::builder()
        .data_dir(dir.path().join("data"))
        .app_dir(&app)
        .console(Console::stdout())
        .build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind 127.0.0.1")?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let client = client(&engine, &endpoint)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = engine.clone();
    let served = tokio::spawn(async move {
        runner
            .run(listener, async move {
                let _ = stopped.await;
            })
            .await
    });
    println!(
        "engine: S3 endpoint {endpoint}, bucket {}\n",
        engine.bucket()
    );

    let (starter, media, parallel) = workflows();
    let mut submissions = vec![client.submit("in/example", &starter).await?];
    let image = example_image();
    submissions.push(
        client
            .upload("in/img/example_img.jpg", Body::from(image))
            .workflow(&media)
            .content_type("image/jpeg")
            .send()
            .await?,
    );
    submissions.push(
        client
            .upload("in/etl/records", Body::from("{}"))
            .workflow(&parallel)
            .send()
            .await?,
    );
    let mut statuses = Vec::new();
    for s in &submissions {
        statuses.push(s.wait(WAIT).await?);
    }
    print_summary(&statuses);
    let ok = statuses.iter().all(|s| s.status == RunState::Succeeded);

    if keep {
        let dash = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!(
            "\ndashboard: http://{}/  (Ctrl-C to stop)",
            dash.local_addr()?
        );
        let token = engine.store().dashboard_token();
        linedee_engine::dashboard::serve(engine.clone(), dash, token, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    }
    let _ = stop.send(());
    served.await.context("the engine task failed")??;
    Ok(ok)
}

fn client(engine: &Engine, endpoint: &str) -> anyhow::Result<Client> {
    let env: std::collections::HashMap<String, String> =
        engine.app_env(endpoint).into_iter().collect();
    let var = |k: &str| {
        env.get(k)
            .cloned()
            .with_context(|| format!("the engine gave no {k}"))
    };
    Ok(Client::builder()
        .bucket(engine.bucket())
        .endpoint(endpoint)
        .credentials_provider(StaticProvider::new(Credentials::new(
            var("LD_AWS_ACCESS_KEY_ID")?,
            var("LD_AWS_SECRET_ACCESS_KEY")?,
            env.get("LD_AWS_SESSION_TOKEN").cloned(),
            None,
        )))
        .build()?)
}

/// A small file with a JPEG signature, standing in for `example_img.jpg`.
fn example_image() -> Vec<u8> {
    let mut bytes = vec![0xff, 0xd8, 0xff, 0xe0];
    bytes.extend((0..16_380u32).map(|i| (i % 251) as u8));
    bytes
}

fn secs(s: &RunStatus) -> String {
    match (s.started_at, s.finished_at) {
        (Some(a), Some(b)) => format!("{:.2}s", (b - a).as_seconds_f64()),
        _ => "-".to_owned(),
    }
}

fn print_summary(statuses: &[RunStatus]) {
    println!(
        "\n{:<28} {:<26} {:<24} {:<10} {:>8}",
        "RUN", "TITLE", "TRIGGER", "STATUS", "TIME"
    );
    for s in statuses {
        println!(
            "{:<28} {:<26} {:<24} {:<10} {:>8}",
            s.run_id,
            s.title.as_deref().unwrap_or("-"),
            s.trigger.key,
            s.status.as_str(),
            secs(s)
        );
    }
    println!(
        "\n{:<32} {:<30} {:<10} {:>8} {:>8}  STATE",
        "TASK", "CMD", "STATUS", "ATTEMPTS", "TIME"
    );
    for task in statuses.iter().flat_map(RunStatus::tasks) {
        let time = match (task.started_at, task.finished_at) {
            (Some(a), Some(b)) => format!("{:.2}s", (b - a).as_seconds_f64()),
            _ => "-".to_owned(),
        };
        let cmd: String = task.cmd.chars().take(30).collect();
        let state = task
            .state
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        println!(
            "{:<32} {:<30} {:<10} {:>8} {:>8}  {state}",
            task.task_id,
            cmd,
            task.status.as_str(),
            task.attempts,
            time
        );
    }
}
