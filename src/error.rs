//! The crate's error type, and how it crosses the DataFusion boundary.
//!
//! No variant ever holds the API key: errors are shown to users, logged and written to summary
//! files, and the key is a secret.
//!
//! Every crate error that reaches DataFusion goes through `From<Error> for DataFusionError`
//! ([`DataFusionError::External`]), so a front door finds it again with [`Error::find_in`]
//! (through `Context`, `Shared`, `ArrowError::ExternalError` and other wrappers) and decides
//! on the variant, never on the message text.

use std::path::PathBuf;

use datafusion::error::DataFusionError;

use crate::mapping::MappingError;
use crate::settings::OptionKey;
use crate::vendor::wire::ErrorCode;

/// Everything that can go wrong in this crate, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No key was configured.
    #[error(
        "no Prospeo API key: set PROSPEO_API_KEY, or give a file that holds the key (--api-key-file / ClientBuilder::api_key_file)"
    )]
    MissingApiKey,
    /// The key file could not be read, or is empty.
    #[error("cannot read the API key from {path}: {reason}")]
    ApiKeyFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The API refused the key (`INVALID_API_KEY`). Fatal for the whole job.
    #[error(
        "the Prospeo API refused the API key (INVALID_API_KEY): check PROSPEO_API_KEY or the key file"
    )]
    InvalidApiKey,
    /// A setting is out of range or malformed.
    #[error("invalid setting: {0}")]
    Config(String),
    /// A `prospeo.*` option (or its command-line flag) was given a value it does not take.
    #[error("invalid value `{value}` for prospeo.{key}: expected {expected}")]
    InvalidOption {
        /// The option.
        key: OptionKey,
        /// The value as given.
        value: String,
        /// What the option takes.
        expected: String,
    },
    /// A `prospeo.map` pair (or `--map`) is not `COLUMN=datapoint`.
    #[error("prospeo.map: {reason}")]
    InvalidMap {
        /// What is wrong with the pair, and how to write it.
        reason: String,
    },
    /// A name that is not one of the `prospeo.*` options.
    #[error("unknown option prospeo.{name}: the options are {}", OptionKey::names().join(", "))]
    UnknownOption {
        /// The name as given, without the `prospeo.` prefix.
        name: String,
    },
    /// The input's columns could not be mapped to datapoints, or a mapped column could not be
    /// read as text.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// A request failed and was not retried, or its retries ran out.
    #[error("{endpoint}: {reason}")]
    Request {
        /// The endpoint's path.
        endpoint: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A request failed in transport (connect, timeout, broken answer), with the HTTP client's
    /// error as the source. Build it from `reqwest::Error::without_url()`: a URL can carry
    /// credentials. The message says what kind of failure it was and its innermost cause.
    #[error("{endpoint}: {}", transport_reason(source))]
    Transport {
        /// The endpoint's path.
        endpoint: &'static str,
        /// The HTTP client's error, without its URL.
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with an error code.
    #[error("{endpoint} answered {}: {message}", code.as_str())]
    Api {
        /// The endpoint's path.
        endpoint: &'static str,
        /// The vendor's `error_code`.
        code: ErrorCode,
        /// The vendor's message (the key redacted).
        message: String,
    },
    /// The response cache could not be opened, read or written.
    #[error("response cache {path}: {reason}")]
    Cache {
        /// The cache file, or `memory`.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Another process has the response cache file open (one process at a time may).
    #[error(
        "response cache {path}: another prospeo process is using this cache; wait for it, or use --cache PATH / --no-cache"
    )]
    CacheInUse {
        /// The cache file.
        path: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the API key is missing, unreadable or refused: fatal for a whole job, and its
    /// own exit code on the command line.
    pub fn is_key_problem(&self) -> bool {
        matches!(
            self,
            Error::MissingApiKey | Error::ApiKeyFile { .. } | Error::InvalidApiKey
        )
    }

    /// Whether the error is the user's to fix in the settings or the input (an option, a
    /// mapping, the cache file), rather than a failure of the service or the network.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Config(_)
                | Error::InvalidOption { .. }
                | Error::InvalidMap { .. }
                | Error::UnknownOption { .. }
                | Error::Mapping(_)
                | Error::Cache { .. }
                | Error::CacheInUse { .. }
        )
    }

    /// Whether the response cache file is held by another process.
    pub fn is_cache_in_use(&self) -> bool {
        matches!(self, Error::CacheInUse { .. })
    }

    /// The crate error inside a DataFusion error, however DataFusion wrapped it: the
    /// `External`, `Context`, `Shared`, `ArrowError::ExternalError` (and any other `source()`)
    /// chains are walked, and every error of a `Collection`.
    pub fn find_in(error: &DataFusionError) -> Option<&Error> {
        error.iter().find_map(|e| Self::find_in_chain(e))
    }

    /// The first crate error in the `source()` chain of `error`, starting with itself.
    pub fn find_in_chain<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Error> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<Error>() {
                return Some(found);
            }
            next = e.source();
        }
        None
    }
}

/// Crate errors cross into DataFusion whole, so that [`Error::find_in`] finds them again.
impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// What a transport failure was: its kind, then its innermost cause (which says "connection
/// refused", "dns error"...), never the URL.
pub(crate) fn transport_reason(e: &reqwest::Error) -> String {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::error::ArrowError;

    use super::*;

    #[test]
    fn a_crate_error_is_found_through_every_wrapper() {
        let wrapped = [
            DataFusionError::from(Error::InvalidApiKey),
            DataFusionError::from(Error::InvalidApiKey).context("enrich_person"),
            DataFusionError::Shared(Arc::new(
                DataFusionError::from(Error::InvalidApiKey).context("a partition"),
            )),
            DataFusionError::ArrowError(
                Box::new(ArrowError::ExternalError(Box::new(DataFusionError::from(
                    Error::InvalidApiKey,
                )))),
                None,
            ),
            DataFusionError::Collection(vec![
                DataFusionError::Plan("first".into()),
                DataFusionError::from(Error::InvalidApiKey),
            ]),
        ];
        for e in &wrapped {
            assert!(
                matches!(Error::find_in(e), Some(Error::InvalidApiKey)),
                "{e:?}"
            );
        }
        assert!(Error::find_in(&DataFusionError::Plan("no".into())).is_none());
    }

    #[test]
    fn key_and_input_problems_are_told_apart() {
        assert!(Error::MissingApiKey.is_key_problem());
        assert!(!Error::MissingApiKey.is_bad_input());
        assert!(Error::Config("x".into()).is_bad_input());
        assert!(
            Error::UnknownOption {
                name: "api_key".into()
            }
            .to_string()
            .contains("unknown option prospeo.api_key: the options are only_verified_email")
        );
    }
}
