//! The `prospeo.*` settings' keys: each one's name, command-line flag, aliases and
//! description, in one table (object_store's `ConfigKey` style). Parsing a name and validating
//! a value live with the settings themselves
//! ([`EnrichOptions`](crate::datafusion::options::EnrichOptions)); this module depends on
//! nothing, so the crate's error type can name a key without reaching up to the DataFusion
//! glue.

use std::fmt;

/// One `prospeo.*` option: its name, its command-line flag, its description and (through
/// [`EnrichOptions::set_key`](crate::EnrichOptions::set_key)) its validation, in one place for
/// every front door: `SET`, the options argument of `enrich_person(...)`, the `prospeo` binary's
/// flags, and the next ones.
/// A new setting is one variant, one [`OptionKey::spec`] entry, and its arms in
/// [`EnrichOptions::set_key`](crate::EnrichOptions::set_key) and `value_of`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum OptionKey {
    /// `only_verified_email`
    OnlyVerifiedEmail,
    /// `enrich_mobile`
    EnrichMobile,
    /// `only_verified_mobile`
    OnlyVerifiedMobile,
    /// `concurrency`
    Concurrency,
    /// `plan`
    Plan,
    /// `per_second`
    PerSecond,
    /// `per_minute`
    PerMinute,
    /// `per_day`
    PerDay,
    /// `max_credits`
    MaxCredits,
    /// `prefix`
    Prefix,
    /// `base_url`
    BaseUrl,
    /// `request_timeout_secs`
    RequestTimeoutSecs,
    /// `format`
    Format,
    /// `csv_has_header`
    CsvHasHeader,
    /// `csv_delimiter`
    CsvDelimiter,
    /// `csv_quote`
    CsvQuote,
    /// `map`
    Map,
    /// `cache`
    Cache,
    /// `cache_path`
    CachePath,
    /// `cache_ttl`
    CacheTtl,
    /// `coordinator`
    Coordinator,
    /// `coordinator_lease_secs`
    CoordinatorLeaseSecs,
    /// `coordinator_wait_secs`
    CoordinatorWaitSecs,
}

/// What is fixed about an option (see [`OptionKey::spec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionSpec {
    /// The name after `prospeo.`.
    pub name: &'static str,
    /// The command-line flag (without `--`), or `None` where the command line takes the
    /// setting another way (`base_url`: `--base-url` of every command that calls the API;
    /// `cache`: `--no-cache`). The name with `-` for `_` unless that would mislead.
    pub flag: Option<&'static str>,
    /// Other spellings of the flag; the name with `-` for `_` is always one of flag or
    /// aliases.
    pub aliases: &'static [&'static str],
    /// The placeholder of the flag's value; `None` for a switch (`--flag` or `--flag=false`).
    pub value_name: Option<&'static str>,
    /// Whether the flag may be given several times (each time one value).
    pub repeatable: bool,
    /// Whether the option configures the client (so clients with different values are
    /// different clients), rather than one query.
    pub configures_client: bool,
    /// One line for `SHOW ALL`, `--help` and error messages.
    pub description: &'static str,
}

impl OptionKey {
    /// Every option, in the order `SHOW ALL` and EXPLAIN list them.
    pub const ALL: [OptionKey; 23] = [
        OptionKey::OnlyVerifiedEmail,
        OptionKey::EnrichMobile,
        OptionKey::OnlyVerifiedMobile,
        OptionKey::Concurrency,
        OptionKey::Plan,
        OptionKey::PerSecond,
        OptionKey::PerMinute,
        OptionKey::PerDay,
        OptionKey::MaxCredits,
        OptionKey::Prefix,
        OptionKey::BaseUrl,
        OptionKey::RequestTimeoutSecs,
        OptionKey::Format,
        OptionKey::CsvHasHeader,
        OptionKey::CsvDelimiter,
        OptionKey::CsvQuote,
        OptionKey::Map,
        OptionKey::Cache,
        OptionKey::CachePath,
        OptionKey::CacheTtl,
        OptionKey::Coordinator,
        OptionKey::CoordinatorLeaseSecs,
        OptionKey::CoordinatorWaitSecs,
    ];

