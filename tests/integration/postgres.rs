//! A private PostgreSQL server for tests: each [`TestPostgres`] runs its own server from the
//! machine's PostgreSQL binaries, in a fresh temporary directory, on 127.0.0.1 and a free port.
//! Dropping it stops the server and removes the directory.
//!
//! # Binaries
//!
//! `PROSPEO_PG_BINDIR` names the folder holding `initdb`, `pg_ctl` and `postgres` when set;
//! otherwise the highest version under `/usr/lib/postgresql/*/bin`, then `pg_config --bindir`.
//! `psql` comes from that folder, else from `PATH`. With none of them, [`TestPostgres::start`]
//! returns `None` after a line on stderr, and the caller skips its test.
//!
//! # User
//!
//! `initdb` and `postgres` refuse to run as root. When the tests run as root, every server
//! command (`initdb`, `pg_ctl`) runs as `nobody` (uid and gid 65534) through `setpriv` (or
//! `runuser`), and the temporary directory, under `/tmp`, is handed to that user. Otherwise they
//! run as the current user, in a directory under the usual temporary folder. `psql` always runs
//! as the current user: it only connects.
//!
//! # Layout and settings
//!
//! The temporary directory holds `data/` (the cluster), `server.log` (the server's log, which
//! failure messages quote the end of) and the Unix socket. `postgresql.conf` includes
//! `prospeo-test.conf`, which sets `listen_addresses = '127.0.0.1'` (no other interface), the
//! port, `unix_socket_directories` (the temporary directory), `password_encryption =
//! 'scram-sha-256'`, and `fsync = off` and `full_page_writes = off` for speed. Commits stay
//! synchronous: with `fsync = off` a committed row is still written to the operating system
//! before the commit returns, so it survives an immediate stop (a crash of the server, not of
//! the machine), which [`TestPostgres::stop`] relies on.
//!
//! # Authentication
//!
//! `initdb -A trust -U postgres` makes the cluster; then this `pg_hba.conf` replaces initdb's
//! (nothing else is accepted):
//!
//! ```text
//! local all all                trust          # the Unix socket: setup and psql()
//! host  all all 127.0.0.1/32   scram-sha-256  # TCP: a password for every role
//! ```
//!
//! The superuser `postgres` has no password, so it can only connect over the socket (which is
//! in the private directory). The role `prospeo` (LOGIN, password `prospeo-test-secret`, stored
//! as a SCRAM-SHA-256 verifier) owns the database `prospeo`; code under test connects to
//! [`TestPostgres::url`] over TCP with [`TestPostgres::password`].
//!
//! # Bounds
//!
//! Every command runs under a deadline ([`COMMAND_TIMEOUT`]; `pg_ctl` waits at most
//! [`PG_CTL_WAIT_SECS`]), and connections give up after 10 seconds (`PGCONNECT_TIMEOUT`).

use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The password of the role `prospeo`.
const PASSWORD: &str = "prospeo-test-secret";
/// The role and database code under test uses.
const ROLE: &str = "prospeo";
/// The superuser, reachable over the Unix socket only.
const SUPERUSER: &str = "postgres";
/// uid and gid of `nobody`/`nogroup`, which run the server when the tests run as root.
const NOBODY: u32 = 65534;
/// Longest any one command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// `pg_ctl -t`: how long `pg_ctl` waits for the server to start or stop.
const PG_CTL_WAIT_SECS: u32 = 60;
/// How many free ports `start` tries when another process takes the chosen one first.
const PORT_ATTEMPTS: usize = 3;

/// A private PostgreSQL server on 127.0.0.1; see the module documentation.
pub struct TestPostgres {
    bin: Binaries,
    user: ServerUser,
    port: u16,
    /// Dropped (removed) after `Drop::drop` has stopped the server.
    dir: tempfile::TempDir,
}

/// The programs `TestPostgres` runs.
struct Binaries {
    bindir: PathBuf,
    psql: PathBuf,
}

/// Who runs `initdb` and `pg_ctl`.
enum ServerUser {
    /// The tests do not run as root: the current user.
    Current,
    /// The tests run as root: `nobody`, switched to with this command prefix.
    Nobody(Vec<OsString>),
}

