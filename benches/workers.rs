//! Many workers on one key: N `prospeo enrich` processes, each with a lead file of its own, on
//! ONE API key against an in-process sandbox with the real Pro limits (30/s, 1,800/min,
//! 500,000/day) and 100 ms latency; once with a coordinator (a private PostgreSQL server this
//! bench starts, `prospeo coordinator init`, then every worker with `--coordinator`), once
//! without (each worker paces alone, with a response cache file of its own). Each scenario gets
//! a fresh sandbox, so neither its quota windows nor its counts carry over.
//!
//! For each scenario it prints:
//!
//! - the records the key accepted a minute, summed over the workers (the sandbox counts per key,
//!   so this is its `records`), ÷ 1,800 — the goal is ≥ 0.95;
//! - the 429s the sandbox sent (`rate_limited`);
//! - the records asked again (`asked_again`: records whose datapoints the key had already had
//!   answered, whatever their identifier — persons sent twice);
//! - the wall time from the first worker's start to the last one's exit, and the exit codes.
//!
//! # How the rate is measured
//!
//! The sandbox's minute is rolling: the first minute's 1,800 records may all go out in its
//! first seconds, so a rate over an arbitrary stretch of time can overstate (a burst at the
//! start or the end) or understate (the start-up) what the key sustains. The bench therefore
//! counts whole rolling minutes: it polls the sandbox's stats every few milliseconds until the
//! first record is accepted (t₀), then counts the records accepted from t₀ (that first
//! request's included) to t₀ + k minutes, k = ⌊S / 60⌋, sampled a few milliseconds early so a
//! request admitted exactly when the first one's records leave the window is never counted. No
//! client can be accepted more than 1,800 × k records in that window, and a perfect one is
//! accepted exactly that, so the ratio is records ÷ (1,800 × k). The workers get SIGINT at
//! the end of the window (S is rounded down to whole minutes; the start-up before t₀ comes on
//! top). With S < 60 there is no whole minute: the ratio is then records from t₀ to S ÷ the
//! elapsed minutes ÷ 1,800, which the first minute's burst can push above 1 (indicative only).
//! The 429 and `asked_again` counts cover the whole run, stopping included.
//!
//! # Inputs
//!
//! A generated directory of people the size of all the distinct rows, and per worker a CSV of
//! generated leads over it (the sample data's mix: about 74% matchable people by every route,
//! 10% unknown people, 8% below the minimum, 8% duplicates written otherwise). 30% of every
//! worker's rows are one shared set of leads, at the same places and in the same order in every
//! file (every row i with 3i mod 10 < 3), so workers reach a shared row at about the same time
//! (claims) or after another worker has been answered (shared answers). Each file holds 1.5 ×
//! what the key can take in the run (1,800 × (⌊S / 60⌋ + 1): a rolling minute's allotment may go
//! out at once), × 4 / N above four workers (6 × a worker's fair share): no worker finishes
//! before the end (a worker that exits early is reported, and the rate is then suspect).
//!
//! # Stopping
//!
//! Every worker gets SIGINT; each is waited for up to 30 s, then killed with SIGKILL. A guard
//! kills every child process left on any path (a panic included); the PostgreSQL server stops
//! when its handle drops. Everything listens on and talks to 127.0.0.1 only.
//!
//! With `PROSPEO_BENCH_KEEP` set, the inputs and the workers' logs, outputs and summaries stay
//! in the folder it names on its first line.
//!
//! Run: `cargo bench --bench workers -- N [SECONDS]` (N defaults to 4, SECONDS to 180), e.g.
//! `cargo bench --bench workers -- 4 180`. Without PostgreSQL's binaries (see
//! `tests/integration/postgres.rs`), or with a `prospeo enrich` that has no `--coordinator`, only
//! the scenario without a coordinator runs.

