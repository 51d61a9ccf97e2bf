//! `prospeo.*` options: session-wide with `SET prospeo.enrich_mobile = true`, or per call of
//! `enrich_person(input, named_struct(...))`, or as flags of the `prospeo` binary. Every front
//! door goes through [`OptionKey`] and [`EnrichOptions::set_key`], so all give the same errors
//! for a bad name or value, and through [`EnrichOptions::client_builder`] to make a client.
//!
//! The API key is deliberately not an option: SQL text ends up in logs and query histories.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};

use crate::api::ClientBuilder;
use crate::cache::ResponseCache;
use crate::coordinator::CoordinatorUrl;
use crate::datapoints::Datapoint;
use crate::error::Error;
use crate::mapping::parse_mapping_arg;
pub use crate::settings::{OptionKey, OptionSpec};
use crate::vendor::is_vendor;
use crate::vendor::plan::{Plan, RateLimits};
use crate::vendor::wire::EnrichFlags;

/// The environment variable naming the response cache file when `prospeo.cache_path` is unset.
pub const ENV_CACHE: &str = "PROSPEO_CACHE";

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// Parquet.
    Parquet,
    /// CSV (or TSV: the delimiter is an option).
    Csv,
    /// Newline-delimited JSON.
    Json,
}

/// The suffixes of compressed files (which this build does not read).
pub(crate) const COMPRESSED_SUFFIXES: [&str; 4] = [".gz", ".zst", ".bz2", ".xz"];

impl InputFormat {
    /// The format a path's extension names (`.parquet`, `.csv`, `.tsv`, `.json`, `.ndjson`,
    /// `.jsonl`, also behind `.gz`, `.zst`, ... so that the error can say the file is
    /// compressed), if any.
    pub fn from_path(path: &str) -> Option<Self> {
        let lower = path.to_ascii_lowercase();
        let lower = lower.trim_end_matches('/');
        let lower = COMPRESSED_SUFFIXES
            .iter()
            .find_map(|c| lower.strip_suffix(c))
            .unwrap_or(lower);
        let extension = lower.rsplit('.').next()?;
        match extension {
            "parquet" | "pq" => Some(InputFormat::Parquet),
            "csv" | "tsv" => Some(InputFormat::Csv),
            "json" | "ndjson" | "jsonl" => Some(InputFormat::Json),
            _ => None,
        }
    }

    /// The extension files of this format carry.
    pub fn extension(self) -> &'static str {
        match self {
            InputFormat::Parquet => ".parquet",
            InputFormat::Csv => ".csv",
            InputFormat::Json => ".json",
        }
    }
}

impl FromStr for InputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "parquet" => Ok(InputFormat::Parquet),
            "csv" => Ok(InputFormat::Csv),
            "json" | "ndjson" | "jsonl" => Ok(InputFormat::Json),
            other => Err(format!(
                "unknown input format `{other}`: expected parquet, csv or ndjson"
            )),
        }
    }
}

impl fmt::Display for InputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputFormat::Parquet => "parquet",
            InputFormat::Csv => "csv",
            InputFormat::Json => "ndjson",
        })
    }
}

impl FromStr for OptionKey {
    type Err = Error;

    /// Parses a name, with or without `prospeo.`, ignoring case.
    fn from_str(s: &str) -> Result<Self, Error> {
        let name = s.trim().to_ascii_lowercase();
        let bare = name.strip_prefix("prospeo.").unwrap_or(&name);
        OptionKey::ALL
            .into_iter()
            .find(|k| k.name() == bare)
            .ok_or_else(|| Error::UnknownOption {
                name: bare.to_string(),
            })
    }
}

