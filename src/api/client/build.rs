//! [`ClientBuilder::build`]: checked settings become a [`Client`] (here, beside the client, so
//! that the settings module needs nothing of the client's).

use std::time::Duration;

use super::Client;
use crate::api::builder::{ApiKey, ClientBuilder, http_base_url};
use crate::cache::ResponseCache;
use crate::error::{Error, Result};

impl ClientBuilder {
    /// Builds the client: reads the key file if one was given, opens no connection yet.
    pub fn build(self) -> Result<Client> {
        let api_key = match (&self.api_key, &self.api_key_file) {
            (Some(key), _) => key.clone(),
            (None, Some(path)) => ApiKey::from_file(path)?,
            (None, None) => return Err(Error::MissingApiKey),
        };
        let Some(base_url) = http_base_url(&self.base_url) else {
            return Err(Error::Config(format!(
                "the base URL `{}` must start with http:// or https://",
                self.base_url.trim_end_matches('/')
            )));
        };
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
        Ok(Client::new(self, api_key, base_url, http, cache))
    }
}
