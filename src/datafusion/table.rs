//! The SQL front door: the `enrich_person(input [, options])` table function, its
//! `TableProvider`, and [`register`].
//!
//! The provider's schema is the input's columns followed by the enrichment columns. At scan
//! time it pushes down what saves credits: a query that selects no enrichment column reads the
//! input and calls nothing; predicates on input columns and LIMIT run below the enrichment node,
//! so excluded rows are never sent.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, MapArray, StructArray};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, ScalarValue, plan_err};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::GlobalLimitExec;
use datafusion::prelude::SessionContext;

use crate::api::client::{Client, ClientBuilder};
use crate::datafusion::exec::{ColumnSource, EnrichExec, EnrichSpec, PushedDown};
use crate::datafusion::options::{EnrichOptions, InputFormat};
use crate::error::Error;
use crate::mapping::ColumnMapping;
use crate::output::OutputSchema;
use crate::vendor::endpoint::Endpoint;

/// The person table function's name.
pub const FUNCTION_NAME: &str = "enrich_person";

/// The company table function's name.
pub const COMPANY_FUNCTION_NAME: &str = "enrich_company";

/// The table function of an endpoint.
pub fn function_name(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::BulkEnrichPerson => FUNCTION_NAME,
        Endpoint::BulkEnrichCompany => COMPANY_FUNCTION_NAME,
    }
}

pub use crate::datafusion::options::ENV_CACHE;

/// Registers `enrich_person`, `enrich_company` and the `prospeo.*` options on `ctx`. The API key
/// comes from `PROSPEO_API_KEY` (or `PROSPEO_API_KEY_FILE`) when a query first needs it.
pub fn register(ctx: &SessionContext) {
    register_functions(ctx, None, None);
}

/// Registers `enrich_person` and `enrich_company` with a client of your own: its key, base URL,
/// limits, credit budget and cache serve every query of `ctx`, and the `prospeo.*` options that
/// configure a client (`plan`, `per_*`, `base_url`, `concurrency`, `max_credits`, `cache*`) are
/// ignored.
pub fn register_with_client(ctx: &SessionContext, client: Client) {
    register_functions(ctx, Some(client), None);
}

/// Registers `enrich_person` and `enrich_company` with clients made from `builder` (its key,
/// base URL, timeouts, retry policy...) plus the session's `prospeo.*` options (limits,
/// concurrency, budget, cache), as [`register`] does from the environment.
pub fn register_with_builder(ctx: &SessionContext, builder: ClientBuilder) {
    register_functions(ctx, None, Some(builder));
}

/// Registers both table functions over one set of clients: a query that enriches persons and
/// their companies at once paces both through one limiter, since the endpoints share the key's
/// enrich quota (reference, "POST /bulk-enrich-company").
fn register_functions(
    ctx: &SessionContext,
    client: Option<Client>,
    template: Option<ClientBuilder>,
) {
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        let options = state.config_mut().options_mut();
        if options.extensions.get::<EnrichOptions>().is_none() {
            options.extensions.insert(EnrichOptions::default());
        }
    }
    let clients = Arc::default();
    for endpoint in Endpoint::ALL {
        let function = EnrichFunction {
            endpoint,
            client: client.clone(),
            template: template.clone(),
            clients: Arc::clone(&clients),
            foreign: None,
            runtime: None,
        };
        ctx.register_udtf(function_name(endpoint), Arc::new(function));
    }
}

/// A table function over one endpoint: `enrich_person` or `enrich_company`. Clients are made on
/// first use and shared by every query (and both functions of a session) with the same
/// settings, so they share one connection pool and one quota limiter.
pub struct EnrichFunction {
    endpoint: Endpoint,
    client: Option<Client>,
    template: Option<ClientBuilder>,
    clients: Arc<Mutex<HashMap<String, Client>>>,
    /// Called from a host built separately (across the FFI boundary): the options under the
    /// host session's, and a client of each query's own (see [`crate::datafusion::ffi`]).
    foreign: Option<EnrichOptions>,
    /// The runtime this library's I/O runs on when a foreign host calls (its Tokio is not
    /// this library's).
    runtime: Option<tokio::runtime::Handle>,
}

/// The `enrich_person` table function (an [`EnrichFunction`] of the person endpoint).
pub type EnrichPersonFunction = EnrichFunction;

impl Default for EnrichFunction {
    fn default() -> Self {
        EnrichFunction::new(Endpoint::BulkEnrichPerson)
    }
}