/// Every `prospeo.*` option.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrichOptions {
    /// Only return people with a verified email (`not_matched` otherwise).
    pub only_verified_email: bool,
    /// Reveal mobiles (10 credits a match with a mobile instead of 1).
    pub enrich_mobile: bool,
    /// Only return people with a mobile; implies `enrich_mobile`.
    pub only_verified_mobile: bool,
    /// Requests in flight at once, across every partition of the query.
    pub concurrency: usize,
    /// The plan whose rate limits pace the requests.
    pub plan: Plan,
    /// Custom records-per-second limit (overrides the plan's).
    pub per_second: Option<u64>,
    /// Custom records-per-minute limit.
    pub per_minute: Option<u64>,
    /// Custom records-per-day limit.
    pub per_day: Option<u64>,
    /// Spend at most this many credits; the rest is deferred.
    pub max_credits: Option<u64>,
    /// Prefix of the enrichment columns.
    pub prefix: String,
    /// The API's base URL (e.g. a sandbox's); `PROSPEO_BASE_URL` or the vendor's when unset.
    pub base_url: Option<String>,
    /// Timeout of one HTTP request (`request_timeout_secs`).
    pub request_timeout: Duration,
    /// The input's format when its extension does not say it.
    pub format: Option<InputFormat>,
    /// Whether CSV input has a header row.
    pub csv_has_header: bool,
    /// CSV delimiter.
    pub csv_delimiter: u8,
    /// CSV quote character.
    pub csv_quote: u8,
    /// Explicit column mappings, as `column=datapoint` pairs (`column=` ignores the column).
    pub map: Vec<(String, Option<Datapoint>)>,
    /// Keep answers in the persistent response cache (read before sending, written as answers
    /// arrive). Off: answers go to a private temporary file (deleted at the end) for the
    /// session only.
    pub cache: bool,
    /// The cache file; `PROSPEO_CACHE`, else the platform's cache directory, when unset (see
    /// [`crate::cache::ResponseCache::default_path`]).
    pub cache_path: Option<String>,
    /// Cached answers older than this are asked again; never when unset.
    pub cache_ttl: Option<Duration>,
    /// The coordinator shared with every worker of the key; `PROSPEO_COORDINATOR` when unset.
    pub coordinator: Option<CoordinatorUrl>,
    /// How long this worker's claims outlive its last heartbeat.
    pub coordinator_lease: Duration,
    /// How long a lost coordinator is waited for.
    pub coordinator_wait: Duration,
}

impl Default for EnrichOptions {
    fn default() -> Self {
        EnrichOptions {
            only_verified_email: false,
            enrich_mobile: false,
            only_verified_mobile: false,
            concurrency: 4,
            plan: Plan::Pro,
            per_second: None,
            per_minute: None,
            per_day: None,
            max_credits: None,
            prefix: crate::output::DEFAULT_PREFIX.to_string(),
            base_url: None,
            request_timeout: Duration::from_secs(60),
            format: None,
            csv_has_header: true,
            csv_delimiter: b',',
            csv_quote: b'"',
            map: Vec::new(),
            cache: true,
            cache_path: None,
            cache_ttl: None,
            coordinator: None,
            coordinator_lease: Duration::from_secs(30),
            coordinator_wait: Duration::from_secs(60),
        }
    }
}

/// Parses a duration: `30d`, `12h`, `90m` (or `90min`), `45s`, `250ms`, with a whole or
/// decimal number (`1.5h`); a bare number is seconds. The one duration parser of the crate and
/// the binary: cache TTLs, request timeouts, the sandbox's latencies all take the same text.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let not_a_duration =
        || format!("`{text}` is not a duration: expected e.g. 30d, 12h, 90m, 45s or 250ms");
    if number.is_empty() {
        return Err(not_a_duration());
    }
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use d, h, m, s or ms"
            ));
        }
    };
    if let Ok(n) = number.parse::<u64>() {
        return Ok(Duration::from_millis(n.saturating_mul(millis_per_unit)));
    }
    let value: f64 = number.parse().map_err(|_| not_a_duration())?;
    Duration::try_from_secs_f64(value * millis_per_unit as f64 / 1000.0)
        .map_err(|e| format!("`{text}`: {e}"))
}

/// [`parse_duration`], where empty or `none` means no duration.
pub fn parse_optional_duration(text: &str) -> std::result::Result<Option<Duration>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("none") {
        Ok(None)
    } else {
        parse_duration(text).map(Some)
    }
}

/// A duration in the largest unit that keeps it whole: `30d`, `12h`, `90m`, `45s`, `250ms`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        0 => "0s".to_string(),
        ms if ms % 86_400_000 == 0 => format!("{}d", ms / 86_400_000),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

fn bad_value(key: OptionKey, value: &str, expected: &str) -> Error {
    Error::InvalidOption {
        key,
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

fn parse_bool(key: OptionKey, value: &str) -> Result<bool, Error> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(bad_value(key, value, "true or false")),
    }
}

fn parse_number<T: FromStr>(key: OptionKey, value: &str) -> Result<T, Error> {
    value
        .trim()
        .parse()
        .map_err(|_| bad_value(key, value, "a non-negative whole number"))
}

