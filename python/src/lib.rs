//! `prospeo._prospeo`: the extension module under the `prospeo` Python package.
//!
//! Thin: every call builds a [`Job`] (or a session) from the options the Python layer passes
//! as `prospeo.*` option strings, and runs it on the engine the binary runs. Long calls release
//! the GIL; every 100 ms they take it back briefly to check for Ctrl-C and to report progress.
//! The response cache is opened by the call and closed when it returns. The public API, its
//! docstrings and the exception classes live in the Python package (`prospeo/__init__.py`).

/// The extension allocates as the binary does (mimalloc): a job allocates and frees a string
/// for nearly every field of every answer, on several threads. Memory handed to pyarrow is
/// freed through its Arrow release callback, so by this allocator too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_pyarrow::{FromPyArrow, IntoPyArrow};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ffi_stream::ArrowArrayStreamReader;
use datafusion::arrow::record_batch::{RecordBatchIterator, RecordBatchReader};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::SessionContext;
use datafusion_ffi::config::extension_options::FFI_ExtensionOptions;
use datafusion_ffi::proto::logical_extension_codec::FFI_LogicalExtensionCodec;
use datafusion_prospeo::api::{ApiKey, Client, ClientBuilder, Endpoint};
use datafusion_prospeo::job::{Job, JobError, Output, OutputFormat, Summary};
use datafusion_prospeo::sandbox::DEMO_KEY;
use datafusion_prospeo::{EnrichOptions, Error};
use futures::{Stream, StreamExt};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

/// The schema metadata key that carries a run's summary (JSON) in the returned table.
const SUMMARY_KEY: &str = "prospeo.summary";
/// The table name an in-memory input is registered under.
const INPUT_TABLE: &str = "__prospeo_input";
/// How often a running call checks for Ctrl-C and reports progress.
const TICK: Duration = Duration::from_millis(100);
/// How often the progress callback is called.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------------
// The runtime

static RUNTIME: Mutex<Option<(u32, Arc<tokio::runtime::Runtime>)>> = Mutex::new(None);

/// The process's Tokio runtime. A forked child (Airflow's workers fork) gets a new one: the
/// parent's worker threads do not exist in it.
fn runtime() -> PyResult<Arc<tokio::runtime::Runtime>> {
    let pid = std::process::id();
    let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((owner, runtime)) = slot.as_ref()
        && *owner == pid
    {
        return Ok(Arc::clone(runtime));
    }
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("prospeo")
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start a runtime: {e}")))?,
    );
    if let Some((_, inherited)) = slot.replace((pid, Arc::clone(&runtime))) {
        // Its threads stayed in the parent: dropping it would wait for them forever.
        std::mem::forget(inherited);
    }
    Ok(runtime)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// The `prospeo.exceptions` class of a job error, and its message.
fn error_class(e: JobError) -> (&'static str, String) {
    match e {
        JobError::BadInput(m) => ("InputError", m),
        JobError::BadKey(m) => ("ApiKeyError", m),
        JobError::CacheInUse(m) => ("CacheInUseError", m),
        JobError::Failure(m) => ("RequestError", m),
        JobError::Interrupted => ("KeyboardInterrupt", "interrupted".to_string()),
    }
}

/// Raises the Python exception of a job error: the classes live in `prospeo.exceptions`.
fn job_error(py: Python<'_>, e: JobError) -> PyErr {
    if matches!(e, JobError::Interrupted) {
        return pyo3::exceptions::PyKeyboardInterrupt::new_err("interrupted");
    }
    let (class, message) = error_class(e);
    match py
        .import("prospeo.exceptions")
        .and_then(|m| m.getattr(class))
    {
        Ok(class) => match class.call1((message.clone(),)) {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        },
        Err(_) => PyRuntimeError::new_err(message),
    }
}

fn api_error(py: Python<'_>, e: Error) -> PyErr {
    job_error(py, JobError::from(e))
}

// ---------------------------------------------------------------------------------------------
// The sandbox

/// The embedded sandbox, in process on 127.0.0.1: the sample directory and the demo key.
#[pyclass(module = "prospeo._prospeo", name = "Sandbox")]
struct PySandbox {
    sandbox: Mutex<Option<datafusion_prospeo::sandbox::Sandbox>>,
    base_url: String,
}

