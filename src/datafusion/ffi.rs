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
pub fn table_function(
    endpoint: Endpoint,
    template: Option<ClientBuilder>,
    defaults: EnrichOptions,
    runtime: Handle,
    codec: FFI_LogicalExtensionCodec,
) -> FFI_TableFunction {
    let function = EnrichFunction::for_foreign_host(endpoint, template, defaults);
    FFI_TableFunction::new_with_ffi_codec(
        Arc::new(function) as Arc<dyn TableFunctionImpl>,
        Some(runtime),
        codec,
    )
}

/// A plan that runs under its own task context, whatever context it is executed with, and
/// shows the host one partition and no children: the input's partitions come out one after
/// the other (rows in input order), and a host's optimizer cannot rewrite what lies below.
pub struct OwnContextExec {
    inner: Arc<dyn ExecutionPlan>,
    context: Arc<TaskContext>,
    properties: Arc<PlanProperties>,
}

impl OwnContextExec {
    /// Runs `inner` under `context`.
    pub fn new(inner: Arc<dyn ExecutionPlan>, context: Arc<TaskContext>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(inner.schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        OwnContextExec {
            inner,
            context,
            properties,
        }
    }

    /// The plan it runs.
    pub fn inner(&self) -> &Arc<dyn ExecutionPlan> {
        &self.inner
    }
}

impl fmt::Debug for OwnContextExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnContextExec")
            .field("inner", &self.inner.name())
            .finish()
    }
}

impl DisplayAs for OwnContextExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::TreeRender => write!(f, "{}", self.inner.name()),
            _ => {
                let inner = displayable(self.inner.as_ref()).indent(false).to_string();
                let inner: Vec<&str> = inner.lines().map(str::trim).collect();
                write!(f, "ProspeoExec: {}", inner.join(" <- "))
            }
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
        let inner = Arc::clone(&self.inner);
        let context = Arc::clone(&self.context);
        let partitions = inner.output_partitioning().partition_count();
        let stream = futures::stream::iter(0..partitions)
            .map(move |p| match inner.execute(p, Arc::clone(&context)) {
                Ok(stream) => stream.boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.inner.schema(),
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