impl EnrichFunction {
    /// The table function of `endpoint`, with clients from the environment.
    pub fn new(endpoint: Endpoint) -> Self {
        EnrichFunction {
            endpoint,
            client: None,
            template: None,
            clients: Arc::default(),
            foreign: None,
            runtime: None,
        }
    }

    /// The table function of `endpoint` for a host built separately (see
    /// [`crate::datafusion::ffi`]): clients from `template` or the environment, `defaults`
    /// under the host session's `prospeo.*` options, one client a query.
    pub fn for_foreign_host(
        endpoint: Endpoint,
        template: Option<ClientBuilder>,
        defaults: EnrichOptions,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        EnrichFunction {
            endpoint,
            client: None,
            template,
            clients: Arc::default(),
            foreign: Some(defaults),
            runtime: Some(runtime),
        }
    }

    /// The table of a call from a foreign host (made with [`EnrichFunction::for_foreign_host`])
    /// whose session config is `host`: `input` is a path, glob or URL, `literal` the call's
    /// options over the host's `prospeo.*` options and the defaults. Hand it over as an
    /// `FFI_TableProvider` that supports filter pushdown, so predicates on input columns run
    /// before anything is sent.
    pub fn foreign_table(
        &self,
        input: &str,
        literal: &[(String, String)],
        host: &datafusion::common::config::ConfigOptions,
    ) -> Result<Arc<dyn TableProvider>> {
        let name = function_name(self.endpoint);
        let mut options = self.foreign.clone().unwrap_or_default();
        host_options(host, &mut options)?;
        for (key, value) in literal {
            options.set(key, value)?;
        }
        let private = Arc::new(private_state(host));
        self.table(name, &private, input, options, Some(Arc::clone(&private)))
    }

    /// The table over `input` read with `state`; `private` is a foreign host's own session
    /// (then each query gets a client of its own, so the response cache is open only while one
    /// runs; a local session shares one across its queries).
    fn table(
        &self,
        name: &str,
        state: &SessionState,
        input: &str,
        options: EnrichOptions,
        private: Option<Arc<SessionState>>,
    ) -> Result<Arc<dyn TableProvider>> {
        let (provider, description) =
            resolve_input(name, state, input, &options, private.is_some())?;
        let clients = private.is_none().then(|| self.clients.clone());
        let table = EnrichTable::try_new(
            self.endpoint,
            provider,
            description,
            options,
            ClientSource {
                fixed: self.client.clone(),
                template: self.template.clone(),
                clients,
            },
        )?;
        Ok(Arc::new(EnrichTable {
            private,
            runtime: self.runtime.clone(),
            ..table
        }))
    }
}

impl fmt::Debug for EnrichFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrichFunction")
            .field("endpoint", &self.endpoint)
            .field("client", &self.client)
            .finish()
    }
}

/// Makes (or reuses) the client a query needs; called only when enrichment columns are read,
/// so a free query needs no key.
#[derive(Clone)]
struct ClientSource {
    fixed: Option<Client>,
    template: Option<ClientBuilder>,
    /// Clients shared by the queries of a session; `None`: a client for each scan, dropped with
    /// its plan (a foreign host's: the response cache is open only while a query runs).
    clients: Option<Arc<Mutex<HashMap<String, Client>>>>,
}

impl ClientSource {
    fn client(&self, options: &EnrichOptions) -> Result<Client> {
        if let Some(client) = &self.fixed {
            return Ok(client.clone());
        }
        let template = || {
            self.template
                .clone()
                .unwrap_or_else(ClientBuilder::from_env)
        };
        let Some(clients) = &self.clients else {
            return Ok(options.client_builder(template())?.build()?);
        };
        let settings = options.client_settings();
        let mut clients = clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&settings) {
            return Ok(client.clone());
        }
        let client = options.client_builder(template())?.build()?;
        clients.insert(settings, client.clone());
        Ok(client)
    }
}

