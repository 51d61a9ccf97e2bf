//! `prospeo enrich INPUT -o OUTPUT`: the same plan as `enrich_person(...)` (or, with
//! `--companies`, `enrich_company(...)`), written to a file.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use datafusion::arrow::array::AsArray;
use datafusion::catalog::TableFunctionArgs;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{SessionContext, lit};
use datafusion_prospeo::api::{Client, Endpoint, RecordStatus, Tally, Totals};
use datafusion_prospeo::cache::CacheKey;
use datafusion_prospeo::datafusion::options::EnrichOptions;
use datafusion_prospeo::datafusion::table::{EnrichTable, function_name, register_with_client};
use datafusion_prospeo::sandbox::Sandbox;
use futures::StreamExt;
use serde::Serialize;

use super::options::OptionArgs;
use super::output::{Output, OutputFormat, planning_error, query_error};
use super::progress::{Progress, ProgressMode};
use super::{CliError, EXIT_DEFERRED, GlobalArgs, LogFormat, api_error};

/// Options of `prospeo enrich`.
#[derive(Debug, Args)]
pub struct EnrichArgs {
    /// Input: a Parquet, CSV or NDJSON file, directory or glob, local or an s3://, gs://, az://
    /// or http(s):// URL (object stores are configured from AWS_*, GOOGLE_*, AZURE_*).
    pub input: String,
    /// Output: a local path or an s3://, gs://, az:// URL; .parquet (zstd), .csv, .ndjson or
    /// .arrow (Arrow IPC), chosen by extension or --output-format. Written to a temporary file
    /// or upload and committed only when complete.
    #[arg(short, long, required_unless_present = "dry_run")]
    pub output: Option<String>,
    /// Output format, when the extension does not say it.
    #[arg(long, value_enum)]
    pub output_format: Option<OutputFormat>,
    /// Enrich companies instead of persons, through Bulk Enrich Company: the input is an
    /// accounts export whose columns map to company_name, company_website,
    /// company_linkedin_url and company_id ("Account Name", "Website", "Company Domain Name",
    /// "LinkedIn Company Page", ...); the output has the company columns only. One credit a
    /// matched company; the key's quota is shared with person enrichment.
    #[arg(long)]
    pub companies: bool,
    /// The `prospeo.*` options, as the SQL side has them (`prospeo.per_second` is
    /// --per-second): the same names, the same checks.
    #[command(flatten)]
    pub options: OptionArgs,
    /// CSV input: the file has no header row (--csv-has-header=false).
    #[arg(long, conflicts_with = "csv_has_header")]
    pub no_header: bool,
    /// Keep no cache file: answers for later duplicates go to a private temporary file for
    /// this run only (duplicates within the run are still sent once; memory stays flat). --cache PATH (also PROSPEO_CACHE) names the file otherwise:
    /// answers are read from it before sending and committed to it as they arrive, so
    /// re-running a stopped job sends only what was never answered. Default: the platform's
    /// cache directory (~/.cache/prospeo/responses.redb on Linux); with --sandbox, a
    /// temporary store for the run.
    #[arg(long, conflicts_with_all = ["cache_ttl", "cache_path"])]
    pub no_cache: bool,
    /// Go ahead even when --max-credits exceeds the credits left on the account.
    #[arg(long)]
    pub yes: bool,
    /// Read the input, print the mapping, count rows by what would happen (valid, invalid,
    /// duplicate) and the worst-case credits; call nothing that costs, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub api: super::ApiArgs,
    /// Run against an embedded sandbox with the sample directory and a demo key: nothing is
    /// paid, no key is needed.
    #[arg(long)]
    pub sandbox: bool,
    /// Print nothing but errors (no mapping, progress bar or summary).
    #[arg(long, short)]
    pub quiet: bool,
    /// Also write the summary as JSON to this file, for orchestrators.
    #[arg(long, value_name = "PATH")]
    pub summary_json: Option<PathBuf>,
}

