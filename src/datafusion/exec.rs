//! The enrichment node: one DataFusion `ExecutionPlan` over any input plan.
//!
//! Per partition it re-chunks the input into requests of at most 50 rows, sends them through
//! the shared [`Client`] (which bounds requests in flight across every partition and paces them
//! to the plan's quota), and emits one output row per input row, in input order. At most
//! `concurrency` chunks per partition are in flight or waiting to be emitted, so memory stays
//! bounded whatever the input size.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::{Stream, StreamExt, TryStreamExt};

use crate::api::client::Client;
use crate::mapping::ColumnMapping;
use crate::output::{OutputProjection, OutputSchema};
use crate::vendor::endpoint::Endpoint;
use crate::vendor::outcome::BatchOutcome;
use crate::vendor::tally::Tally;
use crate::vendor::wire::EnrichFlags;

/// Where an output column comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnSource {
    /// A column of the input plan, by index.
    Input(usize),
    /// A column of the enrichment schema ([`OutputSchema::schema`]), by index.
    Enrichment(usize),
}

/// What was pushed below the node, for EXPLAIN.
#[derive(Debug, Clone, Default)]
pub struct PushedDown {
    /// Predicates applied to the input before enrichment.
    pub filters: Vec<String>,
    /// Rows taken from the input before enrichment.
    pub limit: Option<usize>,
}

/// The enrichment `ExecutionPlan`.
#[derive(Debug)]
pub struct EnrichExec {
    input: Arc<dyn ExecutionPlan>,
    /// Shared with the partitions' streams.
    spec: Arc<EnrichSpec>,
    schema: SchemaRef,
    /// The enrichment columns of `spec.columns`, in order: the only ones flattened.
    enrichment: OutputProjection,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// Everything [`EnrichExec::try_new`] needs besides the input.
#[derive(Debug, Clone)]
pub struct EnrichSpec {
    /// Which input columns give which datapoints.
    pub mapping: Arc<ColumnMapping>,
    /// Input columns holding the mapped datapoints, in `mapping.column_indices()` order.
    pub mapped_columns: Vec<usize>,
    /// The output columns, in order.
    pub columns: Vec<ColumnSource>,
    /// The client every partition sends through (one pacer, one cache, one budget).
    pub client: Client,
    /// The endpoint the records are sent to.
    pub endpoint: Endpoint,
    /// The request flags.
    pub flags: EnrichFlags,
    /// The enrichment columns' schema and decoding.
    pub output: OutputSchema,
    /// Chunks in flight or waiting per partition.
    pub concurrency: usize,
    /// The options, as EXPLAIN shows them (never the key).
    pub options_display: String,
    /// What the scan pushed below the node, for EXPLAIN.
    pub pushed: PushedDown,
}

impl EnrichExec {
    /// The node over `input`.
    pub fn try_new(input: Arc<dyn ExecutionPlan>, spec: EnrichSpec) -> Result<Self> {
        let concurrency = spec.concurrency.max(1);
        Self::over(
            input,
            Arc::new(EnrichSpec {
                concurrency,
                ..spec
            }),
        )
    }

