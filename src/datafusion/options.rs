//! `prospeo.*` options: session-wide with `SET prospeo.enrich_mobile = true`, or per call of
//! `enrich_person(input, named_struct(...))`. Both go through [`EnrichOptions::set`], so both
//! give the same errors for a bad name or value.
//!
//! The API key is deliberately not an option: SQL text ends up in logs and query histories.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};

use crate::api::plan::{Plan, RateLimits};
use crate::api::wire::EnrichFlags;
use crate::datapoints::Datapoint;
use crate::mapping::parse_mapping_arg;

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    Parquet,
    Csv,
    /// Newline-delimited JSON.
    Json,
}

impl InputFormat {
    /// The format a path's extension names (`.parquet`, `.csv`, `.tsv`, `.json`, `.ndjson`,
    /// `.jsonl`, also behind `.gz`, `.zst`, ... so that the error can say the file is
    /// compressed), if any.
    pub fn from_path(path: &str) -> Option<Self> {
        let lower = path.to_ascii_lowercase();
        let lower = lower.trim_end_matches('/');
        let lower = [".gz", ".zst", ".bz2", ".xz"]
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
    /// Timeout of one HTTP request, in seconds.
    pub request_timeout_secs: u64,
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
    /// arrive). Off: answers are kept in memory for the session only.
    pub cache: bool,
    /// The cache file; `PROSPEO_CACHE`, else the platform's cache directory, when unset (see
    /// [`crate::cache::ResponseCache::default_path`]).
    pub cache_path: Option<String>,
    /// Cached answers older than this are asked again; never when unset.
    pub cache_ttl: Option<Duration>,
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
            request_timeout_secs: 60,
            format: None,
            csv_has_header: true,
            csv_delimiter: b',',
            csv_quote: b'"',
            map: Vec::new(),
            cache: true,
            cache_path: None,
            cache_ttl: None,
        }
    }
}

/// The option names, with their descriptions (for `SHOW ALL` and error messages).
const OPTIONS: &[(&str, &str)] = &[
    (
        "only_verified_email",
        "only return people with a verified email",
    ),
    (
        "enrich_mobile",
        "reveal mobiles (10 credits a match with a mobile)",
    ),
    (
        "only_verified_mobile",
        "only return people with a mobile; implies enrich_mobile",
    ),
    (
        "concurrency",
        "requests in flight at once, across the query",
    ),
    (
        "plan",
        "starter, growth or pro: the rate limits that pace requests",
    ),
    ("per_second", "custom records-per-second limit"),
    ("per_minute", "custom records-per-minute limit"),
    ("per_day", "custom records-per-day limit"),
    (
        "max_credits",
        "spend at most this many credits; the rest is deferred",
    ),
    ("prefix", "prefix of the enrichment columns"),
    ("base_url", "the API's base URL (a sandbox's, for instance)"),
    (
        "request_timeout_secs",
        "timeout of one HTTP request, in seconds",
    ),
    (
        "format",
        "input format when the extension does not say: parquet, csv, ndjson",
    ),
    ("csv_has_header", "whether CSV input has a header row"),
    ("csv_delimiter", "CSV delimiter, one character"),
    ("csv_quote", "CSV quote character, one character"),
    (
        "map",
        "explicit column mappings: 'Column=datapoint, Other='",
    ),
    (
        "cache",
        "keep answers in the persistent response cache (false: in memory only)",
    ),
    (
        "cache_path",
        "the response cache file (PROSPEO_CACHE, else the platform's cache directory)",
    ),
    (
        "cache_ttl",
        "ask again for cached answers older than this, e.g. 30d, 12h (never by default)",
    ),
];

