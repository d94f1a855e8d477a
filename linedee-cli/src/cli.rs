//! The command line: every command and flag, with the exit codes in `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Configuration:
  Commands other than `local` talk to a line^d bucket through LD_AWS_ACCESS_KEY_ID,
  LD_AWS_SECRET_ACCESS_KEY, LD_AWS_SESSION_TOKEN, LD_REGION, LD_S3_BUCKET and LD_S3_ENDPOINT.
  When <dir>/env exists (written by `linedee local`) it is read too; variables already set
  in the environment win over the file.

Exit codes:
  0  success
  1  the run failed or was cancelled (with --wait / --watch), or another failure
  2  usage error or bad input (a missing file, an invalid workflow, a dir in use)
  3  not found (an unknown run, task, attempt or log)
  4  cannot reach the store or the dashboard (not configured, not running, refused)";

/// linedee: line^d workflows on your machine and on any line^d bucket.
#[derive(Debug, Parser)]
#[command(name = "linedee", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// The local engine's directory: its data, its `env` file and dashboard token.
    #[arg(long, global = true, default_value = ".linedee", env = "LINEDEE_DIR")]
    pub(crate) dir: PathBuf,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the store, the engine and the dashboard in this process (Ctrl-C stops it).
    Local(LocalArgs),
    /// Inspect a `linedee serve` deployment on AWS (`cloud check`).
    #[command(subcommand)]
    Cloud(CloudCommand),
    /// Serve the dashboard for any bucket (one run by `linedee serve`, say) on loopback, from
    /// its status documents.
    Dashboard(DashboardArgs),
    /// Run line^d on AWS: consume a bucket's S3 events from SQS, as one of any number of
    /// identical replicas (docs/serve.md).
    Serve(ServeArgs),
    /// Start a workflow: write it to the bucket with `ld_run: true`.
    Submit(SubmitArgs),
    /// Upload a file with a workflow attached as `ld_code`; the file is the run's input.
    Upload(UploadArgs),
    /// List runs, newest first: from the local engine's journal when there is one (an indexed
    /// query, as fast at 100,000 runs as at ten), else from the bucket's status documents.
    Runs(RunsArgs),
    /// Activity over a window: runs by status, queue depth, durations, per-cmd figures
    /// (local engine only; the dashboard's overview in the terminal).
    Stats(StatsArgs),
    /// Show a run's steps and tasks (`--watch` follows it live).
    Run(RunArgs),
    /// Print a task attempt's log (stdout and stderr).
    Logs(LogsArgs),
    /// Cancel a run (a local engine, or a bucket served by `linedee serve`).
    Cancel(RunIdArg),
    /// Redrive a failed or cancelled run from its first unfinished step (a local engine, or a
    /// bucket served by `linedee serve`).
    Retry(RunIdArg),
    /// Check a workflow file, and that each `cmd` is a Procfile process type or a command line.
    Validate(ValidateArgs),
    /// Print the JSON Schema of workflow files.
    Schema,
    /// Download every object of the bucket, `ld/` run history included.
    Export(ExportArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
}

