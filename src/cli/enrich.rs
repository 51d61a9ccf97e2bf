//! `prospeo enrich INPUT -o OUTPUT`: the same plan as `enrich_person(...)`, written to a file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, ValueEnum};
use datafusion::arrow::array::Array;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::SessionContext;
use datafusion_prospeo::api::{ApiKey, Client, ClientBuilder, RecordStatus, Totals};
use datafusion_prospeo::options::EnrichOptions;
use datafusion_prospeo::sandbox::generator::{GeneratorConfig, generate_directory};
use datafusion_prospeo::sandbox::{DEMO_KEY, Sandbox, SandboxConfig};
use datafusion_prospeo::table::register_with_client;
use futures::StreamExt;
use serde::Serialize;

use super::{CliError, EXIT_DEFERRED};

/// Options of `prospeo enrich`.
#[derive(Debug, Args)]
pub struct EnrichArgs {
    /// Input: a Parquet, CSV or NDJSON file, directory or glob.
    pub input: String,
    /// Output file: .parquet (zstd), .csv or .ndjson/.jsonl, chosen by extension or --output-format.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output format, when the extension does not say it.
    #[arg(long, value_enum)]
    pub output_format: Option<OutputFormat>,
    /// Input format, when the extension does not say it: parquet, csv or ndjson.
    #[arg(long)]
    pub input_format: Option<String>,
    /// CSV input: the delimiter.
    #[arg(long, default_value = ",")]
    pub delimiter: String,
    /// CSV input: the file has no header row.
    #[arg(long)]
    pub no_header: bool,
    /// Map a column to a datapoint, e.g. --map 'Work Email=email'; 'Column=' ignores a column.
    /// Repeatable.
    #[arg(long = "map", value_name = "COLUMN=DATAPOINT")]
    pub maps: Vec<String>,
    /// Only return people with a verified email.
    #[arg(long)]
    pub only_verified_email: bool,
    /// Reveal mobiles (10 credits for a match with a mobile instead of 1).
    #[arg(long)]
    pub enrich_mobile: bool,
    /// Only return people with a mobile (implies --enrich-mobile).
    #[arg(long)]
    pub only_verified_mobile: bool,
    /// Prefix of the enrichment columns.
    #[arg(long, default_value = "prospeo_")]
    pub prefix: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// The plan whose rate limits pace requests: starter, growth or pro.
    #[arg(long, default_value = "pro")]
    pub plan: String,
    /// Custom records-per-minute limit.
    #[arg(long, value_name = "N")]
    pub per_minute: Option<u64>,
    /// Custom records-per-day limit.
    #[arg(long, value_name = "N")]
    pub per_day: Option<u64>,
    /// Stop before spending more than this many credits; the rest is deferred.
    #[arg(long, value_name = "N")]
    pub max_credits: Option<u64>,
    /// Go ahead even when --max-credits exceeds the credits left on the account.
    #[arg(long)]
    pub yes: bool,
    /// The API's base URL (also PROSPEO_BASE_URL).
    #[arg(long, env = "PROSPEO_BASE_URL")]
    pub base_url: Option<String>,
    /// A file holding the API key (also PROSPEO_API_KEY_FILE); PROSPEO_API_KEY otherwise.
    #[arg(long, env = "PROSPEO_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Run against an embedded sandbox with the sample directory and a demo key: nothing is
    /// paid, no key is needed.
    #[arg(long)]
    pub sandbox: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also write the summary as JSON to this file, for orchestrators.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
}

/// Output file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Parquet,
    Csv,
    Ndjson,
}

impl OutputFormat {
    fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "parquet" | "pq" => Some(OutputFormat::Parquet),
            "csv" => Some(OutputFormat::Csv),
            "ndjson" | "jsonl" | "json" => Some(OutputFormat::Ndjson),
            _ => None,
        }
    }
}