#[pymethods]
impl PySandbox {
    #[new]
    #[pyo3(signature = (*, credits=None, per_minute=None, per_day=None, manual_clock=false, latency=0.0))]
    fn new(
        py: Python<'_>,
        credits: Option<i64>,
        per_minute: Option<u64>,
        per_day: Option<u64>,
        manual_clock: bool,
        latency: f64,
    ) -> PyResult<Self> {
        let latency = Duration::try_from_secs_f64(latency)
            .map_err(|_| PyValueError::new_err("latency must be a number of seconds >= 0"))?;
        use datafusion_prospeo::sandbox::generator::{GeneratorConfig, generate_directory};
        use datafusion_prospeo::sandbox::{Sandbox, SandboxConfig};
        let runtime = runtime()?;
        let started = py.detach(|| {
            runtime.block_on(async {
                let directory = generate_directory(&GeneratorConfig::default());
                let mut config = SandboxConfig::new(Arc::new(directory));
                config.manual_clock = manual_clock;
                config.faults.latency = latency;
                for key in &mut config.keys {
                    if let Some(credits) = credits {
                        key.credits = credits;
                    }
                    if per_minute.is_some() || per_day.is_some() {
                        let mut limits = key.effective_limits();
                        if let Some(n) = per_minute {
                            limits.per_minute = n;
                        }
                        if let Some(n) = per_day {
                            limits.per_day = n;
                        }
                        key.limits = Some(limits);
                    }
                }
                Sandbox::start(config).await
            })
        });
        let sandbox = started
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the sandbox: {e}")))?;
        Ok(PySandbox {
            base_url: sandbox.base_url(),
            sandbox: Mutex::new(Some(sandbox)),
        })
    }

    /// The sandbox's base URL (`http://127.0.0.1:PORT`).
    #[getter]
    fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// What the sandbox has served (`/_sandbox/stats`), as JSON.
    fn stats_json(&self) -> PyResult<String> {
        let guard = self.sandbox.lock().unwrap_or_else(|e| e.into_inner());
        let sandbox = guard
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the sandbox is closed"))?;
        serde_json::to_string(&sandbox.stats()).map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    /// Moves the sandbox's clock forward (a sandbox started with `manual_clock=True`).
    fn advance_clock(&self, seconds: f64) -> PyResult<()> {
        let guard = self.sandbox.lock().unwrap_or_else(|e| e.into_inner());
        let sandbox = guard
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("the sandbox is closed"))?;
        let by = Duration::try_from_secs_f64(seconds)
            .map_err(|_| PyValueError::new_err("seconds must be a positive number"))?;
        sandbox.advance_clock(by);
        Ok(())
    }

    /// Stops the sandbox (idempotent).
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self
            .sandbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(sandbox) = taken {
            let runtime = runtime()?;
            let _ = py.detach(|| runtime.block_on(sandbox.stop()));
        }
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!("Sandbox(base_url={:?})", self.base_url)
    }
}

// ---------------------------------------------------------------------------------------------
// Settings

/// Where the API is and which key: the sandbox's URL and demo key, or the environment with a
/// key file over it.
fn client_builder(
    py: Python<'_>,
    sandbox: Option<&Bound<'_, PySandbox>>,
    api_key_file: Option<String>,
) -> PyResult<ClientBuilder> {
    let mut builder = ClientBuilder::from_env();
    if let Some(sandbox) = sandbox {
        let key = ApiKey::new(DEMO_KEY).map_err(|e| api_error(py, e))?;
        return Ok(builder
            .base_url(sandbox.borrow().base_url.clone())
            .api_key(key));
    }
    if let Some(path) = api_key_file {
        builder = builder.api_key_file(std::path::PathBuf::from(path));
    }
    Ok(builder)
}

/// The options from the Python layer: `prospeo.*` option names and values as strings, and the
/// mapping as `COLUMN=datapoint` pairs (`COLUMN=` ignores a column).
fn options_from(
    py: Python<'_>,
    options: Vec<(String, String)>,
    mapping: Option<Vec<String>>,
    sandbox: bool,
) -> PyResult<EnrichOptions> {
    let mut out = EnrichOptions::default();
    for (key, value) in &options {
        out.set(key, value).map_err(|e| api_error(py, e))?;
    }
    if let Some(pairs) = mapping {
        out.set_map(pairs.iter().map(String::as_str))
            .map_err(|e| api_error(py, e))?;
    }
    // Sandbox answers never mix with paid ones: with a sandbox and no cache path, the answers
    // live in memory for the call (as `prospeo enrich --sandbox`).
    if sandbox && out.cache_path.is_none() {
        out.cache = false;
    }
    Ok(out)
}

