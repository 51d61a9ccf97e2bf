//! Several `prospeo` processes on one API key behaving as one client through a PostgreSQL
//! coordinator (issue 13), end to end: real processes of the binary, a private PostgreSQL
//! server ([`TestPostgres`]) and an in-process sandbox with real (not manual) rate-limit
//! windows, all on 127.0.0.1.
//!
//! What is checked is what the sandbox saw (`rate_limited`: the sum of every worker's records
//! in any window never went over the key's limit; `asked_again`: no person's datapoints were
//! sent twice; `credits_charged`) against what the workers wrote (every input row once, in
//! order, with the status the sandbox's directory gives it, and each person's cost on one row
//! across all outputs).
//!
//! Every child process is owned by a [`Runs`] guard that kills and reaps whatever still runs
//! when it drops (on every path, panics included); every wait and poll is bounded in count and
//! time, and a poll gives up early when a process it depends on has exited.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion_prospeo::api::wire::{Company, JobHistoryEntry, Person, PersonEmail};
use datafusion_prospeo::api::{Plan, RateLimits};
use datafusion_prospeo::sandbox::{Directory, KeyStats, Sandbox, SandboxConfig, SandboxKey};

use crate::cli::{command, ids_and_statuses, read_parquet, strings};
use crate::common::{ALPHA, ALPHA_KEY, start};
use crate::postgres::TestPostgres;

// ---------------------------------------------------------------------------------------------
// The key's limits, scaled down so a job of a few hundred records runs in well under a minute
// ---------------------------------------------------------------------------------------------

const PER_SECOND: u64 = 10;
const PER_MINUTE: u64 = 300;
const PER_DAY: u64 = 100_000;
/// The largest bulk request the vendor takes.
const BULK_MAX: u64 = 50;

/// Longest any one process may run before the test gives up on it (and kills it).
const RUN_LIMIT: Duration = Duration::from_secs(180);
/// Longest a poll of the sandbox waits for something to happen.
const POLL_LIMIT: Duration = Duration::from_secs(60);
/// Between two looks at a process or the sandbox.
const POLL_EVERY: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------------------
// The directory: person `n` exists unless `n % 5 == 4` (a stranger nobody matches)
// ---------------------------------------------------------------------------------------------

/// Person numbers go up to this (exclusive).
const PEOPLE: usize = 3_000;

fn is_stranger(n: usize) -> bool {
    n % 5 == 4
}

fn email_of(n: usize) -> String {
    if is_stranger(n) {
        format!("nobody{n}@nowhere.example")
    } else {
        format!("person{n}@workers{}.example", n % 7)
    }
}

fn person_id_of(n: usize) -> String {
    format!("w-{n}")
}

/// Every person `n` below [`PEOPLE`] that is not a stranger: verified email, no mobile (a match
/// costs 1 credit), working at one company.
fn workers_directory() -> Arc<Directory> {
    let company = Company {
        company_id: Some("c-workers".into()),
        name: Some("Workers Inc".into()),
        domain: Some("workers.example".into()),
        website: Some("https://workers.example".into()),
        linkedin_url: Some("https://www.linkedin.com/company/workers-inc".into()),
        ..Default::default()
    };
    let people = (0..PEOPLE)
        .filter(|&n| !is_stranger(n))
        .map(|n| Person {
            person_id: Some(person_id_of(n)),
            first_name: Some(format!("First{n}")),
            last_name: Some("Worker".into()),
            full_name: Some(format!("First{n} Worker")),
            current_job_title: Some("Engineer".into()),
            email: Some(PersonEmail {
                status: Some("VERIFIED".into()),
                revealed: Some(true),
                email: Some(email_of(n)),
                verification_method: Some("SMTP".into()),
                ..Default::default()
            }),
            job_history: Some(vec![JobHistoryEntry {
                title: Some("Engineer".into()),
                company_name: Some("Workers Inc".into()),
                current: Some(true),
                company_id: Some("c-workers".into()),
                ..Default::default()
            }]),
            ..Default::default()
        })
        .collect();
    Arc::new(Directory::new(vec![company], people).expect("the workers' directory is valid"))
}

/// A sandbox over [`workers_directory`] with one key, `alpha`, at the scaled limits, on the
/// real clock (the windows roll with time: the workers pace themselves in real time), each
/// answer after `latency`.
async fn workers_sandbox(latency: Duration) -> Sandbox {
    let mut config = SandboxConfig::new(workers_directory());
    config.keys = vec![
        SandboxKey::new(ALPHA, ALPHA_KEY, 1_000_000, Plan::Pro)
            .with_limits(RateLimits::new(PER_SECOND, PER_MINUTE, PER_DAY)),
    ];
    config.manual_clock = false;
    config.faults.latency = latency;
    start(config).await
}

