//! Argument parsing and dispatch of the `prospeo` binary.

mod account;
mod cache;
mod coordinator;
mod enrich;
mod options;
mod progress;
mod sandbox;
mod sql;

use clap::{Args, Parser, Subcommand, ValueEnum};
use datafusion_prospeo::datafusion::options::OptionKey;
use datafusion_prospeo::sandbox::Sandbox;

pub use datafusion_prospeo::job::{EXIT_FAILURE, JobError as CliError, embedded_sandbox, output};

/// Prospeo person and company enrichment from the command line, and a local sandbox of the API.
#[derive(Debug, Parser)]
#[command(name = "prospeo", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `datafusion_prospeo=debug` (also `RUST_LOG`).
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    pub log: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enrich a lead file (or, with --companies, an accounts file) of Parquet, CSV or NDJSON
    /// into Parquet, CSV, NDJSON or Arrow.
    ///
    /// Every input row comes out once, in input order, with the person and company columns (the
    /// company columns only, with --companies) and a status and cost per row. Input and output may be local or on object storage. The key
    /// comes from PROSPEO_API_KEY or --api-key-file, never from the command line; --sandbox
    /// runs against an embedded sandbox instead. Rows below the vendor's minimum (a first name
    /// alone, say) are never sent, and rows with the same datapoints are sent once. The output
    /// is committed only when complete.
    ///
    /// Every answer is stored in the response cache as it arrives (--cache): running the same
    /// command again after Ctrl-C, a crash, or a quota or credit stop sends only the rows that
    /// were never answered. --dry-run shows what a run would send and cost.
    ///
    /// Exit codes: 0 every row settled; 3 some rows were deferred (daily quota, credits or
    /// --max-credits) or failed: run the same command again later; 2 bad input or arguments;
    /// 4 the key is missing or refused; 130 interrupted; 1 any other failure.
    Enrich(enrich::EnrichArgs),
    /// Run SQL with enrich_person and enrich_company registered: one query, a script (--file),
    /// or an interactive shell.
    ///
    /// The session reads Parquet, CSV and NDJSON from local paths and s3://, gs://, az:// URLs
    /// (stores configured from the environment), and `SET prospeo.<option> = value` sets the
    /// enrichment options (see the README). Results print as a table, or as CSV/JSON with
    /// --format; -o writes the last statement's result to a file or object store. Queries that
    /// read no enrichment column are free and need no key.
    Sql(sql::SqlArgs),
    /// Show the plan, the credits left, and the quota left this minute and today (free: no
    /// credit is spent). The key comes from PROSPEO_API_KEY or --api-key-file.
    Account(account::AccountArgs),
    /// Run a local sandbox of the Prospeo API over a synthetic directory, or generate sample data.
    Sandbox(Box<sandbox::SandboxArgs>),
    /// Inspect, export or delete the response cache.
    ///
    /// Every answer the API gave for a record (matched with the person and company, not
    /// matched, invalid) is kept in one file so that a later run never pays for it again. It
    /// lives in the platform's cache directory (~/.cache/prospeo/responses.redb on Linux) unless
    /// --cache PATH or PROSPEO_CACHE says otherwise; with --base-url (PROSPEO_BASE_URL) naming
    /// another API than the vendor's (a sandbox, a proxy), that API's own file beside it, as
    /// `enrich` uses. It holds personal data (names, emails, mobiles): `prospeo cache clear`
    /// deletes the file.
    Cache(cache::CacheArgs),
    /// Set up or inspect the coordinator: the PostgreSQL database through which workers on one
    /// key share pacing, claims and answers.
    Coordinator(coordinator::CoordinatorArgs),
}

/// Where the API is and which key to use: the options `enrich`, `sql` and `account` share.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// The API's base URL (also PROSPEO_BASE_URL); checked as prospeo.base_url is.
    #[arg(long, env = "PROSPEO_BASE_URL", hide_env_values = true, value_parser = base_url)]
    pub base_url: Option<String>,
    /// A file holding the API key (also PROSPEO_API_KEY_FILE); PROSPEO_API_KEY otherwise.
    #[arg(long, env = "PROSPEO_API_KEY_FILE")]
    pub api_key_file: Option<std::path::PathBuf>,
}

impl ApiArgs {
    /// A client builder from the environment with these options over it, or, with a
    /// `sandbox`, for the sandbox's URL and demo key.
    pub fn builder(
        &self,
        sandbox: Option<&Sandbox>,
    ) -> Result<datafusion_prospeo::ClientBuilder, CliError> {
        let mut builder = datafusion_prospeo::ClientBuilder::from_env();
        if let Some(sandbox) = sandbox {
            let key = datafusion_prospeo::api::ApiKey::new(datafusion_prospeo::sandbox::DEMO_KEY)
                .map_err(api_error)?;
            return Ok(builder.base_url(sandbox.base_url()).api_key(key));
        }
        if let Some(url) = &self.base_url {
            builder = builder.base_url(url.clone());
        }
        if let Some(path) = &self.api_key_file {
            builder = builder.api_key_file(path.clone());
        }
        Ok(builder)
    }
}

/// Checks a base URL as `SET prospeo.base_url` does, with the same message.
pub(crate) fn base_url(text: &str) -> Result<String, datafusion_prospeo::Error> {
    let mut options = datafusion_prospeo::EnrichOptions::default();
    options.set_key(OptionKey::BaseUrl, text)?;
    Ok(options.base_url.unwrap_or_default())
}

/// A library error as the CLI reports it: key problems are their own exit code, settings, the
/// mapping and the cache are the user's to fix, the rest is a failure.
pub fn api_error(e: datafusion_prospeo::Error) -> CliError {
    CliError::from(e)
}

/// Runs one command; returns the exit code.
pub async fn run(cli: Cli) -> Result<u8, CliError> {
    match cli.command {
        Command::Enrich(args) => enrich::run(args, &cli.global).await,
        Command::Sql(args) => sql::run(args).await,
        Command::Account(args) => account::run(args).await,
        Command::Sandbox(args) => sandbox::run(*args).await,
        Command::Cache(args) => cache::run(args).await,
        Command::Coordinator(args) => coordinator::run(args).await,
    }
}

/// Sets up `tracing` on standard error.
pub fn init_logging(global: &GlobalArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&global.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

pub use datafusion_prospeo::datafusion::options::parse_duration;

/// Parses a probability in `[0, 1]`.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!(
            "`{text}` is not a rate: expected a number from 0 to 1"
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_subcommand_and_option_is_documented() {
        use clap::CommandFactory;
        fn check(command: &clap::Command, path: &str) {
            let path = format!("{path} {}", command.get_name());
            assert!(
                command.get_about().is_some() || path == " prospeo",
                "{path} has no help"
            );
            for arg in command.get_arguments() {
                if ["help", "version"].contains(&arg.get_id().as_str()) {
                    continue;
                }
                assert!(
                    arg.get_help().is_some(),
                    "{path} {} has no help",
                    arg.get_id()
                );
            }
            for sub in command.get_subcommands() {
                check(sub, &path);
            }
        }
        let cli = Cli::command();
        cli.clone().debug_assert();
        check(&cli, "");
    }

    #[test]
    fn durations_and_rates_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3m"), Ok(Duration::from_secs(180)));
        // The sandbox's flags take the durations every other flag and option takes.
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3 weeks").is_err());
        assert_eq!(parse_rate("0.25"), Ok(0.25));
        assert!(parse_rate("1.5").is_err());
    }
}
