//! Prospeo person enrichment for Apache DataFusion.
//!
//! The crate wraps the vendor's Bulk Enrich Person endpoint (up to 50 records a request). It
//! has one engine and two front doors: a DataFusion table function and the `prospeo` binary.
//! Its sandbox, a local HTTP server that implements the vendor contract over a synthetic
//! directory, is both a product feature and the stand-in for the vendor in every test.

pub mod api;
pub mod cache;
pub mod coordinator;
pub mod datafusion;
pub mod datapoints;
pub mod error;
pub mod job;
pub mod mapping;
pub mod output;
pub(crate) mod rng;
pub mod sandbox;
pub mod time;

pub use crate::datafusion::options::EnrichOptions;
pub use crate::datafusion::table::{register, register_with_builder, register_with_client};
pub use api::{Client, ClientBuilder};
pub use datapoints::{Datapoint, Datapoints, MatchRoute};
pub use error::{Error, Result};