#[path = "../tests/integration/postgres.rs"]
#[allow(dead_code)]
mod postgres;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::csv::WriterBuilder;
use datafusion_prospeo::api::{Plan, RateLimits};
use datafusion_prospeo::sandbox::generator::{
    GeneratorConfig, Lead, generate_directory, generate_leads, leads_batch,
};
use datafusion_prospeo::sandbox::{
    DEMO_KEY, Directory, Faults, KeyStats, Sandbox, SandboxConfig, SandboxKey,
};

use postgres::TestPostgres;

/// The sandbox key's label.
const LABEL: &str = "bench";
/// The sandbox's latency on every request.
const LATENCY: Duration = Duration::from_millis(100);
/// How long a worker may take to exit after SIGINT before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// How long `prospeo coordinator init` may take.
const INIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the stats are read while waiting for the first accepted record.
const FIRST_POLL: Duration = Duration::from_millis(5);
/// How much earlier than t₀ + k minutes the last sample is taken (see the module doc).
const WINDOW_MARGIN: Duration = Duration::from_millis(20);

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with('-'));
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4).max(1);
    let seconds: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(180)
        .max(1);
    let limits = Plan::Pro.limits();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let work = tempfile::tempdir().expect("a temporary folder");
    // The inputs, the workers' logs, outputs and summaries, kept on request.
    let work = if std::env::var_os("PROSPEO_BENCH_KEEP").is_some() {
        let kept = work.keep();
        println!("keeping the inputs, logs and outputs in {}", kept.display());
        Work::Kept(kept)
    } else {
        Work::Temporary(work)
    };

    // Inputs: 1.5 × what the key can take in the run (a rolling minute may go out at once:
    // one minute more), × 4 / N above four workers.
    let budget = limits.per_minute * (seconds / 60 + 1);
    let scale = (4.0 / workers as f64).min(1.0);
    let rows = ((1.5 * budget as f64 * scale).ceil() as usize).max(100);
    let shared_rows = (0..rows).filter(|&i| is_shared(i)).count();
    let distinct = shared_rows + workers * (rows - shared_rows);
    let directory = Arc::new(generate_directory(&GeneratorConfig {
        seed: 7,
        companies: (distinct / 20).max(40),
        people: distinct,
    }));
    let inputs = write_inputs(work.path(), &directory, workers, rows);

    println!(
        "workers: {workers} `prospeo enrich` processes on one Pro key ({}/s, {}/min, {}/day), \
         sandbox latency {} ms, {seconds} s; {rows} rows a worker ({shared_rows} shared), \
         {} people in the directory",
        limits.per_second,
        limits.per_minute,
        limits.per_day,
        LATENCY.as_millis(),
        directory.len(),
    );

    let mut results = Vec::new();
    match coordinator_unavailable() {
        Some(why) => println!("coordinator scenario skipped: {why}"),
        None => match TestPostgres::start() {
            None => println!("coordinator scenario skipped: no PostgreSQL server binaries"),
            Some(pg) => {
                let coordinator = Coordinator {
                    url: pg.url(),
                    password: pg.password().to_string(),
                };
                coordinator.init(work.path());
                let scenario = Scenario {
                    name: "coordinator",
                    coordinator: Some(&coordinator),
                };
                results.push(scenario.run(&runtime, &directory, &inputs, work.path(), seconds));
                drop(pg);
            }
        },
    }
    let scenario = Scenario {
        name: "no coordinator",
        coordinator: None,
    };
    results.push(scenario.run(&runtime, &directory, &inputs, work.path(), seconds));

    println!();
    println!(
        "{:<15} {:>10} {:>8} {:>7} {:>7} {:>11} {:>9} {:>8}  exits",
        "scenario", "window", "acc/min", "÷1800", "429s", "asked again", "submitted", "wall"
    );
    for r in &results {
        println!(
            "{:<15} {:>10} {:>8.0} {:>7.3} {:>7} {:>11} {:>9} {:>6.1} s  {}",
            r.name,
            r.window_label(),
            r.per_minute,
            r.per_minute / limits.per_minute as f64,
            r.stats.rate_limited,
            r.stats.asked_again,
            r.stats.records_submitted,
            r.wall.as_secs_f64(),
            r.exits.join(","),
        );
        if !r.early.is_empty() {
            println!(
                "  {}: worker(s) {:?} exited before the end: the rate understates the key",
                r.name, r.early
            );
        }
    }
    println!("goal: accepted records ≥ 0.95 × {}/min", limits.per_minute);
}