fn endpoint_of(name: &str) -> PyResult<Endpoint> {
    match name {
        "person" => Ok(Endpoint::BulkEnrichPerson),
        "company" => Ok(Endpoint::BulkEnrichCompany),
        other => Err(PyValueError::new_err(format!(
            "unknown endpoint {other:?}: person or company"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// A job's input: a path the engine reads as the CLI does, or rows from Python registered as a
/// table of the job's session.
enum Input {
    Path(String),
    /// Rows held in memory (a pyarrow Table, a polars or pandas DataFrame).
    Memory(SchemaRef, Vec<RecordBatch>),
    /// A stream read once, as the job goes (a RecordBatchReader, a datafusion DataFrame).
    Stream(ArrowArrayStreamReader),
}

impl Input {
    /// The input as a summary names it.
    fn description(&self) -> String {
        match self {
            Input::Path(path) => path.clone(),
            Input::Memory(..) => "<in-memory table>".to_string(),
            Input::Stream(_) => "<stream>".to_string(),
        }
    }

    fn from_python(data: &Bound<'_, PyAny>, stream: bool) -> PyResult<Input> {
        if let Ok(path) = data.extract::<String>() {
            return Ok(Input::Path(path));
        }
        if data.hasattr("__arrow_c_stream__")? {
            // Its export failing (a lazy relation whose query fails, say) is its own error.
            let reader = ArrowArrayStreamReader::from_pyarrow_bound(data)?;
            return Input::from_reader(data.py(), reader, stream);
        }
        let reader = ArrowArrayStreamReader::from_pyarrow_bound(data).map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "cannot read a {}: pass a path or URL, a pandas or polars DataFrame, or an object with __arrow_c_stream__ (pyarrow Table or RecordBatchReader, duckdb relation, datafusion DataFrame)",
                data.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ))
        })?;
        Input::from_reader(data.py(), reader, stream)
    }

    fn from_reader(
        py: Python<'_>,
        reader: ArrowArrayStreamReader,
        stream: bool,
    ) -> PyResult<Input> {
        if stream {
            return Ok(Input::Stream(reader));
        }
        let schema = reader.schema();
        let batches = py
            .detach(|| reader.collect::<Result<Vec<_>, ArrowError>>())
            .map_err(|e| {
                job_error(
                    py,
                    JobError::BadInput(format!("cannot read the input: {e}")),
                )
            })?;
        Ok(Input::Memory(schema, batches))
    }

    /// The name the job reads, after registering in-memory rows on `ctx`, and whether its rows
    /// can be counted before the job (a stream is read once, by the job).
    fn register(self, ctx: &SessionContext) -> Result<(String, bool), JobError> {
        let (table, countable): (Arc<dyn datafusion::catalog::TableProvider>, bool) = match self {
            Input::Path(path) => return Ok((path, true)),
            Input::Memory(schema, batches) => (
                Arc::new(
                    MemTable::try_new(schema, vec![batches])
                        .map_err(|e| JobError::BadInput(e.to_string()))?,
                ),
                true,
            ),
            Input::Stream(reader) => (
                Arc::new(
                    StreamingTable::try_new(
                        reader.schema(),
                        vec![Arc::new(OnceStream::new(reader)) as Arc<dyn PartitionStream>],
                    )
                    .map_err(|e| JobError::BadInput(e.to_string()))?,
                ),
                false,
            ),
        };
        ctx.register_table(INPUT_TABLE, table)
            .map_err(|e| JobError::Failure(e.to_string()))?;
        Ok((INPUT_TABLE.to_string(), countable))
    }
}

/// A stream from Python, read once on a thread of its own (a Python-backed reader takes the
/// GIL there), two batches ahead at most: memory stays flat whatever the input's size.
struct OnceStream {
    schema: SchemaRef,
    reader: Mutex<Option<ArrowArrayStreamReader>>,
}

impl OnceStream {
    fn new(reader: ArrowArrayStreamReader) -> Self {
        OnceStream {
            schema: reader.schema(),
            reader: Mutex::new(Some(reader)),
        }
    }
}

impl std::fmt::Debug for OnceStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnceStream")
    }
}

impl PartitionStream for OnceStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
        let schema = Arc::clone(&self.schema);
        let Some(reader) = taken else {
            let error = DataFusionError::Execution(
                "the input stream was already read: a stream can be enriched once".into(),
            );
            return Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::once(async move { Err(error) }),
            ));
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(2);
        std::thread::spawn(move || {
            for batch in reader {
                let failed = batch.is_err();
                let batch = batch.map_err(DataFusionError::from);
                // After an error the C stream may only be released, never read again.
                if sender.blocking_send(batch).is_err() || failed {
                    break;
                }
            }
        });
        let stream = futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|batch| (batch, receiver))
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, stream))
    }
}

// ---------------------------------------------------------------------------------------------
// Running

/// Checks for Ctrl-C and reports progress while a call runs.
struct Watch {
    client: Client,
    total: Mutex<Option<u64>>,
    progress: Option<Py<PyAny>>,
    last_report: Mutex<Option<Instant>>,
    error: Mutex<Option<PyErr>>,
}

impl Watch {
    fn new(client: Client, progress: Option<Py<PyAny>>) -> Self {
        Watch {
            client,
            total: Mutex::new(None),
            progress,
            last_report: Mutex::new(None),
            error: Mutex::new(None),
        }
    }

