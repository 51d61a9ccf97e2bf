//! The enrichment client: one connection pool, one quota limiter and one set of running totals
//! shared by every caller; retries with backoff; a typed, cost-accounted outcome per record.
//!
//! No DataFusion types here: the enrichment node drives this, and so can any other caller.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::api::pacing::{Admission, QuotaHeaders, QuotaLimiter, Reservation};
use crate::api::plan::{Plan, QuotaWindow, RateLimits};
use crate::api::wire::{
    AccountInformation, AccountInformationResponse, BulkEnrichRequest, BulkEnrichResponse,
    BulkRecord, EnrichFlags, ErrorBody, ErrorCode, MAX_BULK_RECORDS, MatchedRecord,
};
use crate::cache::{CacheEntry, CacheKey, ResponseCache};
use crate::datapoints::Datapoints;

use super::dedup::{Claim, Pending};
// The outcome types lived here first; their public paths stay.
pub use super::outcome::{BatchOutcome, DeferReason, Match, RecordOutcome, RecordStatus};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// The vendor's API.
pub const DEFAULT_BASE_URL: &str = "https://api.prospeo.io";
/// Environment variable of the API key.
pub const ENV_API_KEY: &str = "PROSPEO_API_KEY";
/// Environment variable of a file holding the API key.
pub const ENV_API_KEY_FILE: &str = "PROSPEO_API_KEY_FILE";
/// Environment variable of the base URL.
pub const ENV_BASE_URL: &str = "PROSPEO_BASE_URL";

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

/// Builds a [`Client`]. Every setting has a method; [`ClientBuilder::from_env`] reads
/// `PROSPEO_API_KEY` (or `PROSPEO_API_KEY_FILE`) and `PROSPEO_BASE_URL`.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    base_url: String,
    api_key: Option<ApiKey>,
    api_key_file: Option<PathBuf>,
    connect_timeout: Duration,
    request_timeout: Duration,
    batch_timeout: Duration,
    max_in_flight: usize,
    limits: RateLimits,
    retry: RetryPolicy,
    user_agent: String,
    max_quota_wait: Duration,
    max_credits: Option<i64>,
    seed: u64,
    cache: Option<ResponseCache>,
    cache_ttl: Option<Duration>,
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

    /// Seed of the backoff jitter (tests and benchmarks fix it).
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Builds the client: reads the key file if one was given, opens no connection yet.
    pub fn build(self) -> Result<Client> {
        let api_key = match (&self.api_key, &self.api_key_file) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => ApiKey::from_file(path)?,
            (None, None) => return Err(Error::MissingApiKey),
        };
        let base_url = self.base_url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "the base URL `{base_url}` must start with http:// or https://"
            )));
        }
        if self.retry.max_attempts == 0 {
            return Err(Error::Config(
                "retry.max_attempts must be at least 1".into(),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(self.user_agent.clone())
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        let cache = match &self.cache {
            Some(cache) => cache.clone(),
            None => ResponseCache::in_memory()?,
        };
        Ok(Client {
            inner: Arc::new(ClientInner {
                cache,
                pending: Pending::default(),
                http,
                base_url,
                api_key,
                limiter: QuotaLimiter::new(self.limits),
                in_flight: Semaphore::new(self.max_in_flight),
                totals: Counters::default(),
                stopped: AtomicBool::new(false),
                halted: AtomicBool::new(false),
                credits_reserved: AtomicI64::new(0),
                rng: Mutex::new(SplitMix64::new(self.seed)),
                settings: self,
            }),
        })
    }
}

/// Running totals of a client, across every caller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Records in requests the API answered (what counts against the quota; requests refused
    /// with a rate limit or an error do not count).
    pub records_sent: u64,
    /// HTTP requests made, retries included.
    pub requests: u64,
    pub matched: u64,
    pub not_matched: u64,
    pub invalid: u64,
    pub failed: u64,
    pub deferred: u64,
    /// Credits charged (the sum of `total_cost`).
    pub credits: i64,
    pub free_enrichments: u64,
    /// Requests retried.
    pub retries: u64,
    /// Rate-limit answers received (429 or a rate-limit code).
    pub rate_limited: u64,
    /// Requests whose `total_cost` the documented rules did not explain.
    pub cost_warnings: u64,
    /// Time spent waiting for quota, summed over callers, in milliseconds.
    pub quota_wait_ms: u64,
    /// Records answered from the response cache (earlier jobs): sent nothing, cost 0.
    pub cached: u64,
    /// Records answered by an earlier record of this job with the same datapoints.
    pub duplicates: u64,
    /// Answers that could not be written to the response cache (a re-run sends them again).
    pub cache_errors: u64,
    /// When the quota that deferred records returns (the latest such time), when known.
    #[serde(serialize_with = "rfc3339")]
    pub quota_returns_at: Option<SystemTime>,
}

fn rfc3339<S: serde::Serializer>(at: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => s.serialize_some(
            &chrono::DateTime::<chrono::Utc>::from(*at)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Default)]
