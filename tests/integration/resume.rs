//! Never paying twice: in-job de-duplication, the response cache across runs, and resuming a
//! job stopped by SIGKILL or the daily quota — checked through the sandbox's own counts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::Int64Type;
use datafusion_prospeo::api::{Plan, RateLimits};
use datafusion_prospeo::sandbox::generator::{GeneratorConfig, generate_directory};
use datafusion_prospeo::sandbox::{Sandbox, SandboxConfig, SandboxKey};
use serde_json::Value;

use crate::cli::{
    KEY, args, ids_and_statuses, key_env, path_arg, prospeo_with, read_parquet,
    run_until_signalled, sample_leads, sandbox_with_credits, slow_job, stderr, strings,
    write_parquet,
};

/// `key_env` plus a response cache at `cache`.
fn env_with_cache(sandbox: &Sandbox, cache: &Path) -> Vec<(String, String)> {
    let mut env = key_env(sandbox);
    env.push(("PROSPEO_CACHE".into(), path_arg(cache)));
    env
}

/// Runs `prospeo enrich INPUT -o OUTPUT --summary-json ...` and returns (exit code, summary).
async fn enrich(
    input: &Path,
    output: &Path,
    env: Vec<(String, String)>,
    extra: &[&str],
) -> (Option<i32>, Value) {
    let summary = output.with_extension("summary.json");
    let mut command = args(&[
        "enrich",
        &path_arg(input),
        "-o",
        &path_arg(output),
        "--summary-json",
        &path_arg(&summary),
    ]);
    command.extend(args(extra));
    let run = prospeo_with(command, env).await;
    let json = std::fs::read(&summary)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no summary: {}", stderr(&run)));
    (run.status.code(), json)
}

/// The parts a job here runs with: a sandbox, a folder, a response cache and an output in it.
struct Job {
    sandbox: Sandbox,
    dir: tempfile::TempDir,
    cache: PathBuf,
    output: PathBuf,
}

impl Job {
    fn new(sandbox: Sandbox) -> Job {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache.redb");
        let output = dir.path().join("out.parquet");
        Job {
            sandbox,
            dir,
            cache,
            output,
        }
    }

    /// A job against a sandbox key with plenty of credits.
    async fn with_credits() -> Job {
        Job::new(sandbox_with_credits(100_000).await)
    }

    fn env(&self) -> Vec<(String, String)> {
        env_with_cache(&self.sandbox, &self.cache)
    }

    /// `prospeo enrich INPUT -o <output>` with the job's cache: (exit code, summary).
    async fn run(&self, input: &Path, extra: &[&str]) -> (Option<i32>, Value) {
        enrich(input, &self.output, self.env(), extra).await
    }

    /// Records the sandbox has answered so far.
    fn records(&self) -> u64 {
        self.sandbox.stats().key("cli").records
    }
}

