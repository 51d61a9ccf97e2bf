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

use std::fmt;
use std::sync::Arc;

use datafusion::catalog::TableFunctionImpl;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    displayable,
};
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
use datafusion_ffi::udtf::FFI_TableFunction;
use futures::StreamExt;
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

/// Makes the plan an execution runs (see [`OwnContextExec`]).
pub type MakePlan = Arc<dyn Fn() -> Result<Arc<dyn ExecutionPlan>> + Send + Sync>;

/// A plan that runs under its own task context, whatever context it is executed with, and
/// shows the host one partition and no children: the input's partitions come out one after
/// the other (rows in input order), and a host's optimizer cannot rewrite what lies below.
///
/// Each execution plans its own inner plan (with `make`) and drops it when its stream ends: a
/// host that keeps a physical plan after running it (datafusion-python's DataFrame does) keeps
/// no client, so the response cache closes when the query ends.
pub struct OwnContextExec {
    make: MakePlan,
    /// One such plan, as EXPLAIN shows it (the plan itself is not kept: it holds a client).
    shown: String,
    /// Its root's name.
    shown_name: String,
    schema: datafusion::arrow::datatypes::SchemaRef,
    context: Arc<TaskContext>,
    properties: Arc<PlanProperties>,
}

impl OwnContextExec {
    /// Runs what `make` plans under `context`; `shown` is one such plan, for EXPLAIN.
    pub fn new(shown: &Arc<dyn ExecutionPlan>, make: MakePlan, context: Arc<TaskContext>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(shown.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        let text = displayable(shown.as_ref()).indent(false).to_string();
        OwnContextExec {
            make,
            shown: text.lines().map(str::trim).collect::<Vec<_>>().join(" <- "),
            shown_name: shown.name().to_string(),
            schema: shown.schema(),
            context,
            properties,
        }
    }
}

impl fmt::Debug for OwnContextExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnContextExec")
            .field("inner", &self.shown_name)
            .finish()
    }
}

impl DisplayAs for OwnContextExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::TreeRender => write!(f, "{}", self.shown_name),
            _ => write!(f, "ProspeoExec: {}", self.shown),
        }
    }
}

impl ExecutionPlan for OwnContextExec {
    fn name(&self) -> &str {
        "ProspeoExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return datafusion::common::internal_err!(
                "ProspeoExec has one partition, not {partition}"
            );
        }
        let inner = (self.make)()?;
        let context = Arc::clone(&self.context);
        let partitions = inner.output_partitioning().partition_count();
        let stream = futures::stream::iter(0..partitions)
            .map(move |p| match inner.execute(p, Arc::clone(&context)) {
                Ok(stream) => stream.boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten()
            // Nothing after an error: a later partition would be sent (and paid for) in vain.
            .scan(false, |failed, item| {
                let next = (!*failed).then_some(item);
                if matches!(next, Some(Err(_))) {
                    *failed = true;
                }
                futures::future::ready(next)
            });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }
}
