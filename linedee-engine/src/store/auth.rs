//! Credentials: generated at first start and kept in `credentials.json` (mode 0600) in the
//! data dir, optionally rotated (session credentials with a lifetime), and enforced on
//! every S3 request: SigV4 (by s3s) with a known, unexpired access key and its session
//! token. Anonymous and unsigned requests are refused.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use s3s::S3Result;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::s3_error;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{Error, Result, StoreError};

/// S3 credentials for the store, as the engine hands them to tasks.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `LD_AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `LD_AWS_SECRET_ACCESS_KEY`. Secret.
    pub secret_access_key: String,
    /// `LD_AWS_SESSION_TOKEN`. Secret.
    pub session_token: String,
    /// When the credentials stop working; `None`: they do not expire.
    pub expires_at: Option<OffsetDateTime>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Stored {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    issued_at: i64,
    expires_at: Option<i64>,
}

#[derive(Clone, Serialize, Deserialize)]
struct State {
    /// Unlocks the config-vars endpoint (the store's S3 credentials).
    api_token: String,
    /// Unlocks the dashboard's cancel and retry: a secret of its own, so that a dashboard
    /// token handed to a tool cannot read the store's credentials. Files written before it
    /// existed get one at the next start.
    #[serde(default)]
    dashboard_token: String,
    credentials: Vec<Stored>,
}

/// The credential set of one store.
pub(crate) struct Auth {
    path: PathBuf,
    lifetime: Option<Duration>,
    fsync: bool,
    state: Mutex<State>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("path", &self.path)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

/// How many retired credentials are kept, to answer `ExpiredToken` rather than
/// `InvalidAccessKeyId`.
const KEEP_RETIRED: usize = 32;

/// `len` random alphanumeric characters (the thread-local CSPRNG).
pub(crate) fn random(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn lifetime_secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1)
}

fn issue(lifetime: Option<Duration>) -> Stored {
    let issued_at = now();
    Stored {
        access_key_id: format!("LDAK{}", random(16).to_uppercase()),
        secret_access_key: random(40),
        session_token: random(64),
        issued_at,
        expires_at: lifetime.map(|l| issued_at.saturating_add(lifetime_secs(l))),
    }
}

/// Constant-time comparison of two secrets.
pub(crate) fn secret_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    /// Loads `dir/credentials.json`, creating it at first start.
    pub(crate) fn open(dir: &Path, lifetime: Option<Duration>, fsync: bool) -> Result<Self> {
        let path = dir.join("credentials.json");
        let state = match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| StoreError::CredentialsFile {
                    path: path.clone(),
                    source,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                api_token: random(48),
                dashboard_token: String::new(),
                credentials: Vec::new(),
            },
            Err(e) => return Err(Error::io(path)(e)),
        };
        let mut state = state;
        let new_dashboard_token = state.dashboard_token.is_empty();
        if new_dashboard_token {
            state.dashboard_token = random(48);
        }
        let auth = Self {
            path,
            lifetime,
            fsync,
            state: Mutex::new(state),
        };
        if new_dashboard_token {
            let state = auth.lock().clone();
            auth.save(&state)?;
        }
        auth.current()?;
        Ok(auth)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, state: &State) -> Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| Error::corrupt(format!("credentials do not serialize: {e}")))?;
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut file = opts.open(&tmp).map_err(Error::io(&tmp))?;
        file.write_all(&json).map_err(Error::io(&tmp))?;
        if self.fsync {
            file.sync_all().map_err(Error::io(&tmp))?;
        }
        fs::rename(&tmp, &self.path).map_err(Error::io(&self.path))?;
        Ok(())
    }

    /// The credentials to hand out now; issues new ones when the newest has passed half
    /// its lifetime (or does not match the configured lifetime).
    pub(crate) fn current(&self) -> Result<Credentials> {
        let mut state = self.lock();
        let t = now();
        let fresh = state
            .credentials
            .last()
            .filter(|c| match (self.lifetime, c.expires_at) {
                (None, None) => true,
                (Some(l), Some(_)) => {
                    t < c
                        .issued_at
                        .saturating_add(lifetime_secs(l) / 2)
                        .max(c.issued_at + 1)
                }
                _ => false,
            });
        let cred = match fresh {
            Some(c) => c.clone(),
            None => {
                let c = issue(self.lifetime);
                let mut next = state.clone();
                next.credentials.push(c.clone());
                if next.credentials.len() > KEEP_RETIRED {
                    let drop = next.credentials.len() - KEEP_RETIRED;
                    next.credentials.drain(..drop);
                }
                self.save(&next)?;
                *state = next;
                c
            }
        };
        Ok(Credentials {
            access_key_id: cred.access_key_id,
            secret_access_key: cred.secret_access_key,
            session_token: cred.session_token,
            expires_at: cred
                .expires_at
                .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()),
        })
    }

    /// The bearer token of the config-vars endpoint.
    pub(crate) fn api_token(&self) -> String {
        self.lock().api_token.clone()
    }

    /// The bearer token of the dashboard's cancel and retry.
    pub(crate) fn dashboard_token(&self) -> String {
        self.lock().dashboard_token.clone()
    }

    /// The secret and session token of a live access key.
    fn lookup(&self, access_key: &str) -> S3Result<(String, String)> {
        let state = self.lock();
        let cred = state
            .credentials
            .iter()
            .find(|c| c.access_key_id == access_key)
            .ok_or_else(|| {
                s3_error!(
                    InvalidAccessKeyId,
                    "The AWS access key Id you provided does not exist in our records."
                )
            })?;
        if cred.expires_at.is_some_and(|e| now() >= e) {
            return Err(s3_error!(ExpiredToken, "The provided token has expired."));
        }
        if self.lifetime.is_none() && cred.expires_at.is_some() {
            return Err(s3_error!(ExpiredToken, "The provided token has expired."));
        }
        Ok((cred.secret_access_key.clone(), cred.session_token.clone()))
    }
}

