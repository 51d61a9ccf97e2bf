//! Enrich the sample leads with SQL, end to end, against a sandbox started in process.
//!
//! Run: `cargo run --example sql_enrichment`
//!
//! Against the real API, drop the sandbox, set PROSPEO_API_KEY, and call
//! `datafusion_prospeo::register(&ctx)` instead of `register_with_client`.

use std::sync::Arc;

use datafusion::prelude::SessionContext;
use datafusion_prospeo::api::{ApiKey, Client};
use datafusion_prospeo::register_with_client;
use datafusion_prospeo::sandbox::generator::{GeneratorConfig, generate_directory};
use datafusion_prospeo::sandbox::{DEMO_KEY, Sandbox, SandboxConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The sandbox: the sample directory on a free loopback port, with the demo key.
    let directory = generate_directory(&GeneratorConfig::default());
    let sandbox = Sandbox::start(SandboxConfig::new(Arc::new(directory))).await?;

    let client = Client::builder()
        .base_url(sandbox.base_url())
        .api_key(ApiKey::new(DEMO_KEY)?)
        .build()?;
    let ctx = SessionContext::new();
    register_with_client(&ctx, client.clone());

    let leads = concat!(env!("CARGO_MANIFEST_DIR"), "/sample-data/leads.parquet");
    ctx.sql("SET prospeo.only_verified_email = true").await?;
    let df = ctx
        .sql(&format!(
            "SELECT lead_id, prospeo_person_full_name AS name, prospeo_person_email_email AS email,
                    prospeo_company_name AS company, prospeo_status AS status, prospeo_cost AS cost
             FROM enrich_person('{leads}')
             WHERE \"Country\" = 'United States'
             ORDER BY lead_id
             LIMIT 15"
        ))
        .await?;
    df.show().await?;

    let totals = client.totals();
    println!(
        "{} records sent, {} matched, {} credits (sandbox: nothing paid)",
        totals.records_sent, totals.matched, totals.credits
    );
    sandbox.stop().await?;
    Ok(())
}
