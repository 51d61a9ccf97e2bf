//! A whole enrichment job, as every front door runs it: `prospeo enrich`, the Python package's
//! `enrich`/`enrich_to`/`dry_run`.
//!
//! A [`Job`] is an input (a path, URL or glob, or a table of the session), an endpoint and the
//! `prospeo.*` options. [`Job::plan`] plans `SELECT * FROM enrich_person(input)` over a client,
//! [`Planned::stream`] runs it (rows in input order), [`Job::dry_run`] counts what a run would
//! send and cost without calling anything that costs, and [`Summary`] is the run's numbers.
//! [`output`] writes a result to any format, locally or to an object store, committed only when
//! complete. Errors are [`JobError`]s: the kind (bad input, bad key, failure, interrupted)
//! decides the binary's exit code and the Python exception class.

pub mod output;

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::catalog::TableFunctionArgs;
use datafusion::dataframe::DataFrame;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionContext, lit};
use futures::{Stream, StreamExt};
use serde::Serialize;

use crate::api::{Client, Endpoint, Tally, Totals};
use crate::cache::CacheKey;
use crate::datafusion::exec::EnrichExec;
use crate::datafusion::options::EnrichOptions;
use crate::datafusion::table::{EnrichTable, function_name, register_with_client};
use crate::mapping::ColumnMapping;
use crate::sandbox::Sandbox;

pub use output::{Output, OutputFormat, planning_error, query_error};

/// Exit code: something failed that is neither the input nor the key.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the command line or the input is wrong.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code: some rows were deferred (quota, credits, budget) or failed: run the same command
/// later.
pub const EXIT_DEFERRED: u8 = 3;
/// Exit code: the API key is missing or was refused.
pub const EXIT_BAD_KEY: u8 = 4;
/// Exit code: interrupted (Ctrl-C).
pub const EXIT_INTERRUPTED: u8 = 130;

/// An error that ends a job, by whose it is to fix.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The input, the options or the output are wrong: the user's to fix.
    #[error("{0}")]
    BadInput(String),
    /// Something failed that is neither the input nor the key (the network, the disk, the API).
    #[error("{0}")]
    Failure(String),
    /// The API key is missing or was refused.
    #[error("{0}")]
    BadKey(String),
    /// The response cache file is held by another process.
    #[error("{0}")]
    CacheInUse(String),
    /// Stopped by the user (Ctrl-C); nothing was written.
    #[error("interrupted")]
    Interrupted,
}

impl JobError {
    /// The `prospeo` binary's exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            JobError::BadInput(_) | JobError::CacheInUse(_) => EXIT_BAD_INPUT,
            JobError::Failure(_) => EXIT_FAILURE,
            JobError::BadKey(_) => EXIT_BAD_KEY,
            JobError::Interrupted => EXIT_INTERRUPTED,
        }
    }

    /// A crate error by whose it is to fix: key problems are their own kind, settings, the
    /// mapping and the cache are the user's to fix, the rest is a failure.
    pub fn from_api_ref(e: &crate::Error) -> JobError {
        if e.is_key_problem() {
            JobError::BadKey(e.to_string())
        } else if e.is_cache_in_use() {
            JobError::CacheInUse(e.to_string())
        } else if e.is_bad_input() {
            JobError::BadInput(e.to_string())
        } else {
            JobError::Failure(e.to_string())
        }
    }
}

impl From<crate::Error> for JobError {
    fn from(e: crate::Error) -> Self {
        JobError::from_api_ref(&e)
    }
}

/// Starts the embedded sandbox: the sample directory and the demo key, on a free loopback
/// port.
pub async fn embedded_sandbox() -> Result<Sandbox, JobError> {
    use crate::sandbox::SandboxConfig;
    use crate::sandbox::generator::{GeneratorConfig, generate_directory};
    let directory = generate_directory(&GeneratorConfig::default());
    Sandbox::start(SandboxConfig::new(Arc::new(directory)))
        .await
        .map_err(|e| JobError::Failure(format!("cannot start the sandbox: {e}")))
}

