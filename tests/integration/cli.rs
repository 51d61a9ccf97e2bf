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

pub(crate) const KEY: &str = "cli-test-key";

pub(crate) fn sample_leads() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/leads.csv")
}

/// Runs the binary off the async runtime, with a clean environment for the key.
async fn prospeo(args: Vec<String>, env: Vec<(&'static str, String)>) -> Output {
    prospeo_with(
        args,
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    )
    .await
}

/// The binary as a user runs it: no key, base URL or AWS settings from the developer's shell.
pub(crate) fn command(args: &[String], env: &[(String, String)]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_prospeo"));
    command
        .args(args)
        .env_remove("PROSPEO_API_KEY")
        .env_remove("PROSPEO_API_KEY_FILE")
        .env_remove("PROSPEO_BASE_URL")
        .env_remove("PROSPEO_CACHE")
        .env("NO_COLOR", "1");
    // Every run gets a response cache of its own unless the test gives one: never the
    // developer's.
    if !env.iter().any(|(k, _)| k == "PROSPEO_CACHE") {
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        command.env("PROSPEO_CACHE", dir.path().join(format!("cache-{n}.redb")));
    }
    for (k, _) in std::env::vars() {
        // Nothing of the developer's: object stores, PostgreSQL passwords, a coordinator.
        if k.starts_with("AWS_") || k.starts_with("PG") || k == "PROSPEO_COORDINATOR" {
            command.env_remove(k);
        }
    }
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

/// [`prospeo`] with any environment (an S3 server's, say).
pub(crate) async fn prospeo_with(args: Vec<String>, env: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || command(&args, &env).output().expect("the binary runs"))
        .await
        .unwrap()
}

pub(crate) fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

pub(crate) fn strings(batches: &[RecordBatch], column: &str) -> Vec<String> {
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

pub(crate) fn csv_lead_ids() -> Vec<i64> {
    std::fs::read_to_string(sample_leads())
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect()
}

pub(crate) fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect()
}

pub(crate) async fn sandbox_with_credits(credits: i64) -> Sandbox {
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
        // A cache in the environment is for paid answers: the sandbox must not write to it.
        vec![(
            "PROSPEO_CACHE",
            dir.path().join("paid.redb").display().to_string(),
        )],
    )
    .await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!dir.path().join("paid.redb").exists());
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
    let bad_url = prospeo(
        vec![
            "account".into(),
            "--base-url".into(),
            "ftp://nowhere".into(),
        ],
        vec![("PROSPEO_API_KEY", KEY.into())],
    )
    .await;
    assert_eq!(bad_url.status.code(), Some(2), "a bad URL is not a bad key");
}

pub(crate) fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

pub(crate) fn key_env(sandbox: &Sandbox) -> Vec<(String, String)> {
    vec![
        ("PROSPEO_API_KEY".into(), KEY.into()),
        ("PROSPEO_BASE_URL".into(), sandbox.base_url()),
    ]
}

pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Rows in a result.
fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// `lead_id` and `prospeo_status` of every row of a result.
pub(crate) fn ids_and_statuses(batches: &[RecordBatch]) -> Vec<(i64, String)> {
    let ids = batches.iter().flat_map(|b| {
        let column = datafusion::arrow::compute::cast(
            b.column_by_name("lead_id").unwrap(),
            &datafusion::arrow::datatypes::DataType::Int64,
        )
        .unwrap();
        column.as_primitive::<Int64Type>().values().to_vec()
    });
    ids.zip(strings(batches, "prospeo_status")).collect()
}

/// Reads any output format back into batches.
fn read_output(path: &Path) -> Vec<RecordBatch> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let file = std::fs::File::open(path).unwrap();
    match path.extension().unwrap().to_str().unwrap() {
        "parquet" => read_parquet(path),
        "arrow" => datafusion::arrow::ipc::reader::FileReader::try_new(file, None)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap(),
        "csv" | "ndjson" => {
            // Only the two columns the tests compare.
            let schema = std::sync::Arc::new(Schema::new(vec![
                Field::new("lead_id", DataType::Int64, true),
                Field::new("prospeo_status", DataType::Utf8, true),
            ]));
            if path.extension().unwrap() == "csv" {
                let full = datafusion::arrow::csv::reader::Format::default()
                    .with_header(true)
                    .infer_schema(std::fs::File::open(path).unwrap(), None)
                    .unwrap()
                    .0;
                let batches: Vec<RecordBatch> =
                    datafusion::arrow::csv::ReaderBuilder::new(std::sync::Arc::new(full))
                        .with_header(true)
                        .build(file)
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap();
                batches
                    .iter()
                    .map(|b| {
                        let s = b.schema();
                        b.project(&[
                            s.index_of("lead_id").unwrap(),
                            s.index_of("prospeo_status").unwrap(),
                        ])
                        .unwrap()
                    })
                    .collect()
            } else {
                datafusion::arrow::json::ReaderBuilder::new(schema)
                    .build(std::io::BufReader::new(file))
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap()
            }
        }
        other => panic!("unexpected output extension {other}"),
    }
}

/// Writes `batch` as NDJSON.
pub(crate) fn write_ndjson(path: &Path, batches: &[RecordBatch]) {
    let mut writer =
        datafusion::arrow::json::LineDelimitedWriter::new(std::fs::File::create(path).unwrap());
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap();
}

pub(crate) fn write_parquet(path: &Path, batch: &RecordBatch) {
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        None,
    )
    .unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}

