//! Support for the end-to-end tests in `tests/tests/`: an engine on `127.0.0.1:0` in a
//! temporary directory, a client for it, the example task binary, `linedee local` as a
//! child process ([`LinedeeLocal`]), and a fake Heroku Platform API whose dynos are real
//! processes ([`fake_heroku::FakeHeroku`]).

pub mod fake_heroku;
pub mod latency;
mod local;
pub mod proxy;
pub use local::LinedeeLocal;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use linedee::Client;
use linedee::credentials::{Credentials, StaticProvider};
use linedee_engine::{Console, Engine, EngineBuilder, RetryPolicy};
use tokio::sync::oneshot;

/// An engine serving on loopback, stopped (gracefully) when dropped.
pub struct TestEngine {
    /// The engine.
    pub engine: Engine,
    /// A client for its bucket.
    pub client: Client,
    /// The app directory (Procfile, `.env`, working directory of tasks).
    pub app_dir: PathBuf,
    /// The store's endpoint URL.
    pub endpoint: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<linedee_engine::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Retries quickly, so tests of retries take milliseconds.
pub fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        retries: 2,
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    }
}

impl TestEngine {
    /// Starts an engine whose app has this Procfile.
    pub async fn start(procfile: &str) -> Self {
        Self::start_with(procfile, |b| b).await
    }

    /// Starts an engine, letting the caller adjust the builder.
    pub async fn start_with(
        procfile: &str,
        adjust: impl FnOnce(EngineBuilder) -> EngineBuilder,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let app_dir = dir.path().join("app");
        std::fs::create_dir_all(&app_dir).expect("app dir");
        std::fs::write(app_dir.join("Procfile"), procfile).expect("Procfile");
        let builder = Engine::builder()
            .data_dir(dir.path().join("data"))
            .app_dir(&app_dir)
            .console(Console::quiet())
            .retry(fast_retries());
        let engine = adjust(builder).build().expect("engine builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let client = client_for(&engine, &endpoint);
        let (stop, stopped) = oneshot::channel::<()>();
        let runner = engine.clone();
        let task = tokio::spawn(async move {
            runner
                .run(listener, async move {
                    let _ = stopped.await;
                })
                .await
        });
        TestEngine {
            engine,
            client,
            app_dir,
            endpoint,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Stops the engine gracefully and returns what `run` returned.
    pub async fn stop(mut self) -> linedee_engine::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("engine task"),
            None => Ok(()),
        }
    }
}

impl Drop for TestEngine {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A client for `engine`'s bucket at `endpoint`, with the credentials tasks get.
pub fn client_for(engine: &Engine, endpoint: &str) -> Client {
    let env: std::collections::HashMap<String, String> =
        engine.app_env(endpoint).into_iter().collect();
    let creds = Credentials::new(
        env["LD_AWS_ACCESS_KEY_ID"].clone(),
        env["LD_AWS_SECRET_ACCESS_KEY"].clone(),
        env.get("LD_AWS_SESSION_TOKEN").cloned(),
        None,
    );
    Client::builder()
        .bucket(engine.bucket())
        .endpoint(endpoint)
        .credentials_provider(StaticProvider::new(creds))
        .build()
        .expect("client")
}

/// The workspace's root directory.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

/// Builds a workspace binary (once per test process) and returns its path.
///
/// In a debug build (the tests) this runs `cargo test --workspace --no-run`: the very build
/// the README's test command makes, with the same unified features, so under `.ci/test` it
/// is a no-op and the binary is the one that build linked. (`cargo build -p <package>` would
/// build the stack again with that package's own features: a minute on 2 cores, cold.)
/// Benchmarks (release) build just the binary, with `--release`.
pub fn binary(package: &str, bin: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let (profile, args): (&str, &[&str]) = if cfg!(debug_assertions) {
        ("debug", &["test", "--quiet", "--workspace", "--no-run"])
    } else {
        (
            "release",
            &["build", "--quiet", "--release", "-p", package, "--bin", bin],
        )
    };
    let path = target.join(profile).join(bin);
    let key = if cfg!(debug_assertions) {
        "workspace"
    } else {
        bin
    };
    if !built.iter().any(|b| b == key) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let mut command = std::process::Command::new(cargo);
        // Not the variables cargo set for this test process: build scripts that read one
        // (ring's and rustls's read CARGO_MANIFEST_DIR) would see it changed and rebuild the
        // TLS stack, and the next `cargo test` would rebuild it back.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_PKG_")
                || name.starts_with("CARGO_BIN_EXE_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&&*name)
            {
                command.env_remove(&*name);
            }
        }
        let status = command
            .args(args)
            .current_dir(workspace_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {bin} failed");
        built.push(key.to_owned());
    }
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// The example task app (`examples/tasks`), built.
pub fn example_tasks() -> PathBuf {
    binary("linedee-example-tasks", "linedee-example-tasks")
}
