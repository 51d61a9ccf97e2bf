//! `prospeo sandbox`: serve the sandbox, or generate its sample data.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use datafusion_prospeo::api::plan::{Plan, RateLimits};
use datafusion_prospeo::sandbox::generator::{
    GeneratorConfig, SampleData, generate_directory, write_sample_data,
};
use datafusion_prospeo::sandbox::{
    DEMO_KEY, Directory, Faults, Sandbox, SandboxConfig, SandboxKey,
};

use super::{CliError, parse_duration, parse_rate};

/// Serve a local sandbox of the Prospeo API.
///
/// The sandbox implements the vendor's contract (bulk and single enrich, account information,
/// X-KEY auth, credits, per-key rate limits by plan, the rate-limit headers) over a synthetic
/// directory of people and companies, and can inject the faults a real network shows. Nothing
/// it does costs anything. Without --key or --keys-file it accepts the demo key
/// `sandbox-demo-key` (10,000 credits, Pro plan).
///
/// Besides the vendor's endpoints it serves GET /_sandbox/stats (per-key counts of requests,
/// records, matches, credits, 429s and faults) and POST /_sandbox/clock with
/// {"advance_seconds": N} to move the rate-limit clock forward.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SandboxArgs {
    #[command(subcommand)]
    pub command: Option<SandboxCommand>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Generate a directory and lead files (CSV and Parquet) derived from it.
    ///
    /// The output is deterministic for a given seed and size; `prospeo sandbox generate --out
    /// sample-data` regenerates the committed sample data.
    Generate(GenerateArgs),
}

/// Options of `prospeo sandbox` (serve).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on. Keep it on loopback unless you mean to share the sandbox.
    #[arg(long, default_value = "127.0.0.1:8787")]
    pub bind: SocketAddr,
    /// An API key the sandbox accepts (repeatable); each gets --credits and --plan.
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
    /// A JSON file of keys: [{"key": "...", "credits": 1000, "plan": "pro", "label": "team-a",
    /// "limits": {"per_second": 30, "per_minute": 1800, "per_day": 500000}}].
    #[arg(long, value_name = "PATH")]
    pub keys_file: Option<PathBuf>,
    /// Starting credit balance of each --key (and of the demo key).
    #[arg(long, default_value_t = 10_000)]
    pub credits: i64,
    /// Plan of each --key (and of the demo key): its rate limits and its name in
    /// /account-information.
    #[arg(long, default_value = "pro", value_parser = clap::value_parser!(Plan))]
    pub plan: Plan,
    /// Override the plan's records-per-second limit.
    #[arg(long, value_name = "N")]
    pub per_second: Option<u64>,
    /// Override the plan's records-per-minute limit.
    #[arg(long, value_name = "N")]
    pub per_minute: Option<u64>,
    /// Override the plan's records-per-day limit (a rolling 24 hours).
    #[arg(long, value_name = "N")]
    pub per_day: Option<u64>,
    /// A directory saved by `prospeo sandbox generate` (its `directory/` folder). Without it,
    /// the sample directory is generated in memory (the same as sample-data/directory).
    #[arg(long, value_name = "PATH")]
    pub directory: Option<PathBuf>,
    /// Size of the generated directory when no --directory is given.
    #[arg(long, value_name = "N")]
    pub people: Option<usize>,
    /// Seed of the injected faults: the same seed gives the same faults for the same sequence
    /// of requests.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Added to every response, e.g. 100ms.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    pub latency: Duration,
    /// A random extra delay, up to this much, on top of --latency.
    #[arg(long, value_parser = parse_duration, default_value = "0ms")]
    pub latency_jitter: Duration,
    /// Share of requests (0 to 1) whose connection is dropped without a response.
    #[arg(long, value_parser = parse_rate, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Share of requests answered 502 or 503 with an HTML body, as a proxy would.
    #[arg(long, value_parser = parse_rate, default_value_t = 0.0)]
    pub bad_gateway_rate: f64,
    /// Share of requests answered HTTP 400 INTERNAL_ERROR, as the vendor does.
    #[arg(long, value_parser = parse_rate, default_value_t = 0.0)]
    pub internal_error_rate: f64,
    /// Share of requests processed and charged, then answered only after --slow-delay.
    #[arg(long, value_parser = parse_rate, default_value_t = 0.0)]
    pub slow_rate: f64,
    /// How long a slow response waits.
    #[arg(long, value_parser = parse_duration, default_value = "120s")]
    pub slow_delay: Duration,
    /// Share of successful bulk answers (processed and charged) whose body stops halfway.
    #[arg(long, value_parser = parse_rate, default_value_t = 0.0)]
    pub cut_body_rate: f64,
    /// Share of successful bulk answers (processed and charged) sent as HTTP 200 with a body
    /// that is not JSON.
    #[arg(long, value_parser = parse_rate, default_value_t = 0.0)]
    pub garbled_rate: f64,
    /// Share of successful bulk answers (processed and charged) that leave one record out.
    #[arg(long, value_parser = parse_rate, default_value_t = 0.0)]
    pub lost_record_rate: f64,
    /// Signal rate limiting as HTTP 200 with error_code RATE_LIMIT_EXCEEDED instead of 429.
    #[arg(long)]
    pub rate_limit_as_200: bool,
    /// Charge 10 credits for an enrich_mobile match that found no mobile (by default 1: the
    /// vendor's rule here is uncertain).
    #[arg(long)]
    pub charge_mobile_attempts: bool,
}

