//! Credentials from the app's Heroku config vars.

use std::collections::HashMap;

use super::{Credentials, CredentialsFuture, ProvideCredentials};
use crate::error::{Error, Result};

/// Default Heroku Platform API.
pub const DEFAULT_API_URL: &str = "https://api.heroku.com";

/// Reads the app's config vars from the Heroku Platform API:
/// `GET {api_url}/apps/{app}/config-vars` with `Authorization: Bearer {HEROKU_API_KEY}`.
///
/// `linedee local` serves the same endpoint, so the refresh path runs end to end offline.
#[derive(Clone)]
pub struct HerokuApiProvider {
    api_url: String,
    app: String,
    token: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for HerokuApiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HerokuApiProvider")
            .field("api_url", &self.api_url)
            .field("app", &self.app)
            .field("token", &"** redacted **")
            .finish()
    }
}

impl HerokuApiProvider {
    /// A provider for `app`, authenticating with `token`, against `api_url`.
    pub fn new(
        api_url: impl Into<String>,
        app: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        HerokuApiProvider {
            api_url: api_url.into().trim_end_matches('/').to_owned(),
            app: app.into(),
            token: token.into(),
            http: reqwest::Client::new(),
        }
    }

    /// From `HEROKU_API_URL` (default <https://api.heroku.com>), `HEROKU_API_KEY` and the app
    /// name given.
    pub fn from_env(app: impl Into<String>) -> Result<Self> {
        let token = std::env::var("HEROKU_API_KEY")
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or(Error::MissingEnv {
                name: "HEROKU_API_KEY",
                hint: "create one with `heroku authorizations:create` and export it",
            })?;
        let url = std::env::var("HEROKU_API_URL").unwrap_or_else(|_| DEFAULT_API_URL.to_owned());
        Ok(Self::new(url, app, token))
    }

    async fn fetch(&self) -> Result<Credentials> {
        let source = format!("the Heroku API ({})", self.api_url);
        let fail = |message: String| Error::Credentials {
            provider: source.clone(),
            message,
        };
        let url = format!("{}/apps/{}/config-vars", self.api_url, self.app);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .header("Accept", "application/vnd.heroku+json; version=3")
            .send()
            .await
            .map_err(|e| fail(format!("request failed: {}", without_url(&e))))?;
        let status = resp.status();
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 => " (check HEROKU_API_KEY)",
                403 | 404 => " (check the app name and that the token may read its config vars)",
                _ => "",
            };
            return Err(fail(format!("HTTP {status} for app `{}`{hint}", self.app)));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| fail(format!("cannot read the response: {}", without_url(&e))))?;
        let vars = string_vars(&body)
            .ok_or_else(|| fail("the response is not a JSON object".to_owned()))?;
        Credentials::from_vars(&vars, &source)
    }
}

/// The string-valued entries of a JSON object. Parse errors are not passed on: they could quote
/// a config value.
fn string_vars(body: &[u8]) -> Option<HashMap<String, String>> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    Some(
        map.into_iter()
            .filter_map(|(k, v)| match v {
                serde_json::Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect(),
    )
}

fn without_url(e: &reqwest::Error) -> String {
    // reqwest errors may embed the URL; ours hold no secret, but keep messages short.
    let mut s = e.to_string();
    if let Some(url) = e.url() {
        s = s.replace(url.as_str(), "<url>");
    }
    s
}

impl ProvideCredentials for HerokuApiProvider {
    fn provide(&self) -> CredentialsFuture<'_> {
        Box::pin(self.fetch())
    }
}

/// Runs `heroku config -j [--app APP]` and reads the `LD_*` credentials from its output, as the
/// product document's `setup_local_env` does.
#[derive(Debug, Clone)]
pub struct HerokuCliProvider {
    program: String,
    app: Option<String>,
}

impl HerokuCliProvider {
    /// Uses `heroku` from `PATH`, for the app of the current directory.
    pub fn new() -> Self {
        HerokuCliProvider {
            program: "heroku".to_owned(),
            app: None,
        }
    }

    /// Selects the app (`--app`).
    pub fn app(mut self, app: impl Into<String>) -> Self {
        self.app = Some(app.into());
        self
    }

    /// Runs another program instead of `heroku` (it gets the same arguments).
    pub fn program(mut self, program: impl Into<String>) -> Self {
        self.program = program.into();
        self
    }

    async fn fetch(&self) -> Result<Credentials> {
        let source = format!("`{} config -j`", self.program);
        let fail = |message: String| Error::Credentials {
            provider: source.clone(),
            message,
        };
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(["config", "-j"]).kill_on_drop(true);
        if let Some(app) = &self.app {
            cmd.args(["--app", app]);
        }
        let out = cmd
            .output()
            .await
            .map_err(|e| fail(format!("cannot run it: {e} (is the Heroku CLI installed?)")))?;
        if !out.status.success() {
            // stderr of the CLI holds no secret (config values go to stdout).
            let stderr = String::from_utf8_lossy(&out.stderr);
            let first = stderr.lines().next().unwrap_or("").trim();
            return Err(fail(format!("it exited with {}: {first}", out.status)));
        }
        let vars = string_vars(&out.stdout)
            .ok_or_else(|| fail("its output is not a JSON object".to_owned()))?;
        Credentials::from_vars(&vars, &source)
    }
}

impl Default for HerokuCliProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl ProvideCredentials for HerokuCliProvider {
    fn provide(&self) -> CredentialsFuture<'_> {
        Box::pin(self.fetch())
    }
}