/// The numbers of a run, printed at the end and written by --summary-json. The counts are the
/// client's [`Tally`], under the names it gives them (as EXPLAIN ANALYZE does), read through
/// (`summary.matched`).
#[derive(Debug, Serialize)]
struct Summary {
    input: String,
    output: String,
    rows: u64,
    #[serde(flatten)]
    counts: Tally,
    quota_wait_seconds: f64,
    /// When the quota that deferred rows returns (RFC 3339), when the API said.
    quota_returns_at: Option<String>,
    elapsed_seconds: f64,
    rows_per_second: f64,
    exit_code: u8,
}

impl std::ops::Deref for Summary {
    type Target = Tally;
    fn deref(&self) -> &Tally {
        &self.counts
    }
}

/// What `--dry-run` found.
#[derive(Debug, Default, Serialize)]
struct DryRun {
    input: String,
    rows: u64,
    /// Rows that meet the vendor's minimum and would be sent.
    valid: u64,
    /// Company records to send with only a name: sent, but a name alone may match the wrong
    /// company (the vendor's warning).
    name_only: u64,
    /// Rows below the minimum: never sent, never charged.
    invalid_datapoints: u64,
    /// Valid rows whose normalised datapoints repeat an earlier row's: sent once.
    duplicates: u64,
    /// Distinct valid records the response cache answers: free.
    cached: u64,
    /// Distinct valid records that would be sent.
    records_to_send: u64,
    /// Credits if every record sent matched (10 a match with --enrich-mobile).
    worst_case_credits: u64,
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl EnrichArgs {
    /// The endpoint the rows go to.
    fn endpoint(&self) -> Endpoint {
        if self.companies {
            Endpoint::BulkEnrichCompany
        } else {
            Endpoint::BulkEnrichPerson
        }
    }
}

/// The job's options from the command line, checked before anything starts.
fn job_options(args: &EnrichArgs) -> Result<EnrichOptions, CliError> {
    let mut options = EnrichOptions::default();
    args.options.apply(&mut options).map_err(api_error)?;
    let endpoint = args.endpoint();
    if endpoint.flags(options.flags()) != options.flags() {
        return Err(CliError::BadInput(format!(
            "--only-verified-email, --enrich-mobile and --only-verified-mobile are person flags: {} takes none; drop them, or enrich persons without --companies",
            endpoint.path()
        )));
    }
    if args.no_header {
        options.csv_has_header = false;
    }
    // The API the run talks to names the default cache file (see `default_cache_file`): the
    // path printed and the dry run's cache must be the run's.
    if !args.sandbox && options.base_url.is_none() {
        options.base_url = args.api.base_url.clone();
    }
    // Sandbox answers must never mix with paid ones: with --sandbox and no --cache PATH, the
    // answers live in memory (PROSPEO_CACHE does not apply).
    if args.no_cache || (args.sandbox && options.cache_path.is_none()) {
        options.cache = false;
    }
    Ok(options)
}

/// Makes `options` the session's `prospeo.*` options.
fn install_options(ctx: &SessionContext, options: EnrichOptions) {
    ctx.state_ref()
        .write()
        .config_mut()
        .options_mut()
        .extensions
        .insert(options);
}

/// The client of a run: the key and base URL from the command line, the environment or the
/// sandbox, and the options over them (the same step as `enrich_person`'s).
fn build_client(
    args: &EnrichArgs,
    options: &EnrichOptions,
    sandbox: Option<&Sandbox>,
) -> Result<Client, CliError> {
    options
        .client_builder(args.api.builder(sandbox)?)
        .and_then(|builder| builder.build())
        .map_err(api_error)
}

/// Runs `prospeo enrich`; returns the exit code.
pub async fn run(args: EnrichArgs, global: &GlobalArgs) -> Result<u8, CliError> {
    let started = Instant::now();
    let options = job_options(&args)?;
    let ctx = SessionContext::new();
    if args.dry_run {
        datafusion_prospeo::register(&ctx);
        install_options(&ctx, options);
        return dry_run(&ctx, &args).await;
    }
    // Human-readable lines only for people; `--log-format json` gives events instead.
    let talk = !args.quiet && global.log_format == LogFormat::Text;
    let target = args.output.as_deref().unwrap_or_default();
    let output = Output::resolve(target, args.output_format, &ctx.runtime_env())?;
    let sandbox = if args.sandbox {
        let sandbox = super::embedded_sandbox().await?;
        if talk {
            eprintln!(
                "Embedded sandbox on {} (demo key, nothing is paid)",
                sandbox.base_url()
            );
        }
        Some(sandbox)
    } else {
        None
    };
    let client = build_client(&args, &options, sandbox.as_ref())?;
    if talk && let Some(path) = options.cache_file().map_err(api_error)? {
        eprintln!("Response cache: {}", path.display());
    }

    // Free checks first: the key and the balance.
    let account = client.account_status().await.map_err(api_error)?;
    let remaining = account.account.remaining_credits.unwrap_or(0);
    if talk {
        eprintln!(
            "Plan {}, {} credits left",
            account.account.current_plan.as_deref().unwrap_or("?"),
            remaining
        );
    }
    if let Some(budget) = options.max_credits
        && i64::try_from(budget).unwrap_or(i64::MAX) > remaining
        && !args.yes
    {
        return Err(CliError::BadInput(format!(
            "--max-credits {budget} is more than the {remaining} credits left on the account; lower it, or add --yes to go ahead (the rest will be deferred when credits run out)"
        )));
    }

    register_with_client(&ctx, client.clone());
    install_options(&ctx, options);
    let input = sql_string(&args.input);
    let function = function_name(args.endpoint());
    let df = ctx
        .sql(&format!("SELECT * FROM {function}({input})"))
        .await
        .map_err(planning_error)?;
    if talk {
        print_mapping(&df).await?;
    }
    // The output must be writable before anything is paid for.
    let open = output.open().await?;

    // Reading the whole input once before paying for anything finds a broken line (a CSV row
    // with too many fields, say) while it costs nothing; for Parquet it reads only metadata.
    let total = count_rows(&ctx, function, &input)
        .await
        .map_err(|e| CliError::BadInput(format!("cannot read {}: {e}", args.input)))?;
    let mode = ProgressMode::choose(args.quiet, global.log_format == LogFormat::Json);
    let progress = Progress::start(mode, client.clone(), total);
    let schema = Arc::new(df.schema().as_arrow().clone());
    // Partitions are written one after the other, so rows come out in input order.
    let partitions = df.execute_stream_partitioned().await.map_err(query_error)?;
    let stream = futures::stream::iter(partitions).flatten();
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let written = open.write(schema, stream, interrupted).await;
    progress.finish();
    let rows = match written {
        Ok(rows) => rows,
        Err(e) => {
            // Nothing more is sent; answers already on their way are still counted.
            client.stop_sending();
            client.wait_idle(Duration::from_secs(30)).await;
            let totals = client.totals();
            if matches!(e, CliError::Interrupted) {
                eprintln!(
                    "Interrupted: nothing was written. Spent {} credits on {} records.",
                    totals.credits, totals.records_sent
                );
            } else if totals.records_sent > 0 {
                eprintln!(
                    "Nothing was written. Spent {} credits on {} records.",
                    totals.credits, totals.records_sent
                );
            }
            return Err(e);
        }
    };
    if let Some(sandbox) = sandbox {
        let _ = sandbox.stop().await;
    }

    let totals = client.totals();
    // Deferred and failed rows are not settled: both are sent again by the same command.
    let exit_code = if totals.deferred > 0 || totals.failed > 0 {
        EXIT_DEFERRED
    } else {
        0
    };
    let elapsed = started.elapsed().as_secs_f64();
    let summary = summary(&args, output.target(), rows, &totals, elapsed, exit_code);
    if talk {
        print_summary(&summary);
    }
    if global.log_format == LogFormat::Json {
        tracing::info!(
            target: "prospeo::summary",
            rows = summary.rows,
            matched = summary.matched,
            not_matched = summary.not_matched,
            invalid_datapoints = summary.invalid,
            failed = summary.failed,
            deferred = summary.deferred,
            cached = summary.cached,
            duplicates = summary.duplicates,
            credits = summary.credits,
            records_sent = summary.records_sent,
            requests = summary.requests,
            retries = summary.retries,
            rate_limited = summary.rate_limited,
            quota_returns_at = summary.quota_returns_at.as_deref(),
            elapsed_seconds = summary.elapsed_seconds,
            exit_code = summary.exit_code,
            "done"
        );
    }
    if let Some(path) = &args.summary_json {
        write_json(path, &summary)?;
    }
    Ok(exit_code)
}

fn write_json(path: &std::path::Path, value: &impl Serialize) -> Result<(), CliError> {
    let json = serde_json::to_vec_pretty(value).unwrap_or_default();
    std::fs::write(path, json)
        .map_err(|e| CliError::Failure(format!("cannot write {}: {e}", path.display())))
}

/// The input's row count (free: no enrichment column is read).
async fn count_rows(
    ctx: &SessionContext,
    function: &str,
    input: &str,
) -> Result<Option<u64>, datafusion::error::DataFusionError> {
    let batches = ctx
        .sql(&format!("SELECT count(*) FROM {function}({input})"))
        .await?
        .collect()
        .await?;
    Ok(batches.first().and_then(|b| {
        b.column(0)
            .as_primitive_opt::<datafusion::arrow::datatypes::Int64Type>()
            .and_then(|c| c.values().first().map(|&n| n as u64))
    }))
}

/// `--dry-run`: reads the mapped columns only and counts what would happen to each row.
async fn dry_run(ctx: &SessionContext, args: &EnrichArgs) -> Result<u8, CliError> {
    let state = ctx.state();
    let endpoint = args.endpoint();
    let function = function_name(endpoint);
    let provider = ctx
        .table_function(function)
        .and_then(|f| {
            f.create_table_provider_with_args(TableFunctionArgs::new(
                &[lit(args.input.clone())],
                &state,
            ))
        })
        .map_err(planning_error)?;
    let table = provider
        .downcast_ref::<EnrichTable>()
        .ok_or_else(|| CliError::Failure(format!("{function} did not return its table")))?;
    let mapping = table.mapping().clone();
    let options = table.options().clone();
    if !args.quiet {
        eprintln!("Column mapping:\n{mapping}");
        // The settings as `SET prospeo.*` would show them: what a run with these flags uses.
        eprintln!("Options: {options}");
    }
    let schema = provider.schema();
    let columns: Vec<String> = mapping
        .column_indices()
        .into_iter()
        .map(|i| schema.field(i).name().clone())
        .collect();
    let df = ctx
        .read_table(provider.clone())
        .and_then(|df| df.select_columns(&columns.iter().map(String::as_str).collect::<Vec<_>>()))
        .map_err(planning_error)?;
    let mut stream = df.execute_stream().await.map_err(query_error)?;
    let mut report = DryRun {
        input: args.input.clone(),
        ..Default::default()
    };
    let cache = options.open_cache().map_err(api_error)?;
    let flags = endpoint.flags(options.flags());
    let now = std::time::SystemTime::now();
    let mut seen = HashSet::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(planning_error)?;
        let records = mapping
            .datapoints_projected(&batch)
            .map_err(|e| CliError::BadInput(format!("{}: {e}", args.input)))?;
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
        let served: Vec<bool> = match &cache {
            Some(cache) => cache
                .get_many(&keys)
                .map_err(|e| CliError::Failure(e.to_string()))?
                .iter()
                .map(|e| {
                    e.as_ref()
                        .is_some_and(|e| e.serves(flags, options.cache_ttl, now))
                })
                .collect(),
            None => vec![false; keys.len()],
        };
        for ((_, name_only), served) in first_seen.iter().zip(served) {
            report.cached += u64::from(served);
            report.name_only += u64::from(*name_only && !served);
        }
    }
    report.records_to_send = report.valid - report.duplicates - report.cached;
    let per_match = if flags.reveals_mobile() { 10 } else { 1 };
    report.worst_case_credits = report.records_to_send * per_match;
    if !args.quiet {
        eprintln!("\nDry run of {} (nothing was sent)", report.input);
        for (label, n) in [
            ("rows", report.rows),
            ("valid", report.valid),
            ("invalid_datapoints", report.invalid_datapoints),
            ("duplicates", report.duplicates),
            ("in the cache", report.cached),
            ("records to send", report.records_to_send),
            ("  name only (weak)", report.name_only),
            ("worst-case credits", report.worst_case_credits),
        ] {
            eprintln!("  {label:<20} {n:>8}");
        }
    }
    if let Some(path) = &args.summary_json {
        write_json(path, &report)?;
    }
    Ok(0)
}

