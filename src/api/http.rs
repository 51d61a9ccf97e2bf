//! The vendor's API over HTTP: one bulk attempt (`POST` to an [`Endpoint`]'s path), classified,
//! and `GET /account-information`. What follows an answer (pacing, retries, costs) is the
//! client's; what differs between endpoints is the [`Endpoint`]'s.

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use crate::api::builder::ApiKey;
use crate::api::pacing::{Moment, QuotaHeaders};
use crate::api::retry::{Attempt, classify};
use crate::error::{Error, Result, transport_reason};
use crate::vendor::endpoint::Endpoint;
use crate::vendor::wire::{AccountInformation, AccountInformationResponse, ErrorBody, ErrorCode};

/// The account as `/account-information` and its rate-limit headers report it.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountStatus {
    /// The plan and the credits.
    pub account: AccountInformation,
    /// The quota left, from the answer's headers.
    pub quota: QuotaHeaders,
}

/// Where requests go and with which key; the connection pool.
#[derive(Debug)]
pub(crate) struct Vendor {
    http: reqwest::Client,
    base_url: String,
    api_key: ApiKey,
}

/// One bulk attempt as the client sees it.
#[derive(Debug)]
pub(crate) struct Exchange {
    /// What the answer was.
    pub attempt: Attempt,
    /// The quota the answer's headers reported, when an answer was read.
    pub quota: Option<QuotaHeaders>,
    /// When the attempt ended.
    pub answered_at: Moment,
}

impl Vendor {
    /// Requests to `base_url` (no trailing slash) with `api_key`, over `http`.
    pub(crate) fn new(http: reqwest::Client, base_url: String, api_key: ApiKey) -> Self {
        Vendor {
            http,
            base_url,
            api_key,
        }
    }

    /// The base URL requests go to.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The key (it prints redacted).
    pub(crate) fn api_key(&self) -> &ApiKey {
        &self.api_key
    }

    /// One `POST` to `endpoint` of an encoded request (shared, not copied, by every attempt).
    pub(crate) async fn post_bulk(&self, endpoint: Endpoint, body: &Bytes) -> Exchange {
        let ended = |attempt, quota| Exchange {
            attempt,
            quota,
            answered_at: Moment::now(),
        };
        let sent = self
            .http
            .post(format!("{}{}", self.base_url, endpoint.path()))
            .header("X-KEY", self.api_key.expose())
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => return ended(Attempt::transport(transport_reason(&e)), None),
        };
        let status = response.status();
        let quota = QuotaHeaders::from_headers(response.headers());
        match response.bytes().await {
            Ok(body) => ended(
                classify(status, &body, &quota).redacted(|text| self.redact(text)),
                Some(quota),
            ),
            // A success status means the server processed (and may have charged) the request:
            // its answer is lost, not refused.
            Err(e) if status.is_success() => ended(
                Attempt::Lost(format!(
                    "HTTP {status}, but the answer could not be read ({})",
                    transport_reason(&e)
                )),
                Some(quota),
            ),
            Err(e) => ended(Attempt::transport(transport_reason(&e)), None),
        }
    }

    /// `GET /account-information`: the plan and the credits left (free of charge), plus the
    /// quota as the rate-limit headers report it.
    pub(crate) async fn account_status(&self) -> Result<AccountStatus> {
        const ENDPOINT: &str = "/account-information";
        let url = format!("{}{ENDPOINT}", self.base_url);
        let response = self
            .http
            .get(url)
            .header("X-KEY", self.api_key.expose())
            .send()
            .await
            .map_err(|e| Error::Transport {
                endpoint: ENDPOINT,
                source: e.without_url(),
            })?;
        let status = response.status();
        let quota = QuotaHeaders::from_headers(response.headers());
        let body = response.bytes().await.map_err(|e| Error::Transport {
            endpoint: ENDPOINT,
            source: e.without_url(),
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

    /// `text` with every occurrence of the API key replaced by `<redacted>` (the server's words
    /// end up in outputs and logs: a server that echoes the key must not leak it there).
    pub(crate) fn redact(&self, text: String) -> String {
        let key = self.api_key.expose();
        if text.contains(key) {
            text.replace(key, "<redacted>")
        } else {
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_key_is_never_shown() {
        let key = ApiKey::new("super-secret-key-123").unwrap();
        assert!(!format!("{key:?} {key}").contains("super-secret"));
        let client = crate::api::Client::builder().api_key(key).build().unwrap();
        assert!(!format!("{client:?}").contains("super-secret"));
        assert!(ApiKey::new("  \n").is_err());
        let vendor = Vendor::new(
            reqwest::Client::new(),
            "http://x".into(),
            ApiKey::new("k3y").unwrap(),
        );
        assert_eq!(vendor.redact("a k3y b".into()), "a <redacted> b");
    }
}