impl TestPostgres {
    /// Starts a private server; `None` (with a line on stderr saying why) only when no
    /// PostgreSQL binaries exist on this machine — callers then skip (unless
    /// `PROSPEO_REQUIRE_POSTGRES` is set, as CI sets it: then it panics). Any other failure panics
    /// with the server's log.
    pub fn start() -> Option<TestPostgres> {
        let bin = match Binaries::find() {
            Ok(bin) => bin,
            Err(why) => {
                // CI has them (`.ci/run` installs them): there, a missing server is a failure.
                assert!(
                    std::env::var_os("PROSPEO_REQUIRE_POSTGRES").is_none(),
                    "PROSPEO_REQUIRE_POSTGRES is set but no PostgreSQL server binaries were found: {why}"
                );
                eprintln!("postgres: no PostgreSQL server binaries, skipping: {why}");
                return None;
            }
        };
        let user = ServerUser::detect();
        let dir = make_dir(&user);
        let mut pg = TestPostgres {
            bin,
            user,
            port: 0,
            dir,
        };
        pg.init_cluster();
        pg.start_on_a_free_port();
        pg.create_role_and_database();
        Some(pg)
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://prospeo@127.0.0.1:PORT/prospeo` (no password in it).
    pub fn url(&self) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{ROLE}", self.port)
    }

    /// The password of the role `prospeo`: `prospeo-test-secret`.
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// The temporary directory (the cluster, the log and the socket); gone once `self` drops.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs SQL through psql as the superuser over the Unix socket, in the database `prospeo`;
    /// returns stdout (unaligned, tuples only: one line a row, columns split by `|`); panics on
    /// failure. What it creates belongs to `postgres`: `ALTER ... OWNER TO prospeo` (or a
    /// `GRANT`) for the role to use it.
    pub fn psql(&self, sql: &str) -> String {
        self.superuser_psql(ROLE, sql)
    }

    /// Stops the server now (`pg_ctl stop -m immediate`, as a crashed coordinator would look
    /// to workers); `restart()` starts it again on the same port and data.
    pub fn stop(&mut self) {
        if let Err(why) = self.shut_down() {
            panic!("postgres: stop: {why}\n{}", self.log_tail());
        }
    }