fn key_stats(sandbox: &Sandbox) -> KeyStats {
    sandbox.stats().key(ALPHA)
}

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// Who an input row describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Who {
    /// Person `n` by email: matched, or not matched when `n` is a stranger.
    Person(usize),
    /// A full name alone: below the vendor's minimum, never sent.
    Invalid(usize),
}

impl Who {
    fn expected_status(self) -> &'static str {
        match self {
            Who::Person(n) if is_stranger(n) => "not_matched",
            Who::Person(_) => "matched",
            Who::Invalid(_) => "invalid_datapoints",
        }
    }

    fn csv_line(self, lead_id: i64) -> String {
        match self {
            Who::Person(n) => format!("{lead_id},,{}", email_of(n)),
            Who::Invalid(n) => format!("{lead_id},Brandon Stering{n},"),
        }
    }
}

/// An input file: its rows, the first `lead_id` (the others follow in order).
struct Input {
    path: PathBuf,
    rows: Vec<Who>,
    first_id: i64,
}

impl Input {
    /// Writes `rows` as `lead_id,full_name,email` CSV to `dir/name.csv`.
    fn write(dir: &Path, name: &str, rows: Vec<Who>, first_id: i64) -> Input {
        let path = dir.join(format!("{name}.csv"));
        let mut text = String::from("lead_id,full_name,email\n");
        for (i, who) in rows.iter().enumerate() {
            text.push_str(&who.csv_line(first_id + i as i64));
            text.push('\n');
        }
        std::fs::write(&path, text).expect("write an input");
        Input {
            path,
            rows,
            first_id,
        }
    }

    fn lead_ids(&self) -> Vec<i64> {
        (0..self.rows.len() as i64)
            .map(|i| self.first_id + i)
            .collect()
    }

    fn persons(&self) -> BTreeSet<Who> {
        self.rows
            .iter()
            .copied()
            .filter(|w| matches!(w, Who::Person(_)))
            .collect()
    }
}

/// A fixed shuffle (xorshift), so shared persons are spread through each input.
fn shuffle(rows: &mut [Who], seed: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..rows.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        rows.swap(i, (state % (i as u64 + 1)) as usize);
    }
}

/// Persons `from..from + n` (every fifth a stranger).
fn persons(from: usize, n: usize) -> Vec<Who> {
    (from..from + n).map(Who::Person).collect()
}

/// `n` invalid rows numbered from `from`.
fn invalids(from: usize, n: usize) -> Vec<Who> {
    (from..from + n).map(Who::Invalid).collect()
}

/// The persons that appear in more than one of `inputs`, and all distinct persons.
fn overlap(inputs: &[&Input]) -> (BTreeSet<Who>, BTreeSet<Who>) {
    let mut seen: BTreeMap<Who, usize> = BTreeMap::new();
    for input in inputs {
        for who in input.persons() {
            *seen.entry(who).or_default() += 1;
        }
    }
    let shared = seen
        .iter()
        .filter(|&(_, &n)| n > 1)
        .map(|(w, _)| *w)
        .collect();
    (shared, seen.into_keys().collect())
}

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

/// One output row as the checks need it.
#[derive(Debug, Clone)]
struct Got {
    who: Who,
    lead_id: i64,
    status: String,
    error: String,
    cost: i64,
    person_id: String,
}

fn int64s(batches: &[RecordBatch], column: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name(column)
                .unwrap_or_else(|| panic!("no column {column}"))
                .as_primitive::<Int64Type>()
                .clone();
            (0..c.len())
                .map(|i| if c.is_valid(i) { c.value(i) } else { 0 })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Reads `output` (Parquet), asserts it holds exactly `input`'s rows in input order, and pairs
/// each row with who it describes.
#[track_caller]
fn read_output(label: &str, input: &Input, output: &Path) -> Vec<Got> {
    assert!(
        output.exists(),
        "{label}: no output at {}",
        output.display()
    );
    let batches = read_parquet(output);
    let ids: Vec<i64> = ids_and_statuses(&batches)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ids,
        input.lead_ids(),
        "{label}: every input row once, in input order"
    );
    let statuses = strings(&batches, "prospeo_status");
    let errors = strings(&batches, "prospeo_error");
    let person_ids = strings(&batches, "prospeo_person_person_id");
    let costs = int64s(&batches, "prospeo_cost");
    (0..ids.len())
        .map(|i| Got {
            who: input.rows[i],
            lead_id: ids[i],
            status: statuses[i].clone(),
            error: errors[i].clone(),
            cost: costs[i],
            person_id: person_ids[i].clone(),
        })
        .collect()
}

/// Asserts that `row` carries the truth of the directory: its status, and for a match the
/// person it describes; rows that are not matches cost nothing.
#[track_caller]
fn assert_truthful(label: &str, row: &Got) {
    assert_eq!(
        row.status,
        row.who.expected_status(),
        "{label}: row {} ({:?}), error {:?}",
        row.lead_id,
        row.who,
        row.error
    );
    match row.who {
        Who::Person(n) if !is_stranger(n) => assert_eq!(
            row.person_id,
            person_id_of(n),
            "{label}: row {} got another person's answer",
            row.lead_id
        ),
        _ => assert_eq!(row.cost, 0, "{label}: row {} ({:?})", row.lead_id, row.who),
    }
    assert!(
        row.cost == 0 || row.cost == 1,
        "{label}: row {} costs {} (no mobile asked: 1 at most)",
        row.lead_id,
        row.cost
    );
}