    /// The node over `input` with a spec already shared (by the node it replaces).
    fn over(input: Arc<dyn ExecutionPlan>, spec: Arc<EnrichSpec>) -> Result<Self> {
        let input_schema = input.schema();
        let enrichment = spec.output.schema();
        let fields: Vec<_> = spec
            .columns
            .iter()
            .map(|c| match *c {
                ColumnSource::Input(i) => input_schema.fields().get(i).cloned(),
                ColumnSource::Enrichment(i) => enrichment.fields().get(i).cloned(),
            })
            .collect::<Option<_>>()
            .ok_or_else(|| {
                DataFusionError::Internal("an output column of EnrichExec is out of range".into())
            })?;
        // The input's schema metadata stays (a pandas DataFrame's, say), as the table's schema
        // keeps it.
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            input_schema.metadata().clone(),
        ));
        let enrichment_columns: Vec<usize> = spec
            .columns
            .iter()
            .filter_map(|c| match *c {
                ColumnSource::Enrichment(i) => Some(i),
                ColumnSource::Input(_) => None,
            })
            .collect();
        let enrichment = spec.output.projection(&enrichment_columns)?;
        let properties = PlanProperties::new(
            output_orderings(&input, &spec.columns, &schema),
            input.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(EnrichExec {
            input,
            spec,
            schema,
            enrichment,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The column mapping the node enriches with.
    pub fn mapping(&self) -> &ColumnMapping {
        &self.spec.mapping
    }

    /// What was pushed below the node.
    pub fn pushed(&self) -> &PushedDown {
        &self.spec.pushed
    }

    /// The input plan.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// The enrichment columns the node flattens: those the query reads, and no others.
    pub fn enrichment_columns(&self) -> &OutputProjection {
        &self.enrichment
    }
}

impl DisplayAs for EnrichExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let mapping: Vec<String> = self
            .spec
            .mapping
            .mapped()
            .iter()
            .map(|m| format!("{}<-{:?}", m.datapoint, m.column))
            .collect();
        // The columns that are decoded and flattened: a query reading only the status pays
        // for no person or company decoding, and EXPLAIN says so.
        let endpoint_columns = self.spec.output.columns_of(self.spec.endpoint.objects());
        let enrichment = if endpoint_columns
            .iter()
            .all(|c| self.enrichment.columns().contains(c))
        {
            "all".to_string()
        } else {
            format!("[{}]", self.enrichment.column_names().join(", "))
        };
        write!(
            f,
            "EnrichExec: endpoint={}, mapping=[{}], options=[{}], enrichment_columns={enrichment}",
            self.spec.endpoint.path(),
            mapping.join(", "),
            self.spec.options_display,
        )?;
        if !self.spec.pushed.filters.is_empty() {
            write!(
                f,
                ", pushed_filters=[{}]",
                self.spec.pushed.filters.join(", ")
            )?;
        }
        if let Some(limit) = self.spec.pushed.limit {
            write!(f, ", pushed_limit={limit}")?;
        }
        if matches!(t, DisplayFormatType::Verbose) {
            write!(f, ", ignored=[")?;
            for (i, ignored) in self.spec.mapping.ignored().iter().enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                write!(f, "{sep}{:?}: {}", ignored.column, ignored.reason)?;
            }
            write!(f, "]")?;
        }
        Ok(())
    }
}