/// `linedee local`.
#[derive(Debug, Args)]
pub(crate) struct LocalArgs {
    /// The app's directory: tasks run there and its `.env` is loaded.
    #[arg(long, default_value = ".")]
    pub(crate) app_dir: PathBuf,
    /// The Procfile (default: `<app-dir>/Procfile`; without one every cmd is a command line).
    #[arg(long)]
    pub(crate) procfile: Option<PathBuf>,
    /// The bucket applications use.
    #[arg(long, default_value = "linedee-local")]
    pub(crate) bucket: String,
    /// The address both servers listen on. Anything but loopback exposes the store and the
    /// dashboard to the network, and is warned about.
    #[arg(long, default_value = "127.0.0.1", value_name = "IP")]
    pub(crate) bind: std::net::IpAddr,
    /// Port of the S3 endpoint (0: any free port).
    #[arg(long, default_value_t = 9400)]
    pub(crate) port: u16,
    /// Port of the dashboard (0: any free port).
    #[arg(long, default_value_t = 9401)]
    pub(crate) dashboard_port: u16,
    /// Most task processes at once; further runs wait their turn.
    #[arg(long, default_value_t = 8)]
    pub(crate) concurrency: usize,
    /// Do not echo task output (it is still kept in the logs).
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// `linedee cloud …`.
#[derive(Debug, Subcommand)]
pub(crate) enum CloudCommand {
    /// Check the bucket, its notification, the queue, its policy and dead-letter queue, the
    /// engine's permissions (probed harmlessly: run it with the engine's AWS credentials), the
    /// Heroku app (with --heroku-app and HEROKU_API_KEY), the rotation role (with
    /// --rotate-role-arn), and an event's round trip through a running replica: one line per
    /// item, with the fix for what is wrong. Exit 0 only when everything holds.
    Check(CloudCheckArgs),
    /// Create what the deployment lacks: bucket versioning, the queue and its dead-letter
    /// queue, the queue policy, the bucket's notification. Idempotent; never replaces the
    /// bucket's existing notification rules (it adds to them) and never creates the bucket.
    Setup(CloudSetupArgs),
    /// Rotate the app's AWS credentials into its config vars once, if due (for a scheduler,
    /// instead of `linedee serve --rotate-credentials`). Exit 0 when rotated or not due.
    Rotate(CloudRotateArgs),
}

/// `linedee cloud setup`.
#[derive(Debug, Args)]
pub(crate) struct CloudSetupArgs {
    /// The bucket whose uploads start runs (it must exist).
    #[arg(long, env = "LD_S3_BUCKET")]
    pub(crate) bucket: String,
    /// The queue's name (its dead-letter queue is `<name>-dlq`).
    #[arg(long, default_value = "ld-events")]
    pub(crate) queue: String,
    /// Expire stored logs (`ld/logs/`) after this many days: a lifecycle rule added beside
    /// the bucket's others.
    #[arg(long, value_name = "N")]
    pub(crate) retain_days: Option<u32>,
    /// Expire finished runs' documents (state and status) too, after the same N days (at
    /// least 15: SQS keeps an event up to 14 days, and a late duplicate must find its run).
    #[arg(long, requires = "retain_days")]
    pub(crate) retain_runs: bool,
    /// Print what would be done (the calls and the policy documents), change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// `linedee cloud check`.
#[derive(Debug, Args)]
pub(crate) struct CloudCheckArgs {
    /// The bucket whose uploads start runs.
    #[arg(long, env = "LD_S3_BUCKET")]
    pub(crate) bucket: String,
    /// The SQS queue its notifications go to.
    #[arg(long, env = "LD_SQS_QUEUE_URL")]
    pub(crate) queue_url: String,
    /// Where the engine's state goes in the bucket (the permission probes read there).
    #[arg(long, env = "LD_STATE_PREFIX", default_value = "ld/engine/")]
    pub(crate) state_prefix: String,
    /// The app's directory: its Procfile's process types must be in the Heroku app's
    /// release (with --heroku-app).
    #[arg(long, env = "LD_APP_DIR", default_value = ".")]
    pub(crate) app_dir: PathBuf,
    #[command(flatten)]
    pub(crate) heroku: HerokuArgs,
    #[command(flatten)]
    pub(crate) rotate: RotateArgs,
    /// Seconds to wait for a running replica to answer the probe object's event.
    #[arg(long, default_value_t = 30)]
    pub(crate) round_trip_wait: u64,
    /// Skip the round trip (no replica runs yet).
    #[arg(long)]
    pub(crate) no_round_trip: bool,
}

/// The Heroku app and how to reach its Platform API.
#[derive(Debug, Args)]
pub(crate) struct HerokuArgs {
    /// The Heroku app: whose one-off dynos run the tasks (`--runner heroku`), whose config
    /// vars get the rotated credentials. On a dyno with runtime metadata, HEROKU_APP_NAME is
    /// read when this is not set.
    #[arg(long, env = "LD_HEROKU_APP")]
    pub(crate) heroku_app: Option<String>,
    /// The Heroku API key (`heroku authorizations:create` makes a long-lived one). Never
    /// printed.
    #[arg(long, env = "HEROKU_API_KEY", hide_env_values = true)]
    pub(crate) heroku_api_key: Option<String>,
    /// The Platform API's URL.
    #[arg(
        long,
        env = "LD_HEROKU_API_URL",
        default_value = "https://api.heroku.com"
    )]
    pub(crate) heroku_api_url: String,
}

