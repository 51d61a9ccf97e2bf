"""The Python package against the binary, on the same rows and the same unthrottled sandbox.

- CPU: ``prospeo.enrich(path)`` (a pyarrow Table back) and ``prospeo.enrich_to(path,
  out.parquet)`` in a Python process, against ``prospeo enrich path -o out.parquet``: user +
  system CPU of the client process alone (the sandbox runs as a separate ``prospeo sandbox``
  process), each with a fresh cache file. The Python figures include the interpreter's start and
  ``import pyarrow`` (about 0.3 s).
- Memory: ``prospeo.enrich_batches(path)`` read batch by batch and dropped, peak resident set
  size of the Python process (``ru_maxrss`` from ``wait4``), at two input sizes.

Run: ``scripts/bench-python`` (builds the release extension and binary first); options after
it: ``--rows 100000 --memory-rows 100000,1000000``. Unix only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNLIMITED = "1000000000"
KEY = "sandbox-demo-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SandboxProcess:
    """``prospeo sandbox`` on a free loopback port, unthrottled; killed when closed."""

    def __init__(self, prospeo: str, directory: Path, credits: int) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [prospeo, "sandbox", "--bind", f"127.0.0.1:{self.port}", "--directory", str(directory),
             "--credits", str(credits), "--per-second", UNLIMITED, "--per-minute", UNLIMITED,
             "--per-day", UNLIMITED],
            stdout=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "warn"},
        )
        deadline = time.monotonic() + 300
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("the sandbox exited") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("the sandbox did not listen") from None
                time.sleep(0.1)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """Runs ``argv``; returns (CPU seconds, wall seconds, peak RSS MB, stdout)."""
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(argv, env=env, stdout=out)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0)
        text = out.read().decode()
    if process.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {process.returncode}")
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss / 1024, text


PYTHON_ENRICH = """
import sys, prospeo
u = "{unlimited}"
kw = dict(base_url=sys.argv[2], cache=sys.argv[3], per_second=u, per_minute=u, per_day=u,
          concurrency=8)
if sys.argv[1] == "enrich":
    table = prospeo.enrich(sys.argv[4], progress=False, **kw)
    print(table.num_rows, prospeo.summary(table).records_sent)
elif sys.argv[1] == "enrich_to":
    s = prospeo.enrich_to(sys.argv[4], sys.argv[5], progress=False, **kw)
    print(s.rows, s.records_sent)
else:
    rows = 0
    for batch in prospeo.enrich_batches(sys.argv[4], **kw):
        rows += batch.num_rows
    print(rows, 0)
""".replace("{unlimited}", UNLIMITED)


def generate(prospeo: str, root: Path, people: int, leads: int) -> None:
    subprocess.run(
        [prospeo, "sandbox", "generate", "--out", str(root), "--people", str(people),
         "--companies", str(max(people // 6, 1)), "--leads", str(leads)],
        check=True, stdout=subprocess.DEVNULL,
    )


def distinct_people(root: Path, rows: int) -> Path:
    """A CSV of ``rows`` distinct people of the directory, by id."""
    path = root / f"people-{rows}.csv"
    with open(root / "directory" / "people.jsonl") as people, open(path, "w") as out:
        out.write("lead_id,person_id\n")
        for i, line in enumerate(people):
            if i == rows:
                break
            out.write(f"{i},{json.loads(line)['person_id']}\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prospeo", required=True, help="the release binary")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--memory-rows", default="100000,1000000")
    parser.add_argument("--only", choices=["cpu", "memory"], help="run one half")
    args = parser.parse_args()
    memory_rows = [int(n) for n in args.memory_rows.split(",") if n]
    people = max([args.rows, *memory_rows])
    env = {**os.environ, "PROSPEO_API_KEY": KEY, "RUST_LOG": "error"}
    env.pop("PROSPEO_CACHE", None)
    work = Path(tempfile.mkdtemp(prefix="prospeo-python-bench"))
    try:
        generate(args.prospeo, work, people, args.rows)
        leads = work / "leads.parquet"
        sandbox = SandboxProcess(args.prospeo, work / "directory", people * 20 + 1000)
        try:
            print(f"python bench: {args.rows} generated leads, sandbox {sandbox.base_url}")
            print(f"{'client':<34} {'CPU s':>8} {'wall s':>8} {'peak MB':>8}  output")
            runs = {}
            if args.only == "memory":
                runs = None
            binary = [args.prospeo, "enrich", str(leads), "-o", str(work / "bin.parquet"),
                      "--cache", str(work / "c-bin.redb"), "--base-url", sandbox.base_url,
                      "--per-second", UNLIMITED, "--per-minute", UNLIMITED, "--per-day",
                      UNLIMITED, "--concurrency", "8", "--yes", "--quiet"]
            for mode, extra in [] if runs is None else [
                ("binary", []), ("enrich", []), ("enrich_to", [str(work / "py.parquet")])
            ]:
                if mode == "binary":
                    runs["prospeo enrich -o parquet"] = measure(binary, env)
                    continue
                cache = str(work / f"c-{mode}.redb")
                argv = [sys.executable, "-c", PYTHON_ENRICH, mode, sandbox.base_url, cache,
                        str(leads), *extra]
                runs[f"prospeo.{mode}"] = measure(argv, env)
            for name, (cpu, wall, peak, out) in (runs or {}).items():
                print(f"{name:<34} {cpu:>8.2f} {wall:>8.2f} {peak:>8.1f}  {out.strip()}")
            if runs:
                base = runs["prospeo enrich -o parquet"][0]
                for name in ("prospeo.enrich", "prospeo.enrich_to"):
                    print(f"{name} CPU / binary CPU: {runs[name][0] / base:.3f}")
            if args.only == "cpu":
                memory_rows = []

            peaks = []
            for rows in memory_rows:
                path = distinct_people(work, rows)
                argv = [sys.executable, "-c", PYTHON_ENRICH, "batches", sandbox.base_url,
                        str(work / f"c-mem-{rows}.redb"), str(path)]
                cpu, wall, peak, out = measure(argv, env)
                peaks.append(peak)
                print(f"{'prospeo.enrich_batches ' + str(rows):<34} {cpu:>8.2f} {wall:>8.2f} "
                      f"{peak:>8.1f}  {out.strip()}")
            if len(peaks) >= 2:
                print(f"enrich_batches peak at {memory_rows[-1]} / at {memory_rows[0]}: "
                      f"{peaks[-1] / peaks[0]:.3f}")
        finally:
            sandbox.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
