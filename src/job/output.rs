//! Writing a result to Parquet, CSV, NDJSON or Arrow IPC, on local disk or an object store,
//! committed only when complete.
//!
//! Local files are written to a hidden temporary file next to the target and renamed over it at
//! the end; object stores get a multipart upload that is completed at the end (an S3 object does
//! not exist until its upload completes) and aborted on failure. Either way a failed or
//! interrupted run leaves nothing that looks like a finished file.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clap::ValueEnum;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::object_store::buffered::BufWriter;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_writer::{
    ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::file::writer::SerializedFileWriter;
use datafusion::parquet::schema::types::{ColumnPath, SchemaDescriptor};
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::JobError;

/// File formats a result can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Apache Parquet, zstd-compressed (the default).
    Parquet,
    /// CSV with a header row; list and struct columns are written as text.
    Csv,
    /// One JSON object a line.
    #[value(alias = "json", alias = "jsonl")]
    Ndjson,
    /// Arrow IPC file format (Feather v2).
    #[value(alias = "ipc", alias = "feather")]
    Arrow,
}

impl OutputFormat {
    /// The format of a name: `parquet`, `csv`, `ndjson` (`json`, `jsonl`) or `arrow` (`ipc`,
    /// `feather`), in any case.
    pub fn from_name(name: &str) -> Option<Self> {
        <Self as ValueEnum>::from_str(name.trim(), true).ok()
    }

    /// The format an output's extension names (`.parquet`, `.csv`, `.ndjson`/`.jsonl`/`.json`,
    /// `.arrow`/`.ipc`/`.feather`).
    pub fn from_target(target: &str) -> Option<Self> {
        let name = target.rsplit(['/', '\\']).next().unwrap_or(target);
        let (_, extension) = name.rsplit_once('.')?;
        match extension.to_ascii_lowercase().as_str() {
            "parquet" | "pq" => Some(OutputFormat::Parquet),
            "csv" => Some(OutputFormat::Csv),
            "ndjson" | "jsonl" | "json" => Some(OutputFormat::Ndjson),
            "arrow" | "ipc" | "feather" => Some(OutputFormat::Arrow),
            _ => None,
        }
    }
}

/// Where a result goes.
enum Destination {
    Local(PathBuf),
    Object {
        store: Arc<dyn ObjectStore>,
        path: ObjectPath,
    },
}

/// An output: a target (local path or object-store URL) and a format.
pub struct Output {
    target: String,
    format: OutputFormat,
    destination: Destination,
}

impl Output {
    /// Resolves `target` (a local path, or an `s3://`, `gs://`, `az://` URL whose store is
    /// configured from the environment) and its format (`format`, else the extension).
    pub fn resolve(
        target: &str,
        format: Option<OutputFormat>,
        runtime: &Arc<RuntimeEnv>,
    ) -> Result<Self, JobError> {
        let destination = match url::Url::parse(target) {
            Ok(url) if url.scheme().len() > 1 && url.scheme() != "file" => {
                object_destination(runtime, &url, target)?
            }
            Ok(url) if url.scheme() == "file" => Destination::Local(
                url.to_file_path()
                    .map_err(|_| JobError::BadInput(format!("{target} is not a local path")))?,
            ),
            _ => Destination::Local(PathBuf::from(target)),
        };
        if let Destination::Local(path) = &destination
            && path.is_dir()
        {
            return Err(JobError::BadInput(format!(
                "cannot write {target}: it is a directory; give a file name such as {}",
                path.join("enriched.parquet").display()
            )));
        }
        let format = format.or_else(|| OutputFormat::from_target(target)).ok_or_else(|| {
            JobError::BadInput(format!(
                "cannot tell the output format of {target} from its extension: use .parquet, .csv, .ndjson or .arrow, or --output-format"
            ))
        })?;
        Ok(Output {
            target: target.to_string(),
            format,
            destination,
        })
    }

    /// The target as given.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Checks that the output can be written, before anything is paid for: creates the local
    /// temporary file, or writes and deletes a probe object.
    pub async fn open(&self) -> Result<OpenOutput, JobError> {
        let sink = match &self.destination {
            Destination::Local(path) => {
                let temporary = temporary_path(path);
                let file = std::fs::File::create(&temporary).map_err(|e| {
                    JobError::BadInput(format!(
                        "cannot write {}: {e}; choose a writable output path with -o",
                        path.display()
                    ))
                })?;
                Sink::Local {
                    file,
                    temporary,
                    path: path.clone(),
                    committed: false,
                }
            }
            Destination::Object { store, path } => {
                let probe =
                    ObjectPath::from(format!("{path}.prospeo-probe-{}", std::process::id()));
                store
                    .put(&probe, datafusion::object_store::PutPayload::default())
                    .await
                    .map_err(|e| {
                        JobError::BadInput(format!(
                            "cannot write {}: {e}; check the bucket and the AWS_*/GOOGLE_*/AZURE_* credentials",
                            self.target
                        ))
                    })?;
                let _ = store.delete(&probe).await;
                Sink::Object {
                    writer: BufWriter::new(store.clone(), path.clone()),
                }
            }
        };
        Ok(OpenOutput {
            target: self.target.clone(),
            format: self.format,
            sink,
        })
    }
}

/// The store and path of an object-store URL, the store configured from the environment.
fn object_destination(
    runtime: &Arc<RuntimeEnv>,
    url: &url::Url,
    target: &str,
) -> Result<Destination, JobError> {
    crate::datafusion::source::ensure_for_url(runtime, url)
        .map_err(|e| JobError::BadInput(e.to_string()))?;
    let store_url = datafusion::execution::object_store::ObjectStoreUrl::parse(
        &url[..url::Position::BeforePath],
    )
    .map_err(|e| JobError::BadInput(format!("{target}: {e}")))?;
    let store = runtime.object_store(&store_url).map_err(|e| {
        JobError::BadInput(format!(
            "cannot write {target}: {e}; supported schemes are s3://, gs://, az:// and local paths"
        ))
    })?;
    let path = ObjectPath::from_url_path(url.path())
        .map_err(|e| JobError::BadInput(format!("{target}: {e}")))?;
    if path.as_ref().is_empty() {
        return Err(JobError::BadInput(format!(
            "{target} names a bucket, not an object: add a file name"
        )));
    }
    Ok(Destination::Object { store, path })
}