/// A SQL string literal.
pub fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// What a dry run found: what a run would do to each row, and its worst-case cost.
#[derive(Debug, Default, Clone, Serialize)]
pub struct DryRun {
    /// The input, as given.
    pub input: String,
    /// Input rows.
    pub rows: u64,
    /// Rows that meet the vendor's minimum and would be sent.
    pub valid: u64,
    /// Company records to send with only a name: sent, but a name alone may match the wrong
    /// company (the vendor's warning).
    pub name_only: u64,
    /// Rows below the minimum: never sent, never charged.
    pub invalid_datapoints: u64,
    /// Valid rows whose normalised datapoints repeat an earlier row's: sent once.
    pub duplicates: u64,
    /// Distinct valid records the response cache answers: free.
    pub cached: u64,
    /// Distinct valid records that would be sent.
    pub records_to_send: u64,
    /// Credits if every record sent matched (10 a match with enrich_mobile).
    pub worst_case_credits: u64,
}

/// The numbers of a run. The counts are the client's [`Tally`], under the names it gives them
/// (as EXPLAIN ANALYZE does), read through (`summary.matched`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The input, as given.
    pub input: String,
    /// Where the rows went (empty when they were returned rather than written).
    pub output: String,
    /// Rows out (every input row, once).
    pub rows: u64,
    /// Rows by status, and what was sent, paid and waited for.
    #[serde(flatten)]
    pub counts: Tally,
    /// Time spent waiting for the rate limit.
    pub quota_wait_seconds: f64,
    /// When the quota that deferred rows returns (RFC 3339), when the API said.
    pub quota_returns_at: Option<String>,
    /// Wall time of the run.
    pub elapsed_seconds: f64,
    /// Rows a second over the run.
    pub rows_per_second: f64,
    /// The binary's exit code for this run: 0 every row settled, 3 some deferred or failed.
    pub exit_code: u8,
    /// What to do about deferred, failed or unstored rows (empty when there are none).
    pub advice: Vec<String>,
}

impl std::ops::Deref for Summary {
    type Target = Tally;
    fn deref(&self) -> &Tally {
        &self.counts
    }
}

impl Summary {
    /// The summary of a run that wrote `rows` rows to `output` in `elapsed_seconds`, from the
    /// client's totals.
    pub fn new(
        input: &str,
        output: &str,
        rows: u64,
        totals: &Totals,
        elapsed_seconds: f64,
    ) -> Summary {
        Summary {
            input: input.to_string(),
            output: output.to_string(),
            rows,
            counts: totals.tally,
            quota_wait_seconds: totals.quota_wait_ms as f64 / 1000.0,
            quota_returns_at: totals.quota_returns_at.map(crate::time::rfc3339),
            elapsed_seconds,
            rows_per_second: if elapsed_seconds > 0.0 {
                rows as f64 / elapsed_seconds
            } else {
                0.0
            },
            exit_code: settled_code(totals),
            advice: Vec::new(),
        }
        .with_advice()
    }

    fn with_advice(mut self) -> Summary {
        self.advice = self.advice();
        self
    }

    /// The summary as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The sentences that say what to do about deferred, failed or unstored rows, if any.
    fn advice(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.cache_errors > 0 {
            lines.push(format!(
                "{} answers could not be stored in the cache: a re-run sends them again.",
                self.cache_errors
            ));
        }
        if self.failed > 0 {
            lines.push(format!(
                "{} rows failed (their reasons are in prospeo_error): run the same job again to retry them (answered rows are not sent again).",
                self.failed
            ));
        }
        if self.deferred > 0 {
            lines.push(match &self.quota_returns_at {
                Some(at) => format!(
                    "{} rows were deferred: the quota returns at {at}; run the same job again then (answered rows are not sent again).",
                    self.deferred
                ),
                None => format!(
                    "{} rows were deferred (credits or budget): run the same job again later (answered rows are not sent again).",
                    self.deferred
                ),
            });
        }
        lines
    }
}

/// 0 when every row is settled; [`EXIT_DEFERRED`] when some were deferred or failed (both are
/// sent again by the same job).
pub fn settled_code(totals: &Totals) -> u8 {
    if totals.deferred > 0 || totals.failed > 0 {
        EXIT_DEFERRED
    } else {
        0
    }
}

