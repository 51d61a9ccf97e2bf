//! End to end through the binary, against an unthrottled sandbox on 127.0.0.1:
//!
//! - the client's CPU time (user + system, of the `prospeo enrich` process alone: the sandbox
//!   runs in this process) per answered record, at the margin between a small and a large input
//!   of distinct people, with the response cache on;
//! - a re-run of the large input served entirely from the cache, in rows a second (wall time
//!   of the whole command: start, read, cache lookups, flatten, write).
//!
//! Run: `cargo bench --bench end_to_end` (optional arguments: the small and the large row
//! counts, `cargo bench --bench end_to_end -- 20000 100000`). `PROSPEO_BENCH_BIN=path` measures
//! another build of `prospeo` (an earlier version) on the same data.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::parquet::arrow::ArrowWriter;
use datafusion_prospeo::api::{Plan, RateLimits};
use datafusion_prospeo::sandbox::generator::{
    GeneratorConfig, generate_directory, generate_leads, leads_batch,
};
use datafusion_prospeo::sandbox::{DEMO_KEY, Directory, Sandbox, SandboxConfig, SandboxKey};

/// Far above anything a run here reaches: the client is measured, not the pacing.
const UNTHROTTLED: u64 = 1_000_000_000;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let small: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let large: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let directory = Arc::new(generate_directory(&GeneratorConfig {
        seed: 7,
        companies: (large / 20).max(40),
        people: large,
    }));
    let limits = RateLimits::new(UNTHROTTLED, UNTHROTTLED, UNTHROTTLED);
    let mut config = SandboxConfig::new(directory.clone());
    config.keys =
        vec![SandboxKey::new("bench", DEMO_KEY, i64::MAX / 4, Plan::Pro).with_limits(limits)];
    let sandbox = runtime
        .block_on(Sandbox::start(config))
        .expect("the sandbox starts");
    let work = tempfile::tempdir().expect("a temporary folder");

    println!(
        "end to end through `prospeo enrich`, cache on, sandbox at {}",
        sandbox.base_url()
    );
    println!(
        "{:>8} {:>10} {:>12} {:>10} {:>14}",
        "rows", "answered", "client CPU", "wall", "re-run rows/s"
    );
    let mut runs = Vec::new();
    for rows in [small, large] {
        let input = write_leads(work.path(), &directory, rows);
        let cache = work.path().join(format!("cache-{rows}.redb"));
        let first = enrich(&sandbox, &input, &cache, work.path());
        let again = enrich(&sandbox, &input, &cache, work.path());
        assert_eq!(again.records_sent, 0, "the re-run is served from the cache");
        let rerun_rate = rows as f64 / again.wall.as_secs_f64();
        println!(
            "{:>8} {:>10} {:>10.2} s {:>8.2} s {:>14.0}",
            rows,
            first.records_sent,
            first.cpu.as_secs_f64(),
            first.wall.as_secs_f64(),
            rerun_rate
        );
        runs.push((first, rerun_rate));
    }
    let (small_run, _) = &runs[0];
    let (large_run, large_rerun) = &runs[1];
    let margin = (large_run.cpu.as_secs_f64() - small_run.cpu.as_secs_f64())
        / (large_run.records_sent - small_run.records_sent).max(1) as f64;
    println!(
        "client CPU per answered record at the margin: {:.1} µs (goal ≤ 40)",
        margin * 1e6
    );
    println!("re-run from the cache: {large_rerun:.0} rows/s (goal ≥ 50,000)");
    runtime.block_on(sandbox.stop()).expect("the sandbox stops");
}

/// Writes `rows` lead rows over the directory as Parquet.
fn write_leads(dir: &Path, directory: &Directory, rows: usize) -> PathBuf {
    let path = dir.join(format!("leads-{rows}.parquet"));
    let batch = leads_batch(&generate_leads(directory, 11, rows));
    let file = std::fs::File::create(&path).expect("the lead file");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("a Parquet writer");
    writer.write(&batch).expect("the leads are written");
    writer.close().expect("the lead file is complete");
    path
}

/// The binary measured: this build's, or `PROSPEO_BENCH_BIN` (another version's, to measure
/// side by side on the same machine and data).
fn binary() -> PathBuf {
    std::env::var_os("PROSPEO_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_prospeo")))
}

/// What one run of the binary cost.
struct Run {
    cpu: Duration,
    wall: Duration,
    records_sent: u64,
}

/// Runs `prospeo enrich` once and measures that process alone.
fn enrich(sandbox: &Sandbox, input: &Path, cache: &Path, dir: &Path) -> Run {
    let output = dir.join("out.parquet");
    let summary = dir.join("summary.json");
    let unthrottled = UNTHROTTLED.to_string();
    let started = Instant::now();
    // Waited for by `wait_with_usage` (wait4), which also reads the child's own CPU and memory.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(binary())
        .arg("enrich")
        .arg(input)
        .arg("-o")
        .arg(&output)
        .arg("--cache")
        .arg(cache)
        .arg("--summary-json")
        .arg(&summary)
        .args(["--base-url", &sandbox.base_url(), "--yes", "--quiet"])
        .args(["--per-second", &unthrottled, "--per-minute", &unthrottled])
        .args(["--per-day", &unthrottled, "--concurrency", "8"])
        .env("PROSPEO_API_KEY", DEMO_KEY)
        .env_remove("PROSPEO_CACHE")
        .spawn()
        .expect("the binary starts");
    let (status, usage) = wait_with_usage(child.id());
    let wall = started.elapsed();
    assert_eq!(status, 0, "prospeo enrich exits 0");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("the summary")).expect("JSON");
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Run {
        cpu: time(usage.ru_utime) + time(usage.ru_stime),
        wall,
        records_sent: summary["records_sent"].as_u64().expect("records_sent"),
    }
}

/// Waits for the child `pid` and returns its exit code and resource usage (its own, not the
/// bench's; its peak memory is not reported: it counts the memory the child shared with this
/// process until `exec`, see `benches/memory.rs`).
fn wait_with_usage(pid: u32) -> (i32, libc::rusage) {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet waited for; the pointers are valid for the call.
    let waited = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid as libc::pid_t, "wait4 on the child");
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    (code, usage)
}
