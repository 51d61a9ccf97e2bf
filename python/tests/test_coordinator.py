"""The PostgreSQL coordinator from Python: ``coordinator=`` (or ``PROSPEO_COORDINATOR``) shares
answers, claims and pacing between calls and threads on one key; a password in the URL and an
unreachable coordinator are errors before anything is sent.

One private PostgreSQL server for the module (``pg.py``, as the Rust tests run one); its schema
is created by the ``prospeo`` binary (``prospeo coordinator init``). Without PostgreSQL the
module skips, unless ``PROSPEO_REQUIRE_POSTGRES`` is set.
"""

from __future__ import annotations

import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import pg
import prospeo
from conftest import LEADS

SCHEMA = "prospeo_coordinator"


@pytest.fixture(scope="module")
def postgres(cli: Path):
    """A private PostgreSQL server with the coordinator's schema, for the module's tests;
    stopped at the end whatever happened."""
    server = pg.start()
    if server is None:
        pytest.skip("no PostgreSQL server binaries (set PROSPEO_PG_BINDIR, or install postgresql)")
    try:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PG") and k != "PROSPEO_COORDINATOR"
        }
        env["PGPASSWORD"] = server.password
        init = subprocess.run(
            [str(cli), "coordinator", "init", "--coordinator", server.url],
            env=env,
            cwd=server.dir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert init.returncode == 0, f"prospeo coordinator init: {init.stdout}{init.stderr}"
        yield server
    finally:
        server.close()


@pytest.fixture
def coordinator(postgres: pg.TestPostgres, monkeypatch: pytest.MonkeyPatch) -> str:
    """The coordinator's URL (no password in it), its password in ``PGPASSWORD``, and its
    tables emptied: answers a sandbox of an earlier test left (a new sandbox may get the same
    port, so the same API id) answer nothing here."""
    monkeypatch.delenv("PROSPEO_COORDINATOR", raising=False)
    monkeypatch.delenv("PGPASSFILE", raising=False)
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    tables = postgres.psql(
        "SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') FROM pg_tables "
        f"WHERE schemaname = '{SCHEMA}' AND tablename <> 'schema_version'"
    ).strip()
    assert tables, "the coordinator's schema has no tables"
    postgres.psql(f"TRUNCATE {tables}")
    return postgres.url


@pytest.fixture(scope="module")
def baseline(leads_table: pa.Table) -> pa.Table:
    """The sample leads enriched without a coordinator, on a sandbox of their own."""
    with prospeo.Sandbox() as sb:
        return prospeo.enrich(leads_table, sandbox=sb, cache=False, progress=False)


def requests(sb: prospeo.Sandbox) -> int:
    """Requests the sandbox received, with a key or without."""
    stats = sb.stats()
    return sum(k["requests"] for k in stats["keys"].values()) + stats["unauthorized"]


def demo(sb: prospeo.Sandbox) -> dict:
    return sb.stats()["keys"]["demo"]


def cost(table: pa.Table) -> int:
    return pc.sum(table["prospeo_cost"].cast(pa.int64())).as_py() or 0


def statuses(table: pa.Table) -> list[str]:
    return table["prospeo_status"].to_pylist()


def stored_answers(postgres: pg.TestPostgres) -> int:
    return int(postgres.psql(f"SELECT count(*) FROM {SCHEMA}.answers").strip())


def test_answers_are_stored_in_the_coordinator_and_a_second_call_is_free(
    coordinator, postgres, baseline, leads_table, fresh_sandbox, tmp_path, monkeypatch
):
    local_cache = tmp_path / "local-cache.redb"
    monkeypatch.setenv("PROSPEO_CACHE", str(local_cache))

    first = prospeo.enrich(
        leads_table, coordinator=coordinator, sandbox=fresh_sandbox, progress=False
    )
    assert first.num_rows == leads_table.num_rows
    assert first["lead_id"].to_pylist() == leads_table["lead_id"].to_pylist(), "input order"
    assert statuses(first) == statuses(baseline)
    assert cost(first) == cost(baseline) == demo(fresh_sandbox)["credits_charged"] > 0
    sent = requests(fresh_sandbox)
    assert sent > 0
    assert stored_answers(postgres) > 0, "the answers are in the coordinator's table"
    assert not local_cache.exists(), "with a coordinator no cache file is opened"

    second = prospeo.enrich(
        leads_table, coordinator=coordinator, sandbox=fresh_sandbox, progress=False
    )
    assert statuses(second) == statuses(first)
    assert second["lead_id"].to_pylist() == leads_table["lead_id"].to_pylist()
    assert cost(second) == 0
    assert prospeo.summary(second).credits == 0
    assert requests(fresh_sandbox) == sent, "every answer came from the coordinator"

    # PROSPEO_COORDINATOR instead of the option: the same coordinator, the same answers.
    monkeypatch.setenv("PROSPEO_COORDINATOR", coordinator)
    third = prospeo.enrich(leads_table, sandbox=fresh_sandbox, progress=False)
    assert statuses(third) == statuses(first)
    assert cost(third) == 0
    assert requests(fresh_sandbox) == sent
    assert not local_cache.exists()


def test_the_environment_variable_alone_reaches_the_coordinator(
    coordinator, postgres, baseline, leads_table, fresh_sandbox, tmp_path, monkeypatch
):
    monkeypatch.setenv("PROSPEO_CACHE", str(tmp_path / "local-cache.redb"))
    monkeypatch.setenv("PROSPEO_COORDINATOR", coordinator)

    first = prospeo.enrich(leads_table, sandbox=fresh_sandbox, progress=False)
    assert statuses(first) == statuses(baseline)
    assert stored_answers(postgres) > 0
    sent = requests(fresh_sandbox)

    # The option names the same database: the answers the environment's run stored.
    monkeypatch.delenv("PROSPEO_COORDINATOR")
    again = prospeo.enrich(
        leads_table, coordinator=coordinator, sandbox=fresh_sandbox, progress=False
    )
    assert statuses(again) == statuses(first)
    assert cost(again) == 0
    assert requests(fresh_sandbox) == sent
    assert not (tmp_path / "local-cache.redb").exists()


def test_two_threads_with_overlapping_rows_send_no_record_twice(
    coordinator, baseline, leads_table
):
    n = leads_table.num_rows
    parts = [(0, 2 * n // 3), (n // 3, n)]  # a third of the rows in both
    barrier = threading.Barrier(len(parts))
    # Latency keeps both calls' requests in flight together.
    with prospeo.Sandbox(latency=0.05) as sb:

        def run(bounds: tuple[int, int]) -> pa.Table:
            start, stop = bounds
            barrier.wait(timeout=60)
            return prospeo.enrich(
                leads_table.slice(start, stop - start),
                coordinator=coordinator,
                sandbox=sb,
                concurrency=2,
                progress=False,
            )

        with ThreadPoolExecutor(max_workers=len(parts)) as pool:
            outputs = list(pool.map(run, parts))

        stats = demo(sb)
        for (start, stop), table in zip(parts, outputs):
            assert table.num_rows == stop - start
            assert table["lead_id"].to_pylist() == leads_table["lead_id"].to_pylist()[start:stop]
            assert statuses(table) == statuses(baseline)[start:stop]
        assert stats["asked_again"] == 0, stats
        # The two callers pace in one set of shared windows: the key is never over its limits.
        assert stats["rate_limited"] == 0, stats
        assert sum(cost(t) for t in outputs) == stats["credits_charged"] == cost(baseline)


def test_the_lease_and_wait_take_a_timedelta(coordinator, baseline, leads_table, fresh_sandbox):
    rows = leads_table.slice(0, 20)
    table = prospeo.enrich(
        rows,
        coordinator=coordinator,
        coordinator_lease_secs=timedelta(seconds=10),
        coordinator_wait_secs=timedelta(minutes=2),
        sandbox=fresh_sandbox,
        progress=False,
    )
    assert statuses(table) == statuses(baseline)[:20]
    # A lease under a second is refused before anything is sent.
    with pytest.raises(prospeo.InputError, match="coordinator_lease_secs"):
        prospeo.enrich(
            rows,
            coordinator=coordinator,
            coordinator_lease_secs=timedelta(milliseconds=500),
            sandbox=fresh_sandbox,
            progress=False,
        )


def test_a_password_in_the_url_is_refused_without_echoing_it(postgres, fresh_sandbox, monkeypatch):
    monkeypatch.delenv("PROSPEO_COORDINATOR", raising=False)
    url = f"postgres://prospeo:s3cret@127.0.0.1:{postgres.port}/prospeo"
    with pytest.raises(prospeo.ProspeoError) as info:
        prospeo.enrich(LEADS, coordinator=url, sandbox=fresh_sandbox, progress=False)
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in repr(info.value)
    assert "password" in str(info.value)
    assert requests(fresh_sandbox) == 0


def test_a_password_in_the_environments_url_is_refused_too(postgres, fresh_sandbox, monkeypatch):
    monkeypatch.setenv(
        "PROSPEO_COORDINATOR", f"postgres://prospeo:s3cret@127.0.0.1:{postgres.port}/prospeo"
    )
    with pytest.raises(prospeo.ProspeoError) as info:
        prospeo.enrich(LEADS, sandbox=fresh_sandbox, progress=False)
    assert "s3cret" not in str(info.value)
    assert requests(fresh_sandbox) == 0


def test_an_unreachable_coordinator_is_an_error_before_anything_is_sent(fresh_sandbox, monkeypatch):
    monkeypatch.delenv("PROSPEO_COORDINATOR", raising=False)
    monkeypatch.setenv("PGPASSWORD", pg.PASSWORD)
    port = pg.free_port()  # nothing listens there
    url = f"postgres://prospeo@127.0.0.1:{port}/prospeo"
    with pytest.raises(prospeo.ProspeoError) as info:
        prospeo.enrich(LEADS, coordinator=url, sandbox=fresh_sandbox, progress=False)
    assert f"127.0.0.1:{port}" in str(info.value), "the message names the coordinator"
    assert pg.PASSWORD not in str(info.value)
    assert requests(fresh_sandbox) == 0
