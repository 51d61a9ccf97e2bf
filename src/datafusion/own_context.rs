//! A plan that runs under a task context of its own, whatever context a host executes it
//! with: what a table function called across DataFusion's FFI boundary returns (see
//! [`ffi`](super::ffi)).

use std::fmt;
use std::sync::Arc;

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
use futures::StreamExt;

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