/// The s3s authentication provider: the secret of a known, unexpired access key.
pub(crate) struct StoreAuth(pub(crate) Arc<Auth>);

#[async_trait::async_trait]
impl S3Auth for StoreAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.0
            .lookup(access_key)
            .map(|(secret, _)| SecretKey::from(secret))
    }
}

/// The s3s access check: every request must be signed, and carry the session token that
/// belongs to its access key.
pub(crate) struct StoreAccess(pub(crate) Arc<Auth>);

fn query_token(uri: &http::Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.eq_ignore_ascii_case("X-Amz-Security-Token")
            .then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(h, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[async_trait::async_trait]
impl S3Access for StoreAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(creds) = cx.credentials() else {
            return Err(s3_error!(
                AccessDenied,
                "Requests must be signed with AWS Signature Version 4."
            ));
        };
        let (_, want) = self.0.lookup(&creds.access_key)?;
        let got = cx
            .headers()
            .get("x-amz-security-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| query_token(cx.uri()));
        match got {
            Some(got) if secret_eq(&got, &want) => Ok(()),
            Some(_) => Err(s3_error!(
                InvalidToken,
                "The provided token is malformed or otherwise invalid."
            )),
            None => Err(s3_error!(
                AccessDenied,
                "These credentials need their session token (x-amz-security-token)."
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_persist_and_debug_redacts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Auth::open(dir.path(), None, false)
            .expect("open")
            .current()
            .expect("current");
        let b = Auth::open(dir.path(), None, false)
            .expect("open")
            .current()
            .expect("current");
        assert_eq!(a, b);
        let dbg = format!("{a:?}");
        assert!(!dbg.contains(&a.secret_access_key) && !dbg.contains(&a.session_token));
    }

    #[test]
    fn the_dashboard_token_is_its_own_secret_and_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Auth::open(dir.path(), None, false).expect("open");
        let (api, dash) = (a.api_token(), a.dashboard_token());
        assert_eq!(dash.len(), 48);
        assert!(!secret_eq(&api, &dash), "the two tokens must differ");
        let b = Auth::open(dir.path(), None, false).expect("open again");
        assert_eq!((b.api_token(), b.dashboard_token()), (api, dash));
        // A file written before the dashboard token existed gets one, kept from then on.
        let path = dir.path().join("credentials.json");
        let mut json: serde_json::Value =
            serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
        json.as_object_mut()
            .expect("object")
            .remove("dashboard_token");
        fs::write(&path, serde_json::to_vec(&json).expect("encode")).expect("write");
        let c = Auth::open(dir.path(), None, false).expect("open old file");
        let minted = c.dashboard_token();
        assert_eq!(minted.len(), 48);
        assert!(!secret_eq(&minted, &c.api_token()));
        let d = Auth::open(dir.path(), None, false).expect("open once more");
        assert_eq!(d.dashboard_token(), minted);
    }

    #[test]
    fn unknown_and_expired_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = Auth::open(dir.path(), None, false).expect("open");
        let err = auth.lookup("nope").expect_err("unknown");
        assert_eq!(err.code(), &s3s::S3ErrorCode::InvalidAccessKeyId);
        let mut state = auth.lock();
        state.credentials[0].expires_at = Some(now() - 1);
        let key = state.credentials[0].access_key_id.clone();
        drop(state);
        let err = auth.lookup(&key).expect_err("expired");
        assert_eq!(err.code(), &s3s::S3ErrorCode::ExpiredToken);
    }
}
