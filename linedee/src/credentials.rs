//! Rotating credentials: providers and a cache that refreshes ahead of expiry.
//!
//! line^d rotates its temporary AWS credentials about every 6 hours. A [`ProvideCredentials`]
//! fetches the current ones; [`CredentialsCache`] keeps them, refreshes ahead of expiry (or
//! after a maximum age when the source gives no expiry), and can be invalidated when S3 says a
//! token expired. The AWS SDK's own identity cache cannot be invalidated, so the client uses
//! this one instead.
//!
//! Providers: [`EnvProvider`] (the process environment), [`HerokuApiProvider`] (the Heroku
//! Platform API's config vars), [`HerokuCliProvider`] (`heroku config -j`, as the product
//! document does), [`StaticProvider`], or anything implementing [`ProvideCredentials`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Mutex;

use crate::error::{Error, Result};

mod heroku;
pub use heroku::{DEFAULT_API_URL, HerokuApiProvider, HerokuCliProvider};

/// `LD_AWS_ACCESS_KEY_ID`
pub const ACCESS_KEY_VAR: &str = "LD_AWS_ACCESS_KEY_ID";
/// `LD_AWS_SECRET_ACCESS_KEY`
pub const SECRET_KEY_VAR: &str = "LD_AWS_SECRET_ACCESS_KEY";
/// `LD_AWS_SESSION_TOKEN`
pub const SESSION_TOKEN_VAR: &str = "LD_AWS_SESSION_TOKEN";

/// A set of AWS credentials. `Debug` never shows the secret or the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expires_at: Option<SystemTime>,
}

impl Credentials {
    /// Credentials from their parts.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
        expires_at: Option<SystemTime>,
    ) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: session_token.filter(|t| !t.is_empty()),
            expires_at,
        }
    }

    /// The access key id (not a secret).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// The secret access key. Never log it.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// The session token, for temporary credentials. Never log it.
    pub fn session_token(&self) -> Option<&str> {
        self.session_token.as_deref()
    }

    /// When they stop working, if the source said.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// Reads `LD_AWS_*` from a map of config vars (`heroku config -j`, the Platform API, a
    /// `.env`). The session token is optional; the others are required.
    pub fn from_vars(vars: &HashMap<String, String>, source: &str) -> Result<Self> {
        let get = |name: &'static str| {
            vars.get(name)
                .filter(|v| !v.is_empty())
                .cloned()
                .ok_or_else(|| Error::Credentials {
                    provider: source.to_owned(),
                    message: format!("`{name}` is missing from its config vars"),
                })
        };
        Ok(Credentials::new(
            get(ACCESS_KEY_VAR)?,
            get(SECRET_KEY_VAR)?,
            vars.get(SESSION_TOKEN_VAR).cloned(),
            None,
        ))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "** redacted **"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// The future a provider returns.
pub type CredentialsFuture<'a> = Pin<Box<dyn Future<Output = Result<Credentials>> + Send + 'a>>;

/// A source of current credentials. Called whenever the cache needs fresh ones.
///
/// ```
/// use linedee::credentials::{Credentials, CredentialsFuture, ProvideCredentials};
///
/// #[derive(Debug)]
/// struct Vault;
///
/// impl ProvideCredentials for Vault {
///     fn provide(&self) -> CredentialsFuture<'_> {
///         Box::pin(async { Ok(Credentials::new("AKID", "secret", None, None)) })
///     }
/// }
/// ```
pub trait ProvideCredentials: Send + Sync + fmt::Debug {
    /// Fetches the current credentials.
    fn provide(&self) -> CredentialsFuture<'_>;
}

impl<P: ProvideCredentials + ?Sized> ProvideCredentials for Arc<P> {
    fn provide(&self) -> CredentialsFuture<'_> {
        (**self).provide()
    }
}

/// Fixed credentials.
#[derive(Debug, Clone)]
pub struct StaticProvider(Credentials);

impl StaticProvider {
    /// Always provides `credentials`.
    pub fn new(credentials: Credentials) -> Self {
        StaticProvider(credentials)
    }
}

impl ProvideCredentials for StaticProvider {
    fn provide(&self) -> CredentialsFuture<'_> {
        let c = self.0.clone();
        Box::pin(async move { Ok(c) })
    }
}

/// Reads `LD_AWS_ACCESS_KEY_ID`, `LD_AWS_SECRET_ACCESS_KEY` and `LD_AWS_SESSION_TOKEN` from the
/// process environment each time it is asked.
#[derive(Debug, Clone, Default)]
pub struct EnvProvider;

impl EnvProvider {
    /// Reads the variables now.
    pub fn read() -> Result<Credentials> {
        let var = |name: &'static str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or(Error::MissingEnv {
                    name,
                    hint: "set the line^d config vars (`heroku config -s >> .env`, or the `env` file `linedee local` writes)",
                })
        };
        Ok(Credentials::new(
            var(ACCESS_KEY_VAR)?,
            var(SECRET_KEY_VAR)?,
            std::env::var(SESSION_TOKEN_VAR).ok(),
            None,
        ))
    }
}

impl ProvideCredentials for EnvProvider {
    fn provide(&self) -> CredentialsFuture<'_> {
        Box::pin(async { EnvProvider::read() })
    }
}

