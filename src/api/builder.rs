//! Building a [`Client`](crate::api::Client): the API key, the retry policy, every setting
//! with its default, and what the environment sets (`PROSPEO_API_KEY`, `PROSPEO_API_KEY_FILE`,
//! `PROSPEO_BASE_URL`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::api::pacing::{Pacer, QuotaLimiter};
use crate::cache::ResponseCache;
use crate::coordinator::{CoordinatorPassword, CoordinatorUrl, KeyId};
use crate::error::{Error, Result};
use crate::vendor::plan::{Plan, RateLimits};

pub use crate::vendor::DEFAULT_BASE_URL;
/// Environment variable of the API key.
pub const ENV_API_KEY: &str = "PROSPEO_API_KEY";
/// Environment variable of a file holding the API key.
pub const ENV_API_KEY_FILE: &str = "PROSPEO_API_KEY_FILE";
/// Environment variable of the base URL.
pub const ENV_BASE_URL: &str = "PROSPEO_BASE_URL";

/// `url` without trailing slashes, when it is an http:// or https:// URL (the one check every
/// way of giving the API's address goes through).
pub(crate) fn http_base_url(url: &str) -> Option<String> {
    let url = url.trim_end_matches('/');
    (url.starts_with("http://") || url.starts_with("https://")).then(|| url.to_string())
}

/// An API key. Never shown: `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key; surrounding whitespace (a trailing newline in a key file) is dropped.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into().trim().to_string();
        if key.is_empty() {
            return Err(Error::MissingApiKey);
        }
        if key.chars().any(|c| c.is_control()) {
            return Err(Error::Config(
                "the API key holds control characters: check how it was written".into(),
            ));
        }
        Ok(ApiKey(key))
    }

    /// Reads a key from a file (its first line).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::ApiKeyFile {
            path: path.to_path_buf(),
            reason: e.kind().to_string(),
        })?;
        let first = text.lines().next().unwrap_or("");
        ApiKey::new(first).map_err(|_| Error::ApiKeyFile {
            path: path.to_path_buf(),
            reason: "the file is empty or its first line is not a key".into(),
        })
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl KeyId {
    /// The coordinator's id of `key`: a hash, never the key.
    pub fn of(key: &ApiKey) -> KeyId {
        KeyId::of_secret(key.expose())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How failed requests are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// The first backoff's upper bound; doubles with each attempt.
    pub base_delay: Duration,
    /// The cap of any one backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Builds a [`Client`](crate::api::Client). Every setting has a method;
/// [`ClientBuilder::from_env`] reads `PROSPEO_API_KEY` (or `PROSPEO_API_KEY_FILE`) and
/// `PROSPEO_BASE_URL`.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    pub(super) base_url: String,
    pub(super) api_key: Option<ApiKey>,
    pub(super) api_key_file: Option<PathBuf>,
    pub(super) connect_timeout: Duration,
    pub(super) request_timeout: Duration,
    pub(super) batch_timeout: Duration,
    pub(super) max_in_flight: usize,
    pub(super) limits: RateLimits,
    pub(super) retry: RetryPolicy,
    pub(super) user_agent: String,
    pub(super) max_quota_wait: Duration,
    pub(super) max_credits: Option<i64>,
    pub(super) seed: u64,
    pub(super) cache: Option<ResponseCache>,
    pub(super) cache_ttl: Option<Duration>,
    pub(super) pacer: Option<Arc<dyn Pacer>>,
    pub(super) coordinator: Option<CoordinatorUrl>,
    pub(super) coordinator_password: Option<CoordinatorPassword>,
    pub(super) coordinator_lease: Duration,
    pub(super) coordinator_wait: Duration,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            base_url: DEFAULT_BASE_URL.to_string(),
            api_key: None,
            api_key_file: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            batch_timeout: Duration::from_secs(600),
            max_in_flight: 4,
            limits: Plan::Pro.limits(),
            retry: RetryPolicy::default(),
            user_agent: concat!("datafusion-prospeo/", env!("CARGO_PKG_VERSION")).to_string(),
            max_quota_wait: Duration::from_secs(120),
            max_credits: None,
            seed: 0x5EED,
            cache: None,
            cache_ttl: None,
            pacer: None,
            coordinator: None,
            coordinator_password: None,
            coordinator_lease: Duration::from_secs(30),
            coordinator_wait: Duration::from_secs(60),
        }
    }
}