impl TableFunctionImpl for EnrichFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let session = args.session();
        let name = function_name(self.endpoint);
        let usage = format!(
            "usage: {name}('path, URL, glob or table name' [, named_struct('option', value, ...)])"
        );
        let input = match exprs.first() {
            Some(Expr::Literal(ScalarValue::Utf8(Some(s)), _))
            | Some(Expr::Literal(ScalarValue::LargeUtf8(Some(s)), _))
            | Some(Expr::Literal(ScalarValue::Utf8View(Some(s)), _)) => s.clone(),
            _ => return plan_err!("{name}: the first argument must be a string; {usage}"),
        };
        if exprs.len() > 2 {
            return plan_err!("{name}: too many arguments; {usage}");
        }
        let (mut options, private) = match &self.foreign {
            None => (
                session
                    .config_options()
                    .extensions
                    .get::<EnrichOptions>()
                    .cloned()
                    .unwrap_or_default(),
                None,
            ),
            Some(defaults) => {
                let mut options = defaults.clone();
                host_options(session.config_options(), &mut options)?;
                (
                    options,
                    Some(Arc::new(private_state(session.config_options()))),
                )
            }
        };
        if let Some(literal) = exprs.get(1) {
            apply_options_literal(name, session, literal, &mut options)?;
        }
        let state = match &private {
            Some(state) => state.as_ref(),
            None => session.as_any().downcast_ref::<SessionState>().ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "{name} needs a SessionState (for a host built separately, use datafusion_prospeo::datafusion::ffi)"
                ))
            })?,
        };
        self.table(name, state, &input, options, private.clone())
    }
}

/// Applies the `prospeo.*` options a foreign host's session carries (an options object
/// registered with its config reaches this side as the FFI extension's entries).
fn host_options(
    config: &datafusion::common::config::ConfigOptions,
    options: &mut EnrichOptions,
) -> Result<()> {
    use datafusion::common::config::ConfigExtension;
    use datafusion_ffi::config::extension_options::FFI_ExtensionOptions;
    if let Some(local) = config.extensions.get::<EnrichOptions>() {
        *options = local.clone();
        return Ok(());
    }
    let Some(ffi) = config.extensions.get::<FFI_ExtensionOptions>() else {
        return Ok(());
    };
    use datafusion::common::config::ExtensionOptions;
    for entry in ffi.entries() {
        if let (Some((prefix, key)), Some(value)) = (entry.key.split_once('.'), &entry.value)
            && prefix == EnrichOptions::PREFIX
        {
            options.set(key, value)?;
        }
    }
    Ok(())
}

/// A session of this library's own for a call from a foreign host: reads files and object
/// stores (from the environment) with the host's DataFusion settings.
fn private_state(host: &datafusion::common::config::ConfigOptions) -> SessionState {
    let mut config = datafusion::prelude::SessionConfig::new();
    for entry in host.entries() {
        if let Some(value) = &entry.value {
            let _ = config.options_mut().set(&entry.key, value);
        }
    }
    // One partition: the input is read in order, so `LIMIT n` takes the first n rows (the
    // same rows on every run, so a re-run is served by the cache).
    let config = config.with_target_partitions(1);
    datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build()
}

/// Evaluates the options literal (`named_struct(...)` or `MAP {...}`) and applies it.
fn apply_options_literal(
    name: &str,
    session: &dyn Session,
    literal: &Expr,
    options: &mut EnrichOptions,
) -> Result<()> {
    let empty = DFSchema::empty();
    let physical = session.create_physical_expr(literal.clone(), &empty)?;
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    let value = physical.evaluate(&batch)?.into_array(1)?;
    if let Some(structs) = value.as_any().downcast_ref::<StructArray>() {
        for (field, column) in structs.fields().iter().zip(structs.columns()) {
            apply_option(name, options, field.name(), column.as_ref())?;
        }
    } else if let Some(map) = value.as_any().downcast_ref::<MapArray>() {
        for (key, value) in map_pairs(map)? {
            options.set(&key, &value)?;
        }
    } else {
        return plan_err!(
            "{name}: options must be named_struct('option', value, ...) or MAP {{'option': value}}, got {}",
            value.data_type()
        );
    }
    Ok(())
}

/// Applies one option; a nested map (the `map` option) is taken pair by pair, so a column
/// name may hold a comma.
fn apply_option(
    name: &str,
    options: &mut EnrichOptions,
    key: &str,
    column: &dyn Array,
) -> Result<()> {
    if let Some(map) = column.as_any().downcast_ref::<MapArray>() {
        if !key.trim().eq_ignore_ascii_case("map") {
            return plan_err!("{name}: only the `map` option takes a MAP value, not `{key}`");
        }
        let pairs: Vec<String> = map_pairs(map)?
            .into_iter()
            .map(|(column, datapoint)| format!("{column}={datapoint}"))
            .collect();
        return Ok(options.set_map(pairs.iter().map(String::as_str))?);
    }
    let value = if column.is_null(0) {
        String::new()
    } else {
        array_value_to_string(column, 0)?
    };
    Ok(options.set(key, &value)?)
}