/// How credentials are rotated.
#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    /// The IAM role STS mints the app's credentials as (its trust policy must let the
    /// engine's credentials assume it, and its maximum session duration allow the lifetime).
    #[arg(long, env = "LD_ROTATE_ROLE_ARN")]
    pub(crate) rotate_role_arn: Option<String>,
    /// Seconds between rotations.
    #[arg(long, env = "LD_ROTATE_INTERVAL", default_value_t = 21_600)]
    pub(crate) rotate_interval: u64,
    /// Seconds each set of credentials lives (default: twice the interval, 900 to 43200).
    #[arg(long, env = "LD_ROTATE_LIFETIME")]
    pub(crate) rotate_lifetime: Option<u64>,
}

/// `linedee cloud rotate`.
#[derive(Debug, Args)]
pub(crate) struct CloudRotateArgs {
    /// The bucket the credentials reach (and where the rotation record lives).
    #[arg(long, env = "LD_S3_BUCKET")]
    pub(crate) bucket: String,
    /// Where the engine's state goes in the bucket (the rotation record is there).
    #[arg(long, env = "LD_STATE_PREFIX", default_value = "ld/engine/")]
    pub(crate) state_prefix: String,
    #[command(flatten)]
    pub(crate) heroku: HerokuArgs,
    #[command(flatten)]
    pub(crate) rotate: RotateArgs,
    /// Rotate even if the current set is younger than the interval.
    #[arg(long)]
    pub(crate) force: bool,
}

/// `linedee dashboard`.
#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Port on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 9402)]
    pub(crate) port: u16,
}

/// `linedee serve`. Every setting also comes from its environment variable.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The bucket whose uploads start runs (its event notifications go to the queue).
    #[arg(long, env = "LD_S3_BUCKET")]
    pub(crate) bucket: String,
    /// The SQS queue the bucket's event notifications go to (a standard queue with a DLQ).
    #[arg(long, env = "LD_SQS_QUEUE_URL")]
    pub(crate) queue_url: String,
    /// Where runs' state objects go in the bucket.
    #[arg(long, env = "LD_STATE_PREFIX", default_value = "ld/engine/")]
    pub(crate) state_prefix: String,
    /// The app's directory (its Procfile and `.env`): tasks run there.
    #[arg(long, env = "LD_APP_DIR", default_value = ".")]
    pub(crate) app_dir: std::path::PathBuf,
    /// Where task logs are kept before they are stored in the bucket.
    #[arg(long, env = "LD_SERVE_DATA_DIR", default_value = ".linedee/serve")]
    pub(crate) data_dir: std::path::PathBuf,
    /// Most task processes this replica runs at once.
    #[arg(long, env = "LD_CONCURRENCY", default_value_t = 8)]
    pub(crate) concurrency: usize,
    /// Seconds between a running run's ticks at most (liveness checks, repairs).
    #[arg(long, env = "LD_HEARTBEAT", default_value_t = 60)]
    pub(crate) heartbeat: u64,
    /// Seconds after which a start that was asked for and never reported is asked for again.
    #[arg(long, env = "LD_START_GRACE", default_value_t = 300)]
    pub(crate) start_grace: u64,
    /// Where tasks run: `local` (processes of this host, from --app-dir) or `heroku`
    /// (one-off dynos of --heroku-app, through the Platform API).
    #[arg(long, env = "LD_RUNNER", default_value = "local", value_parser = ["local", "heroku"])]
    pub(crate) runner: String,
    #[command(flatten)]
    pub(crate) heroku: HerokuArgs,
    /// Most one-off dynos this replica runs at once (Heroku allows 50 per Standard app).
    #[arg(long, env = "LD_MAX_DYNOS", default_value_t = 50)]
    pub(crate) max_dynos: usize,
    /// Seconds between this replica's listings of the app's dynos (one request each, to
    /// notice dynos that ended).
    #[arg(long, env = "LD_DYNO_LIST_INTERVAL", default_value_t = 30)]
    pub(crate) dyno_list_interval: u64,
    /// Seconds between looks at the queue's dead-letter queue (a message there is tried once
    /// more; if it still fails, the run it is about ends failed with the reason).
    #[arg(long, env = "LD_DEAD_LETTER_INTERVAL", default_value_t = 60)]
    pub(crate) dead_letter_interval: u64,
    /// Do not check that the bucket notifies the queue (for S3-compatible stores without
    /// event notifications, whose events reach the queue another way).
    #[arg(long, env = "LD_NO_NOTIFICATION_CHECK")]
    pub(crate) no_notification_check: bool,
    /// Rotate the app's AWS credentials into its config vars (LD_AWS_*, LD_REGION,
    /// LD_S3_BUCKET), as the add-on does: minted by STS as --rotate-role-arn, one replica at a
    /// time, every --rotate-interval.
    #[arg(long, env = "LD_ROTATE_CREDENTIALS")]
    pub(crate) rotate_credentials: bool,
    #[command(flatten)]
    pub(crate) rotate: RotateArgs,
    /// Do not echo task output.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

