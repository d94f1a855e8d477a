//! [`HerokuRunner`]: at most `max_dynos` one-off dynos at once, each tracked until one shared
//! list of the app's dynos shows it ended or gone.
//!
//! The runner reference of an attempt is the dyno's id (a UUID). Only its first
//! whitespace-separated word is read back, so a later format may append to it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::api::{Api, Dyno};
use super::{HerokuConfig, heroku_size, valid_dyno_ref, valid_env_key};
use crate::runner::{AttemptSpec, Exit, LogBody, OnExit, Runner, StartError};

/// How many ended dynos and attempts' dyno names are remembered (for `alive` and `log`).
const REMEMBERED: usize = 10_000;

/// A dyno this runner started and has not yet seen end.
struct Tracked {
    name: String,
    /// When its create was answered: a list sent later shows it unless it ended.
    created: Instant,
    on_exit: OnExit,
    _permit: OwnedSemaphorePermit,
}

/// The last list of the app's dynos.
struct Listing {
    /// When its request was sent.
    sent: Instant,
    dynos: HashMap<String, Dyno>,
}

/// What the runner knows, under one lock.
#[derive(Default)]
struct State {
    tracked: HashMap<String, Tracked>,
    listing: Option<Listing>,
    /// Dynos this runner saw end.
    ended: HashSet<String>,
    /// Attempts' dyno names, `(task_id, attempt)` → `run.N`, for their logs.
    names: HashMap<(String, u32), String>,
    /// Insertion order of `ended` and `names`, to forget the oldest.
    order: VecDeque<Remembered>,
    /// When `alive` was first asked about a dyno it did not start: that dyno was created
    /// before, so a list sent later that lacks it shows it gone.
    asked: HashMap<String, Instant>,
}

enum Remembered {
    Ended(String),
    Name((String, u32)),
}

impl State {
    fn remember(&mut self, item: Remembered) {
        self.order.push_back(item);
        while self.order.len() > REMEMBERED {
            match self.order.pop_front() {
                Some(Remembered::Ended(id)) => {
                    self.ended.remove(&id);
                }
                Some(Remembered::Name(key)) => {
                    self.names.remove(&key);
                }
                None => break,
            }
        }
    }
}

/// The runner's parts, shared with its poll loop (which holds them weakly).
struct Shared {
    api: Api,
    config: HerokuConfig,
    permits: Arc<Semaphore>,
    state: Mutex<State>,
    /// Held while a list is fetched, so concurrent askers share one request.
    refreshing: tokio::sync::Mutex<()>,
    /// The poll loop's stop token, while it runs.
    poller: Mutex<Option<(CancellationToken, tokio::task::JoinHandle<()>)>>,
    lists: AtomicU64,
}

/// Starts attempts as Heroku one-off dynos (see the module's documentation).
pub(crate) struct HerokuRunner {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for HerokuRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HerokuRunner")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl HerokuRunner {
    /// A runner for `config`'s app. Nothing is sent until the first call.
    pub(crate) fn new(config: HerokuConfig) -> Self {
        HerokuRunner {
            shared: Arc::new(Shared {
                api: Api::new(&config),
                permits: Arc::new(Semaphore::new(config.max_dynos.max(1))),
                config,
                state: Mutex::new(State::default()),
                refreshing: tokio::sync::Mutex::new(()),
                poller: Mutex::new(None),
                lists: AtomicU64::new(0),
            }),
        }
    }

    /// Platform API requests made so far (retries included), for reporting.
    pub(crate) fn calls(&self) -> u64 {
        self.shared.api.calls()
    }
}