fn sample_parquet() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/leads.parquet")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_format_gives_the_same_rows_in_input_order() {
    let sandbox = sandbox_with_credits(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    // The same leads as NDJSON, and as a semicolon-separated CSV with quoted fields.
    let ndjson = dir.path().join("leads.ndjson");
    write_ndjson(&ndjson, &read_parquet(&sample_parquet()));
    let semicolons = dir.path().join("leads.txt");
    let text = std::fs::read_to_string(sample_leads()).unwrap();
    let quoted: String = text
        .lines()
        .map(|line| {
            let fields: Vec<String> = split_csv_line(line)
                .into_iter()
                .map(|f| format!("'{f}'"))
                .collect();
            fields.join(";") + "\n"
        })
        .collect();
    std::fs::write(&semicolons, quoted).unwrap();

    let expected = csv_lead_ids();
    let mut results = Vec::new();
    for (input, extra) in [
        (sample_leads(), args(&[])),
        (sample_parquet(), args(&[])),
        (ndjson, args(&[])),
        (
            semicolons,
            args(&["--input-format", "csv", "--delimiter", ";", "--quote", "'"]),
        ),
    ] {
        let output = dir.path().join("out.parquet");
        let mut command = args(&["enrich", &path_arg(&input), "-o", &path_arg(&output)]);
        command.extend(extra);
        let run = prospeo_with(command, key_env(&sandbox)).await;
        assert!(
            run.status.success(),
            "{}: {}",
            input.display(),
            stderr(&run)
        );
        let rows = ids_and_statuses(&read_parquet(&output));
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, expected, "{}", input.display());
        results.push(rows);
    }
    assert!(
        results.windows(2).all(|w| w[0] == w[1]),
        "every format enriches every row alike"
    );
    assert!(results[0].iter().any(|(_, s)| s == "matched"));
}