/// `linedee submit`.
#[derive(Debug, Args)]
pub(crate) struct SubmitArgs {
    /// The workflow JSON file.
    pub(crate) workflow: PathBuf,
    /// The trigger object's key (default: `in/<file name>`).
    #[arg(long)]
    pub(crate) key: Option<String>,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

/// `linedee upload`.
#[derive(Debug, Args)]
pub(crate) struct UploadArgs {
    /// The file to upload (the run's input).
    pub(crate) file: PathBuf,
    /// The workflow JSON file to attach.
    #[arg(long)]
    pub(crate) workflow: PathBuf,
    /// The object's key (default: `in/<file name>`).
    #[arg(long)]
    pub(crate) key: Option<String>,
    /// The object's Content-Type.
    #[arg(long)]
    pub(crate) content_type: Option<String>,
    #[command(flatten)]
    pub(crate) wait: WaitArgs,
}

/// `--wait` and its timeout.
#[derive(Debug, Args)]
pub(crate) struct WaitArgs {
    /// Wait for the run to finish; exit 1 unless it succeeded.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Give up waiting after this many seconds (exit 1).
    #[arg(long, default_value_t = 3600, requires = "wait")]
    pub(crate) timeout: u64,
}

/// `linedee runs`.
#[derive(Debug, Args)]
pub(crate) struct RunsArgs {
    /// Only runs in this state: queued, running, succeeded, failed or cancelled.
    #[arg(long, value_parser = ["queued", "running", "succeeded", "failed", "cancelled"])]
    pub(crate) status: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 20)]
    pub(crate) limit: usize,
}

/// `linedee stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// The window, ending now: 1h, 24h or 7d.
    #[arg(long, default_value = "24h", value_parser = ["1h", "24h", "7d"])]
    pub(crate) window: String,
    /// Print the overview as JSON (the dashboard's `/api/overview`), for scripts.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `linedee run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The run id.
    pub(crate) run_id: String,
    /// Follow the run until it finishes; exit 1 unless it succeeded.
    #[arg(long, short)]
    pub(crate) watch: bool,
}

/// `linedee logs`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The task id, `{run_id}.{step}.{task}`.
    pub(crate) task_id: String,
    /// The attempt (default: the latest).
    #[arg(long)]
    pub(crate) attempt: Option<u32>,
    /// Keep printing (each attempt in turn) until the task has finished.
    #[arg(long, short)]
    pub(crate) follow: bool,
}

/// A run id.
#[derive(Debug, Args)]
pub(crate) struct RunIdArg {
    /// The run id.
    pub(crate) run_id: String,
}

/// `linedee validate`.
#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The workflow JSON file.
    pub(crate) workflow: PathBuf,
    /// The Procfile whose process types a bare `cmd` must name.
    #[arg(long)]
    pub(crate) procfile: Option<PathBuf>,
}

/// `linedee export`.
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// Where to write the objects (created if missing).
    #[arg(value_name = "DIR")]
    pub(crate) out: PathBuf,
    /// Only keys under this prefix.
    #[arg(long, default_value = "")]
    pub(crate) prefix: String,
}

/// `linedee completions`.
#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell.
    pub(crate) shell: clap_complete::Shell,
}
