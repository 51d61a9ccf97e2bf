"""A private PostgreSQL server for the Python tests, as ``tests/integration/postgres.rs`` runs
one for the Rust tests: the machine's PostgreSQL binaries, a fresh temporary directory, 127.0.0.1
and a free port; :meth:`TestPostgres.close` stops the server and removes the directory.

Binaries: ``PROSPEO_PG_BINDIR`` when set (it must hold ``initdb``, ``pg_ctl`` and ``postgres``),
else the highest version under ``/usr/lib/postgresql/*/bin``, else ``pg_config --bindir``;
``psql`` from that folder, else from ``PATH``. With none, :func:`start` returns ``None`` (the
caller skips) unless ``PROSPEO_REQUIRE_POSTGRES`` is set, when it raises.

User: ``initdb`` and ``postgres`` refuse to run as root, so when the tests run as root every
server command (``initdb``, ``pg_ctl``) runs as ``nobody`` (uid and gid 65534) through
``setpriv`` (or ``runuser``), in a directory under ``/tmp`` handed to that user. ``psql`` runs as
the current user: it only connects.

Authentication: ``initdb -A trust -U postgres``, then this ``pg_hba.conf`` (nothing else)::

    local all all                trust          # the Unix socket (in the private directory)
    host  all all 127.0.0.1/32   scram-sha-256  # TCP: a password for every role

The role ``prospeo`` (password :data:`PASSWORD`, a SCRAM verifier) owns the database
``prospeo``; code under test connects to :attr:`TestPostgres.url` over TCP with the password
from ``PGPASSWORD``.

Every command runs under a deadline; ``pg_ctl`` waits at most 60 seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

#: The password of the role ``prospeo``.
PASSWORD = "prospeo-test-secret"
#: The role and database code under test uses.
ROLE = "prospeo"
#: The superuser, reachable over the Unix socket only.
SUPERUSER = "postgres"
#: uid and gid of ``nobody``/``nogroup``, which run the server when the tests run as root.
NOBODY = 65534
#: Longest any one command may run (seconds).
COMMAND_TIMEOUT = 120
#: ``pg_ctl -t``: how long ``pg_ctl`` waits for the server to start or stop.
PG_CTL_WAIT_SECS = 60
#: How many free ports :func:`start` tries when another process takes the chosen one first.
PORT_ATTEMPTS = 3


class NoPostgres(Exception):
    """No PostgreSQL server binaries on this machine."""


def free_port() -> int:
    """A port nothing listens on right now on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` (within one second)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _has_server(bindir: Path) -> bool:
    return all((bindir / p).is_file() for p in ("initdb", "pg_ctl", "postgres"))


def _version(name: str) -> tuple[int, ...] | None:
    if not re.fullmatch(r"\d+(\.\d+)*", name):
        return None
    return tuple(int(part) for part in name.split("."))


def find_bindir() -> Path:
    """The folder of ``initdb``, ``pg_ctl`` and ``postgres``; :class:`NoPostgres` when none."""
    configured = os.environ.get("PROSPEO_PG_BINDIR")
    if configured:
        bindir = Path(configured)
        if not _has_server(bindir):
            raise RuntimeError(
                f"PROSPEO_PG_BINDIR={bindir} holds no initdb, pg_ctl and postgres"
            )
        return bindir
    found = []
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        for entry in root.iterdir():
            version = _version(entry.name)
            if version is not None and _has_server(entry / "bin"):
                found.append((version, entry / "bin"))
    if found:
        return max(found)[1]
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            out = None
        if out is not None and out.returncode == 0:
            bindir = Path(out.stdout.strip())
            if _has_server(bindir):
                return bindir
    raise NoPostgres(
        "no initdb under /usr/lib/postgresql/*/bin, none from pg_config --bindir, and "
        "PROSPEO_PG_BINDIR is not set"
    )


def _server_prefix() -> list[str]:
    """The command prefix that runs the server's programs: empty unless the tests run as
    root, then ``setpriv`` (or ``runuser``) to ``nobody``."""
    if os.geteuid() != 0:
        return []
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/bin" + os.pathsep + "/usr/sbin"
    setpriv = shutil.which("setpriv", path=path)
    if setpriv:
        return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--"]
    runuser = shutil.which("runuser", path=path)
    if runuser:
        return [runuser, "-u", "nobody", "--"]
    raise RuntimeError(
        "running as root, and neither setpriv nor runuser is there to run initdb and the "
        "server as nobody"
    )


class TestPostgres:
    """A private PostgreSQL server on 127.0.0.1; see the module documentation."""

    __test__ = False  # not a pytest test class

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        psql = bindir / "psql"
        self.psql_bin = str(psql) if psql.is_file() else shutil.which("psql")
        if self.psql_bin is None:
            raise RuntimeError(f"the server is in {bindir} but psql is neither there nor on PATH")
        self.prefix = _server_prefix()
        self.as_nobody = bool(self.prefix)
        self.dir = Path(
            tempfile.mkdtemp(prefix="prospeo-pg-", dir="/tmp" if self.as_nobody else None)
        )
        if self.as_nobody:
            os.chown(self.dir, NOBODY, NOBODY)
        self.port = 0

    # -- what tests use ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``postgres://prospeo@127.0.0.1:PORT/prospeo`` (no password in it)."""
        return f"postgres://{ROLE}@127.0.0.1:{self.port}/{ROLE}"

    password = PASSWORD

    def psql(self, sql: str, database: str = ROLE) -> str:
        """Runs SQL as the superuser over the Unix socket; returns stdout (unaligned, tuples
        only); raises on failure."""
        out = self._run(
            [
                self.psql_bin, "-h", str(self.dir), "-p", str(self.port), "-U", SUPERUSER,
                "-d", database, "-X", "-q", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1",
                "-c", sql,
            ],
            server=False,
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"postgres: psql {sql!r} failed ({out.returncode}): {out.stdout}{out.stderr}\n"
                f"{self.log_tail()}"
            )
        return out.stdout

    def close(self) -> None:
        """Stops the server (``pg_ctl stop -m immediate``, else signals) and removes the
        directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def stop(self) -> None:
        """Stops the server now if one may run; a no-op when stopped."""
        if not self._pid_file.exists():
            return
        out = None
        try:
            out = self._run(
                [
                    self._bin("pg_ctl"), "-D", str(self._data), "-m", "immediate", "-w",
                    "-t", str(PG_CTL_WAIT_SECS), "stop",
                ]
            )
        except subprocess.TimeoutExpired:
            pass
        if out is None or out.returncode != 0:
            self._kill_postmaster()

    def log_tail(self) -> str:
        """The last lines of the server's log, for failure messages."""
        try:
            lines = self._log.read_text(errors="replace").splitlines()
        except OSError as e:
            return f"(no server log at {self._log}: {e})"
        return f"--- end of {self._log} ---\n" + "\n".join(lines[-40:])

    # -- setting up -------------------------------------------------------------------------

    @property
    def _data(self) -> Path:
        return self.dir / "data"

    @property
    def _log(self) -> Path:
        return self.dir / "server.log"

    @property
    def _pid_file(self) -> Path:
        return self._data / "postmaster.pid"

    def _bin(self, program: str) -> str:
        return str(self.bindir / program)

    def _env(self, server: bool) -> dict[str, str]:
        """No ``PG*`` setting of the developer's shell; the C locale; a password file that
        does not exist; bounded connection attempts."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(
            LC_ALL="C",
            LANG="C",
            PGPASSFILE=str(self.dir / "no-such-pgpass"),
            PGCONNECT_TIMEOUT="10",
        )
        if server:
            env["HOME"] = str(self.dir)
        return env

    def _run(self, argv: list[str], server: bool = True) -> subprocess.CompletedProcess:
        if server:
            argv = [*self.prefix, *argv]
        return subprocess.run(
            argv,
            cwd=self.dir,
            env=self._env(server),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )

    def _write_server_file(self, path: Path, text: str) -> None:
        path.write_text(text)
        if self.as_nobody:
            os.chown(path, NOBODY, NOBODY)

    def init_cluster(self) -> None:
        out = self._run(
            [
                self._bin("initdb"), "-D", str(self._data), "-A", "trust", "-U", SUPERUSER,
                "-E", "UTF8", "--no-sync",
            ]
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"postgres: initdb failed ({out.returncode}):\n{out.stdout}{out.stderr}"
            )
        conf = self._data / "postgresql.conf"
        self._write_server_file(conf, conf.read_text() + "\ninclude 'prospeo-test.conf'\n")
        self._write_server_file(
            self._data / "pg_hba.conf",
            "# Written by the test harness (python/tests/pg.py).\n"
            "local all all              trust\n"
            "host  all all 127.0.0.1/32 scram-sha-256\n",
        )

    def _write_settings(self) -> None:
        socket_dir = str(self.dir).replace("'", "''")
        self._write_server_file(
            self._data / "prospeo-test.conf",
            "listen_addresses = '127.0.0.1'\n"
            f"port = {self.port}\n"
            f"unix_socket_directories = '{socket_dir}'\n"
            "password_encryption = 'scram-sha-256'\n"
            "fsync = off\n"
            "full_page_writes = off\n",
        )

    def _start_server(self) -> str | None:
        """``pg_ctl start -w``; ``None`` once the server accepts connections, else why not."""
        out = self._run(
            [
                self._bin("pg_ctl"), "-D", str(self._data), "-l", str(self._log), "-w",
                "-t", str(PG_CTL_WAIT_SECS), "start",
            ]
        )
        if out.returncode != 0:
            return f"pg_ctl start failed ({out.returncode}): {out.stdout}{out.stderr}"
        return None

    def start_on_a_free_port(self) -> None:
        last = ""
        for _ in range(PORT_ATTEMPTS):
            self.port = free_port()
            self._write_settings()
            before = self._log.stat().st_size if self._log.exists() else 0
            why = self._start_server()
            if why is None:
                return
            log = self._log.read_bytes() if self._log.exists() else b""
            new = log[before:].decode(errors="replace")
            if "could not bind" not in new:
                raise RuntimeError(
                    f"postgres: start on port {self.port}: {why}\n{self.log_tail()}"
                )
            self.stop()  # nothing runs (the bind failed); try another port
            last = why
        raise RuntimeError(
            f"postgres: start: no free port after {PORT_ATTEMPTS} attempts: {last}\n{self.log_tail()}"
        )

    def create_role_and_database(self) -> None:
        self.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'", database=SUPERUSER)
        # CREATE DATABASE runs alone: not inside a multi-statement string's transaction.
        self.psql(f"CREATE DATABASE {ROLE} OWNER {ROLE}", database=SUPERUSER)

    def _kill_postmaster(self) -> None:
        """SIGQUIT, then SIGKILL, to the postmaster named in ``postmaster.pid``, when it still
        works in this data directory (a stale pid file may name someone else's process)."""
        try:
            pid = int(self._pid_file.read_text().splitlines()[0].strip())
        except (OSError, ValueError, IndexError):
            return
        if pid <= 1:
            return
        data = self._data.resolve()

        def ours() -> bool:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                if stat.rsplit(")", 1)[1].lstrip()[:1] in ("Z", "X"):
                    return False
                return Path(os.readlink(f"/proc/{pid}/cwd")) == data
            except OSError:
                return False

        for sig in (signal.SIGQUIT, signal.SIGKILL):
            if not ours():
                break
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 10
            while ours() and time.monotonic() < deadline:
                time.sleep(0.02)
        if not ours():
            self._pid_file.unlink(missing_ok=True)


def start() -> TestPostgres | None:
    """Starts a private server; ``None`` when no PostgreSQL binaries exist on this machine
    (raises instead when ``PROSPEO_REQUIRE_POSTGRES`` is set). Any other failure raises with the
    server's log; the directory is removed then."""
    try:
        bindir = find_bindir()
    except NoPostgres as why:
        if os.environ.get("PROSPEO_REQUIRE_POSTGRES"):
            raise RuntimeError(
                "PROSPEO_REQUIRE_POSTGRES is set but no PostgreSQL server binaries were found: "
                f"{why}"
            ) from None
        return None
    pg = TestPostgres(bindir)
    try:
        pg.init_cluster()
        pg.start_on_a_free_port()
        pg.create_role_and_database()
    except BaseException:
        pg.close()
        raise
    return pg