/// One enrichment job: an input, an endpoint and the `prospeo.*` options.
#[derive(Debug, Clone)]
pub struct Job {
    /// A path, URL or glob of Parquet, CSV or NDJSON files, or a table of the session.
    pub input: String,
    /// The endpoint the rows go to.
    pub endpoint: Endpoint,
    /// The options, as `SET prospeo.*` would set them.
    pub options: EnrichOptions,
}

impl Job {
    /// A job; refuses options the endpoint does not take (person flags on companies).
    pub fn new(
        input: impl Into<String>,
        endpoint: Endpoint,
        options: EnrichOptions,
    ) -> Result<Job, JobError> {
        if endpoint.flags(options.flags()) != options.flags() {
            return Err(JobError::BadInput(format!(
                "only_verified_email, enrich_mobile and only_verified_mobile are person options: {} takes none; drop them, or enrich persons",
                endpoint.path()
            )));
        }
        Ok(Job {
            input: input.into(),
            endpoint,
            options,
        })
    }

    /// The table function this job runs.
    pub fn function(&self) -> &'static str {
        function_name(self.endpoint)
    }

    /// Makes the job's options the session's `prospeo.*` options.
    pub fn install_options(&self, ctx: &SessionContext) {
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .extensions
            .insert(self.options.clone());
    }

    /// Plans the job on `ctx` over `client` (registered as the session's table functions).
    pub async fn plan(&self, ctx: &SessionContext, client: Client) -> Result<Planned, JobError> {
        register_with_client(ctx, client);
        self.install_options(ctx);
        let input = sql_string(&self.input);
        let df = ctx
            .sql(&format!("SELECT * FROM {}({input})", self.function()))
            .await
            .map_err(planning_error)?;
        Ok(Planned {
            ctx: ctx.clone(),
            df,
            function: self.function(),
            input,
            name: self.input.clone(),
        })
    }

    /// Reads the mapped columns only and counts what would happen to each row; sends nothing,
    /// needs no key. `ctx` must have the table functions registered (as [`crate::register`]
    /// does) unless this call registers them.
    pub async fn dry_run(&self, ctx: &SessionContext) -> Result<(DryRun, ColumnMapping), JobError> {
        if ctx.table_function(self.function()).is_err() {
            crate::register(ctx);
        }
        self.install_options(ctx);
        let state = ctx.state();
        let endpoint = self.endpoint;
        let provider = ctx
            .table_function(self.function())
            .and_then(|f| {
                f.create_table_provider_with_args(TableFunctionArgs::new(
                    &[lit(self.input.clone())],
                    &state,
                ))
            })
            .map_err(planning_error)?;
        let table = provider.downcast_ref::<EnrichTable>().ok_or_else(|| {
            JobError::Failure(format!("{} did not return its table", self.function()))
        })?;
        let mapping = table.mapping().clone();
        let options = table.options().clone();
        let schema = provider.schema();
        let columns: Vec<String> = mapping
            .column_indices()
            .into_iter()
            .map(|i| schema.field(i).name().clone())
            .collect();
        let df = ctx
            .read_table(provider.clone())
            .and_then(|df| {
                df.select_columns(&columns.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .map_err(planning_error)?;
        let mut stream = df.execute_stream().await.map_err(query_error)?;
        let mut report = DryRun {
            input: self.input.clone(),
            ..Default::default()
        };
        // Answers are looked up where the run would find them: the coordinator's, else the
        // cache file's.
        let coordinator = match options.coordinator_url()? {
            Some(url) => {
                let mut coordinator = crate::coordinator::Coordinator::connect(&url).await?;
                coordinator.check_version().await?;
                let base_url = match &options.base_url {
                    Some(url) => url.clone(),
                    None => crate::api::ClientBuilder::from_env()
                        .configured_base_url()
                        .to_string(),
                };
                coordinator.set_api(&base_url);
                Some(coordinator)
            }
            None => None,
        };
        let cache = match coordinator {
            Some(_) => None,
            None => options.open_cache()?,
        };
        let flags = endpoint.flags(options.flags());
        let now = std::time::SystemTime::now();
        let mut seen = HashSet::new();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(planning_error)?;
            let records = mapping
                .datapoints_projected(&batch)
                .map_err(|e| JobError::BadInput(format!("{}: {e}", self.input)))?;
            let mut first_seen = Vec::new();
            for record in records {
                report.rows += 1;
                let Some(prepared) = endpoint.prepare(&record) else {
                    report.invalid_datapoints += 1;
                    continue;
                };
                report.valid += 1;
                let key = CacheKey::for_endpoint(endpoint, &prepared, flags);
                if seen.insert(key.clone()) {
                    first_seen.push((key, endpoint.name_only(&prepared)));
                } else {
                    report.duplicates += 1;
                }
            }
            let keys: Vec<CacheKey> = first_seen.iter().map(|(key, _)| key.clone()).collect();
            let entries: Vec<Option<crate::cache::CacheEntry>> = match (&coordinator, &cache) {
                (Some(coordinator), _) => {
                    let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.as_bytes().to_vec()).collect();
                    coordinator
                        .answers(&keys)
                        .await?
                        .into_iter()
                        .map(|value| crate::cache::EncodedEntry::from_bytes(value?).decode().ok())
                        .collect()
                }
                (None, Some(cache)) => cache
                    .get_many(&keys)
                    .map_err(|e| JobError::Failure(e.to_string()))?,
                (None, None) => vec![None; keys.len()],
            };
            let served = entries.iter().map(|e| {
                e.as_ref()
                    .is_some_and(|e| e.serves(flags, options.cache_ttl, now))
            });
            for ((_, name_only), served) in first_seen.iter().zip(served) {
                report.cached += u64::from(served);
                report.name_only += u64::from(*name_only && !served);
            }
        }
        report.records_to_send = report.valid - report.duplicates - report.cached;
        let per_match = if flags.reveals_mobile() { 10 } else { 1 };
        report.worst_case_credits = report.records_to_send * per_match;
        Ok((report, mapping))
    }
}