/// An output being written. Dropping it without [`OpenOutput::write`] completing removes the
/// local temporary file.
pub struct OpenOutput {
    target: String,
    format: OutputFormat,
    sink: Sink,
}

impl OpenOutput {
    /// Streams every batch into the output and commits it; returns the number of rows. When
    /// `cancel` completes first, or anything fails, nothing is committed.
    pub async fn write<S>(
        mut self,
        schema: SchemaRef,
        stream: S,
        cancel: impl Future<Output = ()>,
    ) -> Result<u64, JobError>
    where
        S: Stream<Item = Result<RecordBatch, DataFusionError>>,
    {
        let result = self.write_all(schema, stream, cancel).await;
        match result {
            Ok(rows) => {
                self.sink.commit(&self.target).await?;
                Ok(rows)
            }
            Err(e) => {
                self.sink.discard().await;
                Err(e)
            }
        }
    }

    async fn write_all<S>(
        &mut self,
        schema: SchemaRef,
        stream: S,
        cancel: impl Future<Output = ()>,
    ) -> Result<u64, JobError>
    where
        S: Stream<Item = Result<RecordBatch, DataFusionError>>,
    {
        let buffer = SharedBuffer::default();
        let encoder = Encoder::new(self.format, schema, buffer.clone())
            .map_err(|e| JobError::Failure(format!("cannot start {}: {e}", self.target)))?;
        // The encoder works on a blocking thread, one group of batches at a time, while this
        // task reads the next group: encoding (Parquet's zstd above all) runs beside the
        // query instead of after it.
        let mut encoder = Encoding::Idle(encoder);
        let mut stream = std::pin::pin!(stream);
        let mut cancel = std::pin::pin!(cancel);
        let mut rows = 0u64;
        let mut group = Vec::new();
        let mut group_rows = 0;
        loop {
            let batch = tokio::select! {
                biased;
                _ = &mut cancel => return Err(JobError::Interrupted),
                batch = stream.next() => batch,
            };
            let done = batch.is_none();
            if let Some(batch) = batch {
                let batch = batch.map_err(query_error)?;
                rows += batch.num_rows() as u64;
                group_rows += batch.num_rows();
                group.push(batch);
            }
            if group_rows >= ENCODE_ROWS || (done && !group.is_empty()) {
                let idle = self.idle(encoder, &buffer).await?;
                let batches = std::mem::take(&mut group);
                group_rows = 0;
                encoder = Encoding::Running(tokio::task::spawn_blocking(move || {
                    let mut encoder = idle;
                    let written = encoder.write_group(&batches);
                    (encoder, written)
                }));
            }
            if done {
                break;
            }
        }
        let idle = self.idle(encoder, &buffer).await?;
        let finished = tokio::task::spawn_blocking(move || {
            let mut encoder = idle;
            let finished = encoder.finish();
            (encoder, finished)
        });
        self.idle(Encoding::Running(finished), &buffer).await?;
        // A Ctrl-C while the last rows were encoded still means "write nothing".
        if futures::FutureExt::now_or_never(cancel.as_mut()).is_some() {
            return Err(JobError::Interrupted);
        }
        Ok(rows)
    }

    /// The encoder once it has written what it was given, its output appended to the sink.
    async fn idle(
        &mut self,
        encoder: Encoding,
        buffer: &SharedBuffer,
    ) -> Result<Encoder, JobError> {
        let encoder = match encoder {
            Encoding::Idle(encoder) => return Ok(encoder),
            Encoding::Running(task) => {
                let (encoder, written) = task.await.map_err(|e| self.write_error(&e))?;
                written.map_err(|e| self.write_error(&e))?;
                encoder
            }
        };
        let bytes = buffer.take();
        self.sink
            .append(&bytes)
            .await
            .map_err(|e| self.write_error(&e))?;
        buffer.give_back(bytes);
        Ok(encoder)
    }

    fn write_error(&self, e: &dyn std::fmt::Display) -> JobError {
        JobError::Failure(format!("cannot write {}: {e}", self.target))
    }
}

/// A query error as the CLI reports it: the crate's error, found by downcasting through
/// DataFusion's wrappers (never by its text), gets the exit code it gets anywhere else
/// ([`JobError::from`]): whether it surfaced while planning or mid-query does not matter.
pub fn query_error(e: DataFusionError) -> JobError {
    match crate::Error::find_in(&e) {
        Some(found) if found.is_key_problem() || found.is_bad_input() => {
            JobError::from_api_ref(found)
        }
        _ => JobError::Failure(e.to_string()),
    }
}

/// A planning error: a missing key, or else bad input.
pub fn planning_error(e: DataFusionError) -> JobError {
    match query_error(e) {
        JobError::Failure(text) => JobError::BadInput(text),
        other => other,
    }
}

enum Sink {
    Local {
        file: std::fs::File,
        temporary: PathBuf,
        path: PathBuf,
        committed: bool,
    },
    Object {
        writer: BufWriter,
    },
}

