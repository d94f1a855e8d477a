//! Configuration: the `LD_*` variables from the environment, then from `<dir>/env`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use linedee::Client;
use linedee::credentials::{Credentials, StaticProvider};

use crate::exit;

/// `LD_DASHBOARD_URL`: where `linedee local` serves its dashboard.
pub(crate) const DASHBOARD_URL_VAR: &str = "LD_DASHBOARD_URL";

/// The name of the env file `linedee local` writes in its dir.
pub(crate) const ENV_FILE: &str = "env";

/// Variables read from the file (the environment wins over them).
const VARS: &[&str] = &[
    "LD_AWS_ACCESS_KEY_ID",
    "LD_AWS_SECRET_ACCESS_KEY",
    "LD_AWS_SESSION_TOKEN",
    "LD_REGION",
    "LD_S3_BUCKET",
    "LD_S3_ENDPOINT",
    DASHBOARD_URL_VAR,
];

/// The configuration of one command: `LD_*` values and where the file came from.
#[derive(Debug)]
pub(crate) struct Config {
    values: BTreeMap<String, String>,
    file: Option<PathBuf>,
}

impl Config {
    /// Reads `<dir>/env` when it exists; variables set in the environment win.
    pub(crate) fn load(dir: &Path) -> anyhow::Result<Config> {
        let path = dir.join(ENV_FILE);
        let mut values = BTreeMap::new();
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let pairs = linedee_engine::parse_dotenv(&text).map_err(|e| {
                    exit::bad_input(format!(
                        "{}: {e}; delete it or run `linedee local` to write it again",
                        path.display()
                    ))
                })?;
                values.extend(pairs);
                Some(path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        for name in VARS {
            if let Ok(v) = std::env::var(name) {
                values.insert((*name).to_owned(), v);
            }
        }
        values.retain(|_, v| !v.is_empty());
        Ok(Config { values, file })
    }

    /// A variable's value.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// A client for the configured bucket. A missing variable is an error that names it and
    /// says where it could come from.
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let need = |name: &str| {
            self.get(name).ok_or_else(|| {
                exit::unreachable(format!(
                    "{name} is not set and {}; start `linedee local` (or pass --dir to its \
                     directory), or set the line^d config vars (`heroku config -s`)",
                    match &self.file {
                        Some(p) => format!("{} does not set it", p.display()),
                        None => "there is no env file in the --dir".to_owned(),
                    }
                ))
            })
        };
        let bucket = need("LD_S3_BUCKET")?;
        let credentials = Credentials::new(
            need("LD_AWS_ACCESS_KEY_ID")?,
            need("LD_AWS_SECRET_ACCESS_KEY")?,
            self.get("LD_AWS_SESSION_TOKEN").map(str::to_owned),
            None,
        );
        let mut builder = Client::builder()
            .bucket(bucket)
            .credentials_provider(StaticProvider::new(credentials));
        if let Some(region) = self.get("LD_REGION") {
            builder = builder.region(region);
        }
        if let Some(endpoint) = self.get("LD_S3_ENDPOINT") {
            builder = builder.endpoint(endpoint);
        }
        builder = builder
            .transfer_settings(|name| std::env::var(name).ok())
            .map_err(|e| exit::bad_input(e.to_string()))?;
        Ok(builder.build()?)
    }
}