fn map_pairs(map: &MapArray) -> Result<Vec<(String, String)>> {
    let entries = map.value(0);
    let keys = entries.column(0);
    let values = entries.column(1);
    (0..entries.len())
        .map(|i| {
            let value = if values.is_null(i) {
                String::new()
            } else {
                array_value_to_string(values.as_ref(), i)?
            };
            Ok((array_value_to_string(keys.as_ref(), i)?, value))
        })
        .collect()
}

/// Runs an async step of planning (listing files, reading a schema) from the synchronous
/// table-function call. On a multi-threaded runtime it blocks this worker in place; elsewhere it
/// runs on a scoped thread with a runtime of its own, so it never deadlocks a single-threaded
/// runtime whose only thread is the caller.
fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(future))
        }
        _ => std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map(|runtime| runtime.block_on(future))
                })
                .join()
        })
        .map_err(|_| ())
        .and_then(|r| r.map_err(|_| ()))
        .unwrap_or_else(|_| panic!("cannot start a runtime to plan an enrichment")),
    }
}

/// The input: a table or view of the session, or a path / URL / glob of files.
fn resolve_input(
    name: &str,
    state: &SessionState,
    input: &str,
    options: &EnrichOptions,
    foreign: bool,
) -> Result<(Arc<dyn TableProvider>, String)> {
    let looks_like_path = input.contains('/')
        || input.contains('\\')
        || input.contains('*')
        || InputFormat::from_path(input).is_some();
    if foreign && !looks_like_path && options.format.is_none() {
        return plan_err!(
            "{name}: `{input}` is not a path or URL; in datafusion-python, {name} reads files (a path, glob or s3://, gs://, az://, http(s):// URL), not the tables of your session: to enrich a table or DataFrame, pass its rows to prospeo.enrich (prospeo.enrich(ctx.table('{input}')))"
        );
    }
    if !looks_like_path && let Ok(schema) = state.schema_for_ref(input) {
        let table_name = datafusion::common::TableReference::from(input);
        let table = block_on(schema.table(table_name.table()))?;
        if let Some(table) = table {
            return Ok((table, format!("table {input}")));
        }
    }
    let url = ListingTableUrl::parse(input).map_err(|e| {
        if foreign {
            DataFusionError::Plan(format!(
                "{name}: `{input}` is not a readable path or URL: {e}"
            ))
        } else {
            DataFusionError::Plan(format!(
                "{name}: `{input}` is neither a table of this session nor a readable path or URL: {e}"
            ))
        }
    })?;
    crate::datafusion::source::ensure_object_store(state, &url)?;
    // This build reads no compressed CSV or JSON (DataFusion's `compression` feature is off).
    let lower = input.to_ascii_lowercase();
    if let Some(suffix) = crate::datafusion::options::COMPRESSED_SUFFIXES
        .into_iter()
        .find(|s| lower.ends_with(s))
    {
        return plan_err!(
            "{name}: `{input}` is compressed ({suffix}), which this build does not read: decompress it first, or convert it to Parquet"
        );
    }
    let format = options
        .format
        .or_else(|| InputFormat::from_path(input))
        .ok_or_else(|| {
            DataFusionError::Plan(format!(
                "{name}: cannot tell the format of `{input}` from its name; say it with named_struct('format', 'parquet' | 'csv' | 'ndjson') or SET prospeo.format"
            ))
        })?;
    let file_format: Arc<dyn FileFormat> = match format {
        InputFormat::Parquet => Arc::new(ParquetFormat::default()),
        InputFormat::Csv => {
            // A .tsv file is tab-separated unless a delimiter other than the default was set.
            let delimiter = if lower.ends_with(".tsv") && options.csv_delimiter == b',' {
                b'\t'
            } else {
                options.csv_delimiter
            };
            Arc::new(
                CsvFormat::default()
                    .with_has_header(options.csv_has_header)
                    .with_delimiter(delimiter)
                    .with_quote(options.csv_quote),
            )
        }
        InputFormat::Json => Arc::new(JsonFormat::default()),
    };
    // A single file is read whatever its extension, and a glob takes what its pattern
    // matches; a directory takes the files with the format's extension (.parquet, .csv,
    // .json).
    let extension = if url.is_collection() && !input.contains('*') {
        format.extension().to_string()
    } else {
        String::new()
    };
    let listing = ListingOptions::new(file_format).with_file_extension(extension);
    let config = ListingTableConfig::new(url).with_listing_options(listing);
    let config = block_on(config.infer_schema(state)).map_err(|e| {
        DataFusionError::Plan(format!(
            "{name}: cannot read the schema of `{input}` as {format}: {e}"
        ))
    })?;
    let table = ListingTable::try_new(config)?;
    if table.schema().fields().is_empty() {
        return plan_err!("{name}: `{input}` holds no columns (no files matched?)");
    }
    Ok((Arc::new(table), input.to_string()))
}