struct Counters {
    records_sent: AtomicU64,
    requests: AtomicU64,
    matched: AtomicU64,
    not_matched: AtomicU64,
    invalid: AtomicU64,
    failed: AtomicU64,
    deferred: AtomicU64,
    credits: AtomicI64,
    free_enrichments: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
    cost_warnings: AtomicU64,
    quota_wait_ms: AtomicU64,
    cached: AtomicU64,
    duplicates: AtomicU64,
    cache_errors: AtomicU64,
    /// Unix milliseconds; 0 when unknown.
    quota_returns_at_ms: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> Totals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            records_sent: get(&self.records_sent),
            requests: get(&self.requests),
            matched: get(&self.matched),
            not_matched: get(&self.not_matched),
            invalid: get(&self.invalid),
            failed: get(&self.failed),
            deferred: get(&self.deferred),
            credits: self.credits.load(Ordering::Relaxed),
            free_enrichments: get(&self.free_enrichments),
            retries: get(&self.retries),
            rate_limited: get(&self.rate_limited),
            cost_warnings: get(&self.cost_warnings),
            quota_wait_ms: get(&self.quota_wait_ms),
            cached: get(&self.cached),
            duplicates: get(&self.duplicates),
            cache_errors: get(&self.cache_errors),
            quota_returns_at: match get(&self.quota_returns_at_ms) {
                0 => None,
                ms => Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
            },
        }
    }

    fn count(&self, outcomes: &[RecordOutcome]) {
        for outcome in outcomes {
            let counter = match outcome {
                RecordOutcome::Matched(m) => {
                    if m.free_enrichment {
                        add(&self.free_enrichments, 1);
                    }
                    &self.matched
                }
                RecordOutcome::NotMatched => &self.not_matched,
                RecordOutcome::InvalidDatapoints => &self.invalid,
                RecordOutcome::Failed { .. } => &self.failed,
                RecordOutcome::Deferred { retry_at, .. } => {
                    if let Some(ms) = retry_at
                        .and_then(|at| at.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map(|d| d.as_millis() as u64)
                    {
                        self.quota_returns_at_ms.fetch_max(ms, Ordering::Relaxed);
                    }
                    &self.deferred
                }
            };
            add(counter, 1);
        }
    }
}

/// The account as `/account-information` and its rate-limit headers report it.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountStatus {
    pub account: AccountInformation,
    pub quota: QuotaHeaders,
}

struct ClientInner {
    /// Answers of earlier requests (persistent, or in memory for this client).
    cache: ResponseCache,
    /// Keys being answered now, for in-job de-duplication.
    pending: Pending,
    http: reqwest::Client,
    base_url: String,
    api_key: ApiKey,
    limiter: QuotaLimiter,
    in_flight: Semaphore,
    totals: Counters,
    /// Set when the account ran out of credits: nothing more is sent.
    stopped: AtomicBool,
    /// Set by [`Client::stop_sending`]: requests not yet on the wire are deferred.
    halted: AtomicBool,
    /// Worst-case credits of requests in flight, counted against `max_credits`.
    credits_reserved: AtomicI64,
    rng: Mutex<SplitMix64>,
    settings: ClientBuilder,
}

/// The Prospeo client. Cheap to clone; clones share the connection pool, the quota limiter and
/// the totals.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url)
            .field("api_key", &self.inner.api_key)
            .field("limits", &self.inner.settings.limits)
            .field("max_in_flight", &self.inner.settings.max_in_flight)
            .finish()
    }
}

/// How one attempt ended.
enum Attempt {
    Answered(BulkEnrichResponse),
    Retry {
        reason: String,
        rate_limited: bool,
        wait: Option<(QuotaWindow, Duration)>,
    },
    InvalidKey,
    OutOfCredits,
    /// Not retryable: every record of the request fails with this reason.
    Reject(String),
    /// A success status whose body breaks the contract: the request may have been charged, so
    /// it is not retried.
    Garbled(String),
}

impl Client {
    /// A builder with the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The settings the client was built with (the key stays redacted).
    pub fn settings(&self) -> &ClientBuilder {
        &self.inner.settings
    }

    /// Totals so far, across every caller.
    pub fn totals(&self) -> Totals {
        self.inner.totals.snapshot()
    }

    /// Stops the client for good: requests not yet on the wire are deferred
    /// ([`DeferReason::Stopped`]); requests already sent still complete and are counted.
    pub fn stop_sending(&self) {
        self.inner.halted.store(true, Ordering::SeqCst);
    }

