//! The Prospeo HTTP API: the wire model shared by the client and the sandbox, plans and rate
//! limits, pacing, and the client (its builder, the endpoint seam, the HTTP exchange, retry
//! decision, pricing and counts each in a module of their own).

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