impl Drop for HerokuRunner {
    fn drop(&mut self) {
        if let Some((token, _)) = self.shared.poller().take() {
            token.cancel();
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn poller(&self) -> MutexGuard<'_, Option<(CancellationToken, tokio::task::JoinHandle<()>)>> {
        self.poller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the cached list was sent at or after `fresh_after`.
    fn fresh(&self, fresh_after: Instant) -> bool {
        self.state()
            .listing
            .as_ref()
            .is_some_and(|l| l.sent >= fresh_after)
    }

    /// Starts the poll loop unless it runs.
    fn ensure_poller(self: &Arc<Self>) {
        let mut poller = self.poller();
        if poller.is_some() {
            return;
        }
        let token = CancellationToken::new();
        let handle = tokio::spawn(poll(
            Arc::downgrade(self),
            self.config.list_interval,
            token.clone(),
        ));
        *poller = Some((token, handle));
    }

    /// The create request's body (`time_to_live` included), or why it cannot be sent.
    fn create_body(&self, spec: &AttemptSpec) -> Result<serde_json::Value, String> {
        let size = heroku_size(&spec.machine)
            .ok_or_else(|| format!("unknown machine `{}` for a Heroku dyno", spec.machine))?;
        let mut env = serde_json::Map::new();
        // Reserved names (validation refuses them) cannot override `line_D`.
        for (key, value) in spec
            .options
            .iter()
            .filter(|(k, _)| !linedee::validate::is_reserved_name(k))
        {
            if !valid_env_key(key) {
                return Err(format!(
                    "option `{key}` cannot be a Heroku dyno's environment variable \
                     (names must match ^\\w+$)"
                ));
            }
            env.insert(key.clone(), value.clone().into());
        }
        env.insert(linedee::line_d::VAR.to_owned(), spec.line_d.clone().into());
        Ok(serde_json::json!({
            "command": spec.cmd,
            "attach": false,
            "size": size,
            "time_to_live": self.config.time_to_live(spec.timeout),
            "env": env,
        }))
    }

    /// Fetches the list unless the cached one was sent at or after `fresh_after`, then ends
    /// the tracked dynos it shows ended or lacks. Concurrent callers share one request.
    async fn refresh(&self, fresh_after: Instant) {
        let _one = self.refreshing.lock().await;
        if self.fresh(fresh_after) {
            return;
        }
        let sent = Instant::now();
        let dynos = match self.api.list().await {
            Ok(dynos) => dynos,
            Err(e) => {
                tracing::warn!(error = %crate::heroku::report(&e), "cannot list the app's dynos");
                return;
            }
        };
        self.lists.fetch_add(1, Ordering::Relaxed);
        let dynos: HashMap<String, Dyno> = dynos.into_iter().map(|d| (d.id.clone(), d)).collect();
        let mut exits = Vec::new();
        {
            let mut state = self.state();
            let ended: Vec<String> = state
                .tracked
                .iter()
                .filter(|(id, t)| match dynos.get(*id) {
                    Some(d) => d.ended(),
                    None => t.created <= sent,
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in ended {
                if let Some(t) = state.tracked.remove(&id) {
                    let detail = match dynos.get(&id) {
                        Some(d) => format!("dyno {} ended (state {})", t.name, d.state),
                        None => format!("dyno {} is gone", t.name),
                    };
                    state.ended.insert(id.clone());
                    state.remember(Remembered::Ended(id));
                    exits.push((t, detail));
                }
            }
            state.listing = Some(Listing { sent, dynos });
        }
        for (t, detail) in exits {
            tracing::info!(dyno = %t.name, %detail, "dyno exited");
            let Tracked {
                on_exit,
                _permit: permit,
                ..
            } = t;
            drop(permit);
            on_exit(Exit {
                code: None,
                detail: Some(detail),
                log: None,
            });
        }
    }
}

/// The poll loop: one list per interval while dynos are tracked, until `stop` or the runner
/// is dropped.
async fn poll(shared: Weak<Shared>, interval: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.state().tracked.is_empty() {
            continue;
        }
        tokio::select! {
            // A list an `alive` fetched in the second half of the interval will do.
            () = shared.refresh(ago(interval / 2)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// The instant `d` ago (now, right after boot).
fn ago(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_sub(d).unwrap_or(now)
}

/// The dyno id in a runner reference, if it is one.
fn dyno_id(runner: &str) -> Option<&str> {
    runner
        .split_whitespace()
        .next()
        .filter(|id| valid_dyno_ref(id))
}

#[async_trait::async_trait]
impl Runner for HerokuRunner {
    async fn start(
        &self,
        spec: AttemptSpec,
        cancel: CancellationToken,
        on_exit: OnExit,
    ) -> Result<String, StartError> {
        let shared = &self.shared;
        let body = shared.create_body(&spec).map_err(StartError::Failed)?;
        shared.ensure_poller();
        let permit = tokio::select! {
            p = Arc::clone(&shared.permits).acquire_owned() => p.map_err(|_| StartError::Cancelled)?,
            () = cancel.cancelled() => return Err(StartError::Cancelled),
        };
        // Not cancellable from here: a create whose answer is dropped leaves an untracked dyno.
        let dyno = shared
            .api
            .create(&body)
            .await
            .map_err(|e| StartError::Failed(crate::heroku::report(&e)))?;
        tracing::info!(task_id = %spec.task_id, attempt = spec.attempt, dyno = %dyno.name, id = %dyno.id, "dyno started");
        let mut state = shared.state();
        let key = (spec.task_id.clone(), spec.attempt);
        state.names.insert(key.clone(), dyno.name.clone());
        state.remember(Remembered::Name(key));
        state.tracked.insert(
            dyno.id.clone(),
            Tracked {
                name: dyno.name,
                created: Instant::now(),
                on_exit,
                _permit: permit,
            },
        );
        Ok(dyno.id)
    }

    async fn stop(&self, runner: &str) {
        let Some(id) = dyno_id(runner) else {
            return;
        };
        if let Err(e) = self.shared.api.stop(id).await {
            tracing::warn!(dyno = %id, error = %crate::heroku::report(&e), "cannot stop the dyno");
        }
    }

    /// Stops the dyno: Heroku shows no dyno's environment, so `task_id` cannot be checked.
    async fn stop_stale(&self, runner: &str, _task_id: &str) {
        self.stop(runner).await;
    }

    async fn log(&self, task_id: &str, attempt: u32) -> Option<LogBody> {
        let name = self
            .shared
            .state()
            .names
            .get(&(task_id.to_owned(), attempt))
            .cloned()?;
        match self.shared.api.log(&name).await {
            Ok(bytes) => Some(LogBody::Bytes(bytes)),
            Err(e) => {
                tracing::warn!(dyno = %name, error = %crate::heroku::report(&e), "cannot fetch the dyno's log");
                None
            }
        }
    }

    /// Stops the poll loop only: dynos outlive a replica (another carries the run on).
    async fn stop_all(&self) {
        let poller = self.shared.poller().take();
        if let Some((token, handle)) = poller {
            token.cancel();
            let _ = handle.await;
        }
    }

    /// From the last list, fetched anew (one request shared by concurrent callers) when it is
    /// older than the list interval, or when it lacks the dyno but was sent before the dyno
    /// is known to exist: its create's answer for a dyno this runner started, the first
    /// question about it otherwise (a reference exists only once its dyno does). So a dyno
    /// of another engine costs at most one list of its own, the first time it is asked about
    /// and is absent. `None` when no list could be fetched.
    async fn alive(&self, runner: &str) -> Option<bool> {
        let id = dyno_id(runner)?;
        let shared = &self.shared;
        let now = Instant::now();
        let known_since = {
            let mut state = shared.state();
            if state.ended.contains(id) {
                return Some(false);
            }
            match state.tracked.get(id) {
                Some(t) => t.created,
                None => {
                    if state.asked.len() >= REMEMBERED {
                        state.asked.clear();
                    }
                    *state.asked.entry(id.to_owned()).or_insert(now)
                }
            }
        };
        shared.refresh(ago(shared.config.list_interval)).await;
        let absent = |state: &State| {
            state
                .listing
                .as_ref()
                .is_some_and(|l| l.sent < known_since && !l.dynos.contains_key(id))
        };
        if absent(&shared.state()) {
            shared.refresh(known_since).await;
        }
        let mut state = shared.state();
        if state.ended.contains(id) {
            return Some(false);
        }
        let listing = state.listing.as_ref()?;
        let answer = match listing.dynos.get(id) {
            Some(d) => Some(!d.ended()),
            None if listing.sent >= known_since => Some(false),
            None => None,
        };
        if answer == Some(false) {
            // Gone for good: later questions need no list.
            state.asked.remove(id);
            state.ended.insert(id.to_owned());
            state.remember(Remembered::Ended(id.to_owned()));
        }
        answer
    }
}

#[cfg(test)]
impl HerokuRunner {
    /// Lists fetched so far.
    pub(super) fn lists(&self) -> u64 {
        self.shared.lists.load(Ordering::Relaxed)
    }
}