/// The bench's folder: removed at the end unless kept.
enum Work {
    Temporary(tempfile::TempDir),
    Kept(PathBuf),
}

impl Work {
    fn path(&self) -> &Path {
        match self {
            Work::Temporary(dir) => dir.path(),
            Work::Kept(path) => path,
        }
    }
}

/// Whether row `i` of every worker's file is one of the shared rows (3 rows in 10, spread).
fn is_shared(i: usize) -> bool {
    (i * 3) % 10 < 3
}

/// Writes one CSV of `rows` leads per worker, the shared rows at the same places in each.
fn write_inputs(dir: &Path, directory: &Directory, workers: usize, rows: usize) -> Vec<PathBuf> {
    let shared_count = (0..rows).filter(|&i| is_shared(i)).count();
    let shared = generate_leads(directory, 1_000, shared_count);
    (0..workers)
        .map(|w| {
            let mut own =
                generate_leads(directory, 2_000 + w as u64, rows - shared_count).into_iter();
            let mut common = shared.iter().cloned();
            let leads: Vec<Lead> = (0..rows)
                .map(|i| {
                    let mut lead = if is_shared(i) {
                        common.next()
                    } else {
                        own.next()
                    }
                    .expect("as many leads as rows");
                    lead.lead_id = i as i64 + 1;
                    lead
                })
                .collect();
            let path = dir.join(format!("leads-w{w}.csv"));
            let file = File::create(&path).expect("the lead file");
            let mut writer = WriterBuilder::new().with_header(true).build(file);
            writer
                .write(&leads_batch(&leads))
                .expect("the leads are written");
            path
        })
        .collect()
}

/// Why the coordinator scenario cannot run with this binary, if it cannot.
fn coordinator_unavailable() -> Option<String> {
    let help = Command::new(env!("CARGO_BIN_EXE_prospeo"))
        .args(["enrich", "--help"])
        .output()
        .expect("the prospeo binary runs");
    let text = String::from_utf8_lossy(&help.stdout);
    (!text.contains("--coordinator"))
        .then(|| "`prospeo enrich` has no --coordinator option in this build".to_string())
}

/// The PostgreSQL coordinator the workers share.
struct Coordinator {
    url: String,
    password: String,
}

impl Coordinator {
    /// The environment that gives a command the password, and nothing else of the user's.
    fn env(&self, command: &mut Command) {
        command
            .env("PGPASSWORD", &self.password)
            .env("PGPASSFILE", "/nonexistent");
    }

    /// `prospeo coordinator init`, bounded.
    fn init(&self, dir: &Path) {
        let log = dir.join("coordinator-init.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_prospeo"));
        command
            .args(["coordinator", "init", "--coordinator", &self.url])
            .env_remove("PROSPEO_COORDINATOR")
            .stdin(Stdio::null());
        log_to(&mut command, &log);
        self.env(&mut command);
        let mut children = Children::default();
        children.spawn(command);
        let status = children.wait_all(INIT_TIMEOUT)[0];
        assert!(
            status.is_some_and(|s| s.success()),
            "prospeo coordinator init failed ({status:?}):\n{}",
            tail(&log)
        );
    }
}

/// One way of running the workers.
struct Scenario<'a> {
    name: &'static str,
    coordinator: Option<&'a Coordinator>,
}

