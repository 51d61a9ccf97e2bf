//! `prospeo enrich INPUT -o OUTPUT`: the same plan as `enrich_person(...)` (or, with
//! `--companies`, `enrich_company(...)`), written to a file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use datafusion::prelude::SessionContext;
use datafusion_prospeo::api::{Client, Endpoint, RecordStatus};
use datafusion_prospeo::datafusion::options::EnrichOptions;
use datafusion_prospeo::job::{DryRun, Job, Summary};
use datafusion_prospeo::sandbox::Sandbox;
use serde::Serialize;

use super::options::OptionArgs;
use super::output::{Output, OutputFormat};
use super::progress::{Progress, ProgressMode};
use super::{CliError, GlobalArgs, LogFormat, api_error};

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
    let job = Job::new(args.input.clone(), args.endpoint(), job_options(&args)?)?;
    let ctx = SessionContext::new();
    if args.dry_run {
        return dry_run(&ctx, &job, &args).await;
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
    let client = build_client(&args, &job.options, sandbox.as_ref())?;
    // An unreachable coordinator stops the job here, before anything is paid.
    client.coordinator_ready().await.map_err(api_error)?;
    if let Some(url) = client.settings().configured_coordinator() {
        if talk {
            eprintln!("Coordinator: {url} (pacing, claims and answers shared)");
        }
    } else if talk && let Some(path) = job.options.cache_file().map_err(api_error)? {
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
    if let Some(budget) = job.options.max_credits
        && i64::try_from(budget).unwrap_or(i64::MAX) > remaining
        && !args.yes
    {
        return Err(CliError::BadInput(format!(
            "--max-credits {budget} is more than the {remaining} credits left on the account; lower it, or add --yes to go ahead (the rest will be deferred when credits run out)"
        )));
    }

    let planned = job.plan(&ctx, client.clone()).await?;
    if talk && let Some(mapping) = planned.mapping().await? {
        eprintln!("Column mapping:\n{mapping}");
    }
    // The output must be writable before anything is paid for.
    let open = output.open().await?;
    let total = planned.count_rows().await?;
    let mode = ProgressMode::choose(args.quiet, global.log_format == LogFormat::Json);
    let progress = Progress::start(mode, client.clone(), total);
    let schema = planned.schema();
    let stream = planned.stream().await?;
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
            client.leave_coordinator().await;
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
    client.leave_coordinator().await;
    if let Some(sandbox) = sandbox {
        let _ = sandbox.stop().await;
    }

    let summary = Summary::new(
        &args.input,
        output.target(),
        rows,
        &client.totals(),
        started.elapsed().as_secs_f64(),
    );
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
    Ok(summary.exit_code)
}

fn write_json(path: &std::path::Path, value: &impl Serialize) -> Result<(), CliError> {
    let json = serde_json::to_vec_pretty(value).unwrap_or_default();
    std::fs::write(path, json)
        .map_err(|e| CliError::Failure(format!("cannot write {}: {e}", path.display())))
}

/// `--dry-run`: reads the mapped columns only and counts what would happen to each row.
async fn dry_run(ctx: &SessionContext, job: &Job, args: &EnrichArgs) -> Result<u8, CliError> {
    let (report, mapping): (DryRun, _) = job.dry_run(ctx).await?;
    if !args.quiet {
        eprintln!("Column mapping:\n{mapping}");
        // The settings as `SET prospeo.*` would show them: what a run with these flags uses.
        eprintln!("Options: {}", job.options);
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
    for line in &s.advice {
        eprintln!("{line}");
    }
}
