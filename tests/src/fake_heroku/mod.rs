//! [`FakeHeroku`]: a fake Heroku Platform API on `127.0.0.1:0` whose one-off dynos are real
//! processes on this machine.
//!
//! - Every API request needs `Accept: application/vnd.heroku+json; version=3` (406 otherwise)
//!   and `Authorization: Bearer {token}` (401), for the configured app (404), and spends one
//!   unit of the rate limit (`RateLimit-Remaining` on every answer; 429 once it is spent).
//! - `POST /apps/{app}/dynos` runs the command (a Procfile process type is replaced by its
//!   command line, its arguments kept) with `bash -c` in the app directory, in a process group
//!   of its own, with the config vars, the request's `env`, `DYNO=run.N` and `PORT`. Its
//!   output is captured per dyno, as Heroku's log lines.
//! - `GET /apps/{app}/dynos` lists running dynos as `up` and crashed ones (exited non-zero)
//!   as `crashed`; a dyno that exited 0, or was stopped or expired (`time_to_live`), is gone.
//!   All dynos are on one page (no `Range` pagination).
//! - `POST …/dynos/{id_or_name}/actions/stop`: SIGTERM to the group, SIGKILL after
//!   [`STOP_GRACE`].
//! - `GET /apps/{app}` (the app), `GET /apps/{app}/formation` (one process type per Procfile
//!   line, quantity 0), `GET` and `PATCH /apps/{app}/config-vars` (merged; `null` unsets).
//! - `POST /apps/{app}/log-sessions` gives a `logplex_url` on this server; fetching it (no
//!   token) returns the dyno's last lines.
//! - Faults: [`FakeHeroku::fail_next`]. Counters: [`FakeHeroku::requests`],
//!   [`FakeHeroku::running`], [`FakeHeroku::dynos`]; [`FakeHeroku::wait_until`] waits for a
//!   state of the dynos.
//!
//! Dropping it kills every dyno's process group and stops the server.

mod dyno;
mod server;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

/// How long a stopped dyno's processes get between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// The rate-limit budget a fake starts with, as Heroku's.
pub const DEFAULT_BUDGET: u64 = 4500;

/// What the fake serves.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The app's name (any other is 404).
    pub app: String,
    /// The API token requests must carry.
    pub token: String,
    /// The app's directory: its `Procfile`, and the dynos' working directory.
    pub app_dir: PathBuf,
    /// The app's config vars at the start: every dyno gets the config vars of the moment it
    /// starts (`PATCH /apps/{app}/config-vars` changes them).
    pub env: Vec<(String, String)>,
    /// The rate-limit budget (`RateLimit-Remaining` of the first answer, plus one).
    pub budget: u64,
}

impl FakeConfig {
    /// `app` with `token`, its files in `app_dir`, no config vars and [`DEFAULT_BUDGET`].
    pub fn new(app: &str, token: &str, app_dir: impl Into<PathBuf>) -> Self {
        FakeConfig {
            app: app.to_owned(),
            token: token.to_owned(),
            app_dir: app_dir.into(),
            env: Vec::new(),
            budget: DEFAULT_BUDGET,
        }
    }
}

/// What is known of a dyno, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynoInfo {
    /// Its UUID-like id.
    pub id: String,
    /// `run.N`.
    pub name: String,
    /// The command as requested (before Procfile substitution).
    pub command: String,
    /// The request's `env`.
    pub env: BTreeMap<String, String>,
    /// `up`; `crashed` (listed); `complete` (exited 0) or `down` (stopped, expired): gone.
    pub state: String,
    /// The exit code, once exited (`None` while running, or when a signal ended it).
    pub exit_code: Option<i32>,
    /// The process group id (its leader's pid).
    pub pgid: Option<i32>,
    /// When the fake took its create request.
    pub requested: std::time::Instant,
}

impl DynoInfo {
    /// Whether `GET /apps/{app}/dynos` lists it.
    pub fn listed(&self) -> bool {
        matches!(self.state.as_str(), "up" | "crashed")
    }
}

/// Requests received, in all and per route (`"POST /apps/{app}/dynos"`, `"GET /logplex/{dyno}"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Every request, refused ones and log downloads included.
    pub total: u64,
    /// Per method and path template.
    pub by_route: BTreeMap<String, u64>,
}

impl RequestCounts {
    /// Requests to `route`, e.g. `"GET /apps/{app}/dynos"`.
    pub fn to(&self, route: &str) -> u64 {
        self.by_route.get(route).copied().unwrap_or(0)
    }
}

/// What the server and the dynos share.
#[derive(Debug)]
struct Shared {
    config: FakeConfig,
    /// `http://127.0.0.1:PORT`.
    url: String,
    /// Where each dyno's output goes (`run.N.log`).
    log_dir: PathBuf,
    state: Mutex<State>,
    /// Bumped on every change of a dyno or the config vars, for [`FakeHeroku::wait_until`].
    changes: watch::Sender<u64>,
    /// Dyno supervisors still running (threads), and a signal when one ends.
    supervisors: (Mutex<usize>, std::sync::Condvar),
}

