//! The client of the Prospeo HTTP API: its builder, pacing, in-job de-duplication, the HTTP
//! exchange, the retry decision and pricing, each in a module of its own. The vendor's model it
//! speaks (the wire types, endpoints, plans, outcomes and counts) is [`crate::vendor`],
//! re-exported here at the paths it had.

pub mod builder;
pub mod client;
pub(crate) mod dedup;
mod http;
pub mod pacing;
pub(crate) mod pricing;
pub(crate) mod retry;

// The vendor's model, at the paths it had when it lived here.
pub use crate::vendor::{endpoint, outcome, plan, tally, wire};

pub use builder::{ApiKey, ClientBuilder, RetryPolicy};
pub use client::Client;
pub use endpoint::{Endpoint, Object};
pub use http::AccountStatus;
pub use outcome::{BatchOutcome, DeferReason, Match, RecordOutcome, RecordStatus};
pub use pacing::{Moment, Pacer};
pub use plan::{Plan, RateLimits};
pub use tally::{AtomicTally, Tally, Totals};
pub use wire::EnrichFlags;
