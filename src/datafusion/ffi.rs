//! `enrich_person` and `enrich_company` across DataFusion's FFI boundary, for a host built
//! separately against the same DataFusion major: datafusion-python's `SessionContext` (the
//! Python package hands these over as `__datafusion_table_function__` capsules).
//!
//! Across the boundary the session a table function receives is not a `SessionState`: its
//! tables and object stores are the host's, out of reach. So a call from a foreign host reads
//! its input (paths, globs and URLs, never a table of the host's session) through a session of
//! its own, with object stores from the environment, and the plan it returns runs under that
//! session's task context whatever context the host executes it with ([`OwnContextExec`]). The
//! `prospeo.*` options come from the host's session config when it carries them (an options
//! object registered with `SessionConfig.with_extension`), over the defaults the function was
//! made with.

use std::sync::Arc;

use datafusion::catalog::TableFunctionImpl;
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
use datafusion_ffi::udtf::FFI_TableFunction;
use tokio::runtime::Handle;

use crate::api::{ClientBuilder, Endpoint};
use crate::datafusion::options::EnrichOptions;
use crate::datafusion::table::EnrichFunction;

/// The table function of `endpoint` as an FFI table function. Its clients come from `template`
/// (a key, a base URL) or the environment, with `defaults` under the host session's `prospeo.*`
/// options; each query makes its own client, so the response cache is open only while a query
/// runs. `runtime` drives the requests: a host built separately has a Tokio of its own, which
/// this library's code cannot use.
///
/// datafusion-ffi 55 hands a table function's tables over without filter pushdown: a host
/// runs `WHERE` above the enrichment, so every row is sent (`count(*)`, input-only queries and
/// `LIMIT` are still free or pushed). Where the host can take a table provider instead (as
/// datafusion-python's Python table functions can), give it
/// [`EnrichFunction::foreign_table`] wrapped in an `FFI_TableProvider` with pushdown on: the
/// Python package does.
pub fn table_function(
    endpoint: Endpoint,
    template: Option<ClientBuilder>,
    defaults: EnrichOptions,
    runtime: Handle,
    codec: FFI_LogicalExtensionCodec,
) -> FFI_TableFunction {
    let function = EnrichFunction::for_foreign_host(endpoint, template, defaults, runtime.clone());
    FFI_TableFunction::new_with_ffi_codec(
        Arc::new(function) as Arc<dyn TableFunctionImpl>,
        Some(runtime),
        codec,
    )
}

pub use super::own_context::{MakePlan, OwnContextExec};