/// Asserts every row of `rows` is settled truthfully.
#[track_caller]
fn assert_all_truthful(label: &str, rows: &[Got]) {
    for row in rows {
        assert_truthful(label, row);
    }
}

/// The credits per person over several outputs.
fn cost_by_person<'a>(outputs: impl IntoIterator<Item = &'a [Got]>) -> BTreeMap<Who, i64> {
    let mut costs = BTreeMap::new();
    for rows in outputs {
        for row in rows {
            *costs.entry(row.who).or_default() += row.cost;
        }
    }
    costs
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// How a process ended and what it printed.
#[derive(Debug)]
struct Finished {
    name: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Finished {
    /// How it ended and what it printed (a long stderr by its first and last lines).
    fn both(&self) -> String {
        format!(
            "[{} exit {:?}]\n--- stdout\n{}\n--- stderr\n{}",
            self.name,
            self.code,
            clip(&self.stdout),
            clip(&self.stderr)
        )
    }

    #[track_caller]
    fn assert_code(&self, code: i32) {
        assert_eq!(self.code, Some(code), "{}", self.both());
    }
}

/// `text`, or its first 20 and last 40 lines when it is longer.
fn clip(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= 60 {
        return text.to_string();
    }
    format!(
        "{}\n[... {} lines ...]\n{}",
        lines[..20].join("\n"),
        lines.len() - 60,
        lines[lines.len() - 40..].join("\n")
    )
}

struct Run {
    name: String,
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// Child processes of a test, their output in files; dropping it kills and reaps every one
/// still running.
struct Runs {
    dir: tempfile::TempDir,
    runs: Vec<Run>,
}

impl Runs {
    fn new() -> Runs {
        Runs {
            dir: tempfile::tempdir().expect("a folder for the runs' output"),
            runs: Vec::new(),
        }
    }

    /// Starts `prospeo ARGS` (with [`command`]'s clean environment plus `env`); returns its
    /// index.
    fn spawn(&mut self, name: &str, args: Vec<String>, env: Vec<(String, String)>) -> usize {
        let i = self.runs.len();
        let stdout = self.dir.path().join(format!("{i}-{name}.stdout"));
        let stderr = self.dir.path().join(format!("{i}-{name}.stderr"));
        let child = command(&args, &env)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("a stdout file"))
            .stderr(File::create(&stderr).expect("a stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: the binary does not start: {e}"));
        self.runs.push(Run {
            name: name.to_string(),
            child: Some(child),
            stdout,
            stderr,
        });
        i
    }

    /// Whether run `i` still runs (reaping it when it has ended).
    fn running(&mut self, i: usize) -> bool {
        let run = &mut self.runs[i];
        match run.child.as_mut() {
            None => false,
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                Ok(Some(_)) | Err(_) => false,
            },
        }
    }

    fn output_of(&self, i: usize, code: Option<i32>) -> Finished {
        let run = &self.runs[i];
        Finished {
            name: run.name.clone(),
            code,
            stdout: std::fs::read_to_string(&run.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&run.stderr).unwrap_or_default(),
        }
    }

    /// Waits for run `i` to end (at most [`RUN_LIMIT`]: then it is killed and the test fails).
    async fn finish(&mut self, i: usize) -> Finished {
        let deadline = Instant::now() + RUN_LIMIT;
        loop {
            let child = self.runs[i]
                .child
                .as_mut()
                .unwrap_or_else(|| panic!("run {i} was already finished"));
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.runs[i].child = None;
                    return self.output_of(i, status.code());
                }
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.runs[i].child = None;
                    panic!(
                        "{} still ran after {} s, killed:\n{}",
                        self.runs[i].name,
                        RUN_LIMIT.as_secs(),
                        self.output_of(i, None).both()
                    );
                }
                Ok(None) => tokio::time::sleep(POLL_EVERY).await,
                Err(e) => panic!("{}: wait: {e}", self.runs[i].name),
            }
        }
    }

    /// Runs `prospeo ARGS` to the end.
    async fn run(&mut self, name: &str, args: Vec<String>, env: Vec<(String, String)>) -> Finished {
        let i = self.spawn(name, args, env);
        self.finish(i).await
    }

    /// `kill -9` run `i`; panics when it had already ended (the test would prove nothing).
    fn kill(&mut self, i: usize) -> Finished {
        assert!(
            self.running(i),
            "{} ended before it could be killed:\n{}",
            self.runs[i].name,
            self.output_of(i, None).both()
        );
        let mut child = self.runs[i].child.take().expect("a running child");
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("reap the killed child");
        self.output_of(i, status.code())
    }

    /// Polls `done` until it holds (bounded by [`POLL_LIMIT`]); fails early, with their output,
    /// when one of `watched` has ended meanwhile.
    async fn wait_for(&mut self, what: &str, watched: &[usize], mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + POLL_LIMIT;
        let max_polls = POLL_LIMIT.as_millis() / POLL_EVERY.as_millis() + 1;
        for _ in 0..max_polls {
            if done() {
                return;
            }
            for &i in watched {
                if !self.running(i) {
                    let code = self.runs[i]
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten())
                        .and_then(|s| s.code());
                    panic!(
                        "waiting for {what}, {} ended:\n{}",
                        self.runs[i].name,
                        self.output_of(i, code).both()
                    );
                }
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        panic!("{what}: not within {} s", POLL_LIMIT.as_secs());
    }

    /// Asserts `secret` is in no stdout or stderr of any run so far, killed ones included
    /// (naming every run and line that shows it).
    #[track_caller]
    fn assert_never_shown(&self, secret: &str) {
        let mut shown = Vec::new();
        for run in &self.runs {
            for (stream, file) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
                let text = std::fs::read_to_string(file).unwrap_or_default();
                for line in text.lines().filter(|l| l.contains(secret)) {
                    shown.push(format!("{} ({stream}): {line}", run.name));
                }
            }
        }
        assert!(
            shown.is_empty(),
            "the coordinator's password is shown:\n{}",
            shown.join("\n")
        );
    }
}