    /// Starts the server again on the same port and data (stopping it first if it runs).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.start_server() {
            panic!(
                "postgres: restart on port {}: {why}\n{}",
                self.port,
                self.log_tail()
            );
        }
    }

    // -----------------------------------------------------------------------------------------

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn pid_file(&self) -> PathBuf {
        self.data_dir().join("postmaster.pid")
    }

    /// `initdb` as the server user, then the settings and `pg_hba.conf` of the module doc.
    fn init_cluster(&self) {
        let mut initdb = self.server_command("initdb");
        initdb.arg("-D").arg(self.data_dir()).args([
            "-A",
            "trust",
            "-U",
            SUPERUSER,
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        let out = run(&mut initdb, "initdb").unwrap_or_else(|why| panic!("postgres: {why}"));
        if !out.status.success() {
            panic!("postgres: initdb failed ({}):\n{}", out.status, both(&out));
        }

        let data = self.data_dir();
        let conf = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf)
            .unwrap_or_else(|e| panic!("postgres: read {}: {e}", conf.display()));
        text.push_str("\ninclude 'prospeo-test.conf'\n");
        self.write_server_file(&conf, &text);
        self.write_server_file(
            &data.join("pg_hba.conf"),
            "# Written by the test harness (tests/integration/postgres.rs).\n\
             local all all              trust\n\
             host  all all 127.0.0.1/32 scram-sha-256\n",
        );
    }

    /// `prospeo-test.conf`: everything that names the port and the socket directory.
    fn write_settings(&self) {
        let socket_dir = self
            .dir
            .path()
            .to_str()
            .expect("a UTF-8 temporary directory");
        let settings = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             password_encryption = 'scram-sha-256'\n\
             fsync = off\n\
             full_page_writes = off\n",
            self.port,
            socket_dir.replace('\'', "''"),
        );
        self.write_server_file(&self.data_dir().join("prospeo-test.conf"), &settings);
    }

    /// Writes a file in the cluster, owned by the server user.
    fn write_server_file(&self, path: &Path, text: &str) {
        fs::write(path, text).unwrap_or_else(|e| panic!("postgres: write {}: {e}", path.display()));
        if let ServerUser::Nobody(_) = self.user {
            std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY))
                .unwrap_or_else(|e| panic!("postgres: chown {}: {e}", path.display()));
        }
    }

    /// Picks a free port and starts the server there; tries another port when someone else
    /// took the chosen one between the pick and the server's bind.
    fn start_on_a_free_port(&mut self) {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port();
            self.write_settings();
            let log_before = fs::metadata(self.log_file()).map_or(0, |m| m.len());
            match self.start_server() {
                Ok(()) => return,
                Err(why) => {
                    let log = fs::read(self.log_file()).unwrap_or_default();
                    let new = String::from_utf8_lossy(&log[(log_before as usize).min(log.len())..]);
                    if !new.contains("could not bind") {
                        panic!(
                            "postgres: start on port {}: {why}\n{}",
                            self.port,
                            self.log_tail()
                        );
                    }
                    // Nothing runs (the bind failed); try another port.
                    let _ = self.shut_down();
                    last = why;
                }
            }
        }
        panic!(
            "postgres: start: no free port after {PORT_ATTEMPTS} attempts: {last}\n{}",
            self.log_tail()
        );
    }

    /// `pg_ctl start -w`, which returns once the server accepts connections.
    fn start_server(&self) -> Result<(), String> {
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", &PG_CTL_WAIT_SECS.to_string(), "start"]);
        let out = run(&mut pg_ctl, "pg_ctl start")?;
        if !out.status.success() {
            return Err(format!(
                "pg_ctl start failed ({}): {}",
                out.status,
                both(&out)
            ));
        }
        Ok(())
    }

    /// Stops the server if a `postmaster.pid` says one may run: `pg_ctl stop -m immediate`,
    /// and when that fails, signals to the postmaster named in `postmaster.pid`.
    fn shut_down(&self) -> Result<(), String> {
        if !self.pid_file().exists() {
            return Ok(());
        }
        let mut pg_ctl = self.server_command("pg_ctl");
        pg_ctl.arg("-D").arg(self.data_dir()).args([
            "-m",
            "immediate",
            "-w",
            "-t",
            &PG_CTL_WAIT_SECS.to_string(),
            "stop",
        ]);
        let stopped = match run(&mut pg_ctl, "pg_ctl stop") {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => Err(format!(
                "pg_ctl stop failed ({}): {}",
                out.status,
                both(&out)
            )),
            Err(why) => Err(why),
        };
        match stopped {
            Ok(()) => Ok(()),
            Err(why) => self
                .kill_postmaster()
                .map_err(|kill| format!("{why}; then {kill}")),
        }
    }

    /// Signals the postmaster named on the first line of `postmaster.pid`: SIGQUIT (an
    /// immediate shutdown, which still frees the server's shared memory), then SIGKILL if it
    /// has not gone within 10 seconds; each wait is bounded. Only a process working in this
    /// data directory is signalled (a stale pid file may name someone else's process by
    /// now); none counts as stopped.
    fn kill_postmaster(&self) -> Result<(), String> {
        let pid_file = self.pid_file();
        let text = match fs::read_to_string(&pid_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("read {}: {e}", pid_file.display())),
        };
        let pid = first_line_pid(&text)
            .ok_or_else(|| format!("no pid in {}: {text:?}", pid_file.display()))?;
        let data = fs::canonicalize(self.data_dir())
            .map_err(|e| format!("canonicalize {}: {e}", self.data_dir().display()))?;
        let ours = || {
            !process_gone(pid)
                && fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == data)
        };
        for (signal, name) in [(libc::SIGQUIT, "QUIT"), (libc::SIGKILL, "KILL")] {
            if !ours() {
                break;
            }
            // SAFETY: kill(2) with a positive pid (over 1) of a process working in this data
            // directory, and a valid signal number; it touches no memory of this process.
            if unsafe { libc::kill(pid, signal) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ESRCH) {
                    return Err(format!("kill -{name} {pid}: {err}"));
                }
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while ours() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
        if ours() {
            return Err(format!(
                "postmaster {pid} still runs after SIGQUIT and SIGKILL"
            ));
        }
        let _ = fs::remove_file(&pid_file);
        Ok(())
    }

    /// The role and database of the module doc, through the superuser over the socket.
    fn create_role_and_database(&self) {
        self.superuser_psql(
            SUPERUSER,
            &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"),
        );
        // CREATE DATABASE runs alone: not inside the implicit transaction of a multi-statement
        // string.
        self.superuser_psql(SUPERUSER, &format!("CREATE DATABASE {ROLE} OWNER {ROLE}"));
    }

    fn superuser_psql(&self, database: &str, sql: &str) -> String {
        let mut psql = self.client_command();
        psql.arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
            ])
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-w",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ]);
        let out = run(&mut psql, "psql")
            .unwrap_or_else(|why| panic!("postgres: psql {sql:?}: {why}\n{}", self.log_tail()));
        if !out.status.success() {
            panic!(
                "postgres: psql {sql:?} failed ({}): {}\n{}",
                out.status,
                both(&out),
                self.log_tail()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `psql` as the current user with no password from the environment or a password file:
    /// callers add the connection and, when they want one, `PGPASSWORD`.
    fn client_command(&self) -> Command {
        let mut cmd = Command::new(&self.bin.psql);
        self.clean_env(&mut cmd);
        cmd
    }

    /// A server program (`initdb`, `pg_ctl`) as the server user.
    fn server_command(&self, program: &str) -> Command {
        let program = self.bin.bindir.join(program);
        let mut cmd = match &self.user {
            ServerUser::Current => Command::new(program),
            ServerUser::Nobody(prefix) => {
                let mut cmd = Command::new(&prefix[0]);
                cmd.args(&prefix[1..]).arg(program);
                cmd
            }
        };
        self.clean_env(&mut cmd);
        cmd.env("HOME", self.dir.path());
        cmd
    }

    /// No `PG*` setting of the developer's shell; the C locale; a password file that does not
    /// exist; bounded connection attempts; the temporary directory as the working directory.
    fn clean_env(&self, cmd: &mut Command) {
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PG") {
                cmd.env_remove(name);
            }
        }
        cmd.env("LC_ALL", "C")
            .env("LANG", "C")
            .env("PGPASSFILE", self.dir.path().join("no-such-pgpass"))
            .env("PGCONNECT_TIMEOUT", "10")
            .current_dir(self.dir.path());
    }

    /// The last lines of the server's log, for failure messages.
    fn log_tail(&self) -> String {
        let path = self.log_file();
        match fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                format!("--- end of {} ---\n{tail}", path.display())
            }
            Err(e) => format!("(no server log at {}: {e})", path.display()),
        }
    }
}