/// Parses `30d`, `12h`, `90m`, `45s` (or a bare number of seconds); empty or `none` is `None`.
pub fn parse_age(text: &str) -> std::result::Result<Option<Duration>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not an age: expected e.g. 30d, 12h, 90m"))?;
    let seconds = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}`: use d, h, m or s"
            ));
        }
    };
    Ok(Some(Duration::from_secs(n.saturating_mul(seconds))))
}

fn format_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn bad_value(key: &str, value: &str, expected: &str) -> DataFusionError {
    DataFusionError::Configuration(format!(
        "invalid value `{value}` for prospeo.{key}: expected {expected}"
    ))
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(bad_value(key, value, "true or false")),
    }
}

fn parse_number<T: FromStr>(key: &str, value: &str) -> Result<T> {
    value
        .trim()
        .parse()
        .map_err(|_| bad_value(key, value, "a non-negative whole number"))
}

fn parse_optional<T: FromStr>(key: &str, value: &str) -> Result<Option<T>> {
    let v = value.trim();
    if v.is_empty() || v.eq_ignore_ascii_case("none") || v.eq_ignore_ascii_case("null") {
        Ok(None)
    } else {
        parse_number(key, v).map(Some)
    }
}

impl EnrichOptions {
    /// Sets one option by name (without the `prospeo.` prefix), validating the value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.trim().to_ascii_lowercase();
        match key.as_str() {
            "only_verified_email" => self.only_verified_email = parse_bool(&key, value)?,
            "enrich_mobile" => self.enrich_mobile = parse_bool(&key, value)?,
            "only_verified_mobile" => self.only_verified_mobile = parse_bool(&key, value)?,
            "concurrency" => {
                let n: usize = parse_number(&key, value)?;
                if n == 0 || n > 256 {
                    return Err(bad_value(&key, value, "a number from 1 to 256"));
                }
                self.concurrency = n;
            }
            "plan" => {
                self.plan = value
                    .parse()
                    .map_err(|_| bad_value(&key, value, "starter, growth or pro"))?
            }
            "per_second" => self.per_second = parse_optional(&key, value)?,
            "per_minute" => self.per_minute = parse_optional(&key, value)?,
            "per_day" => self.per_day = parse_optional(&key, value)?,
            "max_credits" => self.max_credits = parse_optional(&key, value)?,
            "prefix" => {
                let prefix = value.trim();
                if prefix.is_empty()
                    || !prefix
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(bad_value(
                        &key,
                        value,
                        "letters, digits and underscores, e.g. prospeo_",
                    ));
                }
                self.prefix = prefix.to_string();
            }
            "base_url" => {
                let url = value.trim();
                self.base_url = if url.is_empty() {
                    None
                } else if url.starts_with("http://") || url.starts_with("https://") {
                    Some(url.trim_end_matches('/').to_string())
                } else {
                    return Err(bad_value(
                        &key,
                        value,
                        "a URL starting with http:// or https://",
                    ));
                };
            }
            "request_timeout_secs" => {
                let n: u64 = parse_number(&key, value)?;
                if n == 0 {
                    return Err(bad_value(&key, value, "at least 1 second"));
                }
                self.request_timeout_secs = n;
            }
            "format" => {
                self.format = if value.trim().is_empty() {
                    None
                } else {
                    Some(value.parse().map_err(|e: String| {
                        DataFusionError::Configuration(format!("prospeo.format: {e}"))
                    })?)
                }
            }
            "csv_has_header" => self.csv_has_header = parse_bool(&key, value)?,
            "csv_delimiter" => {
                let v = if value == "\\t" { "\t" } else { value };
                match v.as_bytes() {
                    [b] if b.is_ascii() => self.csv_delimiter = *b,
                    _ => return Err(bad_value(&key, value, "a single ASCII character")),
                }
            }
            "csv_quote" => match value.as_bytes() {
                [b] if b.is_ascii() => self.csv_quote = *b,
                _ => return Err(bad_value(&key, value, "a single ASCII character")),
            },
            "cache" => self.cache = parse_bool(&key, value)?,
            "cache_path" => {
                self.cache_path = Some(value.trim().to_string()).filter(|p| !p.is_empty())
            }
            "cache_ttl" => {
                self.cache_ttl = parse_age(value).map_err(|e| bad_value(&key, value, &e))?
            }
            "map" => self.set_map(value.split(','))?,
            _ => {
                let names: Vec<&str> = OPTIONS.iter().map(|(n, _)| *n).collect();
                return Err(DataFusionError::Configuration(format!(
                    "unknown option prospeo.{key}: the options are {}",
                    names.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Replaces the explicit mappings with `COLUMN=datapoint` pairs (`COLUMN=` ignores the
    /// column; no pair clears them). Each pair is one item, so a column name may hold a comma.
    pub fn set_map<'a>(&mut self, pairs: impl IntoIterator<Item = &'a str>) -> Result<()> {
        let mut map: Vec<(String, Option<Datapoint>)> = Vec::new();
        for pair in pairs.into_iter().filter(|p| !p.trim().is_empty()) {
            let (column, datapoint) = parse_mapping_arg(pair.trim())
                .map_err(|e| DataFusionError::Configuration(format!("prospeo.map: {e}")))?;
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

    /// The request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    fn value_of(&self, key: &str) -> Option<String> {
        fn opt<T: ToString>(v: &Option<T>) -> Option<String> {
            v.as_ref().map(ToString::to_string)
        }
        match key {
            "only_verified_email" => Some(self.only_verified_email.to_string()),
            "enrich_mobile" => Some(self.enrich_mobile.to_string()),
            "only_verified_mobile" => Some(self.only_verified_mobile.to_string()),
            "concurrency" => Some(self.concurrency.to_string()),
            "plan" => Some(self.plan.to_string()),
            "per_second" => opt(&self.per_second),
            "per_minute" => opt(&self.per_minute),
            "per_day" => opt(&self.per_day),
            "max_credits" => opt(&self.max_credits),
            "prefix" => Some(self.prefix.clone()),
            "base_url" => opt(&self.base_url),
            "request_timeout_secs" => Some(self.request_timeout_secs.to_string()),
            "format" => opt(&self.format),
            "csv_has_header" => Some(self.csv_has_header.to_string()),
            "csv_delimiter" => Some((self.csv_delimiter as char).to_string()),
            "csv_quote" => Some((self.csv_quote as char).to_string()),
            "cache" => Some(self.cache.to_string()),
            "cache_path" => opt(&self.cache_path),
            "cache_ttl" => self.cache_ttl.map(format_age),
            "map" => (!self.map.is_empty()).then(|| {
                self.map
                    .iter()
                    .map(|(c, d)| format!("{c}={}", d.map_or("", |d| d.as_str())))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
            _ => None,
        }
    }
}

/// The options as one line for EXPLAIN: only those that differ from the defaults.
impl fmt::Display for EnrichOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let defaults = EnrichOptions::default();
        let changed: Vec<String> = OPTIONS
            .iter()
            .filter(|(key, _)| self.value_of(key) != defaults.value_of(key))
            .map(|(key, _)| format!("{key}={}", self.value_of(key).unwrap_or_default()))
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

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        EnrichOptions::set(self, key, value)
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        OPTIONS
            .iter()
            .map(|(key, description)| ConfigEntry {
                key: format!("{}.{key}", Self::PREFIX),
                value: self.value_of(key),
                description,
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
        assert_eq!(o.value_of("cache_ttl").as_deref(), Some("30d"));
        o.set("cache_ttl", "none").unwrap();
        assert_eq!(o.cache_ttl, None);
        assert_eq!(parse_age("90m"), Ok(Some(Duration::from_secs(5400))));
        assert!(o.set("cache_ttl", "3 weeks").is_err());
        assert!(o.set("cache", "maybe").is_err());
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
