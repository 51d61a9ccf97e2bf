//! Times as people and machines read them: RFC 3339, in UTC. One place, so the summary, the
//! output's `prospeo_error`, the cache's statistics and the logs write a time the same way.

use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

/// `at` to the second: `2026-12-02T17:30:00Z`.
pub fn rfc3339(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `at` to the millisecond: `2026-12-02T17:30:00.123Z`.
pub fn rfc3339_millis(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serialises an optional time with [`rfc3339`] (`#[serde(serialize_with = ...)]`).
pub fn serialize_rfc3339<S: serde::Serializer>(
    at: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_some(&rfc3339(*at)),
        None => serializer.serialize_none(),
    }
}

/// Serialises an optional time with [`rfc3339_millis`] (`#[serde(serialize_with = ...)]`).
pub fn serialize_rfc3339_millis<S: serde::Serializer>(
    at: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => serializer.serialize_some(&rfc3339_millis(*at)),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn times_are_utc_to_the_second_or_the_millisecond() {
        let at = UNIX_EPOCH + Duration::from_millis(1_764_696_600_123);
        assert_eq!(rfc3339(at), "2025-12-02T17:30:00Z");
        assert_eq!(rfc3339_millis(at), "2025-12-02T17:30:00.123Z");
    }
}