impl Sink {
    async fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        match self {
            Sink::Local { file, .. } => file.write_all(bytes),
            Sink::Object { writer } => writer.write_all(bytes).await,
        }
    }

    async fn commit(&mut self, target: &str) -> Result<(), JobError> {
        let failure =
            |e: &dyn std::fmt::Display| JobError::Failure(format!("cannot finish {target}: {e}"));
        match self {
            Sink::Local {
                file,
                temporary,
                path,
                committed,
            } => {
                file.sync_all().map_err(|e| failure(&e))?;
                std::fs::rename(&*temporary, &*path).map_err(|e| failure(&e))?;
                *committed = true;
                Ok(())
            }
            Sink::Object { writer } => match writer.shutdown().await {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = writer.abort().await;
                    Err(failure(&e))
                }
            },
        }
    }

    async fn discard(&mut self) {
        match self {
            Sink::Local {
                temporary,
                committed,
                ..
            } => {
                let _ = std::fs::remove_file(&*temporary);
                *committed = true;
            }
            Sink::Object { writer } => {
                let _ = writer.abort().await;
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Sink::Local {
            temporary,
            committed: false,
            ..
        } = self
        {
            let _ = std::fs::remove_file(&*temporary);
        }
    }
}

/// Where the encoders write; drained into the sink after every batch.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// The largest buffer kept for the next group once drained: a group of batches encodes to
    /// a megabyte or two (CSV, IPC), Parquet's row groups to tens of megabytes, and those are
    /// not worth holding between row groups.
    const KEEP_BYTES: usize = 4 << 20;

    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Hands back a buffer [`Self::take`] gave, once its bytes are written: the next group is
    /// encoded into it instead of into a new vector grown from nothing (reallocated and copied
    /// a dozen times).
    fn give_back(&self, mut bytes: Vec<u8>) {
        if bytes.capacity() > Self::KEEP_BYTES {
            return;
        }
        let mut buffer = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.is_empty() && buffer.capacity() < bytes.capacity() {
            bytes.clear();
            *buffer = bytes;
        }
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Rows of output handed to the encoder at a time (a handful of the query's batches).
const ENCODE_ROWS: usize = 512;

/// The encoder, ready, or writing a group of batches on a blocking thread.
// One per output, moved once per group of rows: boxing the encoder would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
enum Encoding {
    Idle(Encoder),
    Running(tokio::task::JoinHandle<(Encoder, Result<(), String>)>),
}

enum Encoder {
    Parquet(ParquetOutput),
    Csv(datafusion::arrow::csv::Writer<SharedBuffer>),
    Ndjson(datafusion::arrow::json::LineDelimitedWriter<SharedBuffer>),
    Arrow(datafusion::arrow::ipc::writer::FileWriter<SharedBuffer>),
}

impl Encoder {
    fn new(format: OutputFormat, schema: SchemaRef, buffer: SharedBuffer) -> Result<Self, String> {
        Ok(match format {
            OutputFormat::Parquet => {
                // A schema Parquet cannot hold fails here, before the query runs (the writer
                // itself opens on the first rows).
                let columns = datafusion::parquet::arrow::ArrowSchemaConverter::new()
                    .convert(&schema)
                    .map_err(|e| e.to_string())?;
                Encoder::Parquet(ParquetOutput {
                    schema,
                    columns,
                    buffer,
                    writer: None,
                    closed: false,
                    max_row_group_bytes: MAX_ROW_GROUP_BYTES,
                })
            }
            OutputFormat::Csv => Encoder::Csv(
                datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(buffer),
            ),
            OutputFormat::Ndjson => {
                Encoder::Ndjson(datafusion::arrow::json::LineDelimitedWriter::new(buffer))
            }
            OutputFormat::Arrow => Encoder::Arrow(
                datafusion::arrow::ipc::writer::FileWriter::try_new(buffer, &schema)
                    .map_err(|e| e.to_string())?,
            ),
        })
    }

    /// Writes a group of the query's batches. Parquet and Arrow IPC take each run of batches
    /// of one schema as one batch (the branches of a `UNION ALL` may differ in nullability):
    /// a query batch is one request's rows (50), and Parquet's writer pays per batch and column
    /// (levels, statistics, page checks: 111 columns), IPC writes a message a batch. IPC's
    /// batches with text or binary views are [`compacted`].
    fn write_group(&mut self, batches: &[RecordBatch]) -> Result<(), String> {
        let ipc = match self {
            Encoder::Parquet(_) => false,
            Encoder::Arrow(_) => true,
            Encoder::Csv(_) | Encoder::Ndjson(_) => {
                return batches.iter().try_for_each(|batch| self.write(batch));
            }
        };
        for run in batches.chunk_by(|a, b| a.schema_ref() == b.schema_ref()) {
            let schema = run[0].schema_ref();
            let views = schema.fields().iter().any(|field| {
                matches!(field.data_type(), DataType::Utf8View | DataType::BinaryView)
            });
            let joined = match run {
                _ if ipc && views => compacted(run).map_err(|e| e.to_string())?,
                [batch] => batch.clone(),
                _ => datafusion::arrow::compute::concat_batches(schema, run)
                    .map_err(|e| e.to_string())?,
            };
            self.write(&joined)?;
        }
        Ok(())
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match self {
            Encoder::Parquet(output) => output.write(batch),
            Encoder::Csv(writer) => writer
                .write(&nested_as_text(batch).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string()),
            Encoder::Ndjson(writer) => writer.write(batch).map_err(|e| e.to_string()),
            Encoder::Arrow(writer) => writer.write(batch).map_err(|e| e.to_string()),
        }
    }

    fn finish(&mut self) -> Result<(), String> {
        match self {
            Encoder::Parquet(output) => output.finish(),
            Encoder::Csv(_) => Ok(()),
            Encoder::Ndjson(writer) => writer.finish().map_err(|e| e.to_string()),
            Encoder::Arrow(writer) => writer.finish().map_err(|e| e.to_string()),
        }
    }
}

/// `batches` (of one schema) as one batch whose text and binary views are copied out of
/// buffers they use little of. An input column read from Parquet is a slice of views into the
/// buffers of the reader's whole batch (8,192 rows), and Arrow IPC writes every buffer an array
/// refers to: each 50-row slice wrote them all again (a 100,000-row job from a Parquet file
/// made a 6.3 GB `.arrow` file; 276 MB once compacted). Only top-level columns are compacted:
/// views inside a list or struct (a Parquet file whose stored Arrow schema declares them, a
/// query that builds them) are joined as they are, and their buffers written whole.
fn compacted(batches: &[RecordBatch]) -> Result<RecordBatch, ArrowError> {
    use datafusion::arrow::compute::BatchCoalescer;
    let schema = batches
        .first()
        .map(RecordBatch::schema)
        .ok_or_else(|| ArrowError::InvalidArgumentError("no batch to join".into()))?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut coalescer = BatchCoalescer::new(schema.clone(), rows.max(1));
    for batch in batches {
        coalescer.push_batch(batch.clone())?;
    }
    coalescer.finish_buffered_batch()?;
    Ok(coalescer
        .next_completed_batch()
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

/// The Parquet writer, opened on the first rows: they decide which text columns get a
/// dictionary.
struct ParquetOutput {
    schema: SchemaRef,
    /// The Parquet columns the schema becomes.
    columns: SchemaDescriptor,
    buffer: SharedBuffer,
    writer: Option<ParquetWriter>,
    closed: bool,
    /// [`MAX_ROW_GROUP_BYTES`]; smaller in tests.
    max_row_group_bytes: usize,
}

impl ParquetOutput {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        // An empty batch says nothing of the values: the writer opens on rows.
        if self.closed || batch.num_rows() == 0 {
            return Ok(());
        }
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => self.writer.insert(self.open(Some(batch))?),
        };
        writer.write(batch).map_err(|e| e.to_string())
    }

    fn finish(&mut self) -> Result<(), String> {
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        let writer = match self.writer.take() {
            Some(writer) => writer,
            // No rows: a file with the schema and no row.
            None => self.open(None)?,
        };
        writer.close().map_err(|e| e.to_string())
    }

    fn open(&self, first: Option<&RecordBatch>) -> Result<ParquetWriter, String> {
        let mut properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_bytes(Some(self.max_row_group_bytes));
        let unique = first.map(|batch| unique_text_columns(batch, &self.columns));
        for column in unique.unwrap_or_default() {
            properties = properties.set_column_dictionary_enabled(column, false);
        }
        // A file without rows has nothing to encode: no threads for it.
        let lanes = if first.is_some() { encoding_lanes() } else { 1 };
        ParquetWriter::open(
            self.buffer.clone(),
            self.schema.clone(),
            properties.build(),
            lanes,
        )
        .map_err(|e| e.to_string())
    }
}

/// An open Parquet file and the row group being encoded, its columns encoded on
/// [`encoding_lanes`] threads at once.
///
/// Arrow's `ArrowWriter` encodes a batch's columns one after the other on the thread that
/// writes; this writer does what it does (the same properties, the same row group bounds, the
/// Arrow schema in the file's metadata) with the columns spread over lanes. Encoding was the
/// one step of a job on a single thread: 41% of a re-run's CPU samples.
struct ParquetWriter {
    file: SerializedFileWriter<SharedBuffer>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// The open row group's writers, one a Parquet column (leaf), in the file's order; none
    /// between row groups.
    group: Vec<ArrowColumnWriter>,
    /// Rows in the open row group.
    rows: usize,
    max_rows: usize,
    max_bytes: usize,
    lanes: Lanes,
    /// An encoding or a row group failed: its column writers are gone, so nothing more is
    /// written (a file without that group's rows would look whole).
    failed: bool,
}

impl ParquetWriter {
    fn open(
        buffer: SharedBuffer,
        schema: SchemaRef,
        properties: WriterProperties,
        lanes: usize,
    ) -> Result<Self, ParquetError> {
        let max_rows = properties.max_row_group_row_count().unwrap_or(usize::MAX);
        let max_bytes = properties.max_row_group_bytes().unwrap_or(usize::MAX);
        // The file as `ArrowWriter` starts it (the schema it stores for Arrow readers among
        // the file's metadata), then its lower-level parts.
        let (file, factory) = ArrowWriter::try_new(buffer, schema.clone(), Some(properties))?
            .into_serialized_writer()?;
        Ok(ParquetWriter {
            file,
            factory,
            schema,
            group: Vec::new(),
            rows: 0,
            max_rows: max_rows.max(1),
            max_bytes,
            lanes: Lanes::new(lanes),
            failed: false,
        })
    }

    /// Writes `batch`, cut where a row group fills up, as `ArrowWriter::write` does (its
    /// steps, in its order: the row bound, then the byte bound at the group's average row size
    /// so far). Content-defined chunking, which `ArrowWriter` also offers, is not set here.
    fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        self.unless_failed(|writer| writer.write_rows(batch))
    }

    /// `step`, unless an earlier one failed; a failure stops every later one.
    fn unless_failed(
        &mut self,
        step: impl FnOnce(&mut Self) -> Result<(), ParquetError>,
    ) -> Result<(), ParquetError> {
        if self.failed {
            return Err(ParquetError::General(
                "an earlier write to this file failed".into(),
            ));
        }
        let result = step(self);
        self.failed = result.is_err();
        result
    }

    fn write_rows(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        if self.rows + rows > self.max_rows {
            // `self.rows` is below `max_rows`: a full group is flushed after each write.
            let fit = self.max_rows - self.rows;
            self.write_rows(&batch.slice(0, fit))?;
            return self.write_rows(&batch.slice(fit, rows - fit));
        }
        if self.rows > 0 {
            let bytes = self.estimated_bytes();
            if bytes >= self.max_bytes {
                self.flush()?;
                return self.write_rows(batch);
            }
            if let Some(row) = bytes.checked_div(self.rows).filter(|row| *row > 0) {
                let fit = (self.max_bytes - bytes) / row;
                if rows > fit {
                    if fit == 0 {
                        self.flush()?;
                        return self.write_rows(batch);
                    }
                    self.write_rows(&batch.slice(0, fit))?;
                    return self.write_rows(&batch.slice(fit, rows - fit));
                }
            }
        }
        self.encode(batch)?;
        if self.rows >= self.max_rows || self.estimated_bytes() >= self.max_bytes {
            self.flush()?;
        }
        Ok(())
    }

    /// The open row group's size by Parquet's estimate (the finished pages compressed, the
    /// open ones plain).
    fn estimated_bytes(&self) -> usize {
        self.group
            .iter()
            .map(ArrowColumnWriter::get_estimated_total_bytes)
            .sum()
    }

    fn encode(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        if self.group.is_empty() {
            let index = self.file.flushed_row_groups().len();
            self.group = self.factory.create_column_writers(index)?;
        }
        let mut leaves = Vec::with_capacity(self.group.len());
        for (field, column) in self.schema.fields().iter().zip(batch.columns()) {
            leaves.extend(compute_leaves(field, column)?);
        }
        if leaves.len() != self.group.len() || batch.num_columns() != self.schema.fields().len() {
            return Err(ParquetError::General(format!(
                "a batch of {} columns ({} Parquet columns) for a file of {} ({})",
                batch.num_columns(),
                leaves.len(),
                self.schema.fields().len(),
                self.group.len()
            )));
        }
        // Each writer goes to its lane with the batch's leaves, and comes back.
        let leaves = Arc::new(leaves);
        let work: Vec<_> = std::mem::take(&mut self.group)
            .into_iter()
            .enumerate()
            .map(|(index, writer)| (writer, index, leaves.clone()))
            .collect();
        self.group = self.lanes.run(work, |(mut writer, index, leaves)| {
            writer.write(&leaves[index])?;
            Ok(writer)
        })?;
        self.rows += batch.num_rows();
        Ok(())
    }

    /// Closes the open row group (its last pages compressed, on the lanes too) and appends it
    /// to the file.
    fn flush(&mut self) -> Result<(), ParquetError> {
        // Rows of a schema without columns are counted and dropped: they never fill a group.
        self.rows = 0;
        if self.group.is_empty() {
            return Ok(());
        }
        let writers = std::mem::take(&mut self.group);
        let chunks = self.lanes.run(writers, ArrowColumnWriter::close)?;
        let mut group = self.file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut group)?;
        }
        group.close()?;
        Ok(())
    }

    fn close(mut self) -> Result<(), ParquetError> {
        self.unless_failed(Self::flush)?;
        self.file.close().map(|_| ())
    }
}