impl ClientBuilder {
    /// Defaults: the vendor's URL, Pro limits, no key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults, then `PROSPEO_API_KEY` / `PROSPEO_API_KEY_FILE` and `PROSPEO_BASE_URL` when set.
    pub fn from_env() -> Self {
        let mut builder = Self::default();
        if let Ok(url) = std::env::var(ENV_BASE_URL)
            && !url.trim().is_empty()
        {
            builder.base_url = url.trim().to_string();
        }
        if let Ok(key) = std::env::var(ENV_API_KEY)
            && let Ok(key) = ApiKey::new(key)
        {
            builder.api_key = Some(key);
        } else if let Ok(path) = std::env::var(ENV_API_KEY_FILE)
            && !path.trim().is_empty()
        {
            builder.api_key_file = Some(PathBuf::from(path.trim()));
        }
        builder
    }

    /// The API's base URL (the sandbox's, for tests).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The base URL the client will send to.
    pub fn configured_base_url(&self) -> &str {
        &self.base_url
    }

    /// The API key.
    pub fn api_key(mut self, key: ApiKey) -> Self {
        self.api_key = Some(key);
        self.api_key_file = None;
        self
    }

    /// Read the API key from this file when the client is built.
    pub fn api_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.api_key_file = Some(path.into());
        self.api_key = None;
        self
    }

    /// Timeout to open a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Timeout of one HTTP request, from send to the end of the body.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Time allowed for one batch, retries and waits included; past it the batch's records
    /// fail (or are deferred, when what held them was the rate limit).
    pub fn batch_timeout(mut self, timeout: Duration) -> Self {
        self.batch_timeout = timeout;
        self
    }

    /// Requests in flight at once, across every caller.
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.max_in_flight = requests.max(1);
        self
    }

    /// The plan whose limits pace the sends.
    pub fn plan(mut self, plan: Plan) -> Self {
        self.limits = plan.limits();
        self
    }

    /// Custom records-per-second, per-minute and per-day limits.
    pub fn limits(mut self, limits: RateLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The retry policy.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The `User-Agent` header.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// Longest wait for quota before records are deferred instead (a daily quota that is used
    /// up returns hours later: the job should stop and come back, not sleep).
    pub fn max_quota_wait(mut self, wait: Duration) -> Self {
        self.max_quota_wait = wait;
        self
    }

    /// Spend at most this many credits; records whose worst-case cost would pass it are
    /// deferred, not sent.
    pub fn max_credits(mut self, credits: Option<i64>) -> Self {
        self.max_credits = credits;
        self
    }

    /// The response cache: answers are read from it before sending and committed to it as they
    /// arrive, so a re-run pays for nothing twice. Without one, answers are kept in memory for
    /// the client's lifetime (de-duplication within a job still works).
    pub fn cache(mut self, cache: ResponseCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Cached answers older than this are asked again (`None`, the default: never).
    pub fn cache_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// The pacer that spaces the sends (default: an in-process [`QuotaLimiter`] for
    /// [`ClientBuilder::limits`]). Clients given the same pacer share one quota.
    pub fn pacer(mut self, pacer: Arc<dyn Pacer>) -> Self {
        self.pacer = Some(pacer);
        self
    }

    /// The pacer set, or an in-process limiter for the limits.
    pub(super) fn pacer_or_default(&self) -> Arc<dyn Pacer> {
        match &self.pacer {
            Some(pacer) => pacer.clone(),
            None => Arc::new(QuotaLimiter::new(self.limits)),
        }
    }

    /// Share pacing, claims and answers with every other worker of the key through this
    /// PostgreSQL database (see [`crate::coordinator`]). The answers are then kept there, not
    /// in [`ClientBuilder::cache`].
    pub fn coordinator(mut self, url: Option<CoordinatorUrl>) -> Self {
        self.coordinator = url;
        self
    }

    /// The coordinator's password, from a program (a secrets manager); without it, libpq's
    /// places (`PGPASSWORD`, `PGPASSFILE`, `~/.pgpass`).
    pub fn coordinator_password(mut self, password: CoordinatorPassword) -> Self {
        self.coordinator_password = Some(password);
        self
    }

    /// How long this worker's claims outlive its last heartbeat (default 30 s; heartbeats
    /// come every third of it): what a killed worker's records wait before another worker
    /// takes them over.
    pub fn coordinator_lease(mut self, lease: Duration) -> Self {
        self.coordinator_lease = lease.max(Duration::from_secs(1));
        self
    }

    /// How long a lost coordinator is waited for before the records not yet sent are
    /// deferred (default 60 s).
    pub fn coordinator_wait(mut self, wait: Duration) -> Self {
        self.coordinator_wait = wait;
        self
    }

    /// The coordinator set, if any.
    pub fn configured_coordinator(&self) -> Option<&CoordinatorUrl> {
        self.coordinator.as_ref()
    }

    /// Seed of the backoff jitter (tests and benchmarks fix it).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}