    /// Waits, at most `timeout`, until no request is on the wire; true when none is. After
    /// [`Client::stop_sending`] this makes the totals include every answer that was paid for.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let all = self.inner.settings.max_in_flight as u32;
        matches!(
            tokio::time::timeout(timeout, self.inner.in_flight.acquire_many(all)).await,
            Ok(Ok(_))
        )
    }

    /// Records per request the plan allows (50, or less on tiny custom limits).
    pub fn max_request_records(&self) -> usize {
        self.inner.limiter.max_request_records(MAX_BULK_RECORDS)
    }

    /// `GET /account-information`: the plan and the credits left (free of charge), plus the
    /// quota as the rate-limit headers report it.
    pub async fn account_status(&self) -> Result<AccountStatus> {
        const ENDPOINT: &str = "/account-information";
        let url = format!("{}{ENDPOINT}", self.inner.base_url);
        let response = self
            .inner
            .http
            .get(url)
            .header("X-KEY", self.inner.api_key.expose())
            .send()
            .await
            .map_err(|e| Error::Request {
                endpoint: ENDPOINT,
                reason: transport_reason(&e),
            })?;
        let status = response.status();
        let quota = QuotaHeaders::from_headers(response.headers());
        let body = response.bytes().await.map_err(|e| Error::Request {
            endpoint: ENDPOINT,
            reason: transport_reason(&e),
        })?;
        if let Ok(error) = serde_json::from_slice::<ErrorBody>(&body)
            && error.error
        {
            return Err(match error.code() {
                ErrorCode::InvalidApiKey => Error::InvalidApiKey,
                code => Error::Api {
                    endpoint: ENDPOINT,
                    message: self.redact(error.message.clone().unwrap_or_default()),
                    code,
                },
            });
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(Error::InvalidApiKey);
        }
        let parsed: AccountInformationResponse =
            serde_json::from_slice(&body).map_err(|e| Error::Request {
                endpoint: ENDPOINT,
                reason: format!("HTTP {status} with a body that is not the documented JSON: {e}"),
            })?;
        let account = parsed.response.ok_or_else(|| Error::Request {
            endpoint: ENDPOINT,
            reason: "the answer has no `response` object".into(),
        })?;
        Ok(AccountStatus { account, quota })
    }

    /// Enriches `records` with the flags, in requests of at most 50 records.
    ///
    /// Returns one outcome per record, in input order. Records below the minimum requirement
    /// are not sent. The client makes its own identifiers, so the caller's data never has to be
    /// unique. Never twice: a record whose normalised datapoints and flags the response cache
    /// answers, or that another record (of this call or any other) is being answered for, is
    /// not sent; it gets that answer at cost 0 ([`BatchOutcome::cached`],
    /// [`BatchOutcome::duplicates`]). Answers are committed to the cache as they arrive. Retryable failures (429 and rate-limit codes even on HTTP 200, `INTERNAL_ERROR`,
    /// 5xx, connection errors, timeouts) are retried with capped exponential backoff and full
    /// jitter, waiting for the reset the headers give after a 429; a request is retried only
    /// when no attempt got a successful answer, so nothing is paid twice.
    ///
    /// Costs: 1 per match, 10 per match with a revealed mobile, 0 for a free re-enrichment and
    /// everything else. When a request's `total_cost` differs from that sum, the other reading
    /// of the vendor's uncertain rule (10 for an `enrich_mobile` match that found no mobile) is
    /// tried; if neither explains it, the difference is assigned to the matched records in
    /// request order — a surplus to the first match (with nothing matched, no record carries
    /// it: it counts in the totals only), a shortfall taken from the first matches down to 0 —
    /// and counted in [`Totals::cost_warnings`].
    ///
    /// Errors only for `INVALID_API_KEY`, which is fatal for the whole job. Running out of
    /// credits, the daily quota, or the `max_credits` budget defers the records instead.
    ///
    /// The records are answered on a task of their own: if the caller drops this future, that
    /// task still sends this call's requests (unless [`Client::stop_sending`] was called),
    /// stores the answers, and counts them in [`Client::totals`]; records of other calls that
    /// wait on the same datapoints get their answers.
    pub async fn bulk_enrich(
        &self,
        records: &[Datapoints],
        flags: EnrichFlags,
    ) -> Result<BatchOutcome> {
        let inner = &self.inner;
        let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; records.len()];
        // Claim every valid record's key: the first claim of a key answers it, later ones
        // (in this call or any other) wait for that answer.
        let mut mine: Vec<(usize, Datapoints, CacheKey)> = Vec::new();
        let mut waiting = Vec::new();
        let mut invalid = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let normalized = record.normalized();
            if !normalized.meets_minimum() {
                outcomes[i] = Some(RecordOutcome::InvalidDatapoints);
                invalid.push(RecordOutcome::InvalidDatapoints);
                continue;
            }
            let key = CacheKey::new(&normalized, flags);
            match inner.pending.claim(&key) {
                Claim::Mine => mine.push((i, normalized, key)),
                Claim::Waiting(receiver) => waiting.push((i, receiver)),
            }
        }
        inner.totals.count(&invalid);
        let claims = Claims {
            client: self.clone(),
            keys: mine.iter().map(|(_, _, key)| key.clone()).collect(),
        };
        // The claimed records are answered on a task of their own, spawned before this
        // function first waits: records of other callers waiting on these keys never depend on
        // this caller being polled, or even kept.
        let client = self.clone();
        let task = tokio::spawn(async move { client.answer_claimed(mine, claims, flags).await });
        let (answered, mut batch) = task.await.map_err(|e| Error::Request {
            endpoint: "/bulk-enrich-person",
            reason: format!("the request task ended abnormally: {e}"),
        })??;
        for (i, outcome) in answered {
            outcomes[i] = Some(outcome);
        }

        // Records that another record with the same datapoints answered, at no cost.
        for (i, receiver) in waiting {
            let outcome = receiver.await.unwrap_or_else(|_| RecordOutcome::Failed {
                reason: "a record with the same datapoints was not answered".into(),
            });
            // A duplicate is a record answered by another; one that shares its failure or
            // deferral is counted as failed or deferred only.
            if !matches!(
                outcome,
                RecordOutcome::Failed { .. } | RecordOutcome::Deferred { .. }
            ) {
                batch.duplicates += 1;
                add(&inner.totals.duplicates, 1);
            }
            inner.totals.count(std::slice::from_ref(&outcome));
            outcomes[i] = Some(outcome);
        }

        batch.records = outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(RecordOutcome::Failed {
                    reason: "internal error: the record was not processed".into(),
                })
            })
            .collect();
        Ok(batch)
    }

    /// Answers the records this caller claimed: from the response cache when it serves them,
    /// else by sending them, 50 to a request. Every answer is handed to the records waiting
    /// for the same key; claims still held when this ends (an error) are released.
    async fn answer_claimed(
        &self,
        mine: Vec<(usize, Datapoints, CacheKey)>,
        mut claims: Claims,
        flags: EnrichFlags,
    ) -> Result<(Vec<(usize, RecordOutcome)>, BatchOutcome)> {
        let inner = &self.inner;
        let mut batch = BatchOutcome::default();
        let mut answered = Vec::with_capacity(mine.len());
        if mine.is_empty() {
            return Ok((answered, batch));
        }
        // Answers already in the response cache cost nothing and send nothing. Reads touch the
        // disk: off the async workers.
        let keys: Vec<CacheKey> = mine.iter().map(|(_, _, key)| key.clone()).collect();
        let cache = inner.cache.clone();
        let cached = match tokio::task::spawn_blocking(move || cache.get_many(&keys)).await {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                tracing::warn!("{e}; the records are sent instead");
                vec![None; mine.len()]
            }
            Err(e) => {
                tracing::warn!(
                    "the cache lookup ended abnormally: {e}; the records are sent instead"
                );
                vec![None; mine.len()]
            }
        };
        let now = SystemTime::now();
        let mut to_send = Vec::new();
        for ((i, normalized, key), entry) in mine.into_iter().zip(cached) {
            match entry.filter(|e| e.serves(flags, inner.settings.cache_ttl, now)) {
                Some(entry) => {
                    let outcome = entry.into_outcome();
                    if inner.pending.answered_here(&key) {
                        batch.duplicates += 1;
                        add(&inner.totals.duplicates, 1);
                    } else {
                        batch.cached += 1;
                        add(&inner.totals.cached, 1);
                    }
                    inner.totals.count(std::slice::from_ref(&outcome));
                    claims.publish(&key, &outcome);
                    answered.push((i, outcome));
                }
                None => to_send.push((i, normalized, key)),
            }
        }

        for chunk in to_send.chunks(self.max_request_records()) {
            let datapoints: Vec<Datapoints> = chunk.iter().map(|(_, d, _)| d.clone()).collect();
            let mut answer = self.send_request(&datapoints, flags).await?;
            let records = std::mem::take(&mut answer.records);
            for ((i, _, key), outcome) in chunk.iter().zip(records) {
                claims.publish(key, &outcome);
                answered.push((*i, outcome));
            }
            batch.absorb(answer);
        }
        Ok((answered, batch))
    }

    /// Commits the answers to the response cache before anyone sees them, so a crash after
    /// this point loses nothing that was paid for. Failed and deferred records are not stored:
    /// a later run sends them.
    async fn remember(&self, keys: &[CacheKey], outcomes: &[RecordOutcome], flags: EnrichFlags) {
        let now = SystemTime::now();
        let entries: Vec<(CacheKey, CacheEntry)> = keys
            .iter()
            .zip(outcomes)
            .filter_map(|(key, outcome)| {
                CacheEntry::from_outcome(outcome, flags, now).map(|entry| (key.clone(), entry))
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        let cache = self.inner.cache.clone();
        let count = entries.len() as u64;
        let stored = tokio::task::spawn_blocking(move || cache.put_many(&entries)).await;
        let error = match stored {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the cache write ended abnormally: {e}"),
        };
        add(&self.inner.totals.cache_errors, count);
        tracing::error!("{error}: {count} answers were not cached; a re-run sends them again");
    }

    /// Sends one request of at most 50 normalised, valid records, with pacing and retries.
    fn send_request<'a>(
        &'a self,
        records: &'a [Datapoints],
        flags: EnrichFlags,
    ) -> futures::future::BoxFuture<'a, Result<BatchOutcome>> {
        Box::pin(async move {
            let mut stats = BatchOutcome::default();
            if records.is_empty() {
                return Ok(stats);
            }
            let mut outcome = match self
                .send_request_counted(records, flags, &mut stats)
                .await?
            {
                Sent::Settled(outcome) => outcome,
                Sent::Split(size) => {
                    // The first `size` records go now; the rest follows as requests of its
                    // own (sent, split again, or deferred).
                    let size = size.clamp(1, records.len().saturating_sub(1).max(1));
                    tracing::debug!(
                        records = records.len(),
                        size,
                        "splitting a request to what the limits allow"
                    );
                    let (first, rest) = records.split_at(size);
                    stats.absorb(self.send_request(first, flags).await?);
                    stats.absorb(self.send_request(rest, flags).await?);
                    return Ok(stats);
                }
            };
            outcome.requests += stats.requests;
            outcome.retries = stats.retries;
            outcome.rate_limited = stats.rate_limited;
            outcome.quota_wait = stats.quota_wait;
            Ok(outcome)
        })
    }

    /// [`Client::send_request`], counting retries, rate limits and quota waits in `stats`.
    async fn send_request_counted(
        &self,
        records: &[Datapoints],
        flags: EnrichFlags,
        stats: &mut BatchOutcome,
    ) -> Result<Sent> {
        let inner = &self.inner;
        let n = records.len();
        let keys: Vec<CacheKey> = records.iter().map(|r| CacheKey::new(r, flags)).collect();
        // `requests`: the attempts already made for these records.
        let defer_all = |reason: DeferReason, retry_at: Option<SystemTime>, requests: u32| {
            let records = vec![RecordOutcome::Deferred { reason, retry_at }; n];
            inner.totals.count(&records);
            Ok(Sent::Settled(BatchOutcome {
                records,
                requests,
                ..Default::default()
            }))
        };
        if inner.stopped.load(Ordering::SeqCst) {
            return defer_all(DeferReason::InsufficientCredits, None, 0);
        }
        // The budget is checked against the worst case of everything in flight.
        let worst_case = n as i64 * if flags.reveals_mobile() { 10 } else { 1 };
        let _budget = match self.reserve_budget(worst_case) {
            Some(guard) => guard,
            None => return defer_all(DeferReason::Budget, None, 0),
        };

        let request = BulkEnrichRequest {
            flags,
            data: records
                .iter()
                .enumerate()
                .map(|(i, datapoints)| BulkRecord {
                    identifier: format!("r{i}"),
                    datapoints: datapoints.clone(),
                })
                .collect(),
        };
        let body = serde_json::to_vec(&request).map_err(|e| Error::Request {
            endpoint: "/bulk-enrich-person",
            reason: format!("cannot encode the request: {e}"),
        })?;
        let started = Instant::now();
        let deadline = started + inner.settings.batch_timeout;
        let mut requests = 0u32;

        loop {
            // Limits the server reported since the request was formed may be lower than it.
            if n > 1 && n > self.max_request_records() {
                stats.requests += requests;
                return Ok(Sent::Split(self.max_request_records()));
            }
            let now = Instant::now();
            let patience = inner
                .settings
                .max_quota_wait
                .min(deadline.saturating_duration_since(now));
            let reservation = match inner.limiter.reserve(now, n as u64, patience) {
                Admission::Send(reservation) => reservation,
                Admission::Defer { until, window } => {
                    // The day's last records of quota are used rather than left idle.
                    let left = inner.limiter.left_today(now) as usize;
                    if window == QuotaWindow::Day && n > 1 && left > 0 && left < n {
                        stats.requests += requests;
                        return Ok(Sent::Split(left));
                    }
                    let reason = match window {
                        QuotaWindow::Day => DeferReason::DailyQuota,
                        _ => DeferReason::RateLimited,
                    };
                    let retry_at = SystemTime::now() + until.saturating_duration_since(now);
                    return defer_all(reason, Some(retry_at), requests);
                }
            };
            let wait = reservation.send_at.saturating_duration_since(now);
            add(&inner.totals.quota_wait_ms, wait.as_millis() as u64);
            stats.quota_wait += wait;
            tokio::time::sleep_until(reservation.send_at.into()).await;

            // Held until the answer is in the cache: `wait_idle` then means "every answer that
            // was paid for is stored".
            let permit = inner
                .in_flight
                .acquire()
                .await
                .map_err(|_| Error::Request {
                    endpoint: "/bulk-enrich-person",
                    reason: "the client was shut down".into(),
                })?;
            // Checked again at the last moment: the job may have been stopped, or the account
            // run dry, while this request waited for quota or a slot.
            if inner.halted.load(Ordering::SeqCst) {
                inner.limiter.release(reservation);
                return defer_all(DeferReason::Stopped, None, requests);
            }
            if inner.stopped.load(Ordering::SeqCst) {
                inner.limiter.release(reservation);
                return defer_all(DeferReason::InsufficientCredits, None, requests);
            }
            requests += 1;
            add(&inner.totals.requests, 1);
            let attempt = self.attempt(&body, reservation).await;
            if !matches!(attempt, Attempt::Answered(_)) {
                drop(permit);
            }
            match attempt {
                Attempt::Answered(response) => {
                    let total_cost = response.total_cost;
                    let (records, warning) = reconcile(n, response, flags);
                    inner.totals.count(&records);
                    inner
                        .totals
                        .credits
                        .fetch_add(total_cost, Ordering::Relaxed);
                    add(&inner.totals.cost_warnings, u64::from(warning));
                    if warning {
                        tracing::warn!(
                            total_cost,
                            "the request's total_cost is not explained by the documented prices; the difference was assigned to its first matched records"
                        );
                    }
                    self.remember(&keys, &records, flags).await;
                    add(&inner.totals.records_sent, n as u64);
                    return Ok(Sent::Settled(BatchOutcome {
                        records,
                        total_cost,
                        requests,
                        cost_warnings: u32::from(warning),
                        records_sent: n as u32,
                        ..Default::default()
                    }));
                }
                Attempt::InvalidKey => return Err(Error::InvalidApiKey),
                Attempt::OutOfCredits => {
                    inner.stopped.store(true, Ordering::SeqCst);
                    tracing::warn!("the account is out of credits: no more records are sent");
                    return defer_all(DeferReason::InsufficientCredits, None, requests);
                }
                Attempt::Reject(reason) => {
                    let records = vec![RecordOutcome::Failed { reason }; n];
                    inner.totals.count(&records);
                    return Ok(Sent::Settled(BatchOutcome {
                        records,
                        requests,
                        ..Default::default()
                    }));
                }
                // A success status: the server processed (and may have charged) the records.
                Attempt::Garbled(reason) => {
                    let records = vec![RecordOutcome::Failed { reason }; n];
                    inner.totals.count(&records);
                    add(&inner.totals.records_sent, n as u64);
                    return Ok(Sent::Settled(BatchOutcome {
                        records,
                        requests,
                        records_sent: n as u32,
                        ..Default::default()
                    }));
                }
                Attempt::Retry {
                    reason,
                    rate_limited,
                    wait,
                } => {
                    let now = Instant::now();
                    if rate_limited {
                        add(&inner.totals.rate_limited, 1);
                        stats.rate_limited += 1;
                    }
                    let backoff = self.backoff(requests);
                    // After a rate limit every caller waits: for the reset when the headers
                    // give it, else for the backoff.
                    let resume = match (rate_limited, wait) {
                        (true, Some((_, reset))) => now + reset,
                        (true, None) => now + backoff,
                        (false, _) => now,
                    };
                    if rate_limited {
                        let window = wait.map_or(QuotaWindow::Minute, |(window, _)| window);
                        inner.limiter.block_until(resume, window);
                    }
                    let next_try = resume.max(
                        now + if rate_limited {
                            Duration::ZERO
                        } else {
                            backoff
                        },
                    );
                    let out_of_attempts = requests >= inner.settings.retry.max_attempts;
                    if out_of_attempts || next_try > deadline {
                        if rate_limited {
                            let day = matches!(wait, Some((QuotaWindow::Day, _)));
                            let reason = if day {
                                DeferReason::DailyQuota
                            } else {
                                DeferReason::RateLimited
                            };
                            let retry_at =
                                SystemTime::now() + resume.saturating_duration_since(now);
                            return defer_all(reason, Some(retry_at), requests);
                        }
                        let records = vec![
                            RecordOutcome::Failed {
                                reason: format!("{reason} (gave up after {requests} attempts)"),
                            };
                            n
                        ];
                        inner.totals.count(&records);
                        return Ok(Sent::Settled(BatchOutcome {
                            records,
                            requests,
                            ..Default::default()
                        }));
                    }
                    tracing::debug!(attempt = requests, %reason, "retrying a bulk request");
                    add(&inner.totals.retries, 1);
                    stats.retries += 1;
                    // After a rate limit the limiter holds the next send until `resume`, and
                    // that wait counts as time waiting for quota.
                    if !rate_limited {
                        tokio::time::sleep_until(next_try.into()).await;
                    }
                }
            }
        }
    }

    /// One HTTP attempt; settles the reservation (counted on success, released on failure).
    async fn attempt(&self, body: &[u8], reservation: Reservation) -> Attempt {
        let inner = &self.inner;
        let url = format!("{}/bulk-enrich-person", inner.base_url);
        let sent = inner
            .http
            .post(url)
            .header("X-KEY", inner.api_key.expose())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                inner.limiter.release(reservation);
                return Attempt::Retry {
                    reason: transport_reason(&e),
                    rate_limited: false,
                    wait: None,
                };
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = match response.bytes().await {
            Ok(body) => body,
            // A success status means the server processed (and charged) the request: sending
            // it again could pay twice, so its records fail instead.
            Err(e) if status.is_success() => {
                inner.limiter.confirm(reservation, Instant::now());
                return Attempt::Garbled(format!(
                    "HTTP {status}, but the answer could not be read ({}); not sent again, as it may have been charged",
                    transport_reason(&e)
                ));
            }
            Err(e) => {
                inner.limiter.release(reservation);
                return Attempt::Retry {
                    reason: transport_reason(&e),
                    rate_limited: false,
                    wait: None,
                };
            }
        };
        let answered_at = Instant::now();
        let quota = QuotaHeaders::from_headers(&headers);
        let attempt = match classify(status, &body, &quota) {
            // The server's words end up in outputs and logs: a server that echoes the key
            // must not leak it there.
            Attempt::Retry {
                reason,
                rate_limited,
                wait,
            } => Attempt::Retry {
                reason: self.redact(reason),
                rate_limited,
                wait,
            },
            Attempt::Reject(reason) => Attempt::Reject(self.redact(reason)),
            Attempt::Garbled(reason) => Attempt::Garbled(self.redact(reason)),
            other => other,
        };
        match attempt {
            Attempt::Answered(_) | Attempt::Garbled(_) => {
                inner.limiter.confirm(reservation, answered_at)
            }
            _ => inner.limiter.release(reservation),
        }
        inner.limiter.observe(answered_at, &quota);
        attempt
    }

    /// `text` with every occurrence of the API key replaced by `<redacted>`.
    fn redact(&self, text: String) -> String {
        let key = self.inner.api_key.expose();
        if text.contains(key) {
            text.replace(key, "<redacted>")
        } else {
            text
        }
    }

    /// Full-jitter exponential backoff before attempt `attempt + 1`.
    fn backoff(&self, attempt: u32) -> Duration {
        let retry = &self.inner.settings.retry;
        let exp = retry
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let cap = exp.min(retry.max_delay);
        let unit = self
            .inner
            .rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next_f64();
        cap.mul_f64(unit)
    }

    /// Reserves worst-case credits against `max_credits`; `None` when they do not fit.
    fn reserve_budget(&self, worst_case: i64) -> Option<BudgetGuard> {
        let inner = self.inner.clone();
        let Some(budget) = inner.settings.max_credits else {
            return Some(BudgetGuard {
                inner: None,
                credits: 0,
            });
        };
        let reserved = inner
            .credits_reserved
            .fetch_add(worst_case, Ordering::SeqCst)
            + worst_case;
        let spent = inner.totals.credits.load(Ordering::SeqCst);
        if spent + reserved > budget {
            inner
                .credits_reserved
                .fetch_sub(worst_case, Ordering::SeqCst);
            return None;
        }
        Some(BudgetGuard {
            inner: Some(inner),
            credits: worst_case,
        })
    }
}

