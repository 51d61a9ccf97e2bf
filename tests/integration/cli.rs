//! The `prospeo` binary, run as a user would, against the sandbox on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Output;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion_prospeo::api::Plan;
use datafusion_prospeo::sandbox::generator::{GeneratorConfig, generate_directory};
use datafusion_prospeo::sandbox::{Sandbox, SandboxConfig, SandboxKey};
use serde_json::Value;

const KEY: &str = "cli-test-key";

fn sample_leads() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/leads.csv")
}

/// Runs the binary off the async runtime, with a clean environment for the key.
async fn prospeo(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_prospeo"));
        command
            .args(&args)
            .env_remove("PROSPEO_API_KEY")
            .env_remove("PROSPEO_API_KEY_FILE")
            .env_remove("PROSPEO_BASE_URL")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            command.env(k, v);
        }
        command.output().expect("the binary runs")
    })
    .await
    .unwrap()
}

fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name(column).unwrap().as_string::<i32>().clone();
            (0..c.len())
                .map(|i| {
                    if c.is_valid(i) {
                        c.value(i).to_string()
                    } else {
                        String::new()
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn csv_lead_ids() -> Vec<i64> {
    std::fs::read_to_string(sample_leads())
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect()
}

async fn sandbox_with_credits(credits: i64) -> Sandbox {
    let mut config = SandboxConfig::new(std::sync::Arc::new(generate_directory(
        &GeneratorConfig::default(),
    )));
    config.keys = vec![SandboxKey::new("cli", KEY, credits, Plan::Pro)];
    Sandbox::start(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_enriches_the_sample_leads_on_the_embedded_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("enriched.parquet");
    let summary = dir.path().join("summary.json");
    let run = prospeo(
        vec![
            "enrich".into(),
            sample_leads().display().to_string(),
            "-o".into(),
            output.display().to_string(),
            "--sandbox".into(),
            "--summary-json".into(),
            summary.display().to_string(),
        ],
        vec![],
    )
    .await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let batches = read_parquet(&output);
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("lead_id")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(ids, csv_lead_ids(), "every input row once, in input order");
    let statuses = strings(&batches, "prospeo_status");
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    for status in ["matched", "not_matched", "invalid_datapoints"] {
        let n = statuses.iter().filter(|s| *s == status).count() as u64;
        assert_eq!(summary[status].as_u64(), Some(n), "{status}");
    }
    assert!(summary["matched"].as_u64().unwrap() > 0);
    assert_eq!(summary["exit_code"], 0);
    assert!(leftovers(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_stop_defers_the_rest_and_says_so_in_the_exit_code() {
    let sandbox = sandbox_with_credits(10_000).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.csv");
    let summary = dir.path().join("summary.json");
    let run = prospeo(
        vec![
            "enrich".into(),
            sample_leads().display().to_string(),
            "-o".into(),
            output.display().to_string(),
            "--max-credits".into(),
            "5".into(),
            "--concurrency".into(),
            "1".into(),
            "--summary-json".into(),
            summary.display().to_string(),
        ],
        vec![
            ("PROSPEO_API_KEY", KEY.into()),
            ("PROSPEO_BASE_URL", sandbox.base_url()),
        ],
    )
    .await;
    assert_eq!(
        run.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let stats = sandbox.stats().key("cli");
    assert!(stats.credits_charged <= 5, "{stats:?}");
    assert_eq!(summary["credits"].as_i64(), Some(stats.credits_charged));
    assert!(summary["deferred"].as_u64().unwrap() > 0);
    let text = std::fs::read_to_string(&output).unwrap();
    assert_eq!(text.lines().count(), 1 + csv_lead_ids().len());
    assert!(text.contains("deferred"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_missing_key_exits_4_writes_nothing_and_never_shows_the_key() {
    let sandbox = sandbox_with_credits(100).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.parquet");
    let args = vec![
        "enrich".into(),
        sample_leads().display().to_string(),
        "-o".into(),
        output.display().to_string(),
    ];
    let secret = "wrong-secret-key-987";
    let run = prospeo(
        args.clone(),
        vec![
            ("PROSPEO_API_KEY", secret.into()),
            ("PROSPEO_BASE_URL", sandbox.base_url()),
        ],
    )
    .await;
    assert_eq!(run.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("INVALID_API_KEY"), "{stderr}");
    assert!(!stderr.contains(secret) && !String::from_utf8_lossy(&run.stdout).contains(secret));
    assert!(!output.exists());
    let run = prospeo(args, vec![("PROSPEO_BASE_URL", sandbox.base_url())]).await;
    assert_eq!(run.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&run.stderr).contains("PROSPEO_API_KEY"));
    assert!(!output.exists());
    assert_eq!(sandbox.stats().key("cli").requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_input_exits_2_with_the_path_in_the_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.parquet");
    let run = prospeo(
        vec![
            "enrich".into(),
            "/no/such/leads.csv".into(),
            "-o".into(),
            output.display().to_string(),
            "--sandbox".into(),
        ],
        vec![],
    )
    .await;
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("/no/such/leads.csv"));
    assert!(!output.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_shows_the_plan_credits_and_quota() {
    let sandbox = sandbox_with_credits(1234).await;
    let run = prospeo(
        vec!["account".into(), "--json".into()],
        vec![
            ("PROSPEO_API_KEY", KEY.into()),
            ("PROSPEO_BASE_URL", sandbox.base_url()),
        ],
    )
    .await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(json["plan"], "PRO");
    assert_eq!(json["remaining_credits"], 1234);
    assert_eq!(json["day_limit"], 500_000);
    let refused = prospeo(
        vec!["account".into()],
        vec![
            ("PROSPEO_API_KEY", "nope".into()),
            ("PROSPEO_BASE_URL", sandbox.base_url()),
        ],
    )
    .await;
    assert_eq!(refused.status.code(), Some(4));
}