fn parse_optional<T: FromStr>(key: OptionKey, value: &str) -> Result<Option<T>, Error> {
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("none") || v.eq_ignore_ascii_case("null") {
        Ok(None)
    } else {
        parse_number(key, v).map(Some)
    }
}

impl EnrichOptions {
    /// Sets one option by name (without the `prospeo.` prefix, any case), validating the
    /// value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.set_key(key.parse()?, value)
    }

    /// Sets one option, validating the value: the one validation of every front door.
    pub fn set_key(&mut self, key: OptionKey, value: &str) -> Result<(), Error> {
        match key {
            OptionKey::OnlyVerifiedEmail => self.only_verified_email = parse_bool(key, value)?,
            OptionKey::EnrichMobile => self.enrich_mobile = parse_bool(key, value)?,
            OptionKey::OnlyVerifiedMobile => self.only_verified_mobile = parse_bool(key, value)?,
            OptionKey::Concurrency => {
                let n: usize = parse_number(key, value)?;
                if n == 0 || n > 256 {
                    return Err(bad_value(key, value, "a number from 1 to 256"));
                }
                self.concurrency = n;
            }
            OptionKey::Plan => {
                self.plan = value
                    .parse()
                    .map_err(|_| bad_value(key, value, "starter, growth or pro"))?
            }
            OptionKey::PerSecond => self.per_second = parse_optional(key, value)?,
            OptionKey::PerMinute => self.per_minute = parse_optional(key, value)?,
            OptionKey::PerDay => self.per_day = parse_optional(key, value)?,
            OptionKey::MaxCredits => self.max_credits = parse_optional(key, value)?,
            OptionKey::Prefix => {
                let prefix = value.trim();
                if prefix.is_empty()
                    || !prefix
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(bad_value(
                        key,
                        value,
                        "letters, digits and underscores, e.g. prospeo_",
                    ));
                }
                self.prefix = prefix.to_string();
            }
            OptionKey::BaseUrl => {
                let url = value.trim();
                self.base_url = if url.is_empty() {
                    None
                } else if let Some(url) = crate::api::builder::http_base_url(url) {
                    Some(url)
                } else {
                    return Err(bad_value(
                        key,
                        value,
                        "a URL starting with http:// or https://",
                    ));
                };
            }
            OptionKey::RequestTimeoutSecs => {
                let expected = "a duration of more than 0: seconds, or e.g. 90s, 2m";
                let timeout = parse_duration(value).map_err(|_| bad_value(key, value, expected))?;
                if timeout.is_zero() {
                    return Err(bad_value(key, value, expected));
                }
                self.request_timeout = timeout;
            }
            OptionKey::Format => {
                self.format = if value.trim().is_empty() {
                    None
                } else {
                    Some(
                        value
                            .parse()
                            .map_err(|_| bad_value(key, value, "parquet, csv or ndjson"))?,
                    )
                }
            }
            OptionKey::CsvHasHeader => self.csv_has_header = parse_bool(key, value)?,
            OptionKey::CsvDelimiter => {
                let v = if value == "\\t" { "\t" } else { value };
                match v.as_bytes() {
                    [b] if b.is_ascii() => self.csv_delimiter = *b,
                    _ => return Err(bad_value(key, value, "a single ASCII character")),
                }
            }
            OptionKey::CsvQuote => match value.as_bytes() {
                [b] if b.is_ascii() => self.csv_quote = *b,
                _ => return Err(bad_value(key, value, "a single ASCII character")),
            },
            OptionKey::Cache => self.cache = parse_bool(key, value)?,
            OptionKey::CachePath => {
                self.cache_path = Some(value.trim().to_string()).filter(|p| !p.is_empty())
            }
            OptionKey::CacheTtl => {
                self.cache_ttl = parse_optional_duration(value).map_err(|_| {
                    bad_value(key, value, "a duration such as 30d, 12h or 90m, or none")
                })?
            }
            OptionKey::Map => self.set_map(value.split(','))?,
            OptionKey::Coordinator => {
                let url = value.trim();
                // The parse error never echoes the value: it may hold a password.
                self.coordinator = match url {
                    "" => None,
                    url => Some(CoordinatorUrl::parse(url)?),
                };
            }
            OptionKey::CoordinatorLeaseSecs | OptionKey::CoordinatorWaitSecs => {
                let lease = key == OptionKey::CoordinatorLeaseSecs;
                let expected = match lease {
                    true => "a duration of at least 1s: seconds, or e.g. 30s, 2m",
                    false => "a duration: seconds, or e.g. 60s, 5m",
                };
                let duration =
                    parse_duration(value).map_err(|_| bad_value(key, value, expected))?;
                match lease {
                    true if duration < Duration::from_secs(1) => {
                        return Err(bad_value(key, value, expected));
                    }
                    true => self.coordinator_lease = duration,
                    false => self.coordinator_wait = duration,
                }
            }
        }
        Ok(())
    }

    /// Replaces the explicit mappings with `COLUMN=datapoint` pairs (`COLUMN=` ignores the
    /// column; no pair clears them). Each pair is one item, so a column name may hold a comma.
    pub fn set_map<'a>(&mut self, pairs: impl IntoIterator<Item = &'a str>) -> Result<(), Error> {
        let mut map: Vec<(String, Option<Datapoint>)> = Vec::new();
        for pair in pairs.into_iter().filter(|p| !p.trim().is_empty()) {
            let (column, datapoint) =
                parse_mapping_arg(pair.trim()).map_err(|reason| Error::InvalidMap { reason })?;
            map.retain(|(c, _)| c != &column);
            map.push((column, datapoint));
        }
        self.map = map;
        Ok(())
    }

    /// The flags sent with every request.
    pub fn flags(&self) -> EnrichFlags {
        EnrichFlags {
            only_verified_email: self.only_verified_email,
            enrich_mobile: self.enrich_mobile || self.only_verified_mobile,
            only_verified_mobile: self.only_verified_mobile,
        }
    }

    /// The rate limits in force: the plan's, with custom numbers over them.
    pub fn limits(&self) -> RateLimits {
        let plan = self.plan.limits();
        RateLimits::new(
            self.per_second.unwrap_or(plan.per_second),
            self.per_minute.unwrap_or(plan.per_minute),
            self.per_day.unwrap_or(plan.per_day),
        )
    }

    /// The one step from options to client settings, for every front door: `builder` (which
    /// holds the key, and the base URL when the options have none) with the options'
    /// base URL, limits, concurrency, request timeout, credit budget and response cache over
    /// it.
    pub fn client_builder(&self, builder: ClientBuilder) -> Result<ClientBuilder, Error> {
        let mut builder = builder;
        if let Some(url) = &self.base_url {
            builder = builder.base_url(url.clone());
        }
        builder = builder
            .limits(self.limits())
            .max_in_flight(self.concurrency)
            .request_timeout(self.request_timeout)
            .max_credits(
                self.max_credits
                    .map(|c| i64::try_from(c).unwrap_or(i64::MAX)),
            )
            .cache_ttl(self.cache_ttl)
            .coordinator_lease(self.coordinator_lease)
            .coordinator_wait(self.coordinator_wait);
        let coordinator = self.coordinator_url()?;
        let shared = coordinator.is_some();
        builder = builder.coordinator(coordinator);
        let base_url = builder.configured_base_url().to_string();
        // With a coordinator, the answers are kept there: no cache file is opened (several
        // workers on one machine would lock each other out of it).
        if let Some(path) = self.cache_file_for(&base_url)?.filter(|_| !shared) {
            // Only when the file was not chosen: a path given is the user's choice.
            if !is_vendor(&base_url)
                && self.cache_path.is_none()
                && std::env::var_os(ENV_CACHE).is_none_or(|p| p.is_empty())
                && ResponseCache::default_path()
                    .is_some_and(|vendor| vendor != path && vendor.exists())
            {
                tracing::warn!(
                    cache = %path.display(),
                    "this API is not the vendor's, so the answers of the vendor's cache file are not read; give its path (--cache, prospeo.cache_path) if this server answers for the vendor"
                );
            }
            builder = builder.cache(shared_cache(&path)?);
        }
        Ok(builder)
    }

    /// The coordinator: `coordinator`, else `PROSPEO_COORDINATOR`; `None` without either.
    pub fn coordinator_url(&self) -> Result<Option<CoordinatorUrl>, Error> {
        if let Some(url) = &self.coordinator {
            return Ok(Some(url.clone()));
        }
        match std::env::var(crate::coordinator::ENV_COORDINATOR) {
            Ok(url) if !url.trim().is_empty() => CoordinatorUrl::parse(url.trim()).map(Some),
            _ => Ok(None),
        }
    }

    /// The response cache file: `cache_path`, else `PROSPEO_CACHE`, else the platform's cache
    /// directory (a file of its own for an API other than the vendor's: see
    /// [`default_cache_file`]); `None` when `cache` is off. The API is `base_url`, else
    /// `PROSPEO_BASE_URL`, else the vendor's.
    pub fn cache_file(&self) -> Result<Option<PathBuf>, Error> {
        let base_url = match &self.base_url {
            Some(url) => url.clone(),
            None => ClientBuilder::from_env().configured_base_url().to_string(),
        };
        self.cache_file_for(&base_url)
    }

    fn cache_file_for(&self, base_url: &str) -> Result<Option<PathBuf>, Error> {
        if !self.cache {
            return Ok(None);
        }
        self.cache_path
            .as_ref()
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os(ENV_CACHE)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
            })
            .or_else(|| default_cache_file(base_url))
            .map(Some)
            .ok_or_else(|| {
                Error::Config(
                    "this platform has no cache directory: give the cache file (SET prospeo.cache_path = '...', --cache PATH or PROSPEO_CACHE), or keep none (SET prospeo.cache = false, --no-cache)".into(),
                )
            })
    }

    /// Opens the response cache [`EnrichOptions::cache_file`] names, once per process: the
    /// file is locked by the process that opens it, so every client of every session and
    /// front door shares the one handle.
    pub fn open_cache(&self) -> Result<Option<ResponseCache>, Error> {
        match self.cache_file()? {
            Some(path) => shared_cache(&path).map(Some),
            None => Ok(None),
        }
    }

    /// The values of the options that configure a client: two option sets with the same
    /// settings can share one client (one connection pool, one quota limiter).
    pub fn client_settings(&self) -> String {
        OptionKey::ALL
            .iter()
            .filter(|k| k.spec().configures_client)
            .map(|&k| format!("{k}={:?}", self.value_of(k)))
            .collect::<Vec<_>>()
            .join("|")
    }

    /// The value of one option as `SHOW ALL` prints it; `None` when unset.
    pub fn value_of(&self, key: OptionKey) -> Option<String> {
        fn opt<T: ToString>(v: &Option<T>) -> Option<String> {
            v.as_ref().map(ToString::to_string)
        }
        match key {
            OptionKey::OnlyVerifiedEmail => Some(self.only_verified_email.to_string()),
            OptionKey::EnrichMobile => Some(self.enrich_mobile.to_string()),
            OptionKey::OnlyVerifiedMobile => Some(self.only_verified_mobile.to_string()),
            OptionKey::Concurrency => Some(self.concurrency.to_string()),
            OptionKey::Plan => Some(self.plan.to_string()),
            OptionKey::PerSecond => opt(&self.per_second),
            OptionKey::PerMinute => opt(&self.per_minute),
            OptionKey::PerDay => opt(&self.per_day),
            OptionKey::MaxCredits => opt(&self.max_credits),
            OptionKey::Prefix => Some(self.prefix.clone()),
            OptionKey::BaseUrl => opt(&self.base_url),
            // Whole seconds print as a number, as the option's name promises.
            OptionKey::RequestTimeoutSecs => Some(if self.request_timeout.subsec_nanos() == 0 {
                self.request_timeout.as_secs().to_string()
            } else {
                format_duration(self.request_timeout)
            }),
            OptionKey::Format => opt(&self.format),
            OptionKey::CsvHasHeader => Some(self.csv_has_header.to_string()),
            OptionKey::CsvDelimiter => Some((self.csv_delimiter as char).to_string()),
            OptionKey::CsvQuote => Some((self.csv_quote as char).to_string()),
            OptionKey::Cache => Some(self.cache.to_string()),
            OptionKey::CachePath => opt(&self.cache_path),
            OptionKey::CacheTtl => self.cache_ttl.map(format_duration),
            OptionKey::Coordinator => opt(&self.coordinator),
            OptionKey::CoordinatorLeaseSecs => Some(format_duration(self.coordinator_lease)),
            OptionKey::CoordinatorWaitSecs => Some(format_duration(self.coordinator_wait)),
            OptionKey::Map => (!self.map.is_empty()).then(|| {
                self.map
                    .iter()
                    .map(|(c, d)| format!("{c}={}", d.map_or("", |d| d.as_str())))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
        }
    }
}

/// The response cache file in the platform's cache directory for the API at `base_url`:
/// `responses.redb` for the vendor's, and a file of its own for any other (a sandbox's, a
/// proxy's), `responses-<host>-<port>-<hash>.redb`. A sandbox's made-up answers in the default
/// file would later be served as paid ones: the cache key names the endpoint and the record,
/// not the server. The name never holds the URL's user, password, path or query (the hash, of
/// the scheme, host, port and path, tells two servers on one host apart).
pub fn default_cache_file(base_url: &str) -> Option<PathBuf> {
    let path = ResponseCache::default_path()?;
    if is_vendor(base_url) {
        return Some(path);
    }
    let (host, port, identity) = match url::Url::parse(base_url.trim()) {
        Ok(url) => {
            let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
            let port = url.port_or_known_default().unwrap_or_default();
            let identity = format!(
                "{}://{host}:{port}{}",
                url.scheme(),
                url.path().trim_end_matches('/')
            );
            (host, port, identity)
        }
        Err(_) => (String::new(), 0, base_url.trim().to_string()),
    };
    let mut name = String::from("responses-");
    for c in format!("{host}-{port}").chars() {
        match c {
            c if c.is_ascii_alphanumeric() => name.push(c),
            _ if name.ends_with('-') => {}
            _ => name.push('-'),
        }
    }
    // FNV-1a: stable across versions and platforms, unlike the standard library's hasher.
    let hash = identity.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    Some(path.with_file_name(format!("{name}-{:08x}.redb", hash as u32)))
}

/// Opens the response cache at `path` once per process: the file is locked by the process that
/// opens it, and every client of every session shares the one handle while any holds it. The
/// file closes when the last handle goes (a client, a dry run), so a long-lived process (a
/// notebook kernel) does not lock other processes out of it between jobs.
fn shared_cache(path: &Path) -> Result<ResponseCache, Error> {
    /// (process, file, handle): a forked child must not use its parent's handle (two
    /// processes committing through one redb file would corrupt it).
    type Entry = (u32, PathBuf, crate::cache::WeakCache);
    static OPEN: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let pid = std::process::id();
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cache) = open
        .iter()
        .filter(|(owner, p, _)| *owner == pid && *p == path)
        .find_map(|(_, _, weak)| weak.upgrade())
    {
        return Ok(cache);
    }
    // A handle of this process that is going: its last holder may still be closing the file.
    let closing = open.iter().any(|(owner, p, _)| *owner == pid && *p == path);
    open.retain(|(owner, _, weak)| *owner == pid && weak.upgrade().is_some());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let cache = loop {
        match ResponseCache::open(&path) {
            Err(e) if closing && e.is_cache_in_use() && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => break result?,
        }
    };
    open.push((pid, path, cache.downgrade()));
    Ok(cache)
}