    /// Calls the progress callback with `(total_rows, counts_json)`.
    fn report(&self, py: Python<'_>, force: bool) -> PyResult<()> {
        let Some(callback) = &self.progress else {
            return Ok(());
        };
        {
            let mut last = self.last_report.lock().unwrap_or_else(|e| e.into_inner());
            if !force && last.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let totals = self.client.totals();
        let counts = serde_json::to_string(&totals.tally).unwrap_or_default();
        let total = *self.total.lock().unwrap_or_else(|e| e.into_inner());
        callback.call1(py, (total, counts))?;
        Ok(())
    }

    /// Resolves when Ctrl-C is pressed or the progress callback raises; the error is kept.
    async fn stopped(&self) {
        loop {
            tokio::time::sleep(TICK).await;
            let checked = Python::attach(|py| {
                py.check_signals()?;
                self.report(py, false)
            });
            if let Err(e) = checked {
                *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                return;
            }
        }
    }

    /// Runs `work` until it ends or the call is stopped (Ctrl-C, the progress callback
    /// raising); then nothing more is sent and the error that stopped it is returned.
    async fn guard<T>(&self, work: impl Future<Output = T>) -> Result<T, Option<PyErr>> {
        tokio::select! {
            biased;
            _ = self.stopped() => Err(self.wind_down().await),
            out = work => Ok(out),
        }
    }

    fn set_total(&self, total: Option<u64>) {
        *self.total.lock().unwrap_or_else(|e| e.into_inner()) = total;
    }

    /// After a stop: nothing more is sent, the answers on the wire are awaited (and stored in
    /// the cache), and the error that stopped the call is returned.
    async fn wind_down(&self) -> Option<PyErr> {
        self.client.stop_sending();
        self.client.wait_idle(Duration::from_secs(30)).await;
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Runs `work` on the runtime without the GIL, checking for Ctrl-C every tick: a stopped call
/// raises `KeyboardInterrupt` (dropping `work`: nothing more is sent; requests on the wire
/// finish on their own and store their answers).
fn interruptible<T: Send>(
    py: Python<'_>,
    runtime: &tokio::runtime::Runtime,
    work: impl Future<Output = T> + Send,
) -> PyResult<T> {
    py.detach(|| {
        runtime.block_on(async {
            tokio::pin!(work);
            loop {
                tokio::select! {
                    biased;
                    out = &mut work => return Ok(out),
                    _ = tokio::time::sleep(TICK) => {
                        Python::attach(|py| py.check_signals())?;
                    }
                }
            }
        })
    })
}

/// What a job call needs, made from the Python layer's arguments.
struct Prepared {
    ctx: SessionContext,
    job: Job,
    client: Client,
    countable: bool,
    description: String,
}

#[allow(clippy::too_many_arguments)]
fn prepare(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    endpoint: &str,
    options: Vec<(String, String)>,
    mapping: Option<Vec<String>>,
    sandbox: Option<&Bound<'_, PySandbox>>,
    api_key_file: Option<String>,
    stream: bool,
) -> PyResult<Prepared> {
    let endpoint = endpoint_of(endpoint)?;
    let options = options_from(py, options, mapping, sandbox.is_some())?;
    let input = Input::from_python(data, stream)?;
    let description = input.description();
    let builder = client_builder(py, sandbox, api_key_file)?;
    let client = options
        .client_builder(builder)
        .and_then(|b| b.build())
        .map_err(|e| api_error(py, e))?;
    let ctx = SessionContext::new();
    let (name, countable) = input.register(&ctx).map_err(|e| job_error(py, e))?;
    let job = Job::new(name, endpoint, options).map_err(|e| job_error(py, e))?;
    Ok(Prepared {
        ctx,
        job,
        client,
        countable,
        description,
    })
}

/// A reader over the job's batches, with the summary in its schema's metadata.
fn reader_of(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    summary: &Summary,
) -> Result<Box<dyn RecordBatchReader + Send>, ArrowError> {
    let mut metadata = schema.metadata().clone();
    metadata.insert(SUMMARY_KEY.to_string(), summary.to_json());
    let schema = Arc::new(Schema::new_with_metadata(schema.fields().clone(), metadata));
    let batches: Vec<Result<RecordBatch, ArrowError>> = batches
        .into_iter()
        .map(|b| b.with_schema(Arc::clone(&schema)))
        .collect();
    Ok(Box::new(RecordBatchIterator::new(batches, schema)))
}

/// Runs a job and returns its rows as a pyarrow RecordBatchReader (the Python layer reads it
/// into a Table), the summary in the schema's metadata.
#[pyfunction]
#[pyo3(signature = (data, endpoint, options, mapping=None, sandbox=None, api_key_file=None, progress=None))]
#[allow(clippy::too_many_arguments)]
fn enrich<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    endpoint: &str,
    options: Vec<(String, String)>,
    mapping: Option<Vec<String>>,
    sandbox: Option<&Bound<'py, PySandbox>>,
    api_key_file: Option<String>,
    progress: Option<Py<PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let started = Instant::now();
    let prepared = prepare(
        py,
        data,
        endpoint,
        options,
        mapping,
        sandbox,
        api_key_file,
        false,
    )?;
    let runtime = runtime()?;
    let Prepared {
        ctx,
        job,
        client,
        countable,
        description,
    } = prepared;
    let watch = Watch::new(client.clone(), progress);
    let outcome = py.detach(|| {
        runtime.block_on(watch.guard(async {
            let planned = job.plan(&ctx, client.clone()).await?;
            if countable {
                watch.set_total(planned.count_rows().await?);
            }
            let schema = planned.schema();
            let mut stream = planned.stream().await?;
            let mut batches = Vec::new();
            let mut rows = 0u64;
            while let Some(batch) = stream.next().await {
                match batch {
                    Ok(batch) => {
                        rows += batch.num_rows() as u64;
                        batches.push(batch);
                    }
                    Err(e) => {
                        watch.wind_down().await;
                        return Err(datafusion_prospeo::job::query_error(e));
                    }
                }
            }
            Ok((schema, batches, rows))
        }))
    });
    let outcome = match outcome {
        Ok(Ok(done)) => Python::attach(|py| watch.report(py, true))
            .map(|()| Ok(done))
            .unwrap_or_else(|e| Err(Some(e))),
        Ok(Err(e)) => return Err(job_error(py, e)),
        Err(stop) => Err(stop),
    };
    let (schema, batches, rows) = match outcome {
        Ok(done) => done,
        Err(Some(stop)) => return Err(stop),
        Err(None) => return Err(job_error(py, JobError::Interrupted)),
    };
    let summary = Summary::new(
        &description,
        "",
        rows,
        &client.totals(),
        started.elapsed().as_secs_f64(),
    );
    drop(client);
    drop(ctx);
    let reader =
        reader_of(schema, batches, &summary).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    reader.into_pyarrow(py)
}

/// Runs a job and writes its rows to `output` (any format, local or object store, committed
/// only when complete); returns the summary as JSON.
#[pyfunction]
#[pyo3(signature = (data, output, endpoint, options, mapping=None, sandbox=None, api_key_file=None, progress=None, output_format=None, stream=true))]
#[allow(clippy::too_many_arguments)]
fn enrich_to(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    output: String,
    endpoint: &str,
    options: Vec<(String, String)>,
    mapping: Option<Vec<String>>,
    sandbox: Option<&Bound<'_, PySandbox>>,
    api_key_file: Option<String>,
    progress: Option<Py<PyAny>>,
    output_format: Option<String>,
    stream: bool,
) -> PyResult<String> {
    let started = Instant::now();
    let format = match output_format.as_deref() {
        None => None,
        Some(name) => Some(OutputFormat::from_name(name).ok_or_else(|| {
            job_error(
                py,
                JobError::BadInput(format!(
                    "unknown output format {name:?}: parquet, csv, ndjson or arrow"
                )),
            )
        })?),
    };
    let Prepared {
        ctx,
        job,
        client,
        countable,
        description,
    } = prepare(
        py,
        data,
        endpoint,
        options,
        mapping,
        sandbox,
        api_key_file,
        stream,
    )?;
    let runtime = runtime()?;
    let watch = Watch::new(client.clone(), progress);
    let outcome = py.detach(|| {
        runtime.block_on(async {
            // Before the first row is written: stopped at once.
            let prepared = watch
                .guard(async {
                    let output = Output::resolve(&output, format, &ctx.runtime_env())?;
                    let planned = job.plan(&ctx, client.clone()).await?;
                    let open = output.open().await?;
                    if countable {
                        watch.set_total(planned.count_rows().await?);
                    }
                    Ok::<_, JobError>((output, planned, open))
                })
                .await;
            let (output, planned, open) = match prepared {
                Ok(Ok(prepared)) => prepared,
                Ok(Err(e)) => return Ok(Err(e)),
                Err(stop) => return Err(stop),
            };
            // Then the writer's own stop: nothing is left behind (no partial file or upload).
            let schema = planned.schema();
            let stream = match planned.stream().await {
                Ok(stream) => stream,
                Err(e) => return Ok(Err(e)),
            };
            match open.write(schema, stream, watch.stopped()).await {
                Ok(rows) => Ok(Ok((rows, output.target().to_string()))),
                Err(JobError::Interrupted) => Err(watch.wind_down().await),
                Err(e) => {
                    watch.wind_down().await;
                    Ok(Err(e))
                }
            }
        })
    });
    let (rows, target) = match outcome {
        Ok(Ok(done)) => {
            Python::attach(|py| watch.report(py, true))?;
            done
        }
        Ok(Err(e)) => return Err(job_error(py, e)),
        Err(Some(stop)) => return Err(stop),
        Err(None) => return Err(job_error(py, JobError::Interrupted)),
    };
    let summary = Summary::new(
        &description,
        &target,
        rows,
        &client.totals(),
        started.elapsed().as_secs_f64(),
    );
    Ok(summary.to_json())
}

/// Streams a job's rows: a pyarrow RecordBatchReader that runs the job as it is read. Memory
/// stays flat in the input's size.
#[pyfunction]
#[pyo3(signature = (data, endpoint, options, mapping=None, sandbox=None, api_key_file=None, stream=true))]
#[allow(clippy::too_many_arguments)]
fn enrich_batches<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    endpoint: &str,
    options: Vec<(String, String)>,
    mapping: Option<Vec<String>>,
    sandbox: Option<&Bound<'py, PySandbox>>,
    api_key_file: Option<String>,
    stream: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let Prepared {
        ctx, job, client, ..
    } = prepare(
        py,
        data,
        endpoint,
        options,
        mapping,
        sandbox,
        api_key_file,
        stream,
    )?;
    let runtime = runtime()?;
    let planned = py
        .detach(|| {
            runtime.block_on(async {
                let planned = job.plan(&ctx, client.clone()).await?;
                let schema = planned.schema();
                let stream = planned.stream().await?;
                Ok::<_, JobError>((schema, stream))
            })
        })
        .map_err(|e| job_error(py, e))?;
    let (schema, stream) = planned;
    let reader = StreamReader {
        schema,
        stream: Box::pin(stream),
        runtime,
        client,
        _ctx: ctx,
    };
    let reader: Box<dyn RecordBatchReader + Send> = Box::new(reader);
    reader.into_pyarrow(py)
}

type BatchStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<RecordBatch, DataFusionError>> + Send>>;

/// The rows of a running job, pulled by pyarrow.
struct StreamReader {
    schema: SchemaRef,
    stream: BatchStream,
    runtime: Arc<tokio::runtime::Runtime>,
    client: Client,
    _ctx: SessionContext,
}

impl Iterator for StreamReader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let runtime = Arc::clone(&self.runtime);
        let stream = &mut self.stream;
        let mut pull = Some(move || runtime.block_on(stream.next()));
        let next = Python::try_attach(|py| pull.take().map(|pull| py.detach(pull))).flatten();
        let next = match pull {
            Some(mut pull) => pull(),
            None => next.flatten(),
        };
        match next? {
            Ok(batch) => Some(Ok(batch)),
            Err(e) => {
                // Tagged with its class: the Python layer raises the package's exception.
                let (class, message) = error_class(datafusion_prospeo::job::query_error(e));
                Some(Err(ArrowError::ExternalError(
                    format!("[prospeo:{class}] {message}").into(),
                )))
            }
        }
    }
}