/// Threads a Parquet file's columns are encoded on: the cores, at most four (a job's other
/// steps use the cores too).
fn encoding_lanes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Threads kept for a Parquet file's life to encode its columns on: the thread that writes
/// (the blocking pool's, whichever takes the group) is the first lane, each other lane a thread
/// of its own, which takes its work from a channel. Kept, not made anew for each group of
/// batches: the writers' buffers stay with the allocator's heaps of the same few threads
/// (scoped threads made for each group peaked 14 MB higher at 1,000,000 rows).
struct Lanes {
    helpers: Vec<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Lanes {
    /// `lanes` lanes, or fewer when the system gives no more threads (a process or container
    /// at its thread limit): at least the calling thread.
    fn new(lanes: usize) -> Self {
        let mut helpers = Vec::new();
        let mut threads = Vec::new();
        for _ in 1..lanes {
            let (sender, receiver) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
            let spawned = std::thread::Builder::new()
                .name("prospeo-parquet-lane".into())
                .spawn(move || receiver.into_iter().for_each(|job| job()));
            let Ok(thread) = spawned else { break };
            helpers.push(sender);
            threads.push(thread);
        }
        Lanes { helpers, threads }
    }

    /// `work` done on each of `items`, the items dealt over the lanes; the results in the
    /// items' order, or a lane's error.
    fn run<T, R, F>(&self, items: Vec<T>, work: F) -> Result<Vec<R>, ParquetError>
    where
        T: Send + 'static,
        R: Send + 'static,
        F: Fn(T) -> Result<R, ParquetError> + Copy + Send + 'static,
    {
        let count = items.len();
        let lanes = (self.helpers.len() + 1).min(count.max(1));
        let mut dealt: Vec<Vec<(usize, T)>> = (0..lanes).map(|_| Vec::new()).collect();
        for (index, item) in items.into_iter().enumerate() {
            dealt[index % lanes].push((index, item));
        }
        // A panic in `work` is the lane's error, with its message: the lane's thread lives on.
        let run = move |lane: Vec<(usize, T)>| -> Result<Vec<(usize, R)>, ParquetError> {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                lane.into_iter()
                    .map(|(index, item)| work(item).map(|result| (index, result)))
                    .collect()
            }))
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("no message");
                Err(ParquetError::General(format!(
                    "encoding a column panicked: {message}"
                )))
            })
        };
        let mut dealt = dealt.into_iter();
        let here = dealt.next().unwrap_or_default();
        let mut answers = Vec::with_capacity(lanes);
        for (helper, lane) in self.helpers.iter().zip(dealt) {
            let (reply, answer) = std::sync::mpsc::channel();
            let job: Box<dyn FnOnce() + Send> = Box::new(move || {
                // The writer waits for the answer (a send fails only once it gave up).
                let _ = reply.send(run(lane));
            });
            // A lane whose thread is gone (it cannot end while the lanes live) is done here.
            if let Err(std::sync::mpsc::SendError(job)) = helper.send(job) {
                job();
            }
            answers.push(answer);
        }
        let mut done = vec![run(here)];
        for answer in answers {
            done.push(
                answer
                    .recv()
                    .map_err(|_| ParquetError::General("an encoding lane stopped".into()))?,
            );
        }
        let mut results: Vec<Option<R>> = (0..count).map(|_| None).collect();
        for lane in done {
            for (index, result) in lane? {
                results[index] = Some(result);
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.ok_or_else(|| ParquetError::General("a lane lost a column".into()))
            })
            .collect()
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        // Their channels closed, the threads end after the jobs queued to them.
        self.helpers.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The text columns, nested ones included (job history titles, funding links...), whose