/// The sample leads, each row three times (rows 0..n, then again, then again).
fn tripled_leads(dir: &Path) -> PathBuf {
    let batches = read_parquet(&sample_leads().with_extension("parquet"));
    let batch = concat_batches(&batches[0].schema(), &batches).unwrap();
    let tripled = concat_batches(&batch.schema(), &[batch.clone(), batch.clone(), batch]).unwrap();
    let path = dir.join("tripled.parquet");
    write_parquet(&path, &tripled);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_sent_once_and_a_second_run_sends_nothing() {
    let job = Job::with_credits().await;
    let input = tripled_leads(job.dir.path());

    let first = job.dir.path().join("first.parquet");
    let (code, summary) = enrich(&input, &first, job.env(), &[]).await;
    assert_eq!(code, Some(0), "{summary}");
    let stats = job.sandbox.stats().key("cli");
    let rows = ids_and_statuses(&read_parquet(&first));
    assert_eq!(rows.len(), 360);
    // Each distinct valid person is sent once: the sample has 112 valid rows, one of them a
    // duplicate of another, so 111 distinct.
    assert_eq!(stats.records, 111, "{stats:?}");
    assert_eq!(summary["records_sent"], 111);
    assert_eq!(summary["duplicates"].as_u64(), Some(360 - 24 - 111));
    assert_eq!(summary["credits"].as_i64(), Some(stats.credits_charged));
    // The cost is on the first row of each person; the others cost 0.
    let batches = read_parquet(&first);
    let costs: i64 = batches
        .iter()
        .map(|b| {
            let c = b
                .column_by_name("prospeo_cost")
                .unwrap()
                .as_primitive::<Int64Type>();
            c.iter().flatten().sum::<i64>()
        })
        .sum();
    assert_eq!(costs, stats.credits_charged);
    assert_eq!(
        rows[..120],
        rows[120..240],
        "every copy of a row gets the same result"
    );

    // The same job again: everything comes from the cache.
    let second = job.dir.path().join("second.parquet");
    let (code, summary) = enrich(&input, &second, job.env(), &[]).await;
    assert_eq!(code, Some(0), "{summary}");
    let after = job.sandbox.stats().key("cli");
    assert_eq!(after.records, stats.records, "the second run sends nothing");
    assert_eq!(after.credits_charged, stats.credits_charged);
    assert_eq!(summary["records_sent"], 0);
    assert_eq!(summary["credits"], 0);
    assert_eq!(summary["cached"], 111);
    assert_eq!(ids_and_statuses(&read_parquet(&second)), rows);
    assert_eq!(
        strings(&read_parquet(&second), "prospeo_person_email_email"),
        strings(&read_parquet(&first), "prospeo_person_email_email")
    );

    // The cache file holds personal data: readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&job.cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "cache mode {mode:o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mobile_upgrade_asks_again_only_for_matches_without_a_revealed_mobile() {
    let job = Job::with_credits().await;
    let (_, first) = job.run(&sample_leads(), &[]).await;
    let sent = job.records();
    let (code, upgrade) = job.run(&sample_leads(), &["--enrich-mobile"]).await;
    assert_eq!(code, Some(0), "{upgrade}");
    let resent = job.records() - sent;
    // Matches are asked again (the vendor charges the upgrade); people nobody matched are not.
    let cached = upgrade["cached"].as_u64().unwrap();
    assert_eq!(
        resent + cached,
        first["records_sent"].as_u64().unwrap(),
        "{upgrade}"
    );
    assert!(resent > 0 && cached > 0, "{upgrade}");
    assert!(
        cached <= first["not_matched"].as_u64().unwrap(),
        "{upgrade}"
    );
    let revealed = read_parquet(&job.output).iter().any(|b| {
        b.column_by_name("prospeo_person_mobile_revealed")
            .unwrap()
            .as_boolean()
            .iter()
            .any(|v| v == Some(true))
    });
    assert!(revealed, "the upgrade revealed mobiles");
    // Once revealed, the mobile is cached too.
    let before = job.records();
    let (_, again) = job.run(&sample_leads(), &["--enrich-mobile"]).await;
    assert_eq!(job.records(), before, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_asks_again_and_no_cache_keeps_nothing() {
    let job = Job::with_credits().await;
    job.run(&sample_leads(), &[]).await;
    let sent = job.records();
    // Entries older than zero seconds: all of them.
    let (code, summary) = job.run(&sample_leads(), &["--cache-ttl", "0s"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(job.records(), 2 * sent, "{summary}");

    let elsewhere = job.dir.path().join("other.redb");
    let before = job.records();
    for _ in 0..2 {
        let (code, summary) = enrich(
            &sample_leads(),
            &job.output,
            env_with_cache(&job.sandbox, &elsewhere),
            &["--no-cache"],
        )
        .await;
        assert_eq!(code, Some(0));
        assert_eq!(
            summary["duplicates"], 1,
            "in-job de-duplication still works"
        );
    }
    assert_eq!(job.records(), before + 2 * sent);
    assert!(!elsewhere.exists(), "--no-cache writes no cache file");
}

/// Output columns that depend on when a row was paid for, not on the person.
const PAYMENT_COLUMNS: [&str; 2] = ["prospeo_cost", "prospeo_free_enrichment"];

fn without_payment_columns(batches: &[RecordBatch]) -> RecordBatch {
    let batch = concat_batches(&batches[0].schema(), batches).unwrap();
    let keep: Vec<usize> = (0..batch.num_columns())
        .filter(|&i| !PAYMENT_COLUMNS.contains(&batch.schema().field(i).name().as_str()))
        .collect();
    batch.project(&keep).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_killed_with_sigkill_resumes_with_only_the_unanswered_records() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, input) = slow_job(600, 150, dir.path()).await;
    let cache = dir.path().join("cache.redb");
    let output = dir.path().join("out.parquet");
    let env = env_with_cache(&sandbox, &cache);
    let job = args(&[
        "enrich",
        &path_arg(&input),
        "-o",
        &path_arg(&output),
        "--concurrency",
        "1",
    ]);
    let killed = run_until_signalled(&job, &env, &sandbox, 150, "KILL").await;
    let status = killed.status;
    assert!(!status.success());
    assert!(!output.exists(), "a killed job leaves no output");
    let at_kill = sandbox.stats().key("cli").records;

    let (code, summary) = enrich(&input, &output, env.clone(), &["--concurrency", "1"]).await;
    assert_eq!(code, Some(0), "{summary}");
    let resent = sandbox.stats().key("cli").records - at_kill;

    // The same job, uninterrupted, on a fresh sandbox and cache.
    let (fresh, _) = slow_job(600, 0, dir.path()).await;
    let reference = dir.path().join("reference.parquet");
    let (code, reference_summary) = enrich(
        &input,
        &reference,
        env_with_cache(&fresh, &dir.path().join("fresh.redb")),
        &[],
    )
    .await;
    assert_eq!(code, Some(0));
    let distinct = fresh.stats().key("cli").records;

    // Everything unanswered was sent; what was answered was not, except at most the one
    // request (50 records) in flight at the kill.
    assert!(
        resent >= distinct - at_kill,
        "resent {resent}, distinct {distinct}, at kill {at_kill}"
    );
    assert!(
        resent <= distinct - at_kill + 50,
        "resent {resent}, distinct {distinct}, at kill {at_kill}"
    );
    assert!(summary["cached"].as_u64().unwrap() + 50 >= at_kill);
    assert_eq!(
        without_payment_columns(&read_parquet(&output)),
        without_payment_columns(&read_parquet(&reference)),
        "the resumed job's output is the uninterrupted job's"
    );
    assert_eq!(summary["rows"], reference_summary["rows"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_stop_completes_after_the_window_resets() {
    let directory = Arc::new(generate_directory(&GeneratorConfig::default()));
    let mut config = SandboxConfig::new(directory);
    config.keys = vec![
        SandboxKey::new("cli", KEY, 100_000, Plan::Pro)
            .with_limits(RateLimits::new(1_000, 10_000, 100)),
    ];
    config.manual_clock = true;
    let job = Job::new(Sandbox::start(config).await.unwrap());

    let (code, first) = job.run(&sample_leads(), &[]).await;
    assert_eq!(code, Some(3), "deferred rows: come back later. {first}");
    assert!(first["deferred"].as_u64().unwrap() > 0);
    assert!(first["quota_returns_at"].is_string(), "{first}");
    let day_one = job.records();
    assert!(day_one <= 100);
    let statuses = strings(&read_parquet(&job.output), "prospeo_status");
    assert!(statuses.iter().any(|s| s == "deferred"));

    // A day later, the same command finishes the job.
    job.sandbox.advance_clock(Duration::from_secs(86_400 + 60));
    let (code, second) = job.run(&sample_leads(), &[]).await;
    assert_eq!(code, Some(0), "{second}");
    assert_eq!(second["deferred"], 0);
    let total = job.records();
    assert_eq!(
        total, 111,
        "each distinct person sent once over the two days"
    );
    assert_eq!(second["records_sent"].as_u64(), Some(total - day_one));
    let statuses = strings(&read_parquet(&job.output), "prospeo_status");
    assert!(!statuses.iter().any(|s| s == "deferred" || s == "failed"));
    assert_eq!(statuses.len(), 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_stats_export_and_clear() {
    let job = Job::with_credits().await;
    let (_, summary) = job.run(&sample_leads(), &[]).await;
    let cache_env = vec![("PROSPEO_CACHE".to_string(), path_arg(&job.cache))];

    let run = prospeo_with(args(&["cache", "stats", "--json"]), cache_env.clone()).await;
    assert!(run.status.success(), "{}", stderr(&run));
    let stats: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(stats["entries"], 111);
    let by_status = ["matched", "not_matched", "invalid_datapoints"]
        .iter()
        .map(|s| stats[*s].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(by_status, 111);
    assert!(stats["matched"].as_u64() <= summary["matched"].as_u64());

    let export = job.dir.path().join("cache.parquet");
    let run = prospeo_with(
        args(&["cache", "export", &path_arg(&export)]),
        cache_env.clone(),
    )
    .await;
    assert!(run.status.success(), "{}", stderr(&run));
    let exported = read_parquet(&export);
    assert_eq!(
        exported.iter().map(RecordBatch::num_rows).sum::<usize>(),
        111
    );
    let emails = strings(&exported, "email");
    assert!(emails.iter().any(|e| e.contains('@')));

    let run = prospeo_with(args(&["cache", "clear"]), cache_env).await;
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(!job.cache.exists(), "clear removes the file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_queries_read_and_fill_the_same_cache() {
    let sandbox = sandbox_with_credits(100_000).await;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("sql.redb");
    let query = format!(
        "SET prospeo.cache_path = '{}'; SELECT count(*) AS matched FROM enrich_person('{}') WHERE prospeo_status = 'matched'",
        path_arg(&cache),
        path_arg(&sample_leads())
    );
    let mut counts = Vec::new();
    for _ in 0..2 {
        let run = prospeo_with(args(&["sql", &query, "--format", "csv"]), key_env(&sandbox)).await;
        assert!(run.status.success(), "{}", stderr(&run));
        counts.push(String::from_utf8_lossy(&run.stdout).into_owned());
    }
    assert_eq!(counts[0], counts[1], "the cache gives the same answers");
    assert_eq!(
        sandbox.stats().key("cli").records,
        111,
        "the second query sent nothing"
    );
    assert!(cache.exists());
}

/// An accounts export of `rows` rows over the default directory, and a sandbox that answers
/// each request after `latency_ms`.
async fn slow_company_job(rows: usize, latency_ms: u64, dir: &Path) -> (Sandbox, PathBuf) {
    use datafusion_prospeo::sandbox::generator::{accounts_batch, generate_accounts};
    let directory = Arc::new(generate_directory(&GeneratorConfig::default()));
    let accounts = generate_accounts(&directory, 11, rows);
    let input = dir.join("accounts.parquet");
    write_parquet(&input, &accounts_batch(&accounts));
    let mut config = SandboxConfig::new(directory);
    config.keys = vec![SandboxKey::new("cli", KEY, 1_000_000, Plan::Pro)];
    config.faults.latency = Duration::from_millis(latency_ms);
    (Sandbox::start(config).await.unwrap(), input)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_company_job_killed_with_sigkill_resumes_and_a_second_run_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (sandbox, input) = slow_company_job(600, 150, dir.path()).await;
    let cache = dir.path().join("cache.redb");
    let output = dir.path().join("out.parquet");
    let env = env_with_cache(&sandbox, &cache);
    let job = args(&[
        "enrich",
        "--companies",
        &path_arg(&input),
        "-o",
        &path_arg(&output),
        "--concurrency",
        "1",
    ]);
    let killed = run_until_signalled(&job, &env, &sandbox, 150, "KILL").await;
    assert!(!killed.status.success());
    assert!(!output.exists(), "a killed job leaves no output");
    let at_kill = sandbox.stats().key("cli").records;
    let charged_at_kill = sandbox.stats().key("cli").credits_charged;

    let resume = ["--companies", "--concurrency", "1"];
    let (code, summary) = enrich(&input, &output, env.clone(), &resume).await;
    assert_eq!(code, Some(0), "{summary}");
    let stats = sandbox.stats().key("cli");
    // The resumed run sent what was never answered, and at most the one request in flight
    // at the kill again; nothing answered was paid twice.
    let (fresh, _) = slow_company_job(600, 0, dir.path()).await;
    let reference = dir.path().join("reference.parquet");
    let (code, reference_summary) = enrich(
        &input,
        &reference,
        env_with_cache(&fresh, &dir.path().join("fresh.redb")),
        &["--companies"],
    )
    .await;
    assert_eq!(code, Some(0));
    let distinct = fresh.stats().key("cli").records;
    let resent = stats.records - at_kill;
    assert!(
        resent >= distinct - at_kill && resent <= distinct - at_kill + 50,
        "resent {resent}, distinct {distinct}, at kill {at_kill}"
    );
    assert_eq!(
        stats.credits_charged,
        fresh.stats().key("cli").credits_charged,
        "each company paid once over both runs (charged {charged_at_kill} before the kill)"
    );
    assert_eq!(
        without_payment_columns(&read_parquet(&output)),
        without_payment_columns(&read_parquet(&reference)),
        "the resumed job's output is the uninterrupted job's"
    );
    assert_eq!(summary["rows"], reference_summary["rows"]);
    // Companies asked by their name alone are counted where they were answered.
    assert!(
        reference_summary["name_only"].as_u64().unwrap() > 0,
        "{reference_summary}"
    );

    // A third run: everything from the cache, nothing sent.
    let (code, again) = enrich(&input, &output, env, &resume).await;
    assert_eq!(code, Some(0), "{again}");
    assert_eq!(again["records_sent"], 0, "{again}");
    assert_eq!(sandbox.stats().key("cli").records, stats.records);
}
