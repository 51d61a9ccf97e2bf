//! `prospeo coordinator init | status`: the PostgreSQL database that workers on one key share.

use clap::{Args, Subcommand};
use datafusion_prospeo::coordinator::{Coordinator, CoordinatorUrl, ENV_COORDINATOR};

use super::{CliError, api_error};

/// Options of `prospeo coordinator`.
#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    #[command(subcommand)]
    pub command: CoordinatorCommand,
    /// The coordinator: postgres://user@host[:port]/database (also PROSPEO_COORDINATOR). The
    /// password comes from PGPASSWORD, a PGPASSFILE or ~/.pgpass, never from the URL.
    #[arg(long, env = ENV_COORDINATOR, global = true, hide_env_values = true)]
    pub coordinator: Option<Hidden>,
}

#[derive(Debug, Subcommand)]
pub enum CoordinatorCommand {
    /// Create the coordinator's tables (schema prospeo_coordinator) when missing; safe to run
    /// again, and by several workers at once.
    Init,
    /// Show the schema version, the stored answers, and per key (a hash, never the key) the
    /// records sent in the last second, minute and day by every worker, live workers and claims.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A URL as given, which may hold a password (refused when parsed): never shown by `Debug`.
#[derive(Clone)]
pub struct Hidden(pub(crate) String);

impl std::str::FromStr for Hidden {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Hidden(s.to_string()))
    }
}

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<url>")
    }
}

pub async fn run(args: CoordinatorArgs) -> Result<u8, CliError> {
    let Some(Hidden(text)) = args.coordinator.as_ref() else {
        return Err(CliError::BadInput(format!(
            "no coordinator: give --coordinator postgres://user@host/database or set {ENV_COORDINATOR}"
        )));
    };
    let url = CoordinatorUrl::parse(text).map_err(api_error)?;
    let mut coordinator = Coordinator::connect(&url).await.map_err(api_error)?;
    match args.command {
        CoordinatorCommand::Init => {
            coordinator.init().await.map_err(api_error)?;
            println!(
                "The coordinator {url} is ready (schema {}, version {}).",
                datafusion_prospeo::coordinator::SCHEMA,
                datafusion_prospeo::coordinator::SCHEMA_VERSION
            );
        }
        CoordinatorCommand::Status { json } => {
            let status = coordinator.status().await.map_err(api_error)?;
            if json {
                println!("{}", serde_json::to_string(&status).unwrap_or_default());
            } else {
                println!("coordinator        {}", status.coordinator);
                println!("schema version     {}", status.schema_version);
                println!(
                    "answers            {} ({} bytes)",
                    status.answers, status.answer_bytes
                );
                for key in &status.keys {
                    println!("key {}", key.key);
                    println!(
                        "  records sent     {} in the last second, {} in the last minute, {} in the last day",
                        key.records_last_second, key.records_last_minute, key.records_last_day
                    );
                    println!("  live workers     {}", key.live_workers);
                    println!("  claims           {}", key.claims);
                }
            }
        }
    }
    Ok(0)
}