/// The provider `enrich_person(...)` and `enrich_company(...)` return.
#[derive(Clone)]
pub struct EnrichTable {
    endpoint: Endpoint,
    input: Arc<dyn TableProvider>,
    description: String,
    mapping: Arc<ColumnMapping>,
    options: EnrichOptions,
    output: OutputSchema,
    /// The enrichment columns this endpoint's table has, as indices into `output`'s schema:
    /// the columns of the objects its answers carry, then the status columns.
    enrichment: Vec<usize>,
    clients: ClientSource,
    schema: SchemaRef,
    /// For a call from a foreign host: the session the input is read with, whose task context
    /// the plan runs under.
    private: Option<Arc<SessionState>>,
    /// The runtime a foreign host's scan plans on (listing files, reading statistics).
    runtime: Option<tokio::runtime::Handle>,
}

impl fmt::Debug for EnrichTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrichTable")
            .field("endpoint", &self.endpoint)
            .field("input", &self.description)
            .field("options", &self.options)
            .finish()
    }
}

impl EnrichTable {
    fn try_new(
        endpoint: Endpoint,
        input: Arc<dyn TableProvider>,
        description: String,
        options: EnrichOptions,
        clients: ClientSource,
    ) -> Result<Self> {
        let name = function_name(endpoint);
        let input_schema = input.schema();
        let mapping =
            ColumnMapping::detect_for(endpoint, &input_schema, &options.map).map_err(|e| {
                DataFusionError::from(Error::from(e)).context(format!("{name}({description})"))
            })?;
        let output = OutputSchema::new(&options.prefix);
        let enrichment_indices = output.columns_of(endpoint.objects());
        let enrichment = output.schema().project(&enrichment_indices)?;
        let collisions: Vec<&str> = input_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|name| enrichment.field_with_name(name).is_ok())
            .collect();
        if !collisions.is_empty() {
            return plan_err!(
                "{name}({description}): the input already has column(s) {} that the enrichment would add; choose another prefix, e.g. named_struct('prefix', 'enriched_') or SET prospeo.prefix = 'enriched_'",
                collisions.join(", ")
            );
        }
        let mut fields: Vec<_> = input_schema.fields().iter().cloned().collect();
        fields.extend(enrichment.fields().iter().cloned());
        Ok(EnrichTable {
            endpoint,
            enrichment: enrichment_indices,
            input,
            description,
            mapping: Arc::new(mapping),
            options,
            output,
            clients,
            schema: Arc::new(Schema::new_with_metadata(
                fields,
                input_schema.metadata().clone(),
            )),
            private: None,
            runtime: None,
        })
    }

    /// The column mapping this table enriches with.
    pub fn mapping(&self) -> &ColumnMapping {
        &self.mapping
    }

    /// The options in force for this call.
    pub fn options(&self) -> &EnrichOptions {
        &self.options
    }

    fn input_width(&self) -> usize {
        self.input.schema().fields().len()
    }

    /// The input columns an expression reads, or `None` when it reads an enrichment column.
    fn input_columns_of(&self, expr: &Expr) -> Option<BTreeSet<usize>> {
        let input = self.input.schema();
        expr.column_refs()
            .into_iter()
            .map(|c| input.index_of(&c.name).ok())
            .collect()
    }
}

/// Drops table qualifiers, so a predicate planned against this table applies to its input.
fn unqualified(expr: Expr) -> Result<Expr> {
    Ok(expr
        .transform(|e| {
            Ok(match e {
                Expr::Column(c) if c.relation.is_some() => {
                    Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
                }
                other => Transformed::no(other),
            })
        })?
        .data)
}