    /// Everything fixed about this option.
    pub const fn spec(self) -> OptionSpec {
        const fn spec(name: &'static str, description: &'static str) -> OptionSpec {
            OptionSpec {
                name,
                flag: None,
                aliases: &[],
                value_name: None,
                repeatable: false,
                configures_client: false,
                description,
            }
        }
        const fn value(
            name: &'static str,
            flag: &'static str,
            value_name: &'static str,
            description: &'static str,
        ) -> OptionSpec {
            OptionSpec {
                flag: Some(flag),
                value_name: Some(value_name),
                ..spec(name, description)
            }
        }
        const fn switch(
            name: &'static str,
            flag: &'static str,
            description: &'static str,
        ) -> OptionSpec {
            OptionSpec {
                flag: Some(flag),
                ..spec(name, description)
            }
        }
        const fn client(spec: OptionSpec) -> OptionSpec {
            OptionSpec {
                configures_client: true,
                ..spec
            }
        }
        match self {
            OptionKey::OnlyVerifiedEmail => switch(
                "only_verified_email",
                "only-verified-email",
                "only return people with a verified email",
            ),
            OptionKey::EnrichMobile => switch(
                "enrich_mobile",
                "enrich-mobile",
                "reveal mobiles (10 credits a match with a mobile)",
            ),
            OptionKey::OnlyVerifiedMobile => switch(
                "only_verified_mobile",
                "only-verified-mobile",
                "only return people with a mobile; implies enrich_mobile",
            ),
            OptionKey::Concurrency => client(value(
                "concurrency",
                "concurrency",
                "N",
                "requests in flight at once, across the query",
            )),
            OptionKey::Plan => client(value(
                "plan",
                "plan",
                "PLAN",
                "starter, growth or pro: the rate limits that pace requests",
            )),
            OptionKey::PerSecond => client(value(
                "per_second",
                "per-second",
                "N",
                "custom records-per-second limit",
            )),
            OptionKey::PerMinute => client(value(
                "per_minute",
                "per-minute",
                "N",
                "custom records-per-minute limit",
            )),
            OptionKey::PerDay => client(value(
                "per_day",
                "per-day",
                "N",
                "custom records-per-day limit",
            )),
            OptionKey::MaxCredits => client(value(
                "max_credits",
                "max-credits",
                "N",
                "spend at most this many credits; the rest is deferred",
            )),
            OptionKey::Prefix => value(
                "prefix",
                "prefix",
                "PREFIX",
                "prefix of the enrichment columns",
            ),
            OptionKey::BaseUrl => client(spec(
                "base_url",
                "the API's base URL (a sandbox's, for instance)",
            )),
            OptionKey::RequestTimeoutSecs => client(OptionSpec {
                aliases: &["request-timeout-secs"],
                ..value(
                    "request_timeout_secs",
                    "request-timeout",
                    "DURATION",
                    "timeout of one HTTP request: seconds, or a duration such as 90s or 2m",
                )
            }),
            OptionKey::Format => OptionSpec {
                aliases: &["format"],
                ..value(
                    "format",
                    "input-format",
                    "FORMAT",
                    "input format when the extension does not say: parquet, csv, ndjson",
                )
            },
            OptionKey::CsvHasHeader => switch(
                "csv_has_header",
                "csv-has-header",
                "whether CSV input has a header row",
            ),
            OptionKey::CsvDelimiter => OptionSpec {
                aliases: &["csv-delimiter"],
                ..value(
                    "csv_delimiter",
                    "delimiter",
                    "CHAR",
                    "CSV delimiter, one character (\\t for tab)",
                )
            },
            OptionKey::CsvQuote => OptionSpec {
                aliases: &["csv-quote"],
                ..value(
                    "csv_quote",
                    "quote",
                    "CHAR",
                    "CSV quote character, one character",
                )
            },
            OptionKey::Map => OptionSpec {
                repeatable: true,
                ..value(
                    "map",
                    "map",
                    "COLUMN=DATAPOINT",
                    "explicit column mappings: 'Column=datapoint, Other='",
                )
            },
            OptionKey::Cache => client(spec(
                "cache",
                "keep answers in the persistent response cache (false: a private temporary file for this client only)",
            )),
            OptionKey::CachePath => client(OptionSpec {
                aliases: &["cache-path"],
                ..value(
                    "cache_path",
                    "cache",
                    "PATH",
                    "the response cache file (PROSPEO_CACHE, else the platform's cache directory)",
                )
            }),
            OptionKey::CacheTtl => client(value(
                "cache_ttl",
                "cache-ttl",
                "DURATION",
                "ask again for cached answers older than this, e.g. 30d, 12h (never by default)",
            )),
            OptionKey::Coordinator => client(value(
                "coordinator",
                "coordinator",
                "URL",
                "share pacing, claims and answers with every worker of the key: postgres://user@host/db (PROSPEO_COORDINATOR; the password from PGPASSWORD or ~/.pgpass)",
            )),
            OptionKey::CoordinatorLeaseSecs => client(OptionSpec {
                aliases: &["coordinator-lease-secs"],
                ..value(
                    "coordinator_lease_secs",
                    "coordinator-lease",
                    "DURATION",
                    "how long a stopped worker's claims last before others take them over (30s)",
                )
            }),
            OptionKey::CoordinatorWaitSecs => client(OptionSpec {
                aliases: &["coordinator-wait-secs"],
                ..value(
                    "coordinator_wait_secs",
                    "coordinator-wait",
                    "DURATION",
                    "how long a lost coordinator is waited for before the rest is deferred (60s)",
                )
            }),
        }
    }

    /// The name after `prospeo.`.
    pub const fn name(self) -> &'static str {
        self.spec().name
    }

    /// One line for `SHOW ALL`, `--help` and error messages.
    pub const fn description(self) -> &'static str {
        self.spec().description
    }

    /// Every option's name, in [`OptionKey::ALL`] order.
    pub fn names() -> Vec<&'static str> {
        OptionKey::ALL.iter().map(|k| k.name()).collect()
    }
}

impl AsRef<str> for OptionKey {
    fn as_ref(&self) -> &str {
        self.name()
    }
}

impl fmt::Display for OptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