/// Returns reserved budget when the request is settled (its real cost is in the totals by then).
struct BudgetGuard {
    inner: Option<Arc<ClientInner>>,
    credits: i64,
}

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        if let Some(inner) = &self.inner {
            inner
                .credits_reserved
                .fetch_sub(self.credits, Ordering::SeqCst);
        }
    }
}

/// What a transport error was, without the URL (which could carry credentials).
fn transport_reason(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "the connection broke while reading the answer"
    } else {
        "the connection failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// Classifies an answer on its `error_code` first and its HTTP status second (reference,
/// "Errors": INTERNAL_ERROR arrives as HTTP 400, rate limits have been seen as HTTP 200).
fn classify(status: StatusCode, body: &[u8], quota: &QuotaHeaders) -> Attempt {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let error_body = json
        .as_ref()
        .filter(|v| v.get("error") == Some(&Value::Bool(true)))
        .and_then(|v| serde_json::from_value::<ErrorBody>(v.clone()).ok());
    let snippet = || {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).replace('\n', " ");
        format!("HTTP {status}: {}", text.trim())
    };
    if let Some(error) = error_body {
        let code = error.code();
        let message = match (&error.message, &error.error_code) {
            (Some(m), Some(c)) => format!("{c}: {m}"),
            (None, Some(c)) => c.clone(),
            (Some(m), None) => m.clone(),
            (None, None) => snippet(),
        };
        return match code {
            ErrorCode::RateLimited => Attempt::Retry {
                reason: format!("rate limited ({message})"),
                rate_limited: true,
                wait: quota.wait_hint(),
            },
            ErrorCode::InternalError => Attempt::Retry {
                reason: format!("the API reported an internal error ({message})"),
                rate_limited: false,
                wait: None,
            },
            ErrorCode::InvalidApiKey => Attempt::InvalidKey,
            ErrorCode::InsufficientCredits => Attempt::OutOfCredits,
            ErrorCode::InvalidRequest => {
                Attempt::Reject(format!("the API rejected the request: {message}"))
            }
            _ if status == StatusCode::UNAUTHORIZED => Attempt::InvalidKey,
            _ if status == StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                reason: format!("rate limited ({message})"),
                rate_limited: true,
                wait: quota.wait_hint(),
            },
            _ if status.is_server_error() => Attempt::Retry {
                reason: format!("the API failed ({message})"),
                rate_limited: false,
                wait: None,
            },
            _ => Attempt::Reject(format!("the API answered an error: {message}")),
        };
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Attempt::Retry {
            reason: "rate limited (HTTP 429)".into(),
            rate_limited: true,
            wait: quota.wait_hint(),
        };
    }
    if status == StatusCode::UNAUTHORIZED {
        return Attempt::InvalidKey;
    }
    if status.is_server_error() {
        return Attempt::Retry {
            reason: format!("the API or a proxy failed ({})", snippet()),
            rate_limited: false,
            wait: None,
        };
    }
    if !status.is_success() {
        return Attempt::Reject(format!("unexpected answer ({})", snippet()));
    }
    match json.map(serde_json::from_value::<BulkEnrichResponse>) {
        Some(Ok(response)) => Attempt::Answered(response),
        Some(Err(e)) => Attempt::Garbled(format!(
            "the API's answer is JSON but not the documented shape ({e}); the request may have been charged, so it was not retried"
        )),
        None => Attempt::Garbled(format!(
            "the API's answer is not JSON ({}); the request may have been charged, so it was not retried",
            snippet()
        )),
    }
}