impl RecordBatchReader for StreamReader {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

impl Drop for StreamReader {
    fn drop(&mut self) {
        // A reader closed early: nothing more is sent, and what is on the wire is stored.
        self.client.stop_sending();
        let client = self.client.clone();
        let runtime = Arc::clone(&self.runtime);
        let wait = move || {
            let _ = std::thread::spawn(move || {
                runtime.block_on(client.wait_idle(Duration::from_secs(30)));
            })
            .join();
        };
        // Without the GIL while it waits: other Python threads go on. (During interpreter
        // shutdown there is no GIL to release.)
        let mut wait = Some(wait);
        let _ = Python::try_attach(|py| {
            if let Some(wait) = wait.take() {
                py.detach(wait);
            }
        });
        if let Some(wait) = wait {
            wait();
        }
    }
}

/// Counts what a job would send and cost; sends nothing, needs no key. Returns
/// `(report_json, mapping_text)`.
#[pyfunction]
#[pyo3(signature = (data, endpoint, options, mapping=None, sandbox=None))]
fn dry_run(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    endpoint: &str,
    options: Vec<(String, String)>,
    mapping: Option<Vec<String>>,
    sandbox: Option<&Bound<'_, PySandbox>>,
) -> PyResult<(String, String)> {
    let endpoint = endpoint_of(endpoint)?;
    let options = options_from(py, options, mapping, sandbox.is_some())?;
    let input = Input::from_python(data, false)?;
    let description = input.description();
    let ctx = SessionContext::new();
    let (name, _) = input.register(&ctx).map_err(|e| job_error(py, e))?;
    let job = Job::new(name, endpoint, options).map_err(|e| job_error(py, e))?;
    let runtime = runtime()?;
    let (mut report, mapping) =
        interruptible(py, &runtime, job.dry_run(&ctx))?.map_err(|e| job_error(py, e))?;
    report.input = description;
    let json = serde_json::to_string(&report).unwrap_or_default();
    Ok((json, mapping.to_string()))
}

/// The account: plan, credits, and the quota left (free). Returns JSON.
#[pyfunction]
#[pyo3(signature = (options, sandbox=None, api_key_file=None))]
fn account(
    py: Python<'_>,
    options: Vec<(String, String)>,
    sandbox: Option<&Bound<'_, PySandbox>>,
    api_key_file: Option<String>,
) -> PyResult<String> {
    let options = options_from(py, options, None, sandbox.is_some())?;
    let builder = client_builder(py, sandbox, api_key_file)?;
    let mut options = options;
    // Only the key and the URL matter here: no cache is opened.
    options.cache = false;
    let client = options
        .client_builder(builder)
        .and_then(|b| b.build())
        .map_err(|e| api_error(py, e))?;
    let runtime = runtime()?;
    let status = interruptible(py, &runtime, client.account_status())
        .and_then(|r| r.map_err(|e| api_error(py, e)))?;
    let account = &status.account;
    let quota = &status.quota;
    let json = serde_json::json!({
        "plan": account.current_plan,
        "remaining_credits": account.remaining_credits,
        "used_credits": account.used_credits,
        "next_quota_renewal_days": account.next_quota_renewal_days,
        "next_quota_renewal_date": account.next_quota_renewal_date,
        "minute_left": quota.minute_left,
        "day_left": quota.day_left,
        "minute_reset_seconds": quota.minute_reset_seconds,
        "day_reset_seconds": quota.day_reset_seconds,
        "minute_limit": quota.minute_limit,
        "day_limit": quota.day_limit,
    });
    Ok(json.to_string())
}

/// Runs a query in a session with `enrich_person` and `enrich_company` registered; returns a
/// pyarrow RecordBatchReader.
#[pyfunction]
#[pyo3(signature = (query, options, sandbox=None, api_key_file=None))]
fn sql<'py>(
    py: Python<'py>,
    query: String,
    options: Vec<(String, String)>,
    sandbox: Option<&Bound<'py, PySandbox>>,
    api_key_file: Option<String>,
) -> PyResult<Bound<'py, PyAny>> {
    let options = options_from(py, options, None, sandbox.is_some())?;
    let builder = client_builder(py, sandbox, api_key_file)?;
    let ctx = SessionContext::new();
    datafusion_prospeo::register_with_builder(&ctx, builder);
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .extensions
        .insert(options);
    let runtime = runtime()?;
    let result = interruptible(py, &runtime, async {
        {
            // A query that does not plan is the user's to fix; one that fails running is not.
            let df = ctx
                .sql(&query)
                .await
                .map_err(datafusion_prospeo::job::planning_error)?;
            let schema = Arc::new(df.schema().as_arrow().clone());
            let batches = df
                .collect()
                .await
                .map_err(datafusion_prospeo::job::query_error)?;
            Ok::<_, JobError>((schema, batches))
        }
    })?;
    let (schema, batches) = result.map_err(|e| job_error(py, e))?;
    drop(ctx);
    let reader: Box<dyn RecordBatchReader + Send> = Box::new(RecordBatchIterator::new(
        batches.into_iter().map(Ok),
        schema,
    ));
    reader.into_pyarrow(py)
}