impl Drop for TestPostgres {
    /// Stops the server (`pg_ctl stop -m immediate`, else signals); the directory goes with
    /// `self.dir`.
    fn drop(&mut self) {
        if let Err(why) = self.shut_down() {
            eprintln!(
                "postgres: could not stop the server on port {}: {why}",
                self.port
            );
        }
    }
}

impl Binaries {
    fn find() -> Result<Binaries, String> {
        let bindir = if let Some(dir) = std::env::var_os("PROSPEO_PG_BINDIR") {
            let dir = PathBuf::from(dir);
            if !has_server(&dir) {
                panic!(
                    "postgres: PROSPEO_PG_BINDIR={} holds no initdb, pg_ctl and postgres",
                    dir.display()
                );
            }
            dir
        } else if let Some(dir) = debian_bindir() {
            dir
        } else if let Some(dir) = pg_config_bindir() {
            dir
        } else {
            return Err(
                "no initdb under /usr/lib/postgresql/*/bin, none from pg_config \
                        --bindir, and PROSPEO_PG_BINDIR is not set"
                    .into(),
            );
        };
        let psql = [bindir.join("psql")]
            .into_iter()
            .chain(
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                    .map(|d| d.join("psql")),
            )
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "postgres: the server is in {} but psql is neither there nor on PATH",
                    bindir.display()
                )
            });
        Ok(Binaries { bindir, psql })
    }
}

fn has_server(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|p| dir.join(p).is_file())
}

/// The highest version under `/usr/lib/postgresql/*/bin` (Debian's layout).
fn debian_bindir() -> Option<PathBuf> {
    let mut found: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            has_server(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = run(
        Command::new("pg_config").arg("--bindir"),
        "pg_config --bindir",
    )
    .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    has_server(&dir).then_some(dir)
}

impl ServerUser {
    fn detect() -> ServerUser {
        // SAFETY: geteuid(2) takes no arguments, cannot fail and touches no memory.
        if unsafe { libc::geteuid() } != 0 {
            return ServerUser::Current;
        }
        let on_path = |name: &str| {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        };
        let id = NOBODY.to_string();
        let prefix: Vec<OsString> = if let Some(setpriv) = on_path("setpriv") {
            vec![
                setpriv.into(),
                format!("--reuid={id}").into(),
                format!("--regid={id}").into(),
                "--clear-groups".into(),
                "--".into(),
            ]
        } else if let Some(runuser) = on_path("runuser") {
            vec![runuser.into(), "-u".into(), "nobody".into(), "--".into()]
        } else {
            panic!(
                "postgres: running as root, and neither setpriv nor runuser is there to run \
                 initdb and the server as nobody"
            );
        };
        ServerUser::Nobody(prefix)
    }
}

/// A fresh temporary directory the server user can write: under `/tmp` and handed to `nobody`
/// when running as root (its parent must be traversable by that user), else under the usual
/// temporary folder.
fn make_dir(user: &ServerUser) -> tempfile::TempDir {
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("prospeo-pg-");
        b
    };
    let dir = match user {
        ServerUser::Current => builder.tempdir(),
        ServerUser::Nobody(_) => builder.tempdir_in("/tmp"),
    }
    .unwrap_or_else(|e| panic!("postgres: create a temporary directory: {e}"));
    if let ServerUser::Nobody(_) = user {
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY))
            .unwrap_or_else(|e| panic!("postgres: chown {} to nobody: {e}", dir.path().display()));
    }
    dir
}