/// Maps a response back to the `n` records of the request (identifiers `r0`..), by identifier
/// only, and assigns costs. Returns the outcomes and whether the cost needed a correction.
fn reconcile(
    n: usize,
    response: BulkEnrichResponse,
    flags: EnrichFlags,
) -> (Vec<RecordOutcome>, bool) {
    let index = |identifier: &str| -> Option<usize> {
        identifier
            .strip_prefix('r')
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < n && format!("r{i}") == identifier)
    };
    let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; n];
    let mut listed = vec![0u32; n];
    let mut unknown = Vec::new();
    let mut place = |identifier: &str, outcome: RecordOutcome| match index(identifier) {
        Some(i) => {
            listed[i] += 1;
            outcomes[i] = Some(outcome);
        }
        None => unknown.push(identifier.to_string()),
    };
    for matched in response.matched {
        let MatchedRecord {
            identifier,
            free_enrichment,
            person,
            company,
            ..
        } = matched;
        place(
            &identifier,
            RecordOutcome::Matched(Box::new(Match {
                person,
                company,
                free_enrichment: free_enrichment.unwrap_or(false),
                cost: 0,
            })),
        );
    }
    for identifier in &response.not_matched {
        place(identifier, RecordOutcome::NotMatched);
    }
    for identifier in &response.invalid_datapoints {
        place(identifier, RecordOutcome::InvalidDatapoints);
    }
    if !unknown.is_empty() {
        tracing::warn!(
            ?unknown,
            "the API's answer names identifiers that were not sent; ignored"
        );
    }
    let mut outcomes: Vec<RecordOutcome> = outcomes
        .into_iter()
        .zip(&listed)
        .map(|(outcome, &times)| match (outcome, times) {
            (Some(outcome), 1) => outcome,
            (_, 0) => RecordOutcome::Failed {
                reason: "the API's answer did not mention this record".into(),
            },
            (_, _) => RecordOutcome::Failed {
                reason: "the API's answer listed this record more than once".into(),
            },
        })
        .collect();
    let warning = assign_costs(&mut outcomes, response.total_cost, flags);
    (outcomes, warning)
}

