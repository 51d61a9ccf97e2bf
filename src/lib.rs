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
pub mod settings;
pub mod time;
pub mod vendor;

pub use crate::datafusion::options::EnrichOptions;
pub use crate::datafusion::table::{register, register_with_builder, register_with_client};
pub use api::{Client, ClientBuilder};
pub use datapoints::{Datapoint, Datapoints, MatchRoute};
pub use error::{Error, Result};

/// Sets the options of mimalloc for a program whose global allocator it is (the `prospeo`
/// binary, the Python extension): freed memory goes back to the system after 10 ms instead of
/// mimalloc 3's 1 s, which kept 60 to 85 MB more at the peak of a 100,000-row job (287 and 309
/// MB against 225 and 224, `cargo bench --bench memory`), for a little more system time. A
/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
///
/// Call it first thing, before other threads start.
pub fn configure_mimalloc() {
    /// `mi_option_purge_delay`: its place in mimalloc's `mi_option_e` (fixed, for the ABI).
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    unsafe extern "C" {
        /// mimalloc's `mi_option_set_default`, in the library the `mimalloc` crate links.
        fn mi_option_set_default(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    // SAFETY: a C function of the linked mimalloc taking an enum and a long; it writes the
    // option's default (a plain store), called before the caller starts other threads.
    unsafe { mi_option_set_default(MI_OPTION_PURGE_DELAY, 10) };
}