/// values mostly differ in `batch` (names, e-mails, profile URLs: at least 32 values, more
/// than half of them distinct). A dictionary does not shrink them, and building one (hashing
/// and comparing every value) is most of what writing them costs; repeated values (statuses,
/// countries, industries, companies) keep theirs.
fn unique_text_columns(batch: &RecordBatch, parquet: &SchemaDescriptor) -> Vec<ColumnPath> {
    let mut leaves = Vec::new();
    for column in batch.columns() {
        leaf_arrays(column, &mut leaves);
    }
    // Parquet's columns are the Arrow leaves, depth first; anything else is left as it is.
    if leaves.len() != parquet.num_columns() {
        return Vec::new();
    }
    leaves
        .iter()
        .zip(parquet.columns())
        .filter(|(leaf, _)| mostly_distinct(leaf))
        .map(|(_, column)| column.path().clone())
        .collect()
}

/// The size at which a row group is written out, by Parquet's estimate (the finished pages
/// compressed, the open ones plain): about 57,000 enriched rows, 21 MB compressed. The writer
/// holds a row group in memory until it is written; Parquet's default bound alone (1,048,576
/// rows) held a whole job of up to a million rows (100,000 rows: 470 MB at the peak, 310 MB with
/// this bound then, 225 MB since mimalloc no longer takes huge pages).
const MAX_ROW_GROUP_BYTES: usize = 32 << 20;

/// Values looked at per column.
const DICTIONARY_SAMPLE: usize = 2048;

/// The leaf arrays of `array`, depth first, each cut to [`DICTIONARY_SAMPLE`] values.
fn leaf_arrays(array: &ArrayRef, out: &mut Vec<ArrayRef>) {
    use datafusion::arrow::array::AsArray;
    match array.data_type() {
        DataType::Struct(_) => {
            for child in array.as_struct().columns() {
                leaf_arrays(child, out);
            }
        }
        DataType::List(_) => leaf_arrays(array.as_list::<i32>().values(), out),
        DataType::LargeList(_) => leaf_arrays(array.as_list::<i64>().values(), out),
        DataType::FixedSizeList(..) => leaf_arrays(array.as_fixed_size_list().values(), out),
        DataType::Map(..) => {
            let entries: ArrayRef = Arc::new(array.as_map().entries().clone());
            leaf_arrays(&entries, out);
        }
        _ => out.push(array.slice(0, array.len().min(DICTIONARY_SAMPLE))),
    }
}