#[async_trait]
impl TableProvider for EnrichTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Exact for predicates on input columns only: they run below the enrichment node.
        Ok(filters
            .iter()
            .map(|f| match self.input_columns_of(f) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match &self.private {
            None => self.plan_scan(state, projection, filters, limit).await,
            Some(private) => {
                // Planned again for each execution (the client lives only while one runs), on
                // this library's runtime: a foreign host polls this on its own Tokio, which
                // this library's object stores cannot use.
                let table = Arc::new(self.clone());
                let projection = projection.cloned();
                let filters = filters.to_vec();
                let private = Arc::clone(private);
                let state = Arc::clone(&private);
                let make: crate::datafusion::own_context::MakePlan = Arc::new(move || {
                    let plan =
                        table.plan_scan(state.as_ref(), projection.as_ref(), &filters, limit);
                    match &table.runtime {
                        Some(runtime) => std::thread::scope(|scope| {
                            scope
                                .spawn(|| runtime.block_on(plan))
                                .join()
                                .unwrap_or_else(|_| {
                                    Err(DataFusionError::Internal(
                                        "planning the enrichment panicked".into(),
                                    ))
                                })
                        }),
                        None => futures::executor::block_on(plan),
                    }
                });
                let shown = make()?;
                // EXPLAIN shows it; executions plan their own (this one's client goes now).
                let context = Arc::new(datafusion::execution::TaskContext::from(private.as_ref()));
                Ok(Arc::new(
                    crate::datafusion::own_context::OwnContextExec::new(&shown, make, context),
                ))
            }
        }
    }
}

impl EnrichTable {
    /// The plan of a scan, on the session the input is read with.
    async fn plan_scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let width = self.input_width();
        let projection: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let filters: Vec<Expr> = filters
            .iter()
            .cloned()
            .map(unqualified)
            .collect::<Result<_>>()?;
        let wants_enrichment = projection.iter().any(|&i| i >= width);

        // The input columns to read: the selected ones, the mapped ones when enriching, and
        // those the pushed filters read.
        let mut needed: BTreeSet<usize> =
            projection.iter().copied().filter(|&i| i < width).collect();
        if wants_enrichment {
            needed.extend(self.mapping.column_indices());
        }
        for filter in &filters {
            needed.extend(self.input_columns_of(filter).unwrap_or_default());
        }
        let needed: Vec<usize> = needed.into_iter().collect();
        let position = |input_index: usize| needed.iter().position(|&i| i == input_index);

        let mut plan = self
            .input
            .scan(state, Some(&needed), &filters, None)
            .await?;
        let pushed = PushedDown {
            filters: filters.iter().map(|f| f.to_string()).collect(),
            limit,
        };
        if let Some(predicate) = conjunction(filters.clone()) {
            let df_schema = DFSchema::try_from(plan.schema().as_ref().clone())?;
            let predicate = state.create_physical_expr(predicate, &df_schema)?;
            plan = Arc::new(FilterExec::try_new(predicate, plan)?);
        }
        if let Some(limit) = limit {
            plan = Arc::new(GlobalLimitExec::new(
                Arc::new(CoalescePartitionsExec::new(plan)),
                0,
                Some(limit),
            ));
        }

        if !wants_enrichment {
            // Free: no enrichment column is read, so no API call is made.
            let columns: Vec<usize> = projection
                .iter()
                .map(|&i| position(i).expect("selected input columns are read"))
                .collect();
            let exprs = columns
                .iter()
                .map(|&i| {
                    let field = plan.schema().field(i).clone();
                    (
                        Arc::new(datafusion::physical_expr::expressions::Column::new(
                            field.name(),
                            i,
                        ))
                            as Arc<dyn datafusion::physical_expr::PhysicalExpr>,
                        field.name().clone(),
                    )
                })
                .collect::<Vec<_>>();
            return Ok(Arc::new(
                datafusion::physical_plan::projection::ProjectionExec::try_new(exprs, plan)?,
            ));
        }

        let columns: Vec<ColumnSource> = projection
            .iter()
            .map(|&i| {
                if i < width {
                    ColumnSource::Input(position(i).expect("selected input columns are read"))
                } else {
                    ColumnSource::Enrichment(self.enrichment[i - width])
                }
            })
            .collect();
        let mapped_columns: Vec<usize> = self
            .mapping
            .column_indices()
            .into_iter()
            .map(|i| position(i).expect("mapped columns are read"))
            .collect();
        let client = self.clients.client(&self.options)?;
        let spec = EnrichSpec {
            mapping: self.mapping.clone(),
            mapped_columns,
            columns,
            client,
            endpoint: self.endpoint,
            flags: self.options.flags(),
            output: self.output.clone(),
            concurrency: self.options.concurrency,
            options_display: self.options.to_string(),
            pushed,
        };
        Ok(Arc::new(EnrichExec::try_new(plan, spec)?))
    }
}