/// A port nothing listens on right now: bind 127.0.0.1:0, read the port, close the listener.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap_or_else(|e| panic!("postgres: bind 127.0.0.1:0 to pick a port: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("postgres: the picked port: {e}"))
        .port()
}

/// The pid on the first line of a `postmaster.pid`, when it is a plausible one (over 1).
fn first_line_pid(text: &str) -> Option<libc::pid_t> {
    text.lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .filter(|&pid| pid > 1)
}

/// True when `pid` no longer runs: no `/proc/PID`, or a zombie waiting for its parent.
fn process_gone(pid: libc::pid_t) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// Runs `cmd` to completion, capturing its output, and kills it after [`COMMAND_TIMEOUT`].
fn run(cmd: &mut Command, step: &str) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{step}: could not run {:?}: {e}", cmd.get_program()))?;
    let reader = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = reader(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = reader(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{step}: still running after {} s, killed",
                    COMMAND_TIMEOUT.as_secs()
                ));
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("{step}: wait: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// stdout and stderr of a command, for messages.
fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether something accepts TCP connections on 127.0.0.1:`port` (within one second).
fn listening(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `psql -h 127.0.0.1 -p PORT -U USER -d prospeo -c SQL` over TCP, with `password` in
    /// `PGPASSWORD` when given, never prompting.
    fn tcp_psql(pg: &TestPostgres, user: &str, password: Option<&str>, sql: &str) -> Output {
        let mut psql = pg.client_command();
        psql.args(["-h", "127.0.0.1", "-p", &pg.port().to_string(), "-U", user])
            .args(["-d", ROLE, "-X", "-q", "-A", "-t", "-w", "-c", sql]);
        if let Some(password) = password {
            psql.env("PGPASSWORD", password);
        }
        run(&mut psql, "psql over TCP").unwrap_or_else(|why| panic!("{why}"))
    }

    fn stdout(out: &Output) -> String {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn postgres_answers_and_checks_the_password_over_tcp() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        assert_eq!(pg.psql("SELECT 1").trim(), "1");
        assert_eq!(pg.password(), "prospeo-test-secret");
        assert_eq!(
            pg.url(),
            format!("postgres://prospeo@127.0.0.1:{}/prospeo", pg.port())
        );
        // The password is stored as a SCRAM verifier, not in clear or as MD5.
        assert_eq!(
            pg.psql(
                "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'prospeo'"
            )
            .trim(),
            "t"
        );
        assert_eq!(
            pg.psql("SELECT datdba::regrole FROM pg_database WHERE datname = 'prospeo'")
                .trim(),
            "prospeo"
        );

        // With the password, over TCP: the role prospeo, and TCP is 127.0.0.1.
        let out = tcp_psql(&pg, ROLE, Some(pg.password()), "select current_user");
        assert!(out.status.success(), "with the password: {}", both(&out));
        assert_eq!(stdout(&out), "prospeo");
        let out = tcp_psql(
            &pg,
            ROLE,
            Some(pg.password()),
            "select inet_server_addr()::text",
        );
        assert!(out.status.success(), "inet_server_addr: {}", both(&out));
        assert_eq!(stdout(&out), "127.0.0.1/32");

        // The URL, with the password from the environment, reaches the same role and database.
        let mut psql = pg.client_command();
        psql.arg(pg.url())
            .args(["-X", "-q", "-A", "-t", "-w", "-c"])
            .arg("select current_user || '@' || current_database()")
            .env("PGPASSWORD", pg.password());
        let out = run(&mut psql, "psql URL").unwrap_or_else(|why| panic!("{why}"));
        assert!(out.status.success(), "psql URL: {}", both(&out));
        assert_eq!(stdout(&out), "prospeo@prospeo");

        // Without a password, or with a wrong one, TCP refuses, even the superuser.
        let out = tcp_psql(&pg, ROLE, None, "select current_user");
        assert!(
            !out.status.success(),
            "no password accepted: {}",
            both(&out)
        );
        assert!(
            both(&out).contains("no password supplied"),
            "no password: {}",
            both(&out)
        );
        let out = tcp_psql(&pg, ROLE, Some("not-the-password"), "select 1");
        assert!(!out.status.success(), "wrong password accepted");
        assert!(
            both(&out).contains("password authentication failed for user \"prospeo\""),
            "wrong password: {}",
            both(&out)
        );
        let out = tcp_psql(&pg, SUPERUSER, None, "select 1");
        assert!(
            !out.status.success(),
            "the superuser got in over TCP without a password"
        );
    }

    #[test]
    fn postgres_stop_then_restart_keeps_the_data_and_the_port() {
        let Some(mut pg) = TestPostgres::start() else {
            return;
        };
        let port = pg.port();
        // Created by the superuser, handed to the role that reads it over TCP below.
        pg.psql(
            "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42); \
             ALTER TABLE kept OWNER TO prospeo",
        );
        assert!(listening(port), "nothing listens on {port} after start");

        pg.stop();
        assert!(
            !listening(port),
            "the server still listens on {port} after stop"
        );
        assert!(!pg.pid_file().exists(), "postmaster.pid left after stop");
        // Stopping a stopped server is a no-op.
        pg.stop();

        pg.restart();
        assert_eq!(pg.port(), port);
        assert!(listening(port), "nothing listens on {port} after restart");
        assert_eq!(pg.psql("SELECT v FROM kept").trim(), "42");
        let out = tcp_psql(&pg, ROLE, Some(pg.password()), "SELECT count(*) FROM kept");
        assert!(out.status.success(), "after restart: {}", both(&out));
        assert_eq!(stdout(&out), "1");

        // Restarting a running server stops it first; the data is still there.
        pg.restart();
        assert_eq!(pg.psql("SELECT v FROM kept").trim(), "42");
    }

    #[test]
    fn postgres_drop_stops_the_server_and_removes_the_directory() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let port = pg.port();
        let dir = pg.dir().to_path_buf();
        let pid = first_line_pid(&fs::read_to_string(pg.pid_file()).expect("postmaster.pid"))
            .expect("a pid in postmaster.pid");
        assert!(listening(port), "nothing listens on {port}");
        assert!(dir.join("data").is_dir());
        assert!(!process_gone(pid), "postmaster {pid} not running");

        drop(pg);
        assert!(
            !listening(port),
            "something still listens on {port} after drop"
        );
        assert!(process_gone(pid), "postmaster {pid} still runs after drop");
        assert!(!dir.exists(), "{} still exists after drop", dir.display());
    }

    #[test]
    fn postgres_drop_kills_a_server_pg_ctl_cannot_stop() {
        let Some(pg) = TestPostgres::start() else {
            return;
        };
        let port = pg.port();
        let pid = first_line_pid(&fs::read_to_string(pg.pid_file()).expect("postmaster.pid"))
            .expect("a pid in postmaster.pid");
        // Without PG_VERSION, pg_ctl refuses the data directory, so `pg_ctl stop` fails; Drop
        // must then signal the postmaster named in postmaster.pid.
        let version = pg.data_dir().join("PG_VERSION");
        fs::rename(&version, pg.data_dir().join("PG_VERSION.moved")).expect("move PG_VERSION");
        let mut status = pg.server_command("pg_ctl");
        status.arg("-D").arg(pg.data_dir()).arg("status");
        let out = run(&mut status, "pg_ctl status").unwrap_or_else(|why| panic!("{why}"));
        assert!(
            !out.status.success() && both(&out).contains("not a database cluster directory"),
            "pg_ctl still accepts the data directory: {}",
            both(&out)
        );
        let dir = pg.dir().to_path_buf();
        drop(pg);
        assert!(process_gone(pid), "postmaster {pid} still runs after drop");
        assert!(!dir.exists(), "{} still exists after drop", dir.display());
        assert!(
            !listening(port),
            "something still listens on {port} after drop"
        );
    }
}