/// Splits a line of the sample CSV (no field holds a quote; some hold commas in quotes).
fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_output_format_holds_every_row_in_input_order_and_the_summary_matches_the_sandbox() {
    let sandbox = sandbox_with_credits(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let expected = csv_lead_ids();
    let mut results = Vec::new();
    for name in ["out.parquet", "out.csv", "out.ndjson", "out.arrow"] {
        let before = sandbox.stats().key("cli");
        let output = dir.path().join(name);
        let summary = dir.path().join("summary.json");
        let run = prospeo_with(
            args(&[
                "enrich",
                &path_arg(&sample_leads()),
                "-o",
                &path_arg(&output),
                "--summary-json",
                &path_arg(&summary),
            ]),
            key_env(&sandbox),
        )
        .await;
        assert!(run.status.success(), "{name}: {}", stderr(&run));
        let rows = ids_and_statuses(&read_output(&output));
        let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, expected, "{name}");
        results.push(rows);

        let summary: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        let after = sandbox.stats().key("cli");
        // The sandbox also counts the free /account-information check.
        assert_eq!(
            summary["requests"].as_u64(),
            Some(after.requests - before.requests - 1),
            "{name}"
        );
        assert_eq!(
            summary["records_sent"].as_u64(),
            Some(after.records - before.records),
            "{name}"
        );
        assert_eq!(
            summary["rate_limited"].as_u64(),
            Some(after.rate_limited - before.rate_limited),
            "{name}"
        );
        assert_eq!(
            summary["credits"].as_i64(),
            Some(after.credits_charged - before.credits_charged),
            "{name}"
        );
        assert_eq!(summary["rows"].as_u64(), Some(expected.len() as u64));
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    assert!(leftovers(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enriches_from_s3_to_s3_through_a_real_s3_server() {
    use datafusion::object_store::ObjectStoreExt;
    use futures::StreamExt;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("leads/in")).unwrap();
    std::fs::copy(sample_parquet(), root.path().join("leads/in/leads.parquet")).unwrap();
    std::fs::copy(sample_leads(), root.path().join("leads/in/leads.csv")).unwrap();
    let s3 = crate::s3::S3Server::start(root.path()).await;
    let sandbox = sandbox_with_credits(100_000).await;
    let mut env = key_env(&sandbox);
    env.extend(s3.env());
    let store = s3.store("leads");
    let local = tempfile::tempdir().unwrap();
    let jobs = [
        ("in/leads.parquet", "out/enriched.arrow"),
        ("in/leads.csv", "out/enriched.parquet"),
        ("in/leads.parquet", "out/enriched.csv"),
        ("in/leads.csv", "out/enriched.ndjson"),
    ];
    for (input, output) in jobs {
        let run = prospeo_with(
            args(&[
                "enrich",
                &format!("s3://leads/{input}"),
                "-o",
                &format!("s3://leads/{output}"),
            ]),
            env.clone(),
        )
        .await;
        assert!(
            run.status.success(),
            "{input} -> {output}: {}",
            stderr(&run)
        );
        // Read the object back through a local copy with the same extension.
        let bytes = store
            .get(&output.into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let copy = local.path().join(output.rsplit('/').next().unwrap());
        std::fs::write(&copy, &bytes).unwrap();
        let ids: Vec<i64> = ids_and_statuses(&read_output(&copy))
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(ids, csv_lead_ids(), "{input} -> {output}");
    }
    let mut listed: Vec<String> = store
        .list(None)
        .map(|m| m.unwrap().location.to_string())
        .collect::<Vec<_>>()
        .await;
    listed.sort();
    let mut expected: Vec<&str> = jobs.iter().map(|(_, o)| *o).collect();
    expected.extend(["in/leads.csv", "in/leads.parquet"]);
    expected.sort();
    assert_eq!(listed, expected, "no probe or partial object is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_counts_rows_and_credits_and_sends_nothing() {
    let sandbox = sandbox_with_credits(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("dry.json");
    let run = prospeo_with(
        args(&[
            "enrich",
            &path_arg(&sample_leads()),
            "--dry-run",
            "--enrich-mobile",
            "--summary-json",
            &path_arg(&report),
        ]),
        key_env(&sandbox),
    )
    .await;
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("email <- \"Email\""),
        "{}",
        stderr(&run)
    );
    assert_eq!(
        sandbox.stats().key("cli").requests,
        0,
        "a dry run calls nothing"
    );
    let dry: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();

    // The real run agrees with the dry run's counts.
    let output = dir.path().join("out.parquet");
    let run = prospeo_with(
        args(&[
            "enrich",
            &path_arg(&sample_leads()),
            "-o",
            &path_arg(&output),
        ]),
        key_env(&sandbox),
    )
    .await;
    assert!(run.status.success(), "{}", stderr(&run));
    let statuses = strings(&read_parquet(&output), "prospeo_status");
    let stats = sandbox.stats().key("cli");
    assert_eq!(dry["rows"].as_u64(), Some(statuses.len() as u64));
    assert_eq!(
        dry["invalid_datapoints"].as_u64(),
        Some(
            statuses
                .iter()
                .filter(|s| *s == "invalid_datapoints")
                .count() as u64
        )
    );
    assert_eq!(dry["records_to_send"].as_u64(), Some(stats.records));
    assert_eq!(
        dry["worst_case_credits"].as_u64(),
        Some(10 * stats.records),
        "10 credits a record with --enrich-mobile"
    );
    assert!(dry["duplicates"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_with_bad_rows_marks_bad_values_and_stops_on_broken_lines_before_paying() {
    let sandbox = sandbox_with_credits(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let sample = std::fs::read_to_string(sample_leads()).unwrap();
    let header = sample.lines().next().unwrap();
    let width = split_csv_line(header).len();
    // Values that cannot match: a bad email alone, a first name alone, an empty row.
    let bad_values = [
        format!("9001,,,not-an-email{}", ",".repeat(width - 4)),
        format!("9002,Ann{}", ",".repeat(width - 2)),
        format!("9003{}", ",".repeat(width - 1)),
    ];
    let mut text: Vec<String> = sample.lines().take(11).map(String::from).collect();
    text.extend(bad_values.iter().cloned());
    let values_file = dir.path().join("bad-values.csv");
    std::fs::write(&values_file, text.join("\n") + "\n").unwrap();
    let output = dir.path().join("out.parquet");
    let run = prospeo_with(
        args(&["enrich", &path_arg(&values_file), "-o", &path_arg(&output)]),
        key_env(&sandbox),
    )
    .await;
    assert!(run.status.success(), "{}", stderr(&run));
    let rows = ids_and_statuses(&read_parquet(&output));
    assert_eq!(rows.len(), 13);
    for id in [9001, 9002, 9003] {
        let status = &rows.iter().find(|r| r.0 == id).unwrap().1;
        assert_eq!(status, "invalid_datapoints", "lead {id}");
    }
    assert!(sandbox.stats().key("cli").records_submitted <= 10);

    // A line with too many fields: the whole input is checked before anything is sent.
    let before = sandbox.stats().key("cli").records_submitted;
    let mut broken: Vec<String> = sample.lines().map(String::from).collect();
    broken.insert(100, format!("9004,Too,Many{}", ",x".repeat(width + 3)));
    let broken_file = dir.path().join("broken.csv");
    std::fs::write(&broken_file, broken.join("\n") + "\n").unwrap();
    let output = dir.path().join("broken-out.parquet");
    let run = prospeo_with(
        args(&["enrich", &path_arg(&broken_file), "-o", &path_arg(&output)]),
        key_env(&sandbox),
    )
    .await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("broken.csv"), "{}", stderr(&run));
    assert!(!output.exists());
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(
        sandbox.stats().key("cli").records_submitted,
        before,
        "nothing was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_cannot_be_written_fails_before_anything_is_paid() {
    let sandbox = sandbox_with_credits(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file.txt");
    std::fs::write(&not_a_dir, "x").unwrap();
    for output in [not_a_dir.join("out.parquet"), dir.path().to_path_buf()] {
        let run = prospeo_with(
            args(&[
                "enrich",
                &path_arg(&sample_leads()),
                "-o",
                &path_arg(&output),
            ]),
            key_env(&sandbox),
        )
        .await;
        assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
        assert!(stderr(&run).contains("cannot write"), "{}", stderr(&run));
    }
    assert_eq!(sandbox.stats().key("cli").records_submitted, 0);
}

/// A sandbox that answers slowly, and a lead file of `rows` rows over its directory.
pub(crate) async fn slow_job(rows: usize, latency_ms: u64, dir: &Path) -> (Sandbox, PathBuf) {
    use datafusion_prospeo::sandbox::generator::{generate_leads, leads_batch};
    let directory = std::sync::Arc::new(generate_directory(&GeneratorConfig::default()));
    let leads = generate_leads(&directory, 7, rows);
    let input = dir.join("leads.parquet");
    write_parquet(&input, &leads_batch(&leads));
    let mut config = SandboxConfig::new(directory);
    config.keys = vec![SandboxKey::new("cli", KEY, 1_000_000, Plan::Pro)];
    config.faults.latency = std::time::Duration::from_millis(latency_ms);
    (Sandbox::start(config).await.unwrap(), input)
}

/// Polls the sandbox until `records` records were answered (at most 60 s).
pub(crate) async fn wait_for_records(sandbox: &Sandbox, records: u64) {
    for _ in 0..1200 {
        if sandbox.stats().key("cli").records_submitted >= records {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the job did not send {records} records within 60 s");
}

/// Runs the binary until the sandbox has answered `records` records, then sends it `signal`
/// (`INT` for Ctrl-C, `KILL`), and returns what it printed and how it ended.
pub(crate) async fn run_until_signalled(
    job: &[String],
    env: &[(String, String)],
    sandbox: &Sandbox,
    records: u64,
    signal: &str,
) -> Output {
    let child = command(job, env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_records(sandbox, records).await;
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal}");
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_mid_run_writes_nothing_and_reports_what_was_spent() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, input) = slow_job(1000, 300, dir.path()).await;
    let output = dir.path().join("out.parquet");
    let job = args(&[
        "enrich",
        &path_arg(&input),
        "-o",
        &path_arg(&output),
        "--concurrency",
        "1",
    ]);
    let run = run_until_signalled(&job, &key_env(&sandbox), &sandbox, 100, "INT").await;
    assert_eq!(run.status.code(), Some(130), "{}", stderr(&run));
    assert!(!output.exists(), "no output after Ctrl-C");
    assert!(leftovers(dir.path()).is_empty(), "no partial file");
    let stats = sandbox.stats().key("cli");
    assert!(stats.records_submitted < 900, "sending stopped: {stats:?}");
    let spent = format!(
        "Spent {} credits on {} records",
        stats.credits_charged, stats.records
    );
    assert!(stderr(&run).contains(&spent), "{spent} in {}", stderr(&run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_runs_queries_scripts_and_standard_input_and_writes_files() {
    let sandbox = sandbox_with_credits(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let leads = path_arg(&sample_leads());
    // One query, printed as CSV: enrichment columns next to input columns.
    let query = format!(
        "SELECT lead_id, prospeo_status FROM enrich_person('{leads}') ORDER BY lead_id LIMIT 5"
    );
    let run = prospeo_with(args(&["sql", &query, "--format", "csv"]), key_env(&sandbox)).await;
    assert!(run.status.success(), "{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "lead_id,prospeo_status");
    assert_eq!(lines.len(), 6, "{stdout}");
    let mut ids = csv_lead_ids();
    ids.sort();
    for (line, id) in lines[1..].iter().zip(&ids) {
        assert!(line.starts_with(&format!("{id},")), "{line}");
    }

    // A script file: SET applies to the next statement; -o writes the last result.
    let script = dir.path().join("job.sql");
    std::fs::write(
        &script,
        format!(
            "SET prospeo.prefix = 'p_';\nSELECT lead_id, p_status FROM enrich_person('{leads}') WHERE p_status = 'matched';\n"
        ),
    )
    .unwrap();
    let output = dir.path().join("matched.parquet");
    let run = prospeo_with(
        args(&[
            "sql",
            "--file",
            &path_arg(&script),
            "-o",
            &path_arg(&output),
        ]),
        key_env(&sandbox),
    )
    .await;
    assert!(run.status.success(), "{}", stderr(&run));
    let matched = strings(&read_parquet(&output), "p_status");
    assert!(!matched.is_empty() && matched.iter().all(|s| s == "matched"));

    // Standard input, and a query that reads no enrichment column needs no key.
    let mut child = command(&args(&["sql", "--format", "json"]), &[])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "SELECT count(*) AS n FROM enrich_person('{leads}');").unwrap();
    }
    let run = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let json: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(json["n"].as_u64(), Some(csv_lead_ids().len() as u64));

    // Bad SQL is bad input.
    let run = prospeo_with(args(&["sql", "SELEC 1"]), vec![]).await;
    assert_eq!(run.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_mid_run_leaves_no_object_in_the_bucket() {
    use datafusion::object_store::ObjectStoreExt;
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, input) = slow_job(1000, 300, dir.path()).await;
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("out")).unwrap();
    let s3 = crate::s3::S3Server::start(root.path()).await;
    let mut env = key_env(&sandbox);
    env.extend(s3.env());
    let job = args(&[
        "enrich",
        &path_arg(&input),
        "-o",
        "s3://out/enriched.parquet",
        "--concurrency",
        "1",
    ]);
    let run = run_until_signalled(&job, &env, &sandbox, 100, "INT").await;
    assert_eq!(run.status.code(), Some(130), "{}", stderr(&run));
    let listed: Vec<String> = s3
        .store("out")
        .list(None)
        .map(|m| m.unwrap().location.to_string())
        .collect::<Vec<_>>()
        .await;
    assert!(listed.is_empty(), "nothing was committed: {listed:?}");
    assert!(
        s3.store("out")
            .head(&"enriched.parquet".into())
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_summary_for_machines() {
    let sandbox = sandbox_with_credits(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.parquet");
    let run = prospeo_with(
        args(&[
            "--log-format",
            "json",
            "enrich",
            &path_arg(&sample_leads()),
            "-o",
            &path_arg(&output),
        ]),
        key_env(&sandbox),
    )
    .await;
    assert!(run.status.success(), "{}", stderr(&run));
    let events: Vec<Value> = stderr(&run)
        .lines()
        .map(|line| serde_json::from_str(line).expect("every stderr line is JSON"))
        .collect();
    let summary = events
        .iter()
        .find(|e| e["target"] == "prospeo::summary")
        .expect("a summary event");
    let stats = sandbox.stats().key("cli");
    assert_eq!(summary["fields"]["rows"], 120);
    assert_eq!(summary["fields"]["records_sent"], stats.records);
    assert_eq!(summary["fields"]["credits"], stats.credits_charged);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_rows_exit_3_so_the_scheduler_runs_the_job_again() {
    let mut config = SandboxConfig::new(std::sync::Arc::new(generate_directory(
        &GeneratorConfig::default(),
    )));
    config.keys = vec![SandboxKey::new("cli", KEY, 1_000, Plan::Pro)];
    config.faults.bad_gateway_rate = 1.0;
    let sandbox = Sandbox::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("few.csv");
    let sample = std::fs::read_to_string(sample_leads()).unwrap();
    let few: Vec<&str> = sample.lines().take(6).collect();
    std::fs::write(&input, few.join("\n") + "\n").unwrap();
    let output = dir.path().join("out.parquet");
    let run = prospeo_with(
        args(&["enrich", &path_arg(&input), "-o", &path_arg(&output)]),
        key_env(&sandbox),
    )
    .await;
    assert_eq!(run.status.code(), Some(3), "{}", stderr(&run));
    assert!(stderr(&run).contains("failed"), "{}", stderr(&run));
    let statuses = strings(&read_parquet(&output), "prospeo_status");
    assert!(statuses.iter().any(|s| s == "failed"), "{statuses:?}");
    assert_eq!(sandbox.stats().key("cli").credits_charged, 0);
}

/// Runs `prospeo enrich` on the sample leads, one request at a time (so the sandbox's seeded
/// faults fall on the same requests every run), against a sandbox with `faults`; returns the
/// exit code, the statuses in row order, the summary, and the sandbox's stats of the key.
async fn enrich_sample_through(
    faults: datafusion_prospeo::sandbox::Faults,
) -> (
    Option<i32>,
    Vec<String>,
    i64,
    Value,
    datafusion_prospeo::sandbox::KeyStats,
) {
    let mut config = SandboxConfig::new(std::sync::Arc::new(generate_directory(
        &GeneratorConfig::default(),
    )));
    config.keys = vec![SandboxKey::new("cli", KEY, 1_000, Plan::Pro)];
    config.faults = faults;
    config.seed = 3;
    let sandbox = Sandbox::start(config).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.parquet");
    let summary = dir.path().join("summary.json");
    let run = prospeo_with(
        args(&[
            "enrich",
            &path_arg(&sample_leads()),
            "-o",
            &path_arg(&output),
            "--concurrency",
            "1",
            "--summary-json",
            &path_arg(&summary),
        ]),
        key_env(&sandbox),
    )
    .await;
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let batches = read_parquet(&output);
    let statuses = strings(&batches, "prospeo_status");
    let cost: i64 = batches
        .iter()
        .map(|b| {
            let column = b.column_by_name("prospeo_cost").unwrap();
            column
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .sum::<i64>()
        })
        .sum();
    let stats = sandbox.stats().key("cli").clone();
    sandbox.stop().await.unwrap();
    (run.status.code(), statuses, cost, summary, stats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_writable_temporary_folder_the_answers_stay_in_memory_and_the_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("enriched.parquet");
    let run = prospeo(
        vec![
            "enrich".into(),
            sample_leads().display().to_string(),
            "-o".into(),
            output.display().to_string(),
            "--sandbox".into(),
        ],
        vec![("TMPDIR", dir.path().join("missing").display().to_string())],
    )
    .await;
    let text = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "{text}");
    assert!(text.contains("stay in memory"), "{text}");
    assert_eq!(row_count(&read_parquet(&output)), 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_lost_after_the_api_processed_them_are_asked_again_in_the_same_run() {
    use datafusion_prospeo::sandbox::Faults;
    let (code, clean, _, clean_summary, _) = enrich_sample_through(Faults::default()).await;
    assert_eq!(code, Some(0));
    assert_eq!(clean_summary["lost_answers"], 0);
    let cases = [
        (
            "a body cut off after a success status",
            Faults {
                cut_body_rate: 0.4,
                ..Default::default()
            },
        ),
        (
            "a body that is not JSON",
            Faults {
                garbled_rate: 0.4,
                ..Default::default()
            },
        ),
        (
            "a record left out of the answer",
            Faults {
                lost_record_rate: 0.4,
                ..Default::default()
            },
        ),
    ];
    for (case, faults) in cases {
        let (code, statuses, cost, summary, stats) = enrich_sample_through(faults).await;
        let injected = stats.faults.cut_body + stats.faults.garbled + stats.faults.lost_record;
        assert!(injected > 0, "{case}: the fault happened");
        assert_eq!(code, Some(0), "{case}: every row settles in the first run");
        assert_eq!(
            statuses, clean,
            "{case}: the same statuses as without the fault"
        );
        assert!(
            summary["lost_answers"].as_u64().unwrap() > 0,
            "{case}: counted: {summary}"
        );
        // Every record the sandbox processed is in records_sent, lost answers included.
        assert_eq!(summary["records_sent"], stats.records, "{case}");
        assert_eq!(summary["failed"], 0, "{case}");
        // Asking again is free (the vendor charges a person once): what the answers
        // reported never exceeds what the sandbox charged, and a left-out record's charge is
        // still in its request's total_cost.
        let credits = summary["credits"].as_i64().unwrap();
        assert!(credits <= stats.credits_charged, "{case}: {credits}");
        if stats.faults.lost_record > 0 && stats.faults.cut_body + stats.faults.garbled == 0 {
            // A left-out record's charge is in its request's total_cost: the rows' costs add
            // up to what the sandbox charged, with no cost warning.
            assert_eq!(credits, stats.credits_charged, "{case}");
            assert_eq!(cost, credits, "{case}");
            assert_eq!(summary["cost_warnings"], 0, "{case}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_on_the_sandbox_honours_session_options_and_keeps_no_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("paid.redb");
    let query = format!(
        "SET prospeo.max_credits = 1; SELECT DISTINCT prospeo_status FROM enrich_person('{}') WHERE prospeo_status <> 'invalid_datapoints'",
        path_arg(&sample_leads())
    );
    let run = prospeo_with(
        args(&["sql", "--sandbox", &query, "--format", "csv"]),
        vec![("PROSPEO_CACHE".into(), path_arg(&cache))],
    )
    .await;
    assert!(run.status.success(), "{}", stderr(&run));
    // A budget of one credit cannot cover a request's worst case: everything is deferred.
    assert_eq!(
        String::from_utf8_lossy(&run.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["prospeo_status", "deferred"]
    );
    assert!(!cache.exists(), "sandbox answers never reach a cache file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_has_a_flag_for_every_sql_option() {
    use datafusion_prospeo::datafusion::options::OptionKey;
    let run = prospeo_with(args(&["enrich", "--help"]), vec![]).await;
    assert!(run.status.success(), "{}", stderr(&run));
    let help = String::from_utf8_lossy(&run.stdout).into_owned();
    for flag in ["--per-second", "--request-timeout"] {
        assert!(help.contains(flag), "{flag} missing from\n{help}");
    }
    for key in OptionKey::ALL {
        // The SQL name with `-` for `_` is the flag or one of its aliases; `cache` is
        // --no-cache (its --cache takes the file, as prospeo.cache_path does).
        let flag = match key {
            OptionKey::Cache => "--no-cache".to_string(),
            _ => format!("--{}", key.name().replace('_', "-")),
        };
        assert!(
            help.contains(&format!("{flag} "))
                || help.contains(&format!("{flag}\n"))
                || help.contains(&format!("{flag}[="))
                || help.contains(&format!("{flag},"))
                || help.contains(&format!("{flag}]")),
            "prospeo.{key}: {flag} missing from\n{help}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_second_request_timeout_and_the_other_options_reach_the_run() {
    let sandbox = sandbox_with_credits(100_000).await;
    // A dry run prints the options in force, as `SET prospeo.*` names them.
    let run = prospeo_with(
        args(&[
            "enrich",
            &path_arg(&sample_leads()),
            "--dry-run",
            "--per-second",
            "7",
            "--request-timeout",
            "30d",
            "--cache-ttl",
            "12h",
            "--plan",
            "growth",
            "--csv-delimiter",
            ",",
            "--format",
            "csv",
            "--enrich-mobile=true",
            "--only-verified-email=false",
        ]),
        key_env(&sandbox),
    )
    .await;
    assert!(run.status.success(), "{}", stderr(&run));
    let text = stderr(&run);
    for setting in [
        "per_second=7",
        "request_timeout_secs=2592000",
        "cache_ttl=12h",
        "plan=growth",
        "format=csv",
        "enrich_mobile=true",
    ] {
        assert!(text.contains(setting), "{setting} in {text}");
    }
    assert!(!text.contains("only_verified_email"), "{text}");

    // A real run with them: the client paces and times out as told, and everything settles.
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.parquet");
    let run = prospeo_with(
        args(&[
            "enrich",
            &path_arg(&sample_leads()),
            "-o",
            &path_arg(&output),
            "--per-second",
            "1000",
            // The SQL name is a spelling of the flag too.
            "--request-timeout-secs",
            "90s",
        ]),
        key_env(&sandbox),
    )
    .await;
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(row_count(&read_parquet(&output)), 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_option_value_gets_the_sql_message_and_exits_2() {
    let ctx = datafusion::prelude::SessionContext::new();
    datafusion_prospeo::register(&ctx);
    for (flag, sql, value) in [
        ("--per-second", "per_second", "fast"),
        ("--request-timeout", "request_timeout_secs", "0"),
        ("--cache-ttl", "cache_ttl", "3 weeks"),
        ("--concurrency", "concurrency", "0"),
        ("--plan", "plan", "platinum"),
        ("--base-url", "base_url", "ftp://nowhere"),
    ] {
        // The message SQL gives for the same value, without DataFusion's wrapping.
        let error = ctx
            .sql(&format!("SET prospeo.{sql} = '{value}'"))
            .await
            .expect_err(sql);
        let message = datafusion_prospeo::Error::find_in(&error)
            .expect("a crate error")
            .to_string();
        let run = prospeo_with(
            args(&[
                "enrich",
                &path_arg(&sample_leads()),
                "--dry-run",
                flag,
                value,
            ]),
            vec![],
        )
        .await;
        assert_eq!(run.status.code(), Some(2), "{flag}: {}", stderr(&run));
        assert!(
            stderr(&run).contains(&message),
            "{flag}: `{message}` in {}",
            stderr(&run)
        );
    }
    // Flags that contradict each other are refused, not silently dropped.
    let run = prospeo_with(
        args(&[
            "enrich",
            &path_arg(&sample_leads()),
            "--dry-run",
            "--no-cache",
            "--cache",
            "answers.redb",
        ]),
        vec![],
    )
    .await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("--no-cache"), "{}", stderr(&run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_tells_a_key_problem_by_its_type_at_planning_and_mid_query() {
    let sandbox = sandbox_with_credits(100).await;
    let query = format!(
        "SELECT prospeo_status FROM enrich_person('{}')",
        path_arg(&sample_leads())
    );
    // No key: the client is made when the plan is, so planning fails.
    let run = prospeo_with(
        args(&["sql", &query, "--format", "csv"]),
        vec![("PROSPEO_BASE_URL".into(), sandbox.base_url())],
    )
    .await;
    assert_eq!(run.status.code(), Some(4), "{}", stderr(&run));
    assert!(stderr(&run).contains("PROSPEO_API_KEY"), "{}", stderr(&run));
    // A refused key: the error comes out of the running query, through DataFusion's wrappers.
    let secret = "refused-secret-123";
    let run = prospeo_with(
        args(&["sql", &query, "--format", "csv"]),
        vec![
            ("PROSPEO_API_KEY".into(), secret.into()),
            ("PROSPEO_BASE_URL".into(), sandbox.base_url()),
        ],
    )
    .await;
    assert_eq!(run.status.code(), Some(4), "{}", stderr(&run));
    assert!(stderr(&run).contains("INVALID_API_KEY"), "{}", stderr(&run));
    assert!(!stderr(&run).contains(secret), "{}", stderr(&run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_takes_the_options_as_flags_too() {
    let query = format!(
        "SELECT DISTINCT prospeo_status FROM enrich_person('{}') WHERE prospeo_status <> 'invalid_datapoints'",
        path_arg(&sample_leads())
    );
    // As `SET prospeo.max_credits = 1` does: a budget of one credit defers everything.
    let run = prospeo_with(
        args(&[
            "sql",
            "--sandbox",
            "--max-credits",
            "1",
            "--request-timeout",
            "30d",
            &query,
            "--format",
            "csv",
        ]),
        vec![],
    )
    .await;
    assert!(run.status.success(), "{}", stderr(&run));
    assert_eq!(
        String::from_utf8_lossy(&run.stdout)
            .lines()
            .collect::<Vec<_>>(),
        ["prospeo_status", "deferred"]
    );
    // `--format` stays the result format there (the input's is `SET prospeo.format`).
    let help = prospeo_with(args(&["sql", "--help"]), vec![]).await;
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(
        help.contains("--per-second") && help.contains("--format <FORMAT>"),
        "{help}"
    );
    let run = prospeo_with(args(&["sql", "--plan", "platinum", "SELECT 1"]), vec![]).await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("prospeo.plan"), "{}", stderr(&run));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_reached_by_url_keeps_its_answers_out_of_the_default_cache_file() {
    let sandbox = sandbox_with_credits(10_000).await;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("cache-home");
    let port = sandbox.base_url().rsplit(':').next().unwrap().to_string();
    // The default place of the cache (no --cache, no PROSPEO_CACHE), in a folder of the test's.
    let env = |how: &str| {
        let mut env = vec![
            ("PROSPEO_API_KEY".to_string(), KEY.to_string()),
            ("PROSPEO_CACHE".into(), String::new()),
            ("XDG_CACHE_HOME".into(), path_arg(&home)),
        ];
        if how == "env" {
            env.push(("PROSPEO_BASE_URL".into(), sandbox.base_url()));
        }
        env
    };
    for (run, how) in ["flag", "env"].into_iter().enumerate() {
        let summary = dir.path().join(format!("summary-{run}.json"));
        let mut list = vec![
            "enrich".to_string(),
            path_arg(&sample_leads()),
            "-o".into(),
            path_arg(&dir.path().join(format!("out-{run}.csv"))),
            "--summary-json".into(),
            path_arg(&summary),
        ];
        if how == "flag" {
            list.extend(["--base-url".into(), sandbox.base_url()]);
        }
        let output = prospeo_with(list, env(how)).await;
        assert!(output.status.success(), "{how}: {}", stderr(&output));
        let summary: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        // The second run, however the URL was given, finds the first one's answers.
        let sent = summary["records_sent"].as_u64().unwrap();
        assert_eq!(sent == 0, run == 1, "{how}: {sent} records sent");
    }
    let files: Vec<String> = std::fs::read_dir(home.join("prospeo"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with(&format!("responses-127-0-0-1-{port}-")),
        "the sandbox's answers are kept apart from the vendor's (responses.redb): {files:?}"
    );
    // `prospeo cache` looks where `enrich` keeps the answers of the API at PROSPEO_BASE_URL.
    let stats = prospeo_with(args(&["cache", "stats", "--json"]), env("env")).await;
    assert!(stats.status.success(), "{}", stderr(&stats));
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert!(stats["entries"].as_u64().unwrap() > 0, "{stats}");
    let after = std::fs::read_dir(home.join("prospeo")).unwrap().count();
    assert_eq!(after, 1, "no other cache file appeared");
    // Or with --base-url, as `enrich` takes it.
    let url = sandbox.base_url();
    let stats = prospeo_with(
        args(&["cache", "stats", "--json", "--base-url", &url]),
        env("flag"),
    )
    .await;
    assert!(stats.status.success(), "{}", stderr(&stats));
    let stats: Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert!(stats["entries"].as_u64().unwrap() > 0, "{stats}");
    // A mistyped URL is refused there as `enrich` refuses it.
    let mut mistyped = env("flag");
    mistyped.push(("PROSPEO_BASE_URL".into(), "api.prospeo.io".into()));
    let refused = prospeo_with(args(&["cache", "stats"]), mistyped).await;
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("http://"), "{}", stderr(&refused));
    sandbox.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_enriches_leads_and_accounts_in_one_query_on_one_quota() {
    use datafusion_prospeo::api::RateLimits;
    // A key with 140 records a day, whichever endpoint they go to: more than either scan sends
    // alone (the sample files' rows with valid datapoints: 112 people, 57 companies; duplicates
    // go once) and less than both, so in whatever order the two scans book the day, both send
    // and some rows are deferred.
    let mut config = SandboxConfig::new(std::sync::Arc::new(generate_directory(
        &GeneratorConfig::default(),
    )));
    config.keys = vec![
        SandboxKey::new("cli", KEY, 10_000, Plan::Pro).with_limits(RateLimits::new(30, 1_800, 140)),
    ];
    let sandbox = Sandbox::start(config).await.unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data");
    let query = format!(
        "SELECT 'person' AS endpoint, prospeo_status, count(*) AS n FROM enrich_person('{leads}') GROUP BY 2 \
         UNION ALL \
         SELECT 'company', prospeo_status, count(*) FROM enrich_company('{accounts}') GROUP BY 2 \
         ORDER BY 1, 2",
        leads = path_arg(&sample.join("leads.csv")),
        accounts = path_arg(&sample.join("accounts.csv")),
    );
    let run = prospeo_with(
        args(&["sql", &query, "--format", "csv", "--per-day", "140"]),
        key_env(&sandbox),
    )
    .await;
    assert!(run.status.success(), "{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let rows: Vec<(String, String, u64)> = stdout
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[1].to_string(), f[2].parse().unwrap())
        })
        .collect();
    let count = |endpoint: &str, status: &str| {
        rows.iter()
            .filter(|r| r.0 == endpoint && r.1 == status)
            .map(|r| r.2)
            .sum::<u64>()
    };
    let total = |endpoint: &str| {
        rows.iter()
            .filter(|r| r.0 == endpoint)
            .map(|r| r.2)
            .sum::<u64>()
    };
    assert_eq!(total("person"), csv_lead_ids().len() as u64, "{stdout}");
    assert_eq!(total("company"), 60, "{stdout}");
    let sendable = |endpoint: &str| total(endpoint) - count(endpoint, "invalid_datapoints");
    assert!(
        sendable("person") < 140
            && sendable("company") < 140
            && sendable("person") + sendable("company") > 140,
        "the day's quota is meant to fit either scan alone, not both: {stdout}"
    );
    let stats = sandbox.stats().key("cli");
    // Both endpoints went out, together within the day's 140 records, and what did not fit
    // is deferred, not failed; the server never had to refuse.
    assert!(
        stats.companies.records > 0 && stats.records > stats.companies.records,
        "{stats:?}"
    );
    assert!(stats.records <= 140, "{stats:?}");
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert!(
        count("person", "deferred") + count("company", "deferred") > 0,
        "{stdout}"
    );
    assert_eq!(
        count("person", "failed") + count("company", "failed"),
        0,
        "{stdout}"
    );
    sandbox.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_companies_on_the_sample_accounts_with_dry_run_summary_and_flags() {
    use datafusion_prospeo::sandbox::generator::{AccountKind, SampleData, generate_accounts};
    let dir = tempfile::tempdir().unwrap();
    let accounts_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/accounts.csv");
    let directory = generate_directory(&GeneratorConfig::default());
    let sample = SampleData::default();
    let accounts = generate_accounts(&directory, sample.directory.seed, sample.account_rows);
    let nothing = accounts
        .iter()
        .filter(|a| a.kind == AccountKind::Nothing)
        .count() as u64;
    let name_only = accounts
        .iter()
        .filter(|a| a.kind == AccountKind::ByNameOnly)
        .count() as u64;

    // The dry run: the rows by what would happen, sending nothing, with no key.
    let dry = dir.path().join("dry.json");
    let run = prospeo(
        args(&[
            "enrich",
            "--companies",
            &path_arg(&accounts_path),
            "--dry-run",
            "--summary-json",
            &path_arg(&dry),
        ]),
        vec![],
    )
    .await;
    assert!(run.status.success(), "{}", stderr(&run));
    let dry: Value = serde_json::from_slice(&std::fs::read(&dry).unwrap()).unwrap();
    assert_eq!(dry["rows"], accounts.len() as u64);
    assert_eq!(dry["invalid_datapoints"], nothing);
    assert_eq!(dry["name_only"], name_only);
    assert_eq!(
        dry["worst_case_credits"], dry["records_to_send"],
        "one credit a company at most"
    );
    assert!(
        stderr(&run).contains("company_name <- \"Name\""),
        "{}",
        stderr(&run)
    );

    // The run, then a second one from the cache.
    let cache = dir.path().join("cache.redb");
    let output = dir.path().join("enriched.parquet");
    let summary_path = dir.path().join("summary.json");
    let run_once = || {
        prospeo(
            args(&[
                "enrich",
                "--companies",
                &path_arg(&accounts_path),
                "-o",
                &path_arg(&output),
                "--sandbox",
                "--cache",
                &path_arg(&cache),
                "--summary-json",
                &path_arg(&summary_path),
            ]),
            vec![],
        )
    };
    let run = run_once().await;
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("name only (weak)"),
        "{}",
        stderr(&run)
    );
    let batches = read_parquet(&output);
    let schema = batches[0].schema();
    assert!(
        !schema
            .fields()
            .iter()
            .any(|f| f.name().starts_with("prospeo_person_")),
        "{schema:?}"
    );
    let ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            b.column_by_name("Record ID")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(
        ids,
        accounts.iter().map(|a| a.record_id).collect::<Vec<_>>(),
        "every row once, in order"
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    let statuses = strings(&batches, "prospeo_status");
    assert_eq!(
        summary["invalid_datapoints"],
        statuses
            .iter()
            .filter(|s| *s == "invalid_datapoints")
            .count() as u64
    );
    assert_eq!(summary["invalid_datapoints"], nothing);
    assert_eq!(summary["name_only"], name_only);
    assert_eq!(summary["records_sent"], dry["records_to_send"]);
    let run = run_once().await;
    assert!(run.status.success(), "{}", stderr(&run));
    let again: Value = serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    assert_eq!(again["records_sent"], 0, "{again}");
    assert_eq!(strings(&read_parquet(&output), "prospeo_status"), statuses);

    // Person flags do not apply to companies: refused before anything starts.
    let run = prospeo(
        args(&[
            "enrich",
            "--companies",
            &path_arg(&accounts_path),
            "-o",
            &path_arg(&dir.path().join("never.csv")),
            "--sandbox",
            "--enrich-mobile",
        ]),
        vec![],
    )
    .await;
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("/bulk-enrich-company takes none"),
        "{}",
        stderr(&run)
    );
    assert!(!dir.path().join("never.csv").exists());
}
