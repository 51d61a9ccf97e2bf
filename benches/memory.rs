//! Peak memory of a job, measured through the binary: N rows, each a distinct person of the
//! sandbox directory, enriched once with a cache file and once without (`prospeo.cache =
//! false`, the answers in a temporary store), against `prospeo sandbox` running as a separate
//! process on 127.0.0.1 (so the sandbox's own directory is not counted). Prints the client's
//! peak resident set size (`ru_maxrss` of the child, from `wait4`), the time, and the rows
//! written.
//!
//! The client is `prospeo sql` with the pacing lifted (`SET prospeo.per_second = ...`): it runs
//! the same plan and enrichment node as `prospeo enrich`, but `prospeo enrich` has no
//! per-second option and is held to the plan's 30 records a second (100,000 rows would take an
//! hour). `--front enrich` measures `prospeo enrich` itself (`--cache PATH` / `--no-cache`),
//! paced.
//!
//! Run: `cargo bench --bench memory -- 20000` (release, as `cargo bench` builds); with the
//! debug binary: `cargo bench --profile dev --bench memory -- 20000`. Options after `--`: the
//! number of rows (default 20,000, at most 2,000,000), `--front sql|enrich`, `--timeout SECS`
//! per run (default 1,800), `--keep` (leave the temporary directory).
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
    use std::io::{BufWriter, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use datafusion_prospeo::sandbox::generator::{GeneratorConfig, generate_directory};

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
        timeout: Duration,
        keep: bool,
    }

    fn settings() -> Settings {
        let mut settings = Settings {
            rows: 20_000,
            front: Front::Sql,
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

        let started = Instant::now();
        let directory = generate_directory(&GeneratorConfig {
            seed: 42,
            companies: (settings.rows / 6).max(1),
            people: settings.rows,
        });
        directory
            .save(&root.join("directory"))
            .expect("the directory is saved");
        let leads = root.join("leads.csv");
        let mut out = BufWriter::new(fs::File::create(&leads).expect("leads.csv"));
        writeln!(out, "lead_id,person_id").expect("write");
        let mut rows = 0;
        for (i, person) in directory.people().iter().enumerate() {
            let id = person.person_id.as_deref().expect("every person has an id");
            writeln!(out, "{i},{id}").expect("write");
            rows += 1;
            if rows == settings.rows {
                break;
            }
        }
        out.flush().expect("flush");
        drop(directory);
        println!(
            "memory bench: {rows} distinct people, client {} (debug or release: see the path), \
             input made in {:.1} s",
            PROSPEO,
            started.elapsed().as_secs_f64()
        );

        let address = free_address();
        let mut sandbox = Sandbox::start(root, address, rows);
        let mut report = Vec::new();
        for with_cache_file in [true, false] {
            let run = run_client(&settings, root, address, with_cache_file);
            report.push(run);
        }
        sandbox.stop();

        println!(
            "{:<8} {:<16} {:>10} {:>10} {:>9} {:>10}",
            "front", "answers kept in", "rows", "peak MB", "seconds", "rows/s"
        );
        for run in &report {
            println!(
                "{:<8} {:<16} {:>10} {:>10.1} {:>9.1} {:>10.0}",
                run.front,
                run.store,
                run.rows_written,
                run.peak_kib as f64 / 1024.0,
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
        peak_kib: i64,
        elapsed: Duration,
        success: bool,
    }

    fn run_client(settings: &Settings, root: &Path, address: SocketAddr, cache_file: bool) -> Run {
        let base_url = format!("http://{address}");
        let output = root.join(if cache_file {
            "out-cache.csv"
        } else {
            "out-temporary.csv"
        });
        let cache_path = root.join("responses.redb");
        let leads = root.join("leads.csv");
        let mut command = Command::new(PROSPEO);
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
        let (success, peak_kib) = wait_with_peak(child, settings.timeout);
        let elapsed = started.elapsed();
        let rows_written = fs::read_to_string(&output)
            .map(|text| text.lines().count().saturating_sub(1))
            .unwrap_or(0);
        Run {
            front,
            store: if cache_file {
                "cache file"
            } else {
                "temporary store"
            },
            rows_written,
            peak_kib,
            elapsed,
            success,
        }
    }

    /// Waits for `child` (killing it after `timeout`); whether it succeeded, and its peak RSS
    /// in KiB (`ru_maxrss` from `wait4`: that child's own figure, not the maximum over every
    /// child as `getrusage(RUSAGE_CHILDREN)` would give).
    fn wait_with_peak(mut child: Child, timeout: Duration) -> (bool, i64) {
        let pid = child.id() as libc::pid_t;
        let deadline = Instant::now() + timeout;
        let mut killed = false;
        loop {
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
                return (ok, usage.ru_maxrss);
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