impl Drop for Runs {
    fn drop(&mut self) {
        for run in &mut self.runs {
            if let Some(mut child) = run.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Command lines
// ---------------------------------------------------------------------------------------------

fn s(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

/// The flags of the key's scaled limits, as every worker on the key is given them.
fn limit_flags() -> Vec<String> {
    vec![
        "--per-second".into(),
        PER_SECOND.to_string(),
        "--per-minute".into(),
        PER_MINUTE.to_string(),
        "--per-day".into(),
        PER_DAY.to_string(),
    ]
}

/// The environment of a worker: the key and the sandbox's URL, the coordinator's password in
/// `PGPASSWORD` (never a password file of the developer's), and a response cache of its own.
fn worker_env(sandbox: &Sandbox, password: &str, cache: &Path) -> Vec<(String, String)> {
    vec![
        ("PROSPEO_API_KEY".into(), ALPHA_KEY.into()),
        ("PROSPEO_BASE_URL".into(), sandbox.base_url()),
        ("PGPASSWORD".into(), password.into()),
        ("PGPASSFILE".into(), "/nonexistent/pgpass".into()),
        ("PROSPEO_CACHE".into(), p(cache)),
    ]
}

/// `prospeo enrich INPUT -o OUTPUT [--coordinator URL] <limits> EXTRA`.
fn enrich_args(
    input: &Path,
    output: &Path,
    coordinator: Option<&str>,
    extra: &[&str],
) -> Vec<String> {
    let mut args = s(&["enrich", &p(input), "-o", &p(output)]);
    if let Some(url) = coordinator {
        args.extend(s(&["--coordinator", url]));
    }
    args.extend(limit_flags());
    args.extend(s(extra));
    args
}

/// `prospeo coordinator --coordinator URL init`, which must succeed.
async fn init_coordinator(runs: &mut Runs, pg: &TestPostgres) {
    let env = vec![
        ("PGPASSWORD".to_string(), pg.password().to_string()),
        ("PGPASSFILE".to_string(), "/nonexistent/pgpass".to_string()),
    ];
    let out = runs
        .run(
            "coordinator-init",
            s(&["coordinator", "--coordinator", &pg.url(), "init"]),
            env,
        )
        .await;
    out.assert_code(0);
}

/// A private PostgreSQL server (None: no PostgreSQL on this machine, the test is skipped).
fn postgres() -> Option<TestPostgres> {
    tokio::task::block_in_place(TestPostgres::start)
}

/// A TCP port on 127.0.0.1 nothing listens on (bound, read, released).
fn dead_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("the bound port").port()
}

// ---------------------------------------------------------------------------------------------
// 1. Four enrich processes and one SQL session share one key
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_workers_and_a_sql_session_on_one_key_pace_together_and_ask_each_person_once() {
    let Some(pg) = postgres() else {
        return;
    };
    let sandbox = workers_sandbox(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Runs::new();
    init_coordinator(&mut runs, &pg).await;

    // Five inputs of 60 rows: 5 invalid, 26 persons shared with one other input, 29 of their
    // own; every fifth person is one the directory does not know.
    const INPUTS: usize = 5;
    const SHARED: usize = 65;
    let mut rows: Vec<Vec<Who>> = (0..INPUTS).map(|w| invalids(w * 100, 5)).collect();
    for k in 0..SHARED {
        let first = k % INPUTS;
        let second = (first + 1 + (k / INPUTS) % (INPUTS - 1)) % INPUTS;
        rows[first].push(Who::Person(k));
        rows[second].push(Who::Person(k));
    }
    let inputs: Vec<Input> = rows
        .into_iter()
        .enumerate()
        .map(|(w, mut rows)| {
            let own = 60 - rows.len();
            rows.extend(persons(1_000 + w * 100, own));
            shuffle(&mut rows, w as u64 + 1);
            Input::write(
                dir.path(),
                &format!("input-{w}"),
                rows,
                (w as i64 + 1) * 10_000,
            )
        })
        .collect();
    let all: Vec<&Input> = inputs.iter().collect();
    let (shared, distinct) = overlap(&all);
    assert!(inputs.iter().all(|i| i.rows.len() == 60));
    assert!(
        shared.len() * 10 >= distinct.len() * 3,
        "30% of the persons are in more than one input: {} of {}",
        shared.len(),
        distinct.len()
    );

    // Workers 0-2 name the coordinator with the flag, worker 3 through PROSPEO_COORDINATOR,
    // and input 4 is enriched by a `prospeo sql` session.
    let url = pg.url();
    let outputs: Vec<PathBuf> = (0..INPUTS)
        .map(|w| dir.path().join(format!("output-{w}.parquet")))
        .collect();
    let mut ids = Vec::new();
    for w in 0..4 {
        let cache = dir.path().join(format!("cache-{w}.redb"));
        let mut env = worker_env(&sandbox, pg.password(), &cache);
        let coordinator = if w == 3 {
            env.push(("PROSPEO_COORDINATOR".into(), url.clone()));
            None
        } else {
            Some(url.as_str())
        };
        let args = enrich_args(&inputs[w].path, &outputs[w], coordinator, &[]);
        ids.push(runs.spawn(&format!("worker-{w}"), args, env));
    }
    let mut sql = s(&["sql", "--coordinator", &url]);
    sql.extend(limit_flags());
    sql.extend(s(&["-o", &p(&outputs[4])]));
    sql.push(format!(
        "SELECT * FROM enrich_person('{}')",
        p(&inputs[4].path)
    ));
    let cache = dir.path().join("cache-sql.redb");
    ids.push(runs.spawn(
        "sql-session",
        sql,
        worker_env(&sandbox, pg.password(), &cache),
    ));

    for &i in &ids {
        runs.finish(i).await.assert_code(0);
    }

    let got: Vec<Vec<Got>> = (0..INPUTS)
        .map(|w| {
            let rows = read_output(&format!("output {w}"), &inputs[w], &outputs[w]);
            assert_all_truthful(&format!("output {w}"), &rows);
            rows
        })
        .collect();

    let stats = key_stats(&sandbox);
    assert_eq!(
        stats.rate_limited, 0,
        "no window of the key was ever overrun: {stats:?}"
    );
    assert_eq!(stats.asked_again, 0, "no person was sent twice: {stats:?}");
    assert_eq!(
        stats.records,
        distinct.len() as u64,
        "each distinct person was sent once, whoever met it first: {stats:?}"
    );
    let matched: BTreeSet<Who> = distinct
        .iter()
        .copied()
        .filter(|w| w.expected_status() == "matched")
        .collect();
    assert_eq!(stats.credits_charged, matched.len() as i64, "{stats:?}");
    let costs = cost_by_person(got.iter().map(Vec::as_slice));
    assert_eq!(
        costs.values().sum::<i64>(),
        stats.credits_charged,
        "the outputs' costs add up to what the sandbox charged"
    );
    for who in &matched {
        assert_eq!(
            costs.get(who),
            Some(&1),
            "{who:?}: its cost is on one row across all outputs (the first asker's)"
        );
    }
    runs.assert_never_shown(pg.password());
}

// ---------------------------------------------------------------------------------------------
// 2. A worker killed with SIGKILL: its claims lapse, the others finish, a re-run completes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_holds_no_one_up_and_its_rerun_asks_again_only_what_was_in_flight()
{
    let Some(pg) = postgres() else {
        return;
    };
    // Answers take a while, so the victim has requests in flight (and claims held) at the kill.
    let sandbox = workers_sandbox(Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Runs::new();
    init_coordinator(&mut runs, &pg).await;

    // The victim: 100 rows, 45 of its persons shared with the three others (15 each).
    let mut victim_rows = invalids(0, 5);
    victim_rows.extend(persons(0, 45));
    victim_rows.extend(persons(1_000, 50));
    shuffle(&mut victim_rows, 7);
    let victim = Input::write(dir.path(), "victim", victim_rows, 100_000);
    let others: Vec<Input> = (0..3)
        .map(|o| {
            let mut rows = invalids(100 * (o + 1), 5);
            rows.extend(persons(15 * o, 15));
            rows.extend(persons(2_000 + 100 * o, 40));
            shuffle(&mut rows, 11 + o as u64);
            Input::write(
                dir.path(),
                &format!("other-{o}"),
                rows,
                200_000 + 10_000 * o as i64,
            )
        })
        .collect();

    let url = pg.url();
    let lease = ["--coordinator-lease-secs", "2"];
    let victim_cache = dir.path().join("victim.redb");
    let victim_output = dir.path().join("victim.parquet");
    // One request in flight at a time (the default is 4, `prospeo enrich --help`), so what
    // it can have had answered and not shared when it dies is one bulk request: 50 records.
    let concurrency = 1;
    let victim_args = enrich_args(
        &victim.path,
        &victim_output,
        Some(&url),
        &[
            lease[0],
            lease[1],
            "--concurrency",
            &concurrency.to_string(),
        ],
    );
    let victim_env = worker_env(&sandbox, pg.password(), &victim_cache);
    let v = runs.spawn("victim", victim_args.clone(), victim_env.clone());

    // The victim alone has had requests answered...
    runs.wait_for("the victim's first answers", &[v], || {
        key_stats(&sandbox).successful_requests >= 2
    })
    .await;
    // ...then the others start, meeting the persons it asks for, and run a while beside it.
    let outputs: Vec<PathBuf> = (0..3)
        .map(|o| dir.path().join(format!("other-{o}.parquet")))
        .collect();
    let mut ids = Vec::new();
    for (o, input) in others.iter().enumerate() {
        let cache = dir.path().join(format!("other-{o}.redb"));
        let args = enrich_args(&input.path, &outputs[o], Some(&url), &lease);
        ids.push(runs.spawn(
            &format!("other-{o}"),
            args,
            worker_env(&sandbox, pg.password(), &cache),
        ));
    }
    let before_others = key_stats(&sandbox).records;
    let mut watched = ids.clone();
    watched.push(v);
    runs.wait_for("records answered beside the victim", &watched, || {
        key_stats(&sandbox).records >= before_others + 2 * PER_SECOND
    })
    .await;
    let killed = runs.kill(v);
    assert_ne!(killed.code, Some(0), "{}", killed.both());
    assert!(!victim_output.exists(), "a killed job leaves no output");

    // The others finish, every row settled: none waits forever on the dead worker's claims.
    let got: Vec<Vec<Got>> = {
        let mut got = Vec::new();
        for (o, &i) in ids.iter().enumerate() {
            runs.finish(i).await.assert_code(0);
            let rows = read_output(&format!("other {o}"), &others[o], &outputs[o]);
            assert_all_truthful(&format!("other {o}"), &rows);
            got.push(rows);
        }
        got
    };

    // The killed job again, as its scheduler would run it: it completes.
    let rerun = runs.run("victim-rerun", victim_args, victim_env).await;
    rerun.assert_code(0);
    let victim_rows = read_output("victim re-run", &victim, &victim_output);
    assert_all_truthful("victim re-run", &victim_rows);

    // Sent twice: at most what the victim had in flight when it died (its requests in flight,
    // each of at most the vendor's 50 records).
    let stats = key_stats(&sandbox);
    let in_flight = concurrency * BULK_MAX;
    assert!(
        stats.asked_again <= in_flight,
        "asked again {} > {concurrency} request in flight × {BULK_MAX} records: {stats:?}",
        stats.asked_again
    );
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    let all: Vec<&Input> = others.iter().chain([&victim]).collect();
    let (_, distinct) = overlap(&all);
    assert!(
        stats.records <= distinct.len() as u64 + in_flight,
        "{stats:?}, {} distinct persons",
        distinct.len()
    );
    let matched = distinct
        .iter()
        .filter(|w| w.expected_status() == "matched")
        .count() as i64;
    assert_eq!(
        stats.credits_charged, matched,
        "each person paid once: {stats:?}"
    );
    let costs = cost_by_person(
        got.iter()
            .map(Vec::as_slice)
            .chain([victim_rows.as_slice()]),
    );
    assert!(
        costs.values().all(|&c| c <= 1),
        "no person costs twice across the outputs"
    );
    assert!(costs.values().sum::<i64>() <= stats.credits_charged);
    runs.assert_never_shown(pg.password());
}

// ---------------------------------------------------------------------------------------------
// 3. The coordinator lost mid-run: the rest is deferred, and a re-run finishes the job
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_coordinator_defers_the_rest_and_a_rerun_after_it_returns_asks_nothing_again() {
    let Some(mut pg) = postgres() else {
        return;
    };
    let sandbox = workers_sandbox(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Runs::new();
    init_coordinator(&mut runs, &pg).await;

    // 150 rows, 140 of them persons: 14 seconds of sending at the key's pace.
    let mut rows = invalids(0, 10);
    rows.extend(persons(0, 140));
    shuffle(&mut rows, 3);
    let input = Input::write(dir.path(), "leads", rows, 1);
    let output = dir.path().join("out.parquet");
    let cache = dir.path().join("cache.redb");
    let url = pg.url();
    let args = enrich_args(
        &input.path,
        &output,
        Some(&url),
        &["--coordinator-wait-secs", "2"],
    );
    let env = worker_env(&sandbox, pg.password(), &cache);
    let w = runs.spawn("worker", args.clone(), env.clone());
    runs.wait_for("the worker's first answers", &[w], || {
        key_stats(&sandbox).successful_requests >= 2
    })
    .await;
    let answered_before_stop = key_stats(&sandbox).records;
    tokio::task::block_in_place(|| pg.stop());

    let first = runs.finish(w).await;
    first.assert_code(3);
    let got = read_output("first run", &input, &output);
    let mut answered = 0u64;
    let mut deferred = 0u64;
    for row in &got {
        if row.status == "deferred" {
            deferred += 1;
            assert!(
                matches!(row.who, Who::Person(_)),
                "row {}: an invalid row is invalid, not deferred",
                row.lead_id
            );
            assert!(
                row.error.to_lowercase().contains("coordinator"),
                "row {}: the error names the coordinator: {:?}",
                row.lead_id,
                row.error
            );
            assert_eq!(row.cost, 0);
        } else {
            assert_truthful("first run", row);
            if matches!(row.who, Who::Person(_)) {
                answered += 1;
            }
        }
    }
    assert!(deferred > 0, "the rest was deferred: {}", first.both());
    let stats = key_stats(&sandbox);
    assert!(
        answered >= answered_before_stop,
        "what was answered before the coordinator went is in the output: {answered} rows, {answered_before_stop} records answered before the stop"
    );
    assert!(
        answered <= stats.records,
        "{answered} rows answered, {stats:?}"
    );
    assert!(
        first.stderr.to_lowercase().contains("coordinator"),
        "{}",
        first.both()
    );

    // The coordinator is back: the same command finishes the job and asks nothing it had
    // stored. Answers that arrived while it was gone are in the first output but could not be
    // stored: the re-run asks exactly those again (free re-enrichments: quota, not credits).
    tokio::task::block_in_place(|| pg.restart());
    let stored: u64 = pg
        .psql("SELECT count(*) FROM prospeo_coordinator.answers")
        .trim()
        .parse()
        .unwrap();
    assert!(stored <= answered, "{stored} stored, {answered} answered");
    let records_before = key_stats(&sandbox).records;
    let credits_before = key_stats(&sandbox).credits_charged;
    let second = runs.run("worker-rerun", args, env).await;
    second.assert_code(0);
    let got = read_output("re-run", &input, &output);
    assert_all_truthful("re-run", &got);
    let stats = key_stats(&sandbox);
    assert_eq!(
        stats.asked_again,
        answered - stored,
        "only answers that could not be stored were asked again (first run: {answered} rows \
         answered, {stored} stored, {deferred} deferred, {records_before} records sent; \
         {answered_before_stop} before the stop): {stats:?}"
    );
    assert_eq!(
        stats.records - records_before,
        input.persons().len() as u64 - stored,
        "the re-run sent exactly what the coordinator did not hold: {stats:?}"
    );
    let newly_matched = got
        .iter()
        .filter(|row| row.status == "matched" && row.cost > 0)
        .count() as i64;
    assert_eq!(
        stats.credits_charged - credits_before,
        newly_matched,
        "a person asked again is not charged again: {stats:?}"
    );
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    runs.assert_never_shown(pg.password());
}

// ---------------------------------------------------------------------------------------------
// 4. The coordinator's password is never shown
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinators_password_is_never_shown_and_never_taken_from_a_url() {
    let Some(pg) = postgres() else {
        return;
    };
    let sandbox = workers_sandbox(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Runs::new();
    init_coordinator(&mut runs, &pg).await;
    let password = pg.password();
    let url = pg.url();
    let mut rows = invalids(0, 2);
    rows.extend(persons(0, 18));
    let input = Input::write(dir.path(), "leads", rows, 1);
    let cache = dir.path().join("cache.redb");
    let env = worker_env(&sandbox, password, &cache);
    let query = format!("SELECT * FROM enrich_person('{}')", p(&input.path));

    // A URL with the password in it is refused before anything is sent, and not echoed:
    // as the flag, in PROSPEO_COORDINATOR, to `prospeo sql` and in its SET.
    let with_password = url.replace("prospeo@", &format!("prospeo:{password}@"));
    assert_ne!(with_password, url);
    let refused = dir.path().join("refused.parquet");
    let out = runs
        .run(
            "enrich-url-with-password",
            enrich_args(&input.path, &refused, Some(&with_password), &[]),
            env.clone(),
        )
        .await;
    out.assert_code(2);
    let mut env_url = env.clone();
    env_url.push(("PROSPEO_COORDINATOR".into(), with_password.clone()));
    let out = runs
        .run(
            "enrich-env-url-with-password",
            enrich_args(&input.path, &refused, None, &[]),
            env_url,
        )
        .await;
    out.assert_code(2);
    let mut sql = s(&["sql", "--coordinator", &with_password]);
    sql.extend(limit_flags());
    sql.push(query.clone());
    runs.run("sql-url-with-password", sql, env.clone())
        .await
        .assert_code(2);
    let mut sql = s(&["sql"]);
    sql.extend(limit_flags());
    sql.push(format!(
        "SET prospeo.coordinator = '{with_password}'; {query}"
    ));
    runs.run("sql-set-url-with-password", sql, env.clone())
        .await
        .assert_code(2);
    assert!(!refused.exists(), "a refused run writes nothing");
    let stats = key_stats(&sandbox);
    assert_eq!(stats.requests, 0, "nothing was sent: {stats:?}");

    // EXPLAIN with the coordinator SET, or given as a flag: no password.
    let mut explain = s(&["sql"]);
    explain.extend(limit_flags());
    explain.push(format!(
        "SET prospeo.coordinator = '{url}'; EXPLAIN {query}"
    ));
    let out = runs.run("sql-explain", explain, env.clone()).await;
    out.assert_code(0);
    assert!(!out.stdout.trim().is_empty(), "{}", out.both());
    let mut explain = s(&["sql", "--coordinator", &url]);
    explain.extend(limit_flags());
    explain.push(format!("EXPLAIN {query}"));
    let out = runs.run("sql-explain-flag", explain, env.clone()).await;
    out.assert_code(0);

    // A run with every log line there is, as JSON: no password in what it prints, nor
    // anywhere in the file it writes (metadata included).
    let output = dir.path().join("out.parquet");
    let out = runs
        .run(
            "enrich-debug-logs",
            enrich_args(
                &input.path,
                &output,
                Some(&url),
                &["--log-format", "json", "--log", "debug"],
            ),
            env.clone(),
        )
        .await;
    out.assert_code(0);
    let got = read_output("enrich", &input, &output);
    assert_all_truthful("enrich", &got);
    let bytes = std::fs::read(&output).unwrap();
    assert!(
        !bytes
            .windows(password.len())
            .any(|w| w == password.as_bytes()),
        "the password is in the output file"
    );
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&output).unwrap()).unwrap();
    let file_metadata = reader.metadata().file_metadata();
    for kv in file_metadata.key_value_metadata().into_iter().flatten() {
        let value = kv.value.as_deref().unwrap_or_default();
        assert!(
            !kv.key.contains(password) && !value.contains(password),
            "parquet metadata {}",
            kv.key
        );
    }
    for (key, value) in reader.schema().metadata() {
        assert!(
            !key.contains(password) && !value.contains(password),
            "schema metadata {key}"
        );
    }
    for field in reader.schema().fields() {
        for (key, value) in field.metadata() {
            assert!(
                !key.contains(password) && !value.contains(password),
                "field {} metadata {key}",
                field.name()
            );
        }
    }
    runs.assert_never_shown(password);
}

// ---------------------------------------------------------------------------------------------
// 5. A coordinator that cannot be reached at the start: nothing is sent
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_coordinator_at_the_start_exits_2_before_anything_is_sent() {
    // No server at all: this test needs no PostgreSQL.
    let sandbox = workers_sandbox(Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Runs::new();
    let port = dead_port();
    let url = format!("postgres://prospeo@127.0.0.1:{port}/prospeo");
    let mut rows = invalids(0, 2);
    rows.extend(persons(0, 18));
    let input = Input::write(dir.path(), "leads", rows, 1);
    let output = dir.path().join("out.parquet");
    let env = worker_env(&sandbox, "a-password", &dir.path().join("cache.redb"));

    let out = runs
        .run(
            "enrich-flag",
            enrich_args(&input.path, &output, Some(&url), &[]),
            env.clone(),
        )
        .await;
    out.assert_code(2);
    assert!(
        out.stderr.to_lowercase().contains("coordinator")
            && out.stderr.contains(&format!("127.0.0.1:{port}")),
        "the message names the coordinator: {}",
        out.both()
    );
    let mut env_url = env.clone();
    env_url.push(("PROSPEO_COORDINATOR".into(), url.clone()));
    let out = runs
        .run(
            "enrich-env",
            enrich_args(&input.path, &output, None, &[]),
            env_url,
        )
        .await;
    out.assert_code(2);
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "the message names the coordinator: {}",
        out.both()
    );
    assert!(!output.exists(), "nothing written");

    let mut sql = s(&["sql", "--coordinator", &url]);
    sql.extend(limit_flags());
    sql.push(format!("SELECT * FROM enrich_person('{}')", p(&input.path)));
    let out = runs.run("sql", sql, env.clone()).await;
    assert_ne!(out.code, Some(0), "{}", out.both());

    let stats = sandbox.stats();
    assert_eq!(stats.key(ALPHA).requests, 0, "nothing was sent: {stats:?}");
    assert_eq!(stats.unauthorized, 0, "{stats:?}");
    runs.assert_never_shown("a-password");
}