/// The fake's mutable state.
#[derive(Debug, Default)]
struct State {
    dynos: Vec<dyno::Dyno>,
    /// Log sessions: id → (dyno name, lines, source).
    sessions: BTreeMap<String, (String, usize, Option<String>)>,
    /// Answers still to inject: (count, status).
    fail: Option<(usize, u16)>,
    remaining: u64,
    requests: RequestCounts,
    /// The app's config vars now.
    config_vars: BTreeMap<String, String>,
    /// The config vars after each `PATCH`, in order.
    config_history: Vec<BTreeMap<String, String>>,
    /// Timers (time to live, stop grace) to abort on drop.
    timers: Vec<tokio::task::AbortHandle>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells [`FakeHeroku::wait_until`] that a dyno changed.
    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }
}

/// A fake Heroku Platform API, serving until dropped.
#[derive(Debug)]
pub struct FakeHeroku {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
    _logs: tempfile::TempDir,
}

impl FakeHeroku {
    /// Binds `127.0.0.1:0` and serves `config`'s app.
    pub async fn start(config: FakeConfig) -> FakeHeroku {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let logs = tempfile::tempdir().expect("log dir");
        let state = State {
            remaining: config.budget,
            config_vars: config.env.iter().cloned().collect(),
            ..State::default()
        };
        let shared = Arc::new(Shared {
            config,
            url,
            log_dir: logs.path().to_owned(),
            state: Mutex::new(state),
            changes: watch::Sender::new(0),
            supervisors: (Mutex::new(0), std::sync::Condvar::new()),
        });
        let server = tokio::spawn(server::serve(listener, Arc::clone(&shared)));
        FakeHeroku {
            shared,
            server,
            _logs: logs,
        }
    }

    /// The API's URL (`http://127.0.0.1:PORT`, no trailing slash).
    pub fn url(&self) -> String {
        self.shared.url.clone()
    }

    /// Answers the next `n` API requests with `status` instead: 429 with Heroku's
    /// `rate_limit` body and `RateLimit-Remaining: 0`; any other status with an error body.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.shared.state().fail = (n > 0).then_some((n, status));
    }

    /// The requests received so far.
    pub fn requests(&self) -> RequestCounts {
        self.shared.state().requests.clone()
    }

    /// The app's config vars now.
    pub fn config_vars(&self) -> BTreeMap<String, String> {
        self.shared.state().config_vars.clone()
    }

    /// The app's config vars after each `PATCH /apps/{app}/config-vars`, in order.
    pub fn config_history(&self) -> Vec<BTreeMap<String, String>> {
        self.shared.state().config_history.clone()
    }

    /// Waits until `cond` holds for the config vars (checked at each change), for at most
    /// `deadline`. Returns whether it held.
    pub async fn wait_for_config(
        &self,
        deadline: Duration,
        cond: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> bool {
        let mut changes = self.shared.changes.subscribe();
        let waited = tokio::time::timeout(deadline, async {
            loop {
                changes.mark_unchanged();
                if cond(&self.config_vars()) {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        waited.is_ok() && cond(&self.config_vars())
    }

    /// Dynos whose process still runs.
    pub fn running(&self) -> usize {
        self.dynos().iter().filter(|d| d.state == "up").count()
    }

    /// Every dyno created so far, in creation order.
    pub fn dynos(&self) -> Vec<DynoInfo> {
        self.shared
            .state()
            .dynos
            .iter()
            .map(dyno::Dyno::info)
            .collect()
    }

    /// Waits until `cond` holds for the dynos (checked at each change), for at most
    /// `deadline`. Returns whether it held.
    pub async fn wait_until(&self, deadline: Duration, cond: impl Fn(&[DynoInfo]) -> bool) -> bool {
        let mut changes = self.shared.changes.subscribe();
        let waited = tokio::time::timeout(deadline, async {
            loop {
                changes.mark_unchanged();
                if cond(&self.dynos()) {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        waited.is_ok() && cond(&self.dynos())
    }
}

impl Drop for FakeHeroku {
    fn drop(&mut self) {
        self.server.abort();
        let pgids: Vec<i32> = {
            let mut state = self.shared.state();
            for timer in state.timers.drain(..) {
                timer.abort();
            }
            state
                .dynos
                .iter()
                .filter_map(|d| d.running_pgid())
                .collect()
        };
        for pgid in pgids {
            dyno::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        }
        // The supervisors reap the killed leaders; wait for them (bounded: a process that
        // left its group could hold an output pipe open).
        let (count, ended) = &self.shared.supervisors;
        let count = count
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = ended.wait_timeout_while(count, Duration::from_secs(10), |n| *n > 0);
    }
}