/// `url` without its user and password.
fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.as_str().trim_end_matches('/').to_string()
        }
        _ => url.to_string(),
    }
}

/// The options as one line for EXPLAIN: only those that differ from the defaults.
impl fmt::Display for EnrichOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let defaults = EnrichOptions::default();
        let changed: Vec<String> = OptionKey::ALL
            .iter()
            .filter(|&&key| self.value_of(key) != defaults.value_of(key))
            .map(|&key| {
                let value = self.value_of(key).unwrap_or_default();
                // A URL's user and password are credentials: never shown (EXPLAIN, reprs).
                let value = if key == OptionKey::BaseUrl {
                    without_credentials(&value)
                } else {
                    value
                };
                format!("{key}={value}")
            })
            .collect();
        if changed.is_empty() {
            f.write_str("defaults")
        } else {
            f.write_str(&changed.join(" "))
        }
    }
}

impl ExtensionOptions for EnrichOptions {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> datafusion::error::Result<()> {
        Ok(EnrichOptions::set(self, key, value)?)
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        OptionKey::ALL
            .iter()
            .map(|&key| ConfigEntry {
                key: format!("{}.{key}", Self::PREFIX),
                value: self.value_of(key),
                description: key.description(),
            })
            .collect()
    }
}

impl ConfigExtension for EnrichOptions {
    const PREFIX: &'static str = "prospeo";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_options_line_never_shows_a_urls_credentials() {
        let mut options = EnrichOptions::default();
        options
            .set("base_url", "https://user:s3cr3t@proxy.example:8443/prospeo")
            .unwrap();
        let line = options.to_string();
        assert!(!line.contains("s3cr3t") && !line.contains("user"), "{line}");
        assert!(
            line.contains("base_url=https://proxy.example:8443/prospeo"),
            "{line}"
        );
    }

    #[test]
    fn options_parse_and_validate() {
        let mut o = EnrichOptions::default();
        o.set("enrich_mobile", "TRUE").unwrap();
        o.set("plan", "starter").unwrap();
        o.set("per_minute", "100").unwrap();
        o.set("max_credits", "500").unwrap();
        o.set("map", "Work Email=email, Notes=").unwrap();
        assert!(o.flags().enrich_mobile);
        assert_eq!(o.limits(), RateLimits::new(5, 100, 2_000));
        assert_eq!(o.max_credits, Some(500));
        assert_eq!(
            o.map,
            vec![
                ("Work Email".to_string(), Some(Datapoint::Email)),
                ("Notes".to_string(), None)
            ]
        );
        let text = o.to_string();
        assert!(
            text.contains("plan=starter") && text.contains("enrich_mobile=true"),
            "{text}"
        );
        let err = o.set("plan", "platinum").unwrap_err().to_string();
        assert!(
            err.contains("prospeo.plan") && err.contains("starter, growth or pro"),
            "{err}"
        );
        let err = o.set("api_key", "x").unwrap_err().to_string();
        assert!(err.contains("unknown option prospeo.api_key"), "{err}");
        assert!(o.set("concurrency", "0").is_err());
        assert!(o.set("prefix", "bad prefix").is_err());
        assert!(o.set("base_url", "ftp://x").is_err());
        assert!(
            EnrichOptions {
                only_verified_mobile: true,
                ..Default::default()
            }
            .flags()
            .enrich_mobile
        );
    }

    #[test]
    fn formats_come_from_extensions() {
        assert_eq!(
            InputFormat::from_path("s3://b/leads.parquet"),
            Some(InputFormat::Parquet)
        );
        assert_eq!(
            InputFormat::from_path("leads.CSV.gz"),
            Some(InputFormat::Csv)
        );
        assert_eq!(
            InputFormat::from_path("a/b.ndjson"),
            Some(InputFormat::Json)
        );
        assert_eq!(InputFormat::from_path("dir/"), None);
    }

    #[test]
    fn cache_options_parse() {
        let mut o = EnrichOptions::default();
        assert!(o.cache && o.cache_ttl.is_none());
        o.set("cache", "false").unwrap();
        o.set("cache_path", "/tmp/x.redb").unwrap();
        o.set("cache_ttl", "30d").unwrap();
        assert!(!o.cache);
        assert_eq!(o.cache_path.as_deref(), Some("/tmp/x.redb"));
        assert_eq!(o.cache_ttl, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(o.value_of(OptionKey::CacheTtl).as_deref(), Some("30d"));
        o.set("cache_ttl", "none").unwrap();
        assert_eq!(o.cache_ttl, None);
        assert_eq!(
            parse_optional_duration("90m"),
            Ok(Some(Duration::from_secs(5400)))
        );
        assert!(o.set("cache_ttl", "3 weeks").is_err());
        assert!(o.set("cache", "maybe").is_err());
    }

    #[test]
    fn one_duration_parser_for_every_duration() {
        for (text, expected) in [
            ("250ms", Duration::from_millis(250)),
            ("1.5s", Duration::from_millis(1500)),
            ("2", Duration::from_secs(2)),
            ("3m", Duration::from_secs(180)),
            ("90min", Duration::from_secs(5400)),
            ("12h", Duration::from_secs(12 * 3600)),
            ("30d", Duration::from_secs(30 * 86_400)),
            ("1.5h", Duration::from_secs(5400)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
        for bad in ["fast", "3 weeks", "", "d", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_optional_duration(" none "), Ok(None));
        assert_eq!(format_duration(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        // The request timeout takes the same text; a bare number stays seconds.
        let mut o = EnrichOptions::default();
        o.set("request_timeout_secs", "30d").unwrap();
        assert_eq!(o.request_timeout, Duration::from_secs(30 * 86_400));
        o.set("request_timeout_secs", "90").unwrap();
        assert_eq!(
            o.value_of(OptionKey::RequestTimeoutSecs).as_deref(),
            Some("90")
        );
        assert!(o.set("request_timeout_secs", "0").is_err());
    }

    #[test]
    fn every_option_has_one_name_a_flag_or_a_reason_and_a_description() {
        let mut names = std::collections::HashSet::new();
        for key in OptionKey::ALL {
            let spec = key.spec();
            assert!(names.insert(spec.name), "{key} twice");
            assert_eq!(key.name().parse::<OptionKey>().unwrap(), key);
            assert_eq!(
                format!("PROSPEO.{}", key.name())
                    .parse::<OptionKey>()
                    .unwrap(),
                key
            );
            assert!(!spec.description.is_empty());
            // The SQL name, with `-` for `_`, is always a spelling of the flag.
            if let Some(flag) = spec.flag {
                let dashed = spec.name.replace('_', "-");
                assert!(
                    flag == dashed || spec.aliases.contains(&dashed.as_str()),
                    "{key}: --{dashed}"
                );
            } else {
                assert!(
                    matches!(key, OptionKey::BaseUrl | OptionKey::Cache),
                    "{key} has no flag"
                );
            }
        }
        let err = "api_key".parse::<OptionKey>().unwrap_err();
        assert!(matches!(err, Error::UnknownOption { .. }), "{err}");
    }

    #[test]
    fn only_client_settings_make_a_different_client() {
        let base = EnrichOptions::default();
        let mut query_only = base.clone();
        query_only.set("prefix", "p_").unwrap();
        query_only.set("enrich_mobile", "true").unwrap();
        assert_eq!(base.client_settings(), query_only.client_settings());
        for (key, value) in [
            ("per_second", "3"),
            ("request_timeout_secs", "5"),
            ("cache_ttl", "30d"),
            ("base_url", "http://127.0.0.1:1"),
        ] {
            let mut other = base.clone();
            other.set(key, value).unwrap();
            assert_ne!(base.client_settings(), other.client_settings(), "{key}");
        }
        let mut no_cache = base.clone();
        no_cache.set("cache", "false").unwrap();
        assert!(no_cache.open_cache().unwrap().is_none());
        assert!(no_cache.cache_file().unwrap().is_none());
    }

    #[test]
    fn another_api_than_the_vendors_gets_a_default_cache_file_of_its_own() {
        let Some(vendor) = default_cache_file("https://api.prospeo.io/") else {
            return; // no cache directory on this platform: nothing to keep apart
        };
        assert_eq!(Some(vendor.clone()), ResponseCache::default_path());
        for same in ["https://API.prospeo.io", "https://api.prospeo.io:443/"] {
            assert_eq!(default_cache_file(same), Some(vendor.clone()), "{same}");
        }
        let sandbox = default_cache_file("http://127.0.0.1:8080").unwrap();
        assert_ne!(sandbox, vendor);
        assert_eq!(sandbox.parent(), vendor.parent());
        let name = sandbox.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("responses-127-0-0-1-8080-") && name.ends_with(".redb"),
            "{name}"
        );
        assert_eq!(
            default_cache_file("http://127.0.0.1:8080/").unwrap(),
            sandbox
        );
        let others = [
            "http://127.0.0.1:8081",
            "https://127.0.0.1:8080",
            "http://127.0.0.1:8080/other",
            "http://a-b.c",
            "https://a.b-c",
            "http://---",
            "https://api.prospeo.io/proxy",
        ];
        let mut names = vec![vendor.clone(), sandbox.clone()];
        for other in others {
            let path = default_cache_file(other).unwrap();
            assert!(!names.contains(&path), "{other}: {path:?}");
            names.push(path);
        }
        // Credentials and queries never reach a file name (it is printed and in errors).
        let secret = default_cache_file("http://user:s3cret@proxy.example:8080/?key=K").unwrap();
        let secret = secret.to_string_lossy();
        assert!(
            !secret.contains("s3cret") && !secret.contains("user"),
            "{secret}"
        );
        // Through the options, whichever way the URL is given.
        let mut options = EnrichOptions::default();
        options.set("base_url", "http://127.0.0.1:8080/").unwrap();
        if std::env::var_os(ENV_CACHE).is_none() {
            assert_eq!(options.cache_file().unwrap(), Some(sandbox));
        }
    }

    #[test]
    fn a_map_replaces_the_last_one_and_an_empty_map_clears_it() {
        let mut o = EnrichOptions::default();
        o.set("map", "Work Email=email").unwrap();
        o.set("map", "Mail=email").unwrap();
        assert_eq!(o.map, vec![("Mail".to_string(), Some(Datapoint::Email))]);
        o.set("map", "").unwrap();
        assert!(o.map.is_empty());
        // Pair by pair, a column name may hold a comma.
        o.set_map(["Company, Inc=company_name", "Notes="]).unwrap();
        assert_eq!(
            o.map,
            vec![
                ("Company, Inc".to_string(), Some(Datapoint::CompanyName)),
                ("Notes".to_string(), None)
            ]
        );
        assert!(o.set_map(["nonsense"]).is_err());
    }
}