// ---------------------------------------------------------------------------------------------
// datafusion-python

/// `enrich_person` / `enrich_company` for a datafusion-python `SessionContext`.
#[pyclass(module = "prospeo._prospeo", name = "TableFunction")]
struct PyTableFunction {
    endpoint: Endpoint,
    template: ClientBuilder,
    defaults: EnrichOptions,
}

#[pymethods]
impl PyTableFunction {
    #[new]
    #[pyo3(signature = (endpoint, options, sandbox=None, api_key_file=None))]
    fn new(
        py: Python<'_>,
        endpoint: &str,
        options: Vec<(String, String)>,
        sandbox: Option<&Bound<'_, PySandbox>>,
        api_key_file: Option<String>,
    ) -> PyResult<Self> {
        Ok(PyTableFunction {
            endpoint: endpoint_of(endpoint)?,
            defaults: options_from(py, options, None, sandbox.is_some())?,
            template: client_builder(py, sandbox, api_key_file)?,
        })
    }

    /// The function's name in SQL.
    #[getter]
    fn name(&self) -> &'static str {
        datafusion_prospeo::datafusion::table::function_name(self.endpoint)
    }

    /// The table of one call, `enrich_person('input' [, options])`, in the datafusion-python
    /// session `session`: its `prospeo.*` options (as `SET` left them) under the call's.
    fn provider(
        &self,
        py: Python<'_>,
        input: String,
        literal: Vec<(String, String)>,
        session: Bound<'_, PyAny>,
    ) -> PyResult<PyProvider> {
        let context = host_task_context(&session)?;
        let runtime = runtime()?;
        let function = datafusion_prospeo::datafusion::table::EnrichFunction::for_foreign_host(
            self.endpoint,
            Some(self.template.clone()),
            self.defaults.clone(),
            runtime.handle().clone(),
        );
        let table = py
            .detach(|| {
                // Reading the input's schema (an object store) runs on this library's runtime.
                let _entered = runtime.enter();
                function.foreign_table(&input, &literal, context.session_config().options())
            })
            .map_err(|e| job_error(py, datafusion_prospeo::job::planning_error(e)))?;
        Ok(PyProvider { table })
    }

    fn __repr__(&self) -> String {
        format!("TableFunction({})", self.name())
    }
}

