//! The vendor's API as data: its address, the wire model (requests, answers, the person and
//! company objects and their compact stored form), the endpoints and their datapoints, plans
//! and rate limits, and what a record's answer becomes (its outcome and the counts).
//!
//! Every step below the client reads these types: the response cache stores them, the
//! coordinator paces by the plan's limits, the output flattens the objects and the mapping
//! targets an endpoint's datapoints. They depend on nothing of the crate but the datapoints and
//! the RFC 3339 formatting of times, so no step that uses them reaches back up to the client
//! (`crate::api`, which re-exports them at their former paths).

pub mod endpoint;
pub mod outcome;
pub mod plan;
pub mod tally;
pub mod wire;

/// The vendor's API.
pub const DEFAULT_BASE_URL: &str = "https://api.prospeo.io";

/// Whether `base_url` is the vendor's API (`https://api.prospeo.io`, any case, port 443, no
/// path).
pub(crate) fn is_vendor(base_url: &str) -> bool {
    let (Ok(url), Ok(vendor)) = (
        url::Url::parse(base_url.trim()),
        url::Url::parse(DEFAULT_BASE_URL),
    ) else {
        return false;
    };
    url.scheme() == vendor.scheme()
        && url.host_str() == vendor.host_str()
        && url.port_or_known_default() == vendor.port_or_known_default()
        && url.path().trim_end_matches('/').is_empty()
        && url.username().is_empty()
}