/// What one scenario measured.
struct Outcome {
    name: &'static str,
    /// Accepted records a minute over the measured window.
    per_minute: f64,
    /// Whole minutes measured, or the seconds of a shorter window.
    window: Window,
    /// The key's stats once every worker has exited.
    stats: KeyStats,
    wall: Duration,
    /// Each worker's exit code (or how it ended).
    exits: Vec<String>,
    /// Workers that exited before they were told to stop.
    early: Vec<usize>,
}

enum Window {
    Minutes(u64),
    Seconds(f64),
    /// Nothing was accepted.
    None,
}

impl Outcome {
    fn window_label(&self) -> String {
        match self.window {
            Window::Minutes(k) => format!("{k} min"),
            Window::Seconds(s) => format!("{s:.1} s*"),
            Window::None => "none".into(),
        }
    }
}

impl Scenario<'_> {
    fn run(
        &self,
        runtime: &tokio::runtime::Runtime,
        directory: &Arc<Directory>,
        inputs: &[PathBuf],
        dir: &Path,
        seconds: u64,
    ) -> Outcome {
        let limits: RateLimits = Plan::Pro.limits();
        let mut config = SandboxConfig::new(directory.clone());
        config.keys =
            vec![SandboxKey::new(LABEL, DEMO_KEY, i64::MAX / 4, Plan::Pro).with_limits(limits)];
        config.faults = Faults {
            latency: LATENCY,
            ..Faults::default()
        };
        let sandbox = runtime
            .block_on(Sandbox::start(config))
            .expect("the sandbox starts");
        let tag = self.name.replace(' ', "-");
        println!(
            "{}: {} workers against {}",
            self.name,
            inputs.len(),
            sandbox.base_url()
        );

        let mut children = Children::default();
        let started = Instant::now();
        let logs: Vec<PathBuf> = inputs
            .iter()
            .enumerate()
            .map(|(w, input)| {
                let log = dir.join(format!("{tag}-w{w}.log"));
                children.spawn(self.worker(&sandbox, input, dir, &tag, w, &log));
                log
            })
            .collect();
        let deadline = started + Duration::from_secs(seconds);
        let mut early = Vec::new();

        // t₀: the first accepted record.
        let mut first = None;
        while Instant::now() < deadline {
            if sandbox.stats().key(LABEL).records > 0 {
                first = Some(Instant::now());
                break;
            }
            children.note_exits(&mut early);
            std::thread::sleep(FIRST_POLL);
        }
        let (window, end) = match first {
            None => (Window::None, deadline),
            Some(t0) => {
                let minutes = seconds / 60;
                if minutes > 0 {
                    (
                        Window::Minutes(minutes),
                        t0 + Duration::from_secs(60 * minutes) - WINDOW_MARGIN,
                    )
                } else {
                    (Window::Seconds(0.0), deadline)
                }
            }
        };
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            children.note_exits(&mut early);
            std::thread::sleep(left.min(Duration::from_millis(500)));
        }
        let accepted = sandbox.stats().key(LABEL).records;
        let (per_minute, window) = match (window, first) {
            (Window::Minutes(k), _) => (accepted as f64 / k as f64, Window::Minutes(k)),
            (Window::Seconds(_), Some(t0)) => {
                let elapsed = t0.elapsed().as_secs_f64();
                (accepted as f64 * 60.0 / elapsed, Window::Seconds(elapsed))
            }
            _ => (0.0, Window::None),
        };
        children.note_exits(&mut early);

        children.interrupt();
        let statuses = children.wait_all(STOP_GRACE);
        let wall = started.elapsed();
        let exits: Vec<String> = statuses
            .iter()
            .zip(&logs)
            .enumerate()
            .map(|(w, (status, log))| {
                let label = match status {
                    Some(s) => match s.code() {
                        Some(code) => code.to_string(),
                        None => "signal".into(),
                    },
                    None => "killed".into(),
                };
                // 0: done, 3: rows deferred, 130: interrupted. A scenario that got nothing
                // accepted shows why.
                if first.is_none() || !matches!(label.as_str(), "0" | "3" | "130") {
                    eprintln!("{}: worker {w} ended {label}:\n{}", self.name, tail(log));
                }
                label
            })
            .collect();
        let stats = sandbox.stats().key(LABEL);
        runtime.block_on(sandbox.stop()).expect("the sandbox stops");
        Outcome {
            name: self.name,
            per_minute,
            window,
            stats,
            wall,
            exits,
            early,
        }
    }

    /// The command of worker `w`.
    fn worker(
        &self,
        sandbox: &Sandbox,
        input: &Path,
        dir: &Path,
        tag: &str,
        w: usize,
        log: &Path,
    ) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_prospeo"));
        command
            .arg("enrich")
            .arg(input)
            .arg("-o")
            .arg(dir.join(format!("{tag}-w{w}.parquet")))
            .arg("--summary-json")
            .arg(dir.join(format!("{tag}-w{w}.json")))
            // A cache file of its own, fresh for the scenario: no answer comes from elsewhere.
            .arg("--cache")
            .arg(dir.join(format!("{tag}-w{w}.redb")))
            .args(["--plan", "pro", "--base-url", &sandbox.base_url()])
            .args(["--yes", "--quiet"])
            .env("PROSPEO_API_KEY", DEMO_KEY)
            .env_remove("PROSPEO_API_KEY_FILE")
            .env_remove("PROSPEO_BASE_URL")
            .env_remove("PROSPEO_CACHE")
            .env_remove("PROSPEO_COORDINATOR")
            .env_remove("PGPASSWORD")
            .stdin(Stdio::null());
        log_to(&mut command, log);
        if let Some(coordinator) = self.coordinator {
            command.args(["--coordinator", &coordinator.url]);
            coordinator.env(&mut command);
        }
        command
    }
}

