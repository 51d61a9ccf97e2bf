//! The Prospeo HTTP API: the wire model shared by the client and the sandbox, plans and rate
//! limits, pacing, and the client.

pub mod client;
pub(crate) mod dedup;
pub mod outcome;
pub mod pacing;
pub mod plan;
pub mod wire;

pub use client::{AccountStatus, ApiKey, Client, ClientBuilder, RetryPolicy, Totals};
pub use outcome::{BatchOutcome, DeferReason, Match, RecordOutcome, RecordStatus};
pub use plan::{Plan, RateLimits};
pub use wire::EnrichFlags;