/// Sets each match's cost so that they sum to `total_cost` (see [`Client::bulk_enrich`]).
/// Returns whether the documented prices had to be corrected.
fn assign_costs(outcomes: &mut [RecordOutcome], total_cost: i64, flags: EnrichFlags) -> bool {
    let price = |m: &Match, mobile_attempts_cost_10: bool| -> i64 {
        if m.free_enrichment {
            return 0;
        }
        let revealed = m
            .person
            .as_ref()
            .and_then(|p| p.mobile.as_ref())
            .is_some_and(|mobile| mobile.revealed == Some(true) && mobile.mobile.is_some());
        if revealed || (mobile_attempts_cost_10 && flags.reveals_mobile()) {
            10
        } else {
            1
        }
    };
    let sum_with = |outcomes: &[RecordOutcome], reading: bool| -> i64 {
        outcomes
            .iter()
            .filter_map(|o| match o {
                RecordOutcome::Matched(m) => Some(price(m, reading)),
                _ => None,
            })
            .sum()
    };
    // The other reading of the uncertain rule, only when it alone explains the total.
    let reading = sum_with(outcomes, false) != total_cost && sum_with(outcomes, true) == total_cost;
    for outcome in outcomes.iter_mut() {
        if let RecordOutcome::Matched(m) = outcome {
            m.cost = price(m, reading);
        }
    }
    let mut difference = total_cost - sum_with(outcomes, reading);
    if difference == 0 {
        return false;
    }
    let mut matches = outcomes.iter_mut().filter_map(|o| match o {
        RecordOutcome::Matched(m) => Some(m),
        _ => None,
    });
    if difference > 0 {
        if let Some(first) = matches.next() {
            first.cost += difference;
        }
        // With nothing matched there is no record to carry a charge; the request's total still
        // counts in the totals and the warning says so.
    } else {
        for m in matches {
            let taken = m.cost.min(-difference);
            m.cost -= taken;
            difference += taken;
            if difference == 0 {
                break;
            }
        }
    }
    true
}

