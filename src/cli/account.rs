//! `prospeo account`: the plan, the credits left, and the quota the rate-limit headers report.

use clap::Args;

use super::{CliError, api_error};

/// Options of `prospeo account`.
#[derive(Debug, Args)]
pub struct AccountArgs {
    #[command(flatten)]
    pub api: super::ApiArgs,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: AccountArgs) -> Result<u8, CliError> {
    let builder = args.api.builder(None)?;
    let client = builder.build().map_err(api_error)?;
    let status = client.account_status().await.map_err(api_error)?;
    let a = &status.account;
    let q = &status.quota;
    let show = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
    if args.json {
        let json = serde_json::json!({
            "plan": a.current_plan,
            "remaining_credits": a.remaining_credits,
            "used_credits": a.used_credits,
            "next_quota_renewal_date": a.next_quota_renewal_date,
            "minute_left": q.minute_left,
            "minute_limit": q.minute_limit,
            "day_left": q.day_left,
            "day_limit": q.day_limit,
            "day_reset_seconds": q.day_reset_seconds,
        });
        println!("{json}");
    } else {
        println!(
            "plan               {}",
            a.current_plan.as_deref().unwrap_or("?")
        );
        println!(
            "credits left       {}",
            a.remaining_credits.map_or("?".into(), |c| c.to_string())
        );
        println!(
            "credits used       {}",
            a.used_credits.map_or("?".into(), |c| c.to_string())
        );
        println!(
            "quota renews       {}",
            a.next_quota_renewal_date.as_deref().unwrap_or("?")
        );
        println!(
            "records this minute {} left of {}",
            show(q.minute_left),
            show(q.minute_limit)
        );
        println!(
            "records today       {} left of {}",
            show(q.day_left),
            show(q.day_limit)
        );
    }
    Ok(0)
}