/// The table of one `enrich_person(...)` call, handed to datafusion-python as an FFI table
/// provider that supports filter pushdown.
#[pyclass(module = "prospeo._prospeo", name = "Provider")]
struct PyProvider {
    table: Arc<dyn datafusion::catalog::TableProvider>,
}

#[pymethods]
impl PyProvider {
    fn __datafusion_table_provider__<'py>(
        &self,
        py: Python<'py>,
        session: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let codec = logical_codec(&session)?;
        let provider = datafusion_ffi::table_provider::FFI_TableProvider::new_with_ffi_codec(
            Arc::clone(&self.table),
            true,
            Some(runtime()?.handle().clone()),
            codec,
        );
        PyCapsule::new_with_value(py, provider, c"datafusion_table_provider")
    }
}

/// The task context of a datafusion-python session: its config carries the `prospeo.*`
/// options `SET` left.
fn host_task_context(session: &Bound<'_, PyAny>) -> PyResult<Arc<TaskContext>> {
    use datafusion_ffi::execution::FFI_TaskContextProvider;
    let capsule = session
        .getattr("__datafusion_task_context_provider__")?
        .call0()?;
    let capsule = capsule.cast::<PyCapsule>()?;
    let pointer = capsule.pointer_checked(Some(c"datafusion_task_context_provider"))?;
    // SAFETY: a capsule named `datafusion_task_context_provider` holds an
    // `FFI_TaskContextProvider` (datafusion-ffi's contract); it is only borrowed here.
    let provider = unsafe { pointer.cast::<FFI_TaskContextProvider>().as_ref() };
    Arc::<TaskContext>::try_from(provider).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// The logical codec of a datafusion-python session (or a capsule holding one).
fn logical_codec(session: &Bound<'_, PyAny>) -> PyResult<FFI_LogicalExtensionCodec> {
    let name = "__datafusion_logical_extension_codec__";
    let capsule = if session.hasattr(name)? {
        session.getattr(name)?.call0()?
    } else {
        session.clone()
    };
    let capsule = capsule.cast::<PyCapsule>()?;
    let pointer = capsule.pointer_checked(Some(c"datafusion_logical_extension_codec"))?;
    // SAFETY: a capsule named `datafusion_logical_extension_codec` holds an
    // `FFI_LogicalExtensionCodec` (datafusion-ffi's contract); it is cloned, not moved out.
    let codec = unsafe { pointer.cast::<FFI_LogicalExtensionCodec>().as_ref() };
    Ok(codec.clone())
}

/// The `prospeo.*` options as a datafusion-python config extension:
/// `SessionConfig().with_extension(...)` makes `SET prospeo.plan = 'pro'` work.
#[pyclass(module = "prospeo._prospeo", name = "SessionOptions")]
struct PySessionOptions {
    options: EnrichOptions,
}

#[pymethods]
impl PySessionOptions {
    #[new]
    fn new(py: Python<'_>, options: Vec<(String, String)>) -> PyResult<Self> {
        Ok(PySessionOptions {
            options: options_from(py, options, None, false)?,
        })
    }

    fn __datafusion_extension_options__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        use datafusion::common::config::{ConfigExtension, ExtensionOptions};
        let mut config = FFI_ExtensionOptions::default();
        // Only the options given here: a default would override the functions' own settings
        // (a sandbox function keeps its answers out of the cache file unless told otherwise).
        let defaults: std::collections::HashMap<String, Option<String>> = EnrichOptions::default()
            .entries()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect();
        for entry in self.options.entries() {
            if defaults.get(&entry.key) == Some(&entry.value) {
                continue;
            }
            let Some(value) = entry.value else { continue };
            // The entries' keys may or may not carry the namespace; the host's carry it once.
            let key = if entry
                .key
                .starts_with(&format!("{}.", EnrichOptions::PREFIX))
            {
                entry.key
            } else {
                format!("{}.{}", EnrichOptions::PREFIX, entry.key)
            };
            config
                .set(&key, &value)
                .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        }
        PyCapsule::new_with_value(py, config, c"datafusion_extension_options")
    }

    fn __repr__(&self) -> String {
        format!("SessionOptions({})", self.options)
    }
}

