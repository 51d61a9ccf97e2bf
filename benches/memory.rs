//! Peak memory of a job, measured through the binary: N rows, each a distinct person of the
//! sandbox directory, enriched once with a cache file and once without (`--no-cache`, the
//! answers in a temporary store), against `prospeo sandbox` running as a separate
//! process on 127.0.0.1 (so the sandbox's own directory is not counted). Prints the client's
//! peak resident set size (`ru_maxrss` of the child, from `wait4`), the time, and the rows
//! written. The peak includes the binary's own code, mapped from its file: the bench also
//! samples the child's `/proc` status every 50 ms and prints the largest file-backed share seen
//! (`RssFile`: about 40 MB for the release binary, whose code is 73 MB, since the kernel maps
//! the pages around each one touched; 67 to 69 MB before the release profile optimised the
//! whole program at once, with 103 MB of code; about 108 MB for the debug binary) and the largest
//! anonymous share (`RssAnon`: the job's own memory; a spike between two samples is missed).
//!
//! The client is `prospeo enrich` writing Parquet, as the README's first command, with the
//! pacing lifted (`--per-second` etc.); `--front sql` measures `prospeo sql` on the same plan
//! (`SET prospeo.per_second = ...`, `-o` the output), `--output csv` writes CSV instead (no
//! row group held in memory).
//!
//! Run: `cargo bench --bench memory -- 20000` (release, as `cargo bench` builds); with the
//! debug binary: `cargo bench --profile dev --bench memory -- 20000`. Options after `--`: the
//! number of rows (default 20,000, at most 2,000,000), `--front enrich|sql`, `--output
//! parquet|csv`, `--runs N` (each pair of runs again, N times: the peak moves from run to run),
//! `--timeout SECS` per run (default 1,800), `--keep` (leave the temporary directory).
//! `PROSPEO_BENCH_BIN=path` measures another build of `prospeo` as the client (the sandbox and
//! the generated input stay this build's), to compare versions on the same machine and data.
//!
//! Unix only (`wait4`).

#[cfg(not(unix))]
fn main() {
    eprintln!("the memory bench reads the child's peak RSS with wait4: Unix only");
}

#[cfg(unix)]
fn main() {
    unix::main();
}

