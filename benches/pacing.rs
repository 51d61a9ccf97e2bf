//! Pacing efficiency: how much of the plan's records-per-minute a long run actually sends, and
//! how many 429s it draws, against the sandbox with 100 ms latency.
//!
//! The plan is Pro-shaped (per-minute = 60 × per-second) and scaled up 20× so that a run of
//! under a minute reaches a steady state: 600 records a second, 36,000 a minute.
//!
//! Run: `cargo bench --bench pacing` (optional arguments: seconds, callers, and `pro` for the
//! real Pro limits, which need a run of several minutes: `cargo bench --bench pacing -- 180 8 pro`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion_prospeo::Datapoints;
use datafusion_prospeo::api::{Client, EnrichFlags, RateLimits};
use datafusion_prospeo::sandbox::{
    DEMO_KEY, Directory, Faults, Sandbox, SandboxConfig, SandboxKey,
};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(40);
    let callers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let pro = args.next().is_some_and(|a| a == "pro");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run(Duration::from_secs(seconds), callers, pro));
}

async fn run(duration: Duration, callers: usize, pro: bool) {
    let limits = if pro {
        datafusion_prospeo::api::Plan::Pro.limits()
    } else {
        RateLimits::new(600, 36_000, 10_000_000)
    };
    let mut config = SandboxConfig::new(Arc::new(Directory::default()));
    config.keys = vec![
        SandboxKey::new(
            "bench",
            DEMO_KEY,
            1_000_000,
            datafusion_prospeo::api::Plan::Pro,
        )
        .with_limits(limits),
    ];
    config.faults = Faults {
        latency: Duration::from_millis(100),
        latency_jitter: Duration::from_millis(20),
        ..Faults::default()
    };
    let sandbox = Sandbox::start(config).await.expect("the sandbox starts");
    let client = Client::builder()
        .base_url(sandbox.base_url())
        .api_key(datafusion_prospeo::api::ApiKey::new(DEMO_KEY).expect("a key"))
        .limits(limits)
        .max_in_flight(16)
        .build()
        .expect("a client");

    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            // Bounded: at most this many batches per caller, and never past the deadline.
            for batch in 0..100_000u64 {
                if Instant::now() >= deadline {
                    break;
                }
                let records: Vec<Datapoints> = (0..50)
                    .map(|i| Datapoints {
                        email: Some(format!("nobody.{caller}.{batch}.{i}@example.com")),
                        ..Default::default()
                    })
                    .collect();
                client
                    .bulk_enrich(&records, EnrichFlags::default())
                    .await
                    .expect("no fatal error");
            }
        }));
    }
    for task in tasks {
        task.await.expect("caller finished");
    }
    let elapsed = started.elapsed();
    let stats = sandbox.stats().key("bench");
    let totals = client.totals();
    let per_minute = stats.records as f64 / elapsed.as_secs_f64() * 60.0;
    println!(
        "pacing: {} records in {:.1} s = {:.0} records/min = {:.1}% of the {}/min limit; 429s: {}; retries: {}; callers: {callers}",
        stats.records,
        elapsed.as_secs_f64(),
        per_minute,
        100.0 * per_minute / limits.per_minute as f64,
        limits.per_minute,
        stats.rate_limited,
        totals.retries,
    );
    sandbox.stop().await.expect("the sandbox stops");
}