/// Keeps credentials from a provider and refreshes them ahead of expiry.
///
/// Credentials with an expiry are refreshed `refresh_ahead` before it; credentials without one
/// are refreshed after `max_age` (line^d rotates about every 6 hours and does not publish the
/// expiry, so the default of 15 minutes keeps the client well inside a rotation). Refreshes are
/// single-flight: concurrent callers wait for one fetch.
#[derive(Debug, Clone)]
pub struct CredentialsCache {
    inner: Arc<CacheInner>,
}

#[derive(Debug)]
struct CacheInner {
    provider: Box<dyn ProvideCredentials>,
    max_age: Duration,
    refresh_ahead: Duration,
    slot: Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    credentials: Credentials,
    refresh_at: SystemTime,
}

impl CredentialsCache {
    /// Default `max_age` for credentials without an expiry.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(15 * 60);
    /// Default margin before an expiry.
    pub const DEFAULT_REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);

    /// A cache over `provider` with the default timings.
    pub fn new(provider: impl ProvideCredentials + 'static) -> Self {
        Self::with_timing(provider, Self::DEFAULT_MAX_AGE, Self::DEFAULT_REFRESH_AHEAD)
    }

    /// A cache with explicit timings.
    pub fn with_timing(
        provider: impl ProvideCredentials + 'static,
        max_age: Duration,
        refresh_ahead: Duration,
    ) -> Self {
        CredentialsCache {
            inner: Arc::new(CacheInner {
                provider: Box::new(provider),
                max_age,
                refresh_ahead,
                slot: Mutex::new(None),
            }),
        }
    }

    /// The current credentials, fetching them if there are none or they are due for refresh.
    pub async fn get(&self) -> Result<Credentials> {
        let mut slot = self.inner.slot.lock().await;
        let now = SystemTime::now();
        if let Some(cached) = slot.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(cached.credentials.clone());
        }
        let credentials = self.inner.provider.provide().await?;
        let refresh_at = match credentials.expires_at {
            Some(exp) => exp
                .checked_sub(self.inner.refresh_ahead)
                .unwrap_or(exp)
                .min(now + self.inner.max_age),
            None => now + self.inner.max_age,
        };
        tracing::debug!(
            access_key_id = credentials.access_key_id(),
            "fetched credentials"
        );
        *slot = Some(Cached {
            credentials: credentials.clone(),
            refresh_at,
        });
        Ok(credentials)
    }

    /// Drops the cached credentials so that the next [`get`](Self::get) fetches fresh ones.
    /// Called when S3 answers `ExpiredToken` and the like.
    pub async fn invalidate(&self) {
        *self.inner.slot.lock().await = None;
    }
}

/// Bridges the cache into the AWS SDK, whose own identity cache is disabled.
#[derive(Debug, Clone)]
pub(crate) struct SdkBridge(pub(crate) CredentialsCache);

impl aws_credential_types::provider::ProvideCredentials for SdkBridge {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            let c = self.0.get().await.map_err(|e| {
                aws_credential_types::provider::error::CredentialsError::provider_error(e)
            })?;
            Ok(aws_credential_types::Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                c.session_token,
                c.expires_at,
                "linedee",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Default)]
    struct Counting(AtomicUsize, Option<SystemTime>);

    impl ProvideCredentials for Counting {
        fn provide(&self) -> CredentialsFuture<'_> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            let exp = self.1;
            Box::pin(async move { Ok(Credentials::new(format!("AK{n}"), "s", None, exp)) })
        }
    }

    #[tokio::test]
    async fn caches_until_invalidated() {
        let p = Arc::new(Counting::default());
        let cache = CredentialsCache::new(p.clone());
        assert_eq!(cache.get().await.unwrap().access_key_id(), "AK0");
        assert_eq!(cache.get().await.unwrap().access_key_id(), "AK0");
        cache.invalidate().await;
        assert_eq!(cache.get().await.unwrap().access_key_id(), "AK1");
        assert_eq!(p.0.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refreshes_ahead_of_expiry() {
        // Expires within the refresh margin: every get refreshes.
        let soon = SystemTime::now() + Duration::from_secs(60);
        let p = Arc::new(Counting(AtomicUsize::new(0), Some(soon)));
        let cache = CredentialsCache::new(p.clone());
        cache.get().await.unwrap();
        cache.get().await.unwrap();
        assert_eq!(p.0.load(Ordering::SeqCst), 2);
        // Far from expiry: cached.
        let later = SystemTime::now() + Duration::from_secs(3600);
        let p = Arc::new(Counting(AtomicUsize::new(0), Some(later)));
        let cache = CredentialsCache::new(p.clone());
        cache.get().await.unwrap();
        cache.get().await.unwrap();
        assert_eq!(p.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials::new("AKID", "SUPERSECRET", Some("TOKEN123".into()), None);
        let d = format!("{c:?}");
        assert!(
            d.contains("AKID") && !d.contains("SUPERSECRET") && !d.contains("TOKEN123"),
            "{d}"
        );
    }

    #[test]
    fn from_vars_names_the_missing_variable() {
        let vars: HashMap<String, String> = [(ACCESS_KEY_VAR.to_owned(), "A".to_owned())].into();
        let err = Credentials::from_vars(&vars, "heroku")
            .unwrap_err()
            .to_string();
        assert!(err.contains("LD_AWS_SECRET_ACCESS_KEY"), "{err}");
    }
}