/// Prints how the input's columns were mapped, from the plan the job will run.
async fn print_mapping(df: &DataFrame) -> Result<(), CliError> {
    use datafusion::physical_plan::ExecutionPlan;
    use datafusion_prospeo::datafusion::exec::EnrichExec;
    fn find(plan: &Arc<dyn ExecutionPlan>) -> Option<&EnrichExec> {
        plan.downcast_ref::<EnrichExec>()
            .or_else(|| plan.children().into_iter().find_map(find))
    }
    let plan = df
        .clone()
        .create_physical_plan()
        .await
        .map_err(planning_error)?;
    if let Some(exec) = find(&plan) {
        eprintln!("Column mapping:\n{}", exec.mapping());
    }
    Ok(())
}

fn summary(
    args: &EnrichArgs,
    output: &str,
    rows: u64,
    totals: &Totals,
    elapsed: f64,
    exit_code: u8,
) -> Summary {
    Summary {
        input: args.input.clone(),
        output: output.to_string(),
        rows,
        counts: totals.tally,
        quota_wait_seconds: totals.quota_wait_ms as f64 / 1000.0,
        quota_returns_at: totals
            .quota_returns_at
            .map(datafusion_prospeo::time::rfc3339),
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
        (RecordStatus::InvalidDatapoints, s.invalid),
        (RecordStatus::Failed, s.failed),
        (RecordStatus::Deferred, s.deferred),
    ];
    eprintln!("\nWrote {} rows to {}", s.rows, s.output);
    for (status, n) in statuses {
        eprintln!("  {:<20} {n:>8}", status.as_str());
    }
    eprintln!("  {:<20} {:>8}", "  from cache", s.cached);
    eprintln!("  {:<20} {:>8}", "  duplicates", s.duplicates);
    eprintln!("  {:<20} {:>8}", "credits", s.credits);
    eprintln!("  {:<20} {:>8}", "records sent", s.records_sent);
    eprintln!("  {:<20} {:>8}", "requests", s.requests);
    eprintln!("  {:<20} {:>8}", "retries", s.retries);
    if s.lost_answers > 0 {
        eprintln!("  {:<20} {:>8}", "lost answers", s.lost_answers);
    }
    if s.name_only > 0 {
        eprintln!("  {:<20} {:>8}", "name only (weak)", s.name_only);
    }
    eprintln!("  {:<20} {:>8}", "429s", s.rate_limited);
    eprintln!("  {:<20} {:>8.1} s", "quota wait", s.quota_wait_seconds);
    eprintln!(
        "  {:<20} {:>8.1} s ({:.0} rows/s)",
        "elapsed", s.elapsed_seconds, s.rows_per_second
    );
    if s.cache_errors > 0 {
        eprintln!(
            "{} answers could not be stored in the cache: a re-run sends them again.",
            s.cache_errors
        );
    }
    if s.failed > 0 {
        eprintln!(
            "{} rows failed (their reasons are in prospeo_error): run the same command again to retry them (answered rows are not sent again).",
            s.failed
        );
    }
    if s.deferred > 0 {
        match &s.quota_returns_at {
            Some(at) => eprintln!(
                "{} rows were deferred: the quota returns at {at}; run the same command again then (answered rows are not sent again).",
                s.deferred
            ),
            None => eprintln!(
                "{} rows were deferred (credits or budget): run the same command again later (answered rows are not sent again).",
                s.deferred
            ),
        }
    }
}
