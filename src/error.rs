//! The crate's error type.
//!
//! No variant ever holds the API key: errors are shown to users, logged and written to summary
//! files, and the key is a secret.

use std::path::PathBuf;

use crate::api::wire::ErrorCode;

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
    ApiKeyFile { path: PathBuf, reason: String },
    /// The API refused the key (`INVALID_API_KEY`). Fatal for the whole job.
    #[error(
        "the Prospeo API refused the API key (INVALID_API_KEY): check PROSPEO_API_KEY or the key file"
    )]
    InvalidApiKey,
    /// A setting is out of range or malformed.
    #[error("invalid setting: {0}")]
    Config(String),
    /// A request failed and was not retried, or its retries ran out.
    #[error("{endpoint}: {reason}")]
    Request {
        endpoint: &'static str,
        reason: String,
    },
    /// The API answered with an error code.
    #[error("{endpoint} answered {}: {message}", code.as_str())]
    Api {
        endpoint: &'static str,
        code: ErrorCode,
        message: String,
    },
    /// The response cache could not be opened, read or written.
    #[error("response cache {path}: {reason}")]
    Cache { path: String, reason: String },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