/// What sending one request came to.
enum Sent {
    /// Every record has its outcome.
    Settled(BatchOutcome),
    /// The limits allow only this many of the records now: split the request.
    Split(usize),
}

/// Keys a caller claimed and has not published yet; dropping it releases them, so records
/// waiting on them never wait forever (they fail instead).
struct Claims {
    client: Client,
    keys: Vec<CacheKey>,
}

impl Claims {
    /// Hands `key`'s outcome to the records waiting for it; the key is no longer claimed.
    fn publish(&mut self, key: &CacheKey, outcome: &RecordOutcome) {
        if let Some(at) = self.keys.iter().position(|k| k == key) {
            self.keys.swap_remove(at);
            self.client.inner.pending.publish(key, outcome);
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        for key in &self.keys {
            self.client.inner.pending.release(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::{Person, PersonMobile};

    fn matched(id: &str, free: Option<bool>, mobile: bool) -> MatchedRecord {
        MatchedRecord {
            identifier: id.into(),
            free_enrichment: free,
            person: Some(Person {
                mobile: Some(PersonMobile {
                    revealed: Some(mobile),
                    mobile: mobile.then(|| "+15550000000".to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            company: None,
            extra: Default::default(),
        }
    }

    fn costs(outcomes: &[RecordOutcome]) -> Vec<i64> {
        outcomes.iter().map(RecordOutcome::cost).collect()
    }

    #[test]
    fn records_are_reconciled_by_identifier_whatever_the_order() {
        let response = BulkEnrichResponse {
            total_cost: 11,
            matched: vec![matched("r3", None, true), matched("r0", Some(false), false)],
            not_matched: vec!["r1".into()],
            invalid_datapoints: vec!["r2".into()],
            ..Default::default()
        };
        let (outcomes, warning) = reconcile(4, response, EnrichFlags::default());
        assert!(!warning);
        let statuses: Vec<_> = outcomes.iter().map(RecordOutcome::status).collect();
        assert_eq!(
            statuses,
            [
                RecordStatus::Matched,
                RecordStatus::NotMatched,
                RecordStatus::InvalidDatapoints,
                RecordStatus::Matched
            ]
        );
        assert_eq!(costs(&outcomes), [1, 0, 0, 10]);
    }

    #[test]
    fn contract_breaches_fail_the_affected_records_only() {
        let response = BulkEnrichResponse {
            total_cost: 1,
            matched: vec![matched("r0", None, false), matched("zz", None, false)],
            not_matched: vec!["r1".into(), "r1".into()],
            ..Default::default()
        };
        let (outcomes, _) = reconcile(3, response, EnrichFlags::default());
        assert_eq!(outcomes[0].status(), RecordStatus::Matched);
        assert!(
            matches!(&outcomes[1], RecordOutcome::Failed { reason } if reason.contains("more than once"))
        );
        assert!(
            matches!(&outcomes[2], RecordOutcome::Failed { reason } if reason.contains("did not mention"))
        );
    }

    #[test]
    fn costs_always_sum_to_the_total_cost() {
        let flags = EnrichFlags {
            enrich_mobile: true,
            ..Default::default()
        };
        // Free re-enrichment flagged: 0.
        let response = BulkEnrichResponse {
            total_cost: 10,
            matched: vec![
                matched("r0", Some(true), true),
                matched("r1", Some(false), true),
            ],
            ..Default::default()
        };
        let (outcomes, warning) = reconcile(2, response, flags);
        assert_eq!((costs(&outcomes), warning), (vec![0, 10], false));
        // The other reading: an enrich_mobile match without a mobile costs 10.
        let response = BulkEnrichResponse {
            total_cost: 20,
            matched: vec![matched("r0", None, false), matched("r1", None, true)],
            ..Default::default()
        };
        let (outcomes, warning) = reconcile(2, response, flags);
        assert_eq!((costs(&outcomes), warning), (vec![10, 10], false));
        // Unexplained shortfall (free re-enrichments not flagged): taken from the first matches.
        let response = BulkEnrichResponse {
            total_cost: 1,
            matched: vec![
                matched("r0", None, false),
                matched("r1", None, false),
                matched("r2", None, false),
            ],
            ..Default::default()
        };
        let (outcomes, warning) = reconcile(3, response, EnrichFlags::default());
        assert_eq!((costs(&outcomes), warning), (vec![0, 0, 1], true));
        // Unexplained surplus: on the first match.
        let response = BulkEnrichResponse {
            total_cost: 5,
            matched: vec![matched("r1", None, false), matched("r0", None, false)],
            not_matched: vec![],
            ..Default::default()
        };
        let (outcomes, warning) = reconcile(2, response, EnrichFlags::default());
        assert_eq!((costs(&outcomes), warning), (vec![4, 1], true));
    }

    #[test]
    fn the_api_key_is_never_shown() {
        let key = ApiKey::new("super-secret-key-123").unwrap();
        assert!(!format!("{key:?} {key}").contains("super-secret"));
        let client = Client::builder().api_key(key).build().unwrap();
        assert!(!format!("{client:?}").contains("super-secret"));
        assert!(ApiKey::new("  \n").is_err());
    }

    #[test]
    fn answers_are_classified_on_the_error_code() {
        let quota = QuotaHeaders::default();
        let body =
            |code: &str| format!(r#"{{"error": true, "error_code": "{code}"}}"#).into_bytes();
        let is_retry = |a: &Attempt, limited: bool| matches!(a, Attempt::Retry { rate_limited, .. } if *rate_limited == limited);
        assert!(is_retry(
            &classify(StatusCode::BAD_REQUEST, &body("INTERNAL_ERROR"), &quota),
            false
        ));
        assert!(is_retry(
            &classify(StatusCode::OK, &body("RATE_LIMIT_EXCEEDED"), &quota),
            true
        ));
        assert!(is_retry(
            &classify(StatusCode::TOO_MANY_REQUESTS, b"slow down", &quota),
            true
        ));
        assert!(is_retry(
            &classify(StatusCode::BAD_GATEWAY, b"<html>", &quota),
            false
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, &body("INVALID_API_KEY"), &quota),
            Attempt::InvalidKey
        ));
        assert!(matches!(
            classify(
                StatusCode::BAD_REQUEST,
                &body("INSUFFICIENT_CREDITS"),
                &quota
            ),
            Attempt::OutOfCredits
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &body("INVALID_REQUEST"), &quota),
            Attempt::Reject(_)
        ));
        assert!(matches!(
            classify(StatusCode::OK, b"<html>oops</html>", &quota),
            Attempt::Garbled(_)
        ));
    }
}