/// A planned job: the query, ready to run.
pub struct Planned {
    ctx: SessionContext,
    df: DataFrame,
    function: &'static str,
    input: String,
    name: String,
}

impl Planned {
    /// The output's schema: the input's columns, then the enrichment columns.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.df.schema().as_arrow().clone())
    }

    /// How the input's columns were mapped, from the plan the job will run.
    pub async fn mapping(&self) -> Result<Option<ColumnMapping>, JobError> {
        fn find(plan: &Arc<dyn ExecutionPlan>) -> Option<&EnrichExec> {
            plan.downcast_ref::<EnrichExec>()
                .or_else(|| plan.children().into_iter().find_map(find))
        }
        let plan = self
            .df
            .clone()
            .create_physical_plan()
            .await
            .map_err(planning_error)?;
        Ok(find(&plan).map(|exec| exec.mapping().clone()))
    }

    /// The input's row count (free: no enrichment column is read). Reading the whole input
    /// once before paying for anything finds a broken line (a CSV row with too many fields,
    /// say) while it costs nothing; for Parquet it reads only metadata.
    pub async fn count_rows(&self) -> Result<Option<u64>, JobError> {
        let counted = async {
            let batches = self
                .ctx
                .sql(&format!(
                    "SELECT count(*) FROM {}({})",
                    self.function, self.input
                ))
                .await?
                .collect()
                .await?;
            Ok::<_, DataFusionError>(batches.first().and_then(|b| {
                b.column(0)
                    .as_primitive_opt::<Int64Type>()
                    .and_then(|c| c.values().first().map(|&n| n as u64))
            }))
        };
        counted
            .await
            .map_err(|e| JobError::BadInput(format!("cannot read {}: {e}", self.name)))
    }

    /// Runs the job: the enriched rows, in input order (partitions one after the other).
    pub async fn stream(
        self,
    ) -> Result<impl Stream<Item = Result<RecordBatch, DataFusionError>> + Send + use<>, JobError>
    {
        let partitions = self
            .df
            .execute_stream_partitioned()
            .await
            .map_err(query_error)?;
        Ok(futures::stream::iter(partitions).flatten())
    }
}