/// The names of the `prospeo.*` options.
#[pyfunction]
fn option_names() -> Vec<&'static str> {
    datafusion_prospeo::datafusion::options::OptionKey::names()
}

/// The summary JSON's schema metadata key.
#[pyfunction]
fn summary_key() -> &'static str {
    SUMMARY_KEY
}

#[pymodule]
fn _prospeo(m: &Bound<'_, PyModule>) -> PyResult<()> {
    datafusion_prospeo::configure_mimalloc();
    m.add_class::<PySandbox>()?;
    m.add_class::<PyTableFunction>()?;
    m.add_class::<PySessionOptions>()?;
    m.add_class::<PyProvider>()?;
    m.add_function(wrap_pyfunction!(enrich, m)?)?;
    m.add_function(wrap_pyfunction!(enrich_to, m)?)?;
    m.add_function(wrap_pyfunction!(enrich_batches, m)?)?;
    m.add_function(wrap_pyfunction!(dry_run, m)?)?;
    m.add_function(wrap_pyfunction!(account, m)?)?;
    m.add_function(wrap_pyfunction!(sql, m)?)?;
    m.add_function(wrap_pyfunction!(option_names, m)?)?;
    m.add_function(wrap_pyfunction!(summary_key, m)?)?;
    m.add("DATAFUSION_MAJOR", 55)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
