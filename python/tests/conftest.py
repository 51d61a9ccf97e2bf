"""Shared fixtures: the sample data, embedded sandboxes on 127.0.0.1, the ``prospeo`` binary.

No test reaches beyond 127.0.0.1, reads the developer's key or writes the developer's cache:
the environment is cleaned for the whole session.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq
import pytest

import prospeo

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample-data"
LEADS = SAMPLE / "leads.csv"
ACCOUNTS = SAMPLE / "accounts.csv"

#: The debug build of the binary (the Rust tests build it there).
CLI = Path(
    os.environ.get(
        "PROSPEO_TEST_CLI",
        Path(
            os.environ.get(
                "CARGO_TARGET_DIR", Path.home() / ".cache/datafusion-prospeo/target"
            )
        )
        / "debug"
        / "prospeo",
    )
)

#: Columns whose per-row value may differ between two runs of the same rows: when one person
#: is asked for by two rows in two concurrent requests, the one answered first is charged and
#: the other is a free re-enrichment. The credits in total do not differ; how many rows the
#: sandbox flags as free re-enrichments can (by one, when two concurrent requests ask for one
#: person), so only the cost's total is compared.
RUN_DEPENDENT: frozenset[str] = frozenset({"prospeo_cost", "prospeo_free_enrichment"})
SAME_TOTAL: frozenset[str] = frozenset({"prospeo_cost"})

STATUSES = {"matched", "not_matched", "invalid_datapoints", "failed", "deferred"}


@pytest.fixture(scope="session", autouse=True)
def _clean_environment(tmp_path_factory: pytest.TempPathFactory):
    """No key, base URL or cache of the developer's: every call is local and throwaway."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("PROSPEO_API_KEY", "PROSPEO_API_KEY_FILE", "PROSPEO_BASE_URL"):
            mp.delenv(name, raising=False)
        mp.setenv("PROSPEO_CACHE", str(tmp_path_factory.mktemp("default-cache") / "cache.redb"))
        mp.setenv("NO_COLOR", "1")
        yield


@pytest.fixture(scope="module")
def sandbox():
    """A sandbox shared by a module's tests that do not read its counters."""
    with prospeo.Sandbox() as sb:
        yield sb


@pytest.fixture
def fresh_sandbox():
    """A sandbox of the test's own: its counters are the test's."""
    with prospeo.Sandbox() as sb:
        yield sb


def demo(sb: prospeo.Sandbox) -> dict:
    """The demo key's person counters."""
    return sb.stats()["keys"]["demo"]


@pytest.fixture(scope="session")
def leads_table() -> pa.Table:
    """The sample leads as the engine reads the CSV (empty fields are nulls)."""
    import pyarrow.csv as pacsv

    return pacsv.read_csv(
        LEADS, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)
    )


@pytest.fixture(scope="session")
def cli() -> Path:
    if not CLI.is_file() or not os.access(CLI, os.X_OK):
        pytest.skip(f"the prospeo binary is not built at {CLI} (cargo build builds it)")
    return CLI


def run_cli(cli: Path, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """The binary as a user runs it: no key or base URL from the environment, a cache of its
    own."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PROSPEO_API_KEY", "PROSPEO_API_KEY_FILE", "PROSPEO_BASE_URL")
        and not k.startswith("AWS_")
    }
    env["PROSPEO_CACHE"] = str(cwd / "cli-cache.redb")
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [str(cli), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def cli_leads(cli: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, dict]:
    """``prospeo enrich sample-data/leads.csv --sandbox``: its Parquet output and summary."""
    dir = tmp_path_factory.mktemp("cli-leads")
    out = dir / "out.parquet"
    summary = dir / "summary.json"
    run = run_cli(
        cli, "enrich", str(LEADS), "-o", str(out), "--sandbox", "--summary-json", str(summary),
        cwd=dir,
    )
    assert run.returncode == 0, run.stderr
    return pq.read_table(out), json.loads(summary.read_text())


@pytest.fixture(scope="session")
def cli_accounts(cli: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[pa.Table, dict]:
    """``prospeo enrich sample-data/accounts.csv --companies --sandbox``."""
    dir = tmp_path_factory.mktemp("cli-accounts")
    out = dir / "out.parquet"
    summary = dir / "summary.json"
    run = run_cli(
        cli, "enrich", str(ACCOUNTS), "--companies", "-o", str(out), "--sandbox",
        "--summary-json", str(summary), cwd=dir,
    )
    assert run.returncode == 0, run.stderr
    return pq.read_table(out), json.loads(summary.read_text())


@pytest.fixture(scope="session")
def enriched_leads() -> pa.Table:
    """``prospeo.enrich`` of the sample leads path on a fresh sandbox of its own."""
    with prospeo.Sandbox() as sb:
        return prospeo.enrich(str(LEADS), sandbox=sb, progress=False)


def assert_same_as_cli(table: pa.Table, expected: pa.Table, *, input_types: bool = True) -> None:
    """``table`` has the CLI output's columns (names and, for the enrichment columns always,
    types), its rows in its order, with the same statuses and values."""
    assert table.column_names == expected.column_names
    assert table.num_rows == expected.num_rows
    enrichment_start = next(
        i for i, name in enumerate(expected.column_names) if name.startswith("prospeo_")
    )
    for i, (got, want) in enumerate(zip(table.schema, expected.schema)):
        if input_types or i >= enrichment_start:
            assert got.type == want.type, f"{got.name}: {got.type} != {want.type}"
    for name in expected.column_names:
        if name in RUN_DEPENDENT:
            continue
        column = table[name]
        if column.type != expected[name].type:
            column = column.cast(expected[name].type)
        assert column.to_pylist() == expected[name].to_pylist(), name
    for name in SAME_TOTAL:
        assert pa.compute.sum(table[name].cast(pa.int64())).as_py() == pa.compute.sum(
            expected[name].cast(pa.int64())
        ).as_py(), name
