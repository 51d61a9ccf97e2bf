//! Every piece of DataFusion glue, apart from the engine's other parts (which know nothing of
//! DataFusion): the `enrich_person` table function and its `TableProvider` ([`table`]), the
//! enrichment node ([`exec`]), the `prospeo.*` options ([`options`]) and the input formats and
//! object stores ([`source`]), and both functions across DataFusion's FFI boundary ([`ffi`],
//! whose plans run under a task context of their own: `own_context`).

pub mod exec;
pub mod ffi;
pub mod options;
pub(crate) mod own_context;
pub mod source;
pub mod table;