/// Child processes, killed (SIGKILL) and reaped on drop when still running: on every path,
/// a panic included.
#[derive(Default)]
struct Children {
    children: Vec<Child>,
    /// How each ended, once it has.
    ended: Vec<Option<ExitStatus>>,
}

impl Children {
    fn spawn(&mut self, mut command: Command) {
        let child = command.spawn().expect("the prospeo binary starts");
        self.children.push(child);
        self.ended.push(None);
    }

    /// Records children that have exited; adds the ones not told to stop to `early`.
    fn note_exits(&mut self, early: &mut Vec<usize>) {
        for (i, child) in self.children.iter_mut().enumerate() {
            if self.ended[i].is_none()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.ended[i] = Some(status);
                early.push(i);
            }
        }
    }

    /// SIGINT to every child still running (Ctrl-C: stop sending, write what is settled).
    fn interrupt(&mut self) {
        for (i, child) in self.children.iter_mut().enumerate() {
            if self.ended[i].is_none() && matches!(child.try_wait(), Ok(None)) {
                // SAFETY: kill(2) on the pid of our own child, not yet reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            }
        }
    }

    /// Waits up to `grace` for every child, then kills the rest; how each ended (`None`:
    /// killed after the grace).
    fn wait_all(&mut self, grace: Duration) -> Vec<Option<ExitStatus>> {
        let deadline = Instant::now() + grace;
        loop {
            let mut running = false;
            for (i, child) in self.children.iter_mut().enumerate() {
                if self.ended[i].is_none() {
                    match child.try_wait() {
                        Ok(Some(status)) => self.ended[i] = Some(status),
                        _ => running = true,
                    }
                }
            }
            if !running || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let statuses = self.ended.clone();
        self.kill_all();
        statuses
    }

    fn kill_all(&mut self) {
        for (i, child) in self.children.iter_mut().enumerate() {
            if self.ended[i].is_none() {
                let _ = child.kill();
                if let Ok(status) = child.wait() {
                    self.ended[i] = Some(status);
                }
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Sends a command's standard output and error to one log file.
fn log_to(command: &mut Command, log: &Path) {
    let file = File::create(log).expect("a log file");
    let again = file.try_clone().expect("a second handle on the log file");
    command.stdout(file).stderr(again);
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