#[cfg(unix)]
mod unix {
    use std::fs;
    use std::io::{BufRead, BufReader, BufWriter, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    const PROSPEO: &str = env!("CARGO_BIN_EXE_prospeo");
    const MAX_ROWS: usize = 2_000_000;
    const KEY: &str = "sandbox-demo-key";
    /// Limits high enough never to pace or refuse.
    const UNLIMITED: u64 = 1_000_000_000;

    #[derive(Clone, Copy, PartialEq)]
    enum Front {
        Sql,
        Enrich,
    }

    struct Settings {
        rows: usize,
        front: Front,
        /// The output file's extension: `parquet` or `csv`.
        output: &'static str,
        runs: usize,
        timeout: Duration,
        keep: bool,
    }

    fn settings() -> Settings {
        let mut settings = Settings {
            rows: 20_000,
            front: Front::Enrich,
            output: "parquet",
            runs: 1,
            timeout: Duration::from_secs(1_800),
            keep: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--front" => {
                    settings.front = match args.next().as_deref() {
                        Some("sql") => Front::Sql,
                        Some("enrich") => Front::Enrich,
                        other => panic!("--front sql or enrich, not {other:?}"),
                    }
                }
                "--output" => {
                    settings.output = match args.next().as_deref() {
                        Some("parquet") => "parquet",
                        Some("csv") => "csv",
                        other => panic!("--output parquet or csv, not {other:?}"),
                    }
                }
                "--runs" => {
                    let runs = args.next().and_then(|s| s.parse().ok());
                    settings.runs = runs.filter(|&n| n > 0).expect("--runs N (at least 1)");
                }
                "--timeout" => {
                    let secs = args.next().and_then(|s| s.parse().ok());
                    settings.timeout = Duration::from_secs(secs.expect("--timeout SECS"));
                }
                "--keep" => settings.keep = true,
                // What cargo bench passes to every bench.
                "--bench" => {}
                other => match other.replace('_', "").parse::<usize>() {
                    Ok(rows) => settings.rows = rows,
                    Err(_) => panic!("unknown argument {other}"),
                },
            }
        }
        assert!(
            (1..=MAX_ROWS).contains(&settings.rows),
            "between 1 and {MAX_ROWS} rows"
        );
        settings
    }

    pub fn main() {
        let settings = settings();
        let dir = tempfile::Builder::new()
            .prefix("prospeo-memory-bench")
            .tempdir()
            .expect("a temporary directory");
        let root = dir.path();

        // The directory is generated by a child process and read back line by line: this
        // process stays small, since a child's ru_maxrss also counts the parent's memory it
        // shared until exec.
        let started = Instant::now();
        let status = Command::new(PROSPEO)
            .args(["sandbox", "generate", "--out"])
            .arg(root)
            .arg("--people")
            .arg(settings.rows.to_string())
            .arg("--companies")
            .arg((settings.rows / 6).max(1).to_string())
            .args(["--leads", "1"])
            .stdout(Stdio::null())
            .status()
            .expect("prospeo sandbox generate runs");
        assert!(status.success(), "prospeo sandbox generate failed");
        let people = BufReader::new(
            fs::File::open(root.join("directory").join("people.jsonl")).expect("people.jsonl"),
        );
        let leads = root.join("leads.csv");
        let mut out = BufWriter::new(fs::File::create(&leads).expect("leads.csv"));
        writeln!(out, "lead_id,person_id").expect("write");
        let mut rows = 0;
        for line in people.lines() {
            let person: serde_json::Value =
                serde_json::from_str(&line.expect("read people.jsonl")).expect("a person");
            let id = person["person_id"]
                .as_str()
                .expect("every person has an id");
            writeln!(out, "{rows},{id}").expect("write");
            rows += 1;
            if rows == settings.rows {
                break;
            }
        }
        out.flush().expect("flush");
        println!(
            "memory bench: {rows} distinct people, client {}, output {}, input made in \
             {:.1} s, this process {:.1} MB",
            client().display(),
            settings.output,
            started.elapsed().as_secs_f64(),
            own_rss_kib() as f64 / 1024.0
        );

        let address = free_address();
        let mut sandbox = Sandbox::start(root, address, rows);
        let mut report = Vec::new();
        for _ in 0..settings.runs {
            for with_cache_file in [true, false] {
                let run = run_client(&settings, root, address, with_cache_file);
                report.push(run);
            }
        }
        sandbox.stop();

        println!(
            "{:<8} {:<16} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10}",
            "front",
            "answers kept in",
            "rows",
            "peak MB",
            "anon MB",
            "file MB",
            "seconds",
            "rows/s"
        );
        let mb = |kib: i64| kib as f64 / 1024.0;
        for run in &report {
            println!(
                "{:<8} {:<16} {:>10} {:>10.1} {:>10.1} {:>10.1} {:>9.1} {:>10.0}",
                run.front,
                run.store,
                run.rows_written,
                mb(run.peak.max_rss_kib),
                mb(run.peak.anon_kib),
                mb(run.peak.file_kib),
                run.elapsed.as_secs_f64(),
                run.rows_written as f64 / run.elapsed.as_secs_f64().max(1e-9)
            );
        }
        if settings.keep {
            println!("kept {}", dir.keep().display());
        }
        for run in &report {
            assert!(run.success, "the {} run failed (see above)", run.store);
            assert_eq!(run.rows_written, rows, "every row is written");
        }
    }

    struct Run {
        front: &'static str,
        store: &'static str,
        rows_written: usize,
        peak: Peak,
        elapsed: Duration,
        success: bool,
    }

    fn run_client(settings: &Settings, root: &Path, address: SocketAddr, cache_file: bool) -> Run {
        let base_url = format!("http://{address}");
        let output = root.join(format!(
            "out-{}.{}",
            if cache_file { "cache" } else { "temporary" },
            settings.output
        ));
        let cache_path = root.join("responses.redb");
        // Every run a first run, its rows counted in its own output: the cache file and the
        // output of an earlier pair (`--runs`) go.
        for earlier in [&cache_path, &output] {
            match fs::remove_file(earlier) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("cannot remove {}: {e}", earlier.display()),
            }
        }
        let leads = root.join("leads.csv");
        let mut command = Command::new(client());
        command
            .env("PROSPEO_API_KEY", KEY)
            .env_remove("PROSPEO_API_KEY_FILE")
            .env_remove("PROSPEO_CACHE")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        let front = match settings.front {
            Front::Sql => {
                let script = format!(
                    "SET prospeo.per_second = {UNLIMITED}; SET prospeo.per_minute = {UNLIMITED}; \
                     SET prospeo.per_day = {UNLIMITED}; SET prospeo.cache = {cache_file}; \
                     SET prospeo.cache_path = '{}'; \
                     SELECT * FROM enrich_person('{}')",
                    cache_path.display(),
                    leads.display()
                );
                command
                    .arg("sql")
                    .arg("--base-url")
                    .arg(&base_url)
                    .arg("-o")
                    .arg(&output)
                    .arg(script);
                "sql"
            }
            Front::Enrich => {
                command
                    .arg("enrich")
                    .arg(&leads)
                    .arg("-o")
                    .arg(&output)
                    .arg("--base-url")
                    .arg(&base_url)
                    .arg("--per-second")
                    .arg(UNLIMITED.to_string())
                    .arg("--per-minute")
                    .arg(UNLIMITED.to_string())
                    .arg("--per-day")
                    .arg(UNLIMITED.to_string())
                    .arg("--quiet");
                if cache_file {
                    command.arg("--cache").arg(&cache_path);
                } else {
                    command.arg("--no-cache");
                }
                "enrich"
            }
        };
        let started = Instant::now();
        let child = command.spawn().expect("prospeo starts");
        let (success, peak) = wait_with_peak(child, settings.timeout);
        let elapsed = started.elapsed();
        let rows_written = rows_in(&output);
        Run {
            front,
            store: if cache_file {
                "cache file"
            } else {
                "temporary store"
            },
            rows_written,
            peak,
            elapsed,
            success,
        }
    }

    /// The rows of the output file (0 when it is missing or unreadable).
    fn rows_in(output: &Path) -> usize {
        use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
        let Ok(file) = fs::File::open(output) else {
            return 0;
        };
        if output.extension().is_some_and(|e| e == "parquet") {
            SerializedFileReader::new(file)
                .map(|reader| reader.metadata().file_metadata().num_rows() as usize)
                .unwrap_or(0)
        } else {
            BufReader::new(file).lines().count().saturating_sub(1)
        }
    }

    /// The client measured: this build's `prospeo`, or `PROSPEO_BENCH_BIN` (another build's).
    fn client() -> PathBuf {
        std::env::var_os("PROSPEO_BENCH_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(PROSPEO))
    }

    /// A child's memory at its peak, in KiB.
    #[derive(Default)]
    struct Peak {
        /// `ru_maxrss` from `wait4`: the kernel's own peak of the resident set.
        max_rss_kib: i64,
        /// The largest `RssAnon` seen in the samples: the process's own memory.
        anon_kib: i64,
        /// The largest `RssFile` seen in the samples: mostly the binary's code.
        file_kib: i64,
    }

    impl Peak {
        /// Takes a sample of `pid`'s `/proc` status into the peaks.
        fn sample(&mut self, pid: libc::pid_t) {
            let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
                return;
            };
            self.anon_kib = self.anon_kib.max(status_kib(&status, "RssAnon:"));
            self.file_kib = self.file_kib.max(status_kib(&status, "RssFile:"));
        }
    }

    /// The value of a `/proc/*/status` line in KiB (0 when it is missing).
    fn status_kib(status: &str, field: &str) -> i64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits for `child` (killing it after `timeout`); whether it succeeded, and its peaks:
    /// `ru_maxrss` from `wait4` (that child's own figure, not the maximum over every child as
    /// `getrusage(RUSAGE_CHILDREN)` would give; it includes what the child shared with this
    /// process until exec: this process is kept small, see `own_rss_kib`), and the largest
    /// anonymous and file-backed shares sampled every 50 ms meanwhile.
    fn wait_with_peak(mut child: Child, timeout: Duration) -> (bool, Peak) {
        let pid = child.id() as libc::pid_t;
        let deadline = Instant::now() + timeout;
        let mut killed = false;
        let mut peak = Peak::default();
        loop {
            peak.sample(pid);
            let mut status = 0;
            // SAFETY: plain libc call; `usage` is a zeroed out-parameter of the right type.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            let flags = if killed { 0 } else { libc::WNOHANG };
            // SAFETY: see above; `pid` is our own child, not yet reaped.
            let reaped = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
            if reaped == pid {
                let ok = !killed && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
                if !ok {
                    eprintln!("prospeo ended with wait status {status:#x} (killed: {killed})");
                }
                peak.max_rss_kib = usage.ru_maxrss;
                return (ok, peak);
            }
            assert!(
                reaped == 0,
                "wait4 failed: {}",
                std::io::Error::last_os_error()
            );
            if Instant::now() > deadline {
                eprintln!("prospeo ran past {timeout:?}: killing it");
                let _ = child.kill();
                killed = true;
                continue;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// This process's resident set (VmRSS), in KiB: the floor under a child's figure.
    fn own_rss_kib() -> i64 {
        fs::read_to_string("/proc/self/status").map_or(0, |status| status_kib(&status, "VmRSS:"))
    }

    /// A loopback port nothing listens on (released just before the sandbox takes it).
    fn free_address() -> SocketAddr {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
    }

    /// `prospeo sandbox` as a child process; killed when stopped or dropped.
    struct Sandbox(Option<Child>);

    impl Sandbox {
        fn start(root: &Path, address: SocketAddr, rows: usize) -> Self {
            let child = Command::new(PROSPEO)
                .arg("sandbox")
                .arg("--bind")
                .arg(address.to_string())
                .arg("--directory")
                .arg(root.join("directory"))
                .arg("--credits")
                .arg((rows as u64 * 20 + 1_000).to_string())
                .arg("--per-second")
                .arg(UNLIMITED.to_string())
                .arg("--per-minute")
                .arg(UNLIMITED.to_string())
                .arg("--per-day")
                .arg(UNLIMITED.to_string())
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("the sandbox starts");
            let mut sandbox = Sandbox(Some(child));
            let deadline = Instant::now() + Duration::from_secs(300);
            while TcpStream::connect(address).is_err() {
                if let Some(child) = sandbox.0.as_mut()
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!("the sandbox exited: {status}");
                }
                assert!(Instant::now() < deadline, "the sandbox did not listen");
                std::thread::sleep(Duration::from_millis(100));
            }
            sandbox
        }

        fn stop(&mut self) {
            if let Some(mut child) = self.0.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Drop for Sandbox {
        fn drop(&mut self) {
            self.stop();
        }
    }
}