/// The numbers of a run, printed at the end and written by --summary-json.
#[derive(Debug, Serialize)]
struct Summary {
    input: String,
    output: String,
    rows: u64,
    matched: u64,
    not_matched: u64,
    invalid_datapoints: u64,
    failed: u64,
    deferred: u64,
    credits: i64,
    records_sent: u64,
    requests: u64,
    retries: u64,
    rate_limited: u64,
    cost_warnings: u64,
    elapsed_seconds: f64,
    rows_per_second: f64,
    exit_code: u8,
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn apply_options(ctx: &SessionContext, args: &EnrichArgs) -> Result<(), CliError> {
    let state = ctx.state_ref();
    let mut state = state.write();
    let options = state
        .config_mut()
        .options_mut()
        .extensions
        .get_mut::<EnrichOptions>()
        .ok_or_else(|| CliError::Failure("prospeo options are not registered".into()))?;
    let mut set = |key: &str, value: String| {
        options
            .set(key, &value)
            .map_err(|e| CliError::BadInput(e.to_string()))
    };
    set("only_verified_email", args.only_verified_email.to_string())?;
    set("enrich_mobile", args.enrich_mobile.to_string())?;
    set(
        "only_verified_mobile",
        args.only_verified_mobile.to_string(),
    )?;
    set("prefix", args.prefix.clone())?;
    set("concurrency", args.concurrency.to_string())?;
    set("plan", args.plan.clone())?;
    set("csv_has_header", (!args.no_header).to_string())?;
    set("csv_delimiter", args.delimiter.clone())?;
    if let Some(format) = &args.input_format {
        set("format", format.clone())?;
    }
    for map in &args.maps {
        set("map", map.clone())?;
    }
    Ok(())
}

fn build_client(args: &EnrichArgs, sandbox: Option<&Sandbox>) -> Result<Client, CliError> {
    let mut builder = ClientBuilder::from_env();
    if let Some(sandbox) = sandbox {
        builder = builder
            .base_url(sandbox.base_url())
            .api_key(ApiKey::new(DEMO_KEY).map_err(|e| CliError::Failure(e.to_string()))?);
    } else {
        if let Some(url) = &args.base_url {
            builder = builder.base_url(url.clone());
        }
        if let Some(path) = &args.api_key_file {
            builder = builder.api_key_file(path.clone());
        }
    }
    let mut options = EnrichOptions::default();
    options
        .set("plan", &args.plan)
        .map_err(|e| CliError::BadInput(e.to_string()))?;
    options.per_minute = args.per_minute;
    options.per_day = args.per_day;
    builder
        .limits(options.limits())
        .max_in_flight(args.concurrency)
        .max_credits(args.max_credits.map(|c| c as i64))
        .build()
        .map_err(|e| match e {
            datafusion_prospeo::Error::MissingApiKey
            | datafusion_prospeo::Error::ApiKeyFile { .. } => CliError::BadKey(e.to_string()),
            other => CliError::BadInput(other.to_string()),
        })
}

pub async fn run(args: EnrichArgs) -> Result<u8, CliError> {
    let started = Instant::now();
    let format = args
        .output_format
        .or_else(|| OutputFormat::from_path(&args.output))
        .ok_or_else(|| {
            CliError::BadInput(format!(
                "cannot tell the output format of {} from its extension: use .parquet, .csv or .ndjson, or --output-format",
                args.output.display()
            ))
        })?;
    let sandbox = if args.sandbox {
        let directory = generate_directory(&GeneratorConfig::default());
        let sandbox = Sandbox::start(SandboxConfig::new(Arc::new(directory)))
            .await
            .map_err(|e| CliError::Failure(format!("cannot start the sandbox: {e}")))?;
        if !args.quiet {
            eprintln!(
                "Embedded sandbox on {} (demo key, nothing is paid)",
                sandbox.base_url()
            );
        }
        Some(sandbox)
    } else {
        None
    };
    let client = build_client(&args, sandbox.as_ref())?;

    // Free checks first: the key and the balance.
    let account = client.account_status().await.map_err(|e| match e {
        datafusion_prospeo::Error::InvalidApiKey => CliError::BadKey(e.to_string()),
        other => CliError::Failure(format!("cannot reach the API: {other}")),
    })?;
    let remaining = account.account.remaining_credits.unwrap_or(0);
    if !args.quiet {
        eprintln!(
            "Plan {}, {} credits left",
            account.account.current_plan.as_deref().unwrap_or("?"),
            remaining
        );
    }
    if let Some(budget) = args.max_credits
        && budget as i64 > remaining
        && !args.yes
    {
        return Err(CliError::BadInput(format!(
            "--max-credits {budget} is more than the {remaining} credits left on the account; lower it, or add --yes to go ahead (the rest will be deferred when credits run out)"
        )));
    }

    let ctx = SessionContext::new();
    register_with_client(&ctx, client.clone());
    apply_options(&ctx, &args)?;
    let sql = format!("SELECT * FROM enrich_person({})", sql_string(&args.input));
    let df = ctx
        .sql(&sql)
        .await
        .map_err(|e| CliError::BadInput(e.to_string()))?;
    if !args.quiet {
        print_mapping(&df).await?;
    }

    let temporary = temporary_path(&args.output);
    let written = tokio::select! {
        result = write(df, &temporary, format) => result,
        _ = tokio::signal::ctrl_c() => Err(CliError::Interrupted),
    };
    let rows = match written {
        Ok(rows) => rows,
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            if matches!(e, CliError::Interrupted) {
                let totals = client.totals();
                eprintln!(
                    "Interrupted: nothing was written. Spent {} credits on {} records.",
                    totals.credits, totals.records_sent
                );
            }
            return Err(e);
        }
    };
    std::fs::rename(&temporary, &args.output).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        CliError::Failure(format!(
            "cannot move the output into {}: {e}",
            args.output.display()
        ))
    })?;
    if let Some(sandbox) = sandbox {
        let _ = sandbox.stop().await;
    }

    let totals = client.totals();
    let exit_code = if totals.deferred > 0 {
        EXIT_DEFERRED
    } else {
        0
    };
    let elapsed = started.elapsed().as_secs_f64();
    let summary = summary(&args, rows, &totals, elapsed, exit_code);
    if !args.quiet {
        print_summary(&summary);
    }
    if let Some(path) = &args.summary_json {
        let json = serde_json::to_vec_pretty(&summary).unwrap_or_default();
        std::fs::write(path, json)
            .map_err(|e| CliError::Failure(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(exit_code)
}

/// Prints how the input's columns were mapped, from the plan the job will run.
async fn print_mapping(df: &DataFrame) -> Result<(), CliError> {
    use datafusion::physical_plan::ExecutionPlan;
    use datafusion_prospeo::exec::EnrichExec;
    fn find(plan: &Arc<dyn ExecutionPlan>) -> Option<&EnrichExec> {
        plan.downcast_ref::<EnrichExec>()
            .or_else(|| plan.children().into_iter().find_map(find))
    }
    let plan = df
        .clone()
        .create_physical_plan()
        .await
        .map_err(|e| CliError::BadInput(e.to_string()))?;
    if let Some(exec) = find(&plan) {
        eprintln!("Column mapping:\n{}", exec.mapping());
    }
    Ok(())
}

fn summary(args: &EnrichArgs, rows: u64, totals: &Totals, elapsed: f64, exit_code: u8) -> Summary {
    Summary {
        input: args.input.clone(),
        output: args.output.display().to_string(),
        rows,
        matched: totals.matched,
        not_matched: totals.not_matched,
        invalid_datapoints: totals.invalid,
        failed: totals.failed,
        deferred: totals.deferred,
        credits: totals.credits,
        records_sent: totals.records_sent,
        requests: totals.requests,
        retries: totals.retries,
        rate_limited: totals.rate_limited,
        cost_warnings: totals.cost_warnings,
        elapsed_seconds: elapsed,
        rows_per_second: if elapsed > 0.0 {
            rows as f64 / elapsed
        } else {
            0.0
        },
        exit_code,
    }
}

fn print_summary(s: &Summary) {
    let statuses = [
        (RecordStatus::Matched, s.matched),
        (RecordStatus::NotMatched, s.not_matched),
        (RecordStatus::InvalidDatapoints, s.invalid_datapoints),
        (RecordStatus::Failed, s.failed),
        (RecordStatus::Deferred, s.deferred),
    ];
    eprintln!("\nWrote {} rows to {}", s.rows, s.output);
    for (status, n) in statuses {
        eprintln!("  {:<20} {n:>8}", status.as_str());
    }
    eprintln!("  {:<20} {:>8}", "credits", s.credits);
    eprintln!("  {:<20} {:>8}", "requests", s.requests);
    eprintln!("  {:<20} {:>8}", "retries", s.retries);
    eprintln!("  {:<20} {:>8}", "429s", s.rate_limited);
    eprintln!(
        "  {:<20} {:>8.1} s ({:.0} rows/s)",
        "elapsed", s.elapsed_seconds, s.rows_per_second
    );
    if s.deferred > 0 {
        eprintln!(
            "{} rows were deferred (quota, credits or budget): run the same command again later.",
            s.deferred
        );
    }
}

fn temporary_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    output.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

/// CSV has no lists or structs: such columns (job history, funding events, skills...) are
/// written as their text rendering, e.g. `[sales, saas]`.
fn nested_as_text(
    batch: &RecordBatch,
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
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
            columns.push(std::sync::Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns)
}

/// Takes each batch, then `None` to finish the file.
type BatchSink = dyn FnMut(Option<&RecordBatch>) -> Result<(), String>;

/// Streams the query into `path`; returns the number of rows.
async fn write(df: DataFrame, path: &Path, format: OutputFormat) -> Result<u64, CliError> {
    let failure = |e: &dyn std::fmt::Display| CliError::Failure(e.to_string());
    let file = std::fs::File::create(path)
        .map_err(|e| CliError::BadInput(format!("cannot write {}: {e}", path.display())))?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    // Partitions are written one after the other, so rows come out in input order.
    let partitions = df
        .execute_stream_partitioned()
        .await
        .map_err(|e| failure(&e))?;
    let mut stream = futures::stream::iter(partitions).flatten();
    let mut sink: Box<BatchSink> = match format {
        OutputFormat::Parquet => {
            let properties = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let mut writer = Some(
                ArrowWriter::try_new(file, schema, Some(properties)).map_err(|e| failure(&e))?,
            );
            Box::new(move |batch| match batch {
                Some(b) => writer
                    .as_mut()
                    .map_or(Ok(()), |w| w.write(b).map_err(|e| e.to_string())),
                None => writer
                    .take()
                    .map_or(Ok(()), |w| w.close().map(|_| ()).map_err(|e| e.to_string())),
            })
        }
        OutputFormat::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(file);
            Box::new(move |batch| match batch {
                Some(b) => writer
                    .write(&nested_as_text(b).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string()),
                None => Ok(()),
            })
        }
        OutputFormat::Ndjson => {
            let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(file);
            Box::new(move |batch| match batch {
                Some(b) => writer.write(b).map_err(|e| e.to_string()),
                None => writer.finish().map_err(|e| e.to_string()),
            })
        }
    };
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| match e.find_root() {
            datafusion::error::DataFusionError::External(inner)
                if inner.to_string().contains("INVALID_API_KEY") =>
            {
                CliError::BadKey(inner.to_string())
            }
            _ => failure(&e),
        })?;
        rows += batch.num_rows() as u64;
        sink(Some(&batch))
            .map_err(|e| CliError::Failure(format!("cannot write the output: {e}")))?;
    }
    sink(None).map_err(|e| CliError::Failure(format!("cannot finish the output: {e}")))?;
    Ok(rows)
}