#[allow(deprecated)]
impl ExecutionPlan for EnrichExec {
    fn name(&self) -> &str {
        "EnrichExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        // Rows do come out in input order within each partition, and the output's orderings
        // say so (`output_orderings`). But `true` here lets the optimizer push a sort on this
        // node's columns down to the input unchanged, and this node's schema is not its
        // input's (enrichment columns interleave): that would sort by the wrong columns.
        vec![false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "EnrichExec takes exactly one input".into(),
            ));
        }
        Ok(Arc::new(EnrichExec::over(
            children.swap_remove(0),
            Arc::clone(&self.spec),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let metrics = NodeMetrics::new(&self.metrics, partition);
        let chunk_rows = self.spec.client.max_request_records();
        let job = Arc::new(ChunkJob {
            spec: self.spec.clone(),
            schema: self.schema.clone(),
            enrichment: self.enrichment.clone(),
            metrics,
        });
        let stream = rechunk(input, chunk_rows)
            .map_ok(move |chunk| {
                // Each chunk on a task of its own: mapping, lookups and flattening of the
                // chunks in flight run on every worker thread, not all on the thread that
                // polls this stream (the one that also writes the output). The task is
                // aborted when this stream is dropped (the client still settles and stores
                // the answers it asked for, on a task of its own); a panic in it comes out as
                // the stream's error.
                let job = job.clone();
                let task = SpawnedTask::spawn(async move { job.enrich(chunk).await });
                async move {
                    task.await.unwrap_or_else(|e| {
                        Err(DataFusionError::External(
                            format!("a chunk's task ended abnormally: {e}").into(),
                        ))
                    })
                }
            })
            .try_buffered(self.spec.concurrency);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The input's orderings carried over to the output's columns: every partition's rows come
/// out in input order, so an ordering on passed-through columns still holds above the node and
/// a sort on them can be dropped. Orderings that involve a column the node does not pass
/// through are dropped from the first such column on.
fn output_orderings(
    input: &Arc<dyn ExecutionPlan>,
    columns: &[ColumnSource],
    schema: &SchemaRef,
) -> EquivalenceProperties {
    use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
    use datafusion::physical_expr::PhysicalSortExpr;
    use datafusion::physical_expr::equivalence::ProjectionMapping;
    use datafusion::physical_expr::expressions::Column;

    let input_schema = input.schema();
    // (input column, output column) of every passed-through column, in output order.
    let passed: Vec<(usize, usize)> = columns
        .iter()
        .enumerate()
        .filter_map(|(out, c)| match *c {
            ColumnSource::Input(i) => Some((i, out)),
            ColumnSource::Enrichment(_) => None,
        })
        .collect();
    let exprs = passed.iter().map(|&(i, _)| {
        let name = input_schema.field(i).name().clone();
        (
            Arc::new(Column::new(&name, i)) as Arc<dyn PhysicalExpr>,
            name,
        )
    });
    let Ok(mapping) = ProjectionMapping::try_new(exprs, &input_schema) else {
        return EquivalenceProperties::new(schema.clone());
    };
    // The input's properties projected onto the passed-through columns alone (column j is
    // passed[j]), then moved to their places among the enrichment columns.
    let passed_schema = Arc::new(Schema::new(
        passed
            .iter()
            .map(|&(i, _)| input_schema.field(i).as_ref().clone())
            .collect::<Vec<_>>(),
    ));
    let projected = input
        .equivalence_properties()
        .project(&mapping, passed_schema);
    let to_output = |expr: Arc<dyn PhysicalExpr>| -> Option<Arc<dyn PhysicalExpr>> {
        expr.transform(|e| {
            Ok(match e.downcast_ref::<Column>() {
                Some(c) => match passed.get(c.index()) {
                    Some(&(_, out)) => Transformed::yes(
                        Arc::new(Column::new(c.name(), out)) as Arc<dyn PhysicalExpr>
                    ),
                    None => return Err(DataFusionError::Internal("out of range".into())),
                },
                None => Transformed::no(e),
            })
        })
        .data()
        .ok()
    };
    let orderings: Vec<Vec<PhysicalSortExpr>> = projected
        .oeq_class()
        .iter()
        .map(|ordering| {
            ordering
                .iter()
                .map_while(|sort| {
                    to_output(Arc::clone(&sort.expr)).map(|expr| PhysicalSortExpr {
                        expr,
                        options: sort.options,
                    })
                })
                .collect::<Vec<_>>()
        })
        .filter(|ordering| !ordering.is_empty())
        .collect();
    EquivalenceProperties::new_with_orderings(schema.clone(), orderings)
}

/// The node's metrics, per partition (EXPLAIN ANALYZE sums them): every count of a [`Tally`],
/// under its public name, the quota wait as a time.
#[derive(Debug, Clone)]
struct NodeMetrics {
    /// One counter per [`Tally::NAMES`] entry; `None` for the quota wait (a time).
    counts: Vec<Option<Count>>,
    quota_wait: Time,
}

impl NodeMetrics {
    fn new(set: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        let counts = Tally::NAMES
            .iter()
            .map(|&name| {
                (name != Tally::QUOTA_WAIT)
                    .then(|| MetricBuilder::new(set).counter(name, partition))
            })
            .collect();
        NodeMetrics {
            counts,
            quota_wait: MetricBuilder::new(set).subset_time("quota_wait_time", partition),
        }
    }

    fn record(&self, outcome: &BatchOutcome) {
        for (count, (_, value)) in self.counts.iter().zip(outcome.tally.counts()) {
            if let Some(count) = count {
                count.add(value.max(0) as usize);
            }
        }
        self.quota_wait.add_duration(outcome.quota_wait());
    }
}

/// What every chunk of one partition shares.
struct ChunkJob {
    spec: Arc<EnrichSpec>,
    schema: SchemaRef,
    enrichment: OutputProjection,
    metrics: NodeMetrics,
}

impl ChunkJob {
    /// Enriches one chunk of at most 50 input rows into one output batch of the same rows.
    async fn enrich(&self, chunk: RecordBatch) -> Result<RecordBatch> {
        let spec = &self.spec;
        let mapped = chunk.project(&spec.mapped_columns)?;
        let datapoints = spec
            .mapping
            .datapoints_projected(&mapped)
            .map_err(crate::Error::from)?;
        let outcome = spec
            .client
            .enrich(spec.endpoint, &datapoints, spec.flags)
            .await?;
        self.metrics.record(&outcome);
        let enrichment = spec
            .output
            .flatten_projected(&self.enrichment, &outcome.records)?;
        // The projection holds the enrichment columns in `spec.columns` order.
        let mut flattened = enrichment.columns().iter();
        let columns: Vec<ArrayRef> = spec
            .columns
            .iter()
            .map(|c| match *c {
                ColumnSource::Input(i) => chunk.column(i).clone(),
                ColumnSource::Enrichment(_) => flattened
                    .next()
                    .expect("one flattened column per enrichment column")
                    .clone(),
            })
            .collect();
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// Re-chunks a stream of batches into batches of exactly `rows` rows (the last may be
/// shorter), keeping row order. Holds at most one input batch plus `rows` rows.
pub fn rechunk(
    input: SendableRecordBatchStream,
    rows: usize,
) -> impl Stream<Item = Result<RecordBatch>> + Send {
    let rows = rows.max(1);
    let schema = input.schema();
    futures::stream::unfold(
        (input, Vec::<RecordBatch>::new(), 0usize, false),
        move |(mut input, mut pending, mut pending_rows, mut done)| {
            let schema = schema.clone();
            async move {
                loop {
                    if pending_rows >= rows || (done && pending_rows > 0) {
                        let take = pending_rows.min(rows);
                        let chunk = match take_rows(&schema, &mut pending, take) {
                            Ok(chunk) => chunk,
                            Err(e) => return Some((Err(e), (input, pending, 0, true))),
                        };
                        pending_rows -= take;
                        return Some((Ok(chunk), (input, pending, pending_rows, done)));
                    }
                    if done {
                        return None;
                    }
                    match input.next().await {
                        Some(Ok(batch)) => {
                            if batch.num_rows() > 0 {
                                pending_rows += batch.num_rows();
                                pending.push(batch);
                            }
                        }
                        Some(Err(e)) => return Some((Err(e), (input, pending, 0, true))),
                        None => done = true,
                    }
                }
            }
        },
    )
}

/// Takes the first `take` rows of `pending`, leaving the rest in it.
fn take_rows(
    schema: &SchemaRef,
    pending: &mut Vec<RecordBatch>,
    take: usize,
) -> Result<RecordBatch> {
    let mut parts = Vec::new();
    let mut needed = take;
    while needed > 0 {
        let first = pending.remove(0);
        if first.num_rows() <= needed {
            needed -= first.num_rows();
            parts.push(first);
        } else {
            parts.push(first.slice(0, needed));
            pending.insert(0, first.slice(needed, first.num_rows() - needed));
            needed = 0;
        }
    }
    if parts.len() == 1 {
        return Ok(parts.swap_remove(0));
    }
    Ok(concat_batches(schema, &parts)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    #[tokio::test]
    async fn rechunking_keeps_every_row_in_order() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let mut next = 0i64;
        let batches: Vec<Result<RecordBatch>> = [3usize, 120, 0, 7, 50, 1]
            .iter()
            .map(|&len| {
                let values: Vec<i64> = (next..next + len as i64).collect();
                next += len as i64;
                Ok(RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(Int64Array::from(values))],
                )?)
            })
            .collect();
        let input: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
            schema.clone(),
            futures::stream::iter(batches),
        ));
        let chunks: Vec<RecordBatch> = rechunk(input, 50).try_collect().await.unwrap();
        let sizes: Vec<usize> = chunks.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, [50, 50, 50, 31]);
        let all: Vec<i64> = chunks
            .iter()
            .flat_map(|c| {
                c.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(all, (0..next).collect::<Vec<_>>());
    }
}