/// At least 32 text values, more than half of them distinct.
fn mostly_distinct(array: &ArrayRef) -> bool {
    use datafusion::arrow::array::AsArray;
    use std::collections::HashSet;
    let values: Vec<&str> = match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().iter().flatten().collect(),
        DataType::LargeUtf8 => array.as_string::<i64>().iter().flatten().collect(),
        DataType::Utf8View => array.as_string_view().iter().flatten().collect(),
        _ => return false,
    };
    let distinct: HashSet<&str> = values.iter().copied().collect();
    values.len() >= 32 && distinct.len() * 2 > values.len()
}

/// A hidden file next to `output`, unique to this process.
fn temporary_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    output.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

/// CSV has no lists or structs: such columns (job history, funding events, skills...) are
/// written as their text rendering, e.g. `[sales, saas]`.
pub fn nested_as_text(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| f.data_type().is_nested())
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?;
            let text: StringArray = (0..column.len())
                .map(|i| column.is_valid(i).then(|| formatter.value(i).to_string()))
                .collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_error_gets_its_crate_errors_exit_code_wherever_it_surfaced() {
        use crate::Error;
        let mid_query = |e: Error| {
            DataFusionError::from(e).context("while reading batch 3 of enrich_person('x')")
        };
        let bad_input = query_error(mid_query(Error::InvalidMap {
            reason: "no `=`".into(),
        }));
        assert!(matches!(bad_input, JobError::BadInput(_)), "{bad_input:?}");
        let key = query_error(mid_query(Error::InvalidApiKey));
        assert!(matches!(key, JobError::BadKey(_)), "{key:?}");
        let other = query_error(DataFusionError::Execution("disk full".into()));
        assert!(matches!(other, JobError::Failure(_)), "{other:?}");
    }

    #[test]
    fn parquet_keeps_dictionaries_for_repeated_text_only() {
        use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
        let ids: StringArray = (0..200).map(|i| Some(format!("person-{i}"))).collect();
        let statuses: StringArray = (0..200)
            .map(|i| Some(["matched", "not_matched"][i % 2]))
            .collect();
        // Nested: a list of structs whose titles differ and whose kinds repeat.
        let titles: StringArray = (0..400).map(|i| Some(format!("title-{i}"))).collect();
        let kinds: StringArray = (0..400).map(|i| Some(["a", "b"][i % 2])).collect();
        let entry = datafusion::arrow::datatypes::Fields::from(vec![
            Field::new("title", DataType::Utf8, true),
            Field::new("kind", DataType::Utf8, true),
        ]);
        let entries = datafusion::arrow::array::StructArray::new(
            entry.clone(),
            vec![Arc::new(titles), Arc::new(kinds)],
            None,
        );
        let item = Arc::new(Field::new("item", DataType::Struct(entry), true));
        let history = datafusion::arrow::array::ListArray::new(
            item.clone(),
            datafusion::arrow::buffer::OffsetBuffer::from_lengths(std::iter::repeat_n(2, 200)),
            Arc::new(entries),
            None,
        );
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("status", DataType::Utf8, true),
            Field::new("history", DataType::List(item), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(ids), Arc::new(statuses), Arc::new(history)],
        )
        .unwrap();
        let buffer = SharedBuffer::default();
        let mut encoder =
            Encoder::new(OutputFormat::Parquet, schema.clone(), buffer.clone()).unwrap();
        encoder.write(&batch).unwrap();
        encoder.write(&batch).unwrap();
        encoder.finish().unwrap();
        let file = SerializedFileReader::new(bytes::Bytes::from(buffer.take())).unwrap();
        let group = file.metadata().row_group(0);
        assert_eq!(group.num_rows(), 400);
        for (column, dictionary, what) in [
            (0, false, "distinct ids"),
            (1, true, "statuses repeat"),
            (2, false, "distinct titles"),
            (3, true, "kinds repeat"),
        ] {
            let offset = group.column(column).dictionary_page_offset();
            assert_eq!(offset.is_some(), dictionary, "{what}");
        }
        // No rows: still a Parquet file with the schema.
        let buffer = SharedBuffer::default();
        let mut encoder = Encoder::new(OutputFormat::Parquet, schema, buffer.clone()).unwrap();
        encoder.finish().unwrap();
        let file = SerializedFileReader::new(bytes::Bytes::from(buffer.take())).unwrap();
        assert_eq!(file.metadata().file_metadata().num_rows(), 0);
        assert_eq!(
            file.metadata().file_metadata().schema_descr().num_columns(),
            4
        );
    }

    #[test]
    fn parquet_row_groups_are_bounded_in_bytes() {
        use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
        let schema = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, true)]));
        let buffer = SharedBuffer::default();
        let mut encoder =
            Encoder::new(OutputFormat::Parquet, schema.clone(), buffer.clone()).unwrap();
        let Encoder::Parquet(output) = &mut encoder else {
            unreachable!()
        };
        output.max_row_group_bytes = 64 << 10;
        let mut next = 0u64;
        for _ in 0..20 {
            // Distinct values (no dictionary): about 36 bytes a row, plain.
            let values: StringArray = (0..1000)
                .map(|_| {
                    next += 1;
                    Some(format!("{:x}", next.wrapping_mul(0x9E37_79B9_7F4A_7C15)).repeat(2))
                })
                .collect();
            let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(values)]).unwrap();
            encoder.write(&batch).unwrap();
        }
        encoder.finish().unwrap();
        let file = SerializedFileReader::new(bytes::Bytes::from(buffer.take())).unwrap();
        let metadata = file.metadata();
        assert_eq!(metadata.file_metadata().num_rows(), 20_000);
        assert!(
            metadata.num_row_groups() > 4,
            "{} row groups",
            metadata.num_row_groups()
        );
        for group in metadata.row_groups() {
            assert!(
                group.compressed_size() < 2 * (64 << 10),
                "a row group of {} bytes",
                group.compressed_size()
            );
        }
    }

    #[test]
    fn a_group_of_batches_is_written_whole_in_order_even_when_their_schemas_differ() {
        use datafusion::arrow::array::AsArray;
        use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        // The writer's schema, and two branches of a UNION ALL: one declares its column
        // non-nullable, the other has nulls (concatenating the two would be refused).
        let writer = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8, true)]));
        let strict = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8, false)]));
        let batch = |schema: &SchemaRef, values: &[Option<&str>]| {
            let column: StringArray = values.iter().copied().collect();
            RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap()
        };
        let shared = [
            batch(&writer, &[Some("a"), None]),
            batch(&writer, &[]),
            batch(&writer, &[Some("b")]),
        ];
        let mixed = [
            batch(&strict, &[Some("c")]),
            batch(&writer, &[None, Some("d")]),
        ];
        let expected = [Some("a"), None, Some("b"), Some("c"), None, Some("d")];
        for format in [OutputFormat::Parquet, OutputFormat::Arrow] {
            let buffer = SharedBuffer::default();
            let mut encoder = Encoder::new(format, writer.clone(), buffer.clone()).unwrap();
            encoder.write_group(&shared).unwrap();
            encoder.write_group(&mixed).unwrap();
            encoder.finish().unwrap();
            let bytes = bytes::Bytes::from(buffer.take());
            let batches: Vec<RecordBatch> = match format {
                OutputFormat::Parquet => ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .unwrap()
                    .build()
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap(),
                _ => datafusion::arrow::ipc::reader::FileReader::try_new(
                    std::io::Cursor::new(bytes),
                    None,
                )
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap(),
            };
            let values: Vec<Option<String>> = batches
                .iter()
                .flat_map(|b| b.column(0).as_string::<i32>().iter())
                .map(|v| v.map(str::to_string))
                .collect();
            let expected: Vec<Option<String>> =
                expected.iter().map(|v| v.map(str::to_string)).collect();
            assert_eq!(values, expected, "{format:?}");
        }
    }

    /// Writes `batches` to `path` as a job does (the format by the extension); the rows written.
    async fn write_through_output(
        path: &Path,
        runtime: &Arc<RuntimeEnv>,
        schema: &SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> u64 {
        let output = Output::resolve(path.to_str().unwrap(), None, runtime).unwrap();
        let stream = futures::stream::iter(batches.into_iter().map(Ok));
        output
            .open()
            .await
            .unwrap()
            .write(schema.clone(), stream, std::future::pending())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn every_row_is_written_once_in_order_across_many_groups() {
        use datafusion::arrow::array::{AsArray, Int64Array};
        use datafusion::arrow::datatypes::Int64Type;
        // Enough batches of one request's size for many groups of ENCODE_ROWS: each group's
        // bytes are written out and its buffer handed back for the next.
        const ROWS: i64 = 5_000;
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("t", DataType::Utf8, true),
        ]));
        let batches: Vec<RecordBatch> = (0..ROWS)
            .step_by(50)
            .map(|start| {
                let n: Int64Array = (start..(start + 50).min(ROWS)).collect();
                let t: StringArray = n
                    .values()
                    .iter()
                    .map(|n| (n % 7 != 0).then(|| format!("row {n} ").repeat(20)))
                    .collect();
                RecordBatch::try_new(schema.clone(), vec![Arc::new(n), Arc::new(t)]).unwrap()
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let runtime = Arc::new(RuntimeEnv::default());
        for name in ["out.csv", "out.arrow", "out.parquet"] {
            let path = dir.path().join(name);
            let written = write_through_output(&path, &runtime, &schema, batches.clone()).await;
            assert_eq!(written, ROWS as u64);
            let file = std::fs::File::open(&path).unwrap();
            let read: Vec<RecordBatch> = if name.ends_with(".csv") {
                datafusion::arrow::csv::ReaderBuilder::new(schema.clone())
                    .with_header(true)
                    .build(file)
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            } else if name.ends_with(".parquet") {
                datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                    file,
                )
                .unwrap()
                .build()
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
            } else {
                datafusion::arrow::ipc::reader::FileReader::try_new(file, None)
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            };
            let numbers: Vec<i64> = read
                .iter()
                .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
                .collect();
            assert_eq!(numbers, (0..ROWS).collect::<Vec<_>>(), "{name}");
            let texts: Vec<Option<String>> = read
                .iter()
                .flat_map(|b| b.column(1).as_string::<i32>().iter())
                .map(|t| t.map(str::to_string))
                .collect();
            let expected: Vec<Option<String>> = (0..ROWS)
                .map(|n| (n % 7 != 0).then(|| format!("row {n} ").repeat(20)))
                .collect();
            assert_eq!(texts, expected, "{name}");
        }
    }

    #[tokio::test]
    async fn an_arrow_file_holds_each_text_view_once() {
        use datafusion::arrow::array::{AsArray, StringViewArray};
        // An input column as DataFusion reads it from Parquet: text views into the buffers
        // of the reader's whole batch, which the node cuts into one request's rows.
        const ROWS: usize = 8192;
        let text = |n: usize| format!("https://www.linkedin.com/in/person-{n:08}");
        let column: StringViewArray = (0..ROWS).map(|n| Some(text(n))).collect();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "url",
            DataType::Utf8View,
            true,
        )]));
        let whole = RecordBatch::try_new(schema.clone(), vec![Arc::new(column)]).unwrap();
        let batches: Vec<RecordBatch> = (0..ROWS)
            .step_by(50)
            .map(|start| whole.slice(start, 50.min(ROWS - start)))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.arrow");
        let runtime = Arc::new(RuntimeEnv::default());
        let written = write_through_output(&path, &runtime, &schema, batches).await;
        assert_eq!(written, ROWS as u64);
        // The text once, with its views (16 bytes a row) and some room for the file's
        // framing; each slice writing its batch's buffers again made it over a hundred times as
        // large.
        let text_bytes: usize = (0..ROWS).map(|n| text(n).len()).sum();
        let size = std::fs::metadata(&path).unwrap().len() as usize;
        assert!(
            size < 2 * (text_bytes + 16 * ROWS),
            "{size} bytes for {text_bytes} bytes of text"
        );
        let file = std::fs::File::open(&path).unwrap();
        let read: Vec<String> = datafusion::arrow::ipc::reader::FileReader::try_new(file, None)
            .unwrap()
            .map(|batch| batch.unwrap())
            .flat_map(|batch| {
                let column = batch.column(0).as_string_view().clone();
                (0..column.len())
                    .map(|i| column.value(i).to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(read, (0..ROWS).map(text).collect::<Vec<_>>());
    }

    #[test]
    fn the_parquet_writer_makes_the_file_arrow_s_writer_makes() {
        // Nested and flat columns, batches of a request's size, smaller and larger: the
        // columns encoded on lanes come out in the same bytes as Arrow's writer makes.
        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
            Field::new("tags", DataType::List(item.clone()), true),
        ]));
        let batches: Vec<RecordBatch> = [50usize, 50, 700, 1, 3000, 50, 437, 1999, 13, 512]
            .iter()
            .scan(0usize, |start, &rows| {
                let from = *start;
                *start += rows;
                Some((from, rows))
            })
            .map(|(from, rows)| {
                let ids: StringArray = (from..from + rows)
                    .map(|i| (i % 11 != 0).then(|| format!("person-{i:06}")))
                    .collect();
                let n: datafusion::arrow::array::Int64Array =
                    (from..from + rows).map(|i| Some(i as i64 * 7)).collect();
                let tags: StringArray = (0..rows * 2)
                    .map(|i| Some(["sales", "saas", "b2b"][(from + i) % 3]))
                    .collect();
                let tags = datafusion::arrow::array::ListArray::new(
                    item.clone(),
                    datafusion::arrow::buffer::OffsetBuffer::from_lengths(std::iter::repeat_n(
                        2, rows,
                    )),
                    Arc::new(tags),
                    None,
                );
                RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(ids), Arc::new(n), Arc::new(tags)],
                )
                .unwrap()
            })
            .collect();
        // Row groups bounded by bytes alone, by rows alone, and by both, where a batch
        // crosses both bounds (the row bound cuts it first, then the byte bound).
        for (max_bytes, max_rows) in [
            (Some(16 << 10), None),
            (None, Some(600)),
            (Some(16 << 10), Some(600)),
            (Some(48 << 10), Some(1000)),
        ] {
            let properties = || {
                WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .set_max_row_group_bytes(max_bytes)
                    .set_max_row_group_row_count(max_rows)
                    .build()
            };
            let theirs = SharedBuffer::default();
            let mut writer =
                ArrowWriter::try_new(theirs.clone(), schema.clone(), Some(properties())).unwrap();
            let ours = SharedBuffer::default();
            let mut lanes =
                ParquetWriter::open(ours.clone(), schema.clone(), properties(), 3).unwrap();
            for batch in &batches {
                writer.write(batch).unwrap();
                lanes.write(batch).unwrap();
            }
            writer.close().unwrap();
            lanes.close().unwrap();
            let (theirs, ours) = (theirs.take(), ours.take());
            let groups = datafusion::parquet::file::reader::FileReader::metadata(
                &datafusion::parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(
                    ours.clone(),
                ))
                .unwrap(),
            )
            .num_row_groups();
            let bounds = format!("{max_bytes:?} bytes, {max_rows:?} rows");
            assert!(groups > 2, "{groups} row groups ({bounds})");
            assert!(ours == theirs, "the files differ ({bounds})");
        }
    }

    #[test]
    fn after_a_failed_write_the_parquet_writer_writes_nothing_more() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let column = |n: usize| -> ArrayRef {
            Arc::new(
                (0..n)
                    .map(|i| Some(format!("v{i}")))
                    .collect::<StringArray>(),
            )
        };
        let good = RecordBatch::try_new(schema.clone(), vec![column(10), column(10)]).unwrap();
        let narrow = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true)]));
        let bad = RecordBatch::try_new(narrow, vec![column(10)]).unwrap();
        let properties = WriterProperties::builder().build();
        let mut writer = ParquetWriter::open(
            SharedBuffer::default(),
            schema,
            properties,
            encoding_lanes(),
        )
        .unwrap();
        writer.write(&good).unwrap();
        assert!(writer.write(&bad).is_err(), "a batch of the wrong shape");
        // The group written so far lost its writers: a file without its rows would look whole.
        assert!(writer.write(&good).is_err());
        assert!(writer.close().is_err());
    }

    #[test]
    fn lanes_keep_the_items_order_and_report_an_error() {
        let items: Vec<usize> = (0..10).collect();
        for count in [1, 2, 3, 16] {
            let lanes = Lanes::new(count);
            // Twice: the lanes' threads take work again.
            for _ in 0..2 {
                let doubled = lanes.run(items.clone(), |i| Ok(i * 2)).unwrap();
                assert_eq!(doubled, (0..10).map(|i| i * 2).collect::<Vec<_>>());
            }
            let failed = lanes.run(items.clone(), |i| {
                if i == 7 {
                    Err(ParquetError::General("item 7".into()))
                } else {
                    Ok(i)
                }
            });
            assert!(
                matches!(&failed, Err(ParquetError::General(e)) if e == "item 7"),
                "{failed:?}"
            );
            assert!(lanes.run(Vec::<usize>::new(), Ok).unwrap().is_empty());
            // A panic, on a helper's lane (item 1 of 2 or more) or the caller's, is an error
            // that names it, and the lanes work on.
            let panicked = lanes.run(items.clone(), |i| {
                if i == 1 {
                    panic!("item {i} broke");
                }
                Ok(i)
            });
            assert!(
                matches!(&panicked, Err(ParquetError::General(e))
                    if e == "encoding a column panicked: item 1 broke"),
                "{panicked:?}"
            );
            assert_eq!(lanes.run(items.clone(), Ok).unwrap(), items);
        }
    }

    #[test]
    fn formats_follow_the_extension() {
        for (target, format) in [
            ("out.parquet", Some(OutputFormat::Parquet)),
            ("s3://bucket/dir/out.CSV", Some(OutputFormat::Csv)),
            ("out.jsonl", Some(OutputFormat::Ndjson)),
            ("out.arrow", Some(OutputFormat::Arrow)),
            ("out.feather", Some(OutputFormat::Arrow)),
            ("dir.v2/out", None),
            ("out", None),
        ] {
            assert_eq!(OutputFormat::from_target(target), format, "{target}");
        }
    }
}