/// Options of `prospeo sandbox generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Folder to write into: `directory/companies.jsonl`, `directory/people.jsonl`,
    /// `leads.csv`, `leads.parquet`, `accounts.csv`.
    #[arg(long, default_value = "sample-data")]
    pub out: PathBuf,
    /// Number of people in the directory.
    #[arg(long, default_value_t = GeneratorConfig::default().people)]
    pub people: usize,
    /// Number of companies in the directory.
    #[arg(long, default_value_t = GeneratorConfig::default().companies)]
    pub companies: usize,
    /// Number of rows in the lead files.
    #[arg(long, default_value_t = SampleData::default().lead_rows)]
    pub leads: usize,
    /// Number of rows in the account file.
    #[arg(long, default_value_t = SampleData::default().account_rows)]
    pub accounts: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = GeneratorConfig::default().seed)]
    pub seed: u64,
}

pub async fn run(args: SandboxArgs) -> Result<u8, CliError> {
    match args.command {
        Some(SandboxCommand::Generate(generate)) => run_generate(generate),
        None => serve(args.serve).await,
    }
}

fn run_generate(args: GenerateArgs) -> Result<u8, CliError> {
    let sample = SampleData {
        directory: GeneratorConfig {
            seed: args.seed,
            companies: args.companies,
            people: args.people,
        },
        lead_rows: args.leads,
        account_rows: args.accounts,
    };
    let directory =
        write_sample_data(&args.out, &sample).map_err(|e| CliError::Failure(e.to_string()))?;
    println!(
        "wrote {} people at {} companies, {} leads and {} accounts to {}",
        directory.len(),
        directory.companies().len(),
        args.leads,
        args.accounts,
        args.out.display()
    );
    Ok(0)
}

/// Builds the sandbox configuration from the command line.
pub fn config_from_args(args: &ServeArgs) -> Result<SandboxConfig, CliError> {
    let directory = match &args.directory {
        Some(path) => Directory::load(path).map_err(|e| CliError::BadInput(e.to_string()))?,
        None => {
            let mut generator = GeneratorConfig::default();
            if let Some(people) = args.people {
                generator.companies = (people / 6).max(1);
                generator.people = people;
            }
            generate_directory(&generator)
        }
    };
    let mut config = SandboxConfig::new(Arc::new(directory));
    config.bind = args.bind;
    config.seed = args.seed;
    config.charge_mobile_attempts = args.charge_mobile_attempts;
    config.faults = Faults {
        latency: args.latency,
        latency_jitter: args.latency_jitter,
        drop_rate: args.drop_rate,
        bad_gateway_rate: args.bad_gateway_rate,
        internal_error_rate: args.internal_error_rate,
        slow_rate: args.slow_rate,
        slow_delay: args.slow_delay,
        cut_body_rate: args.cut_body_rate,
        garbled_rate: args.garbled_rate,
        lost_record_rate: args.lost_record_rate,
        rate_limit_as_200: args.rate_limit_as_200,
    };
    let mut keys: Vec<SandboxKey> = args
        .keys
        .iter()
        .enumerate()
        .map(|(i, key)| SandboxKey::new(format!("key-{}", i + 1), key, args.credits, args.plan))
        .collect();
    if let Some(path) = &args.keys_file {
        keys.extend(SandboxKey::from_file(path).map_err(CliError::BadInput)?);
    }
    if keys.is_empty() {
        keys.push(SandboxKey::new("demo", DEMO_KEY, args.credits, args.plan));
    }
    let overridden =
        args.per_second.is_some() || args.per_minute.is_some() || args.per_day.is_some();
    if overridden {
        for key in &mut keys {
            let base = key.effective_limits();
            key.limits = Some(RateLimits::new(
                args.per_second.unwrap_or(base.per_second),
                args.per_minute.unwrap_or(base.per_minute),
                args.per_day.unwrap_or(base.per_day),
            ));
        }
    }
    config.keys = keys;
    Ok(config)
}

async fn serve(args: ServeArgs) -> Result<u8, CliError> {
    let config = config_from_args(&args)?;
    let people = config.directory.len();
    let key_lines: Vec<String> = config
        .keys
        .iter()
        .map(|k| {
            let limits = k.effective_limits();
            // The demo key is public and only opens a sandbox; other keys are never shown.
            let shown = if k.key == DEMO_KEY {
                format!(" = {DEMO_KEY}")
            } else {
                String::new()
            };
            format!(
                "  {}{shown}: {} credits, {} plan, {}/s {}/min {}/day",
                k.label, k.credits, k.plan, limits.per_second, limits.per_minute, limits.per_day
            )
        })
        .collect();
    let sandbox = Sandbox::start(config)
        .await
        .map_err(|e| CliError::Failure(format!("cannot listen on {}: {e}", args.bind)))?;
    println!(
        "Prospeo sandbox listening on {} ({people} people). Keys:\n{}\nStop with Ctrl-C.",
        sandbox.base_url(),
        key_lines.join("\n")
    );
    sandbox
        .serve_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| CliError::Failure(e.to_string()))?;
    Ok(0)
}
