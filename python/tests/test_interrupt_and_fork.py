"""Ctrl-C during a call, a forked worker, and the cache file released after each call."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

import prospeo

REPO = Path(__file__).resolve().parents[2]
LEADS = REPO / "sample-data" / "leads.csv"


def distinct_leads(n: int) -> pa.Table:
    """``n`` valid, distinct leads (each an email of its own): every one is sent once."""
    return pa.table(
        {
            "lead_id": list(range(n)),
            "Email": [f"lead{i}@company{i}.example" for i in range(n)],
        }
    )


def test_ctrl_c_stops_sending_keeps_what_was_answered_and_a_rerun_pays_only_the_rest(tmp_path):
    leads = distinct_leads(600)
    cache = tmp_path / "answers.redb"
    # One request at a time, each answered after 200 ms: twelve requests of 50.
    with prospeo.Sandbox(latency=0.2) as sb:
        pressed = []

        def press_ctrl_c_after_the_first_answers(counts):
            if counts["settled_rows"] > 0 and not pressed:
                pressed.append(counts["settled_rows"])
                os.kill(os.getpid(), signal.SIGINT)

        with pytest.raises(KeyboardInterrupt):
            prospeo.enrich(
                leads,
                sandbox=sb,
                cache=cache,
                concurrency=1,
                progress=press_ctrl_c_after_the_first_answers,
            )
        assert pressed, "the progress callback saw answers before the interrupt"
        # `records`: what the API processed and the quota counts (a request refused with a 429
        # is submitted but not processed).
        sent_before = sb.stats()["keys"]["demo"]["records"]
        assert 0 < sent_before < 600, f"stopped part way: {sent_before} of 600 sent"

        table = prospeo.enrich(leads, sandbox=sb, cache=cache, concurrency=4, progress=False)
        assert table.num_rows == 600
        assert table.column("lead_id").to_pylist() == list(range(600))
        s = prospeo.summary(table)
        # Every answer that arrived before the interrupt came from the cache: nothing twice.
        assert sb.stats()["keys"]["demo"]["records"] == 600
        assert s.records_sent == 600 - sent_before
        assert s.cached == sent_before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_enriches_after_the_parent_did(tmp_path):
    with prospeo.Sandbox() as sb:
        parent = prospeo.enrich(LEADS, sandbox=sb, progress=False)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: a fresh runtime of its own, the parent's sandbox over TCP
            code = 1
            try:
                os.close(read)
                signal.alarm(60)
                child = prospeo.enrich(LEADS, sandbox=sb, progress=False)
                same = child.column("prospeo_status").equals(parent.column("prospeo_status"))
                os.write(write, f"{child.num_rows} {same}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read) as pipe:
            answer = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert answer == f"{parent.num_rows} True"


def test_the_cache_file_is_free_for_another_process_once_a_call_returns(tmp_path):
    cache = tmp_path / "answers.redb"
    with prospeo.Sandbox() as sb:
        first = prospeo.enrich(LEADS, sandbox=sb, cache=cache, progress=False)
        # Another process opens the same file while this one lives on (a kernel open for hours).
        script = (
            "import sys, prospeo\n"
            "d = prospeo.dry_run(sys.argv[1], cache=sys.argv[2])\n"
            "print(d.cached, d.records_to_send)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, str(LEADS), str(cache)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        summary = prospeo.summary(first)
        assert result.stdout.split() == [str(summary.records_sent), "0"]


def _open_elsewhere(cache: Path) -> subprocess.CompletedProcess[str]:
    """Another process opens ``cache`` (a dry run reads it)."""
    script = "import sys, prospeo\nprint(prospeo.dry_run(sys.argv[1], cache=sys.argv[2]).cached)\n"
    return subprocess.run(
        [sys.executable, "-c", script, str(LEADS), str(cache)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_datafusion_query_releases_the_cache_file_while_its_dataframe_lives(tmp_path):
    datafusion = pytest.importorskip("datafusion")
    import prospeo.datafusion

    cache = tmp_path / "answers.redb"
    with prospeo.Sandbox() as sb:
        ctx = datafusion.SessionContext()
        ctx.register_udtf(prospeo.datafusion.enrich_person(sandbox=sb, cache=cache))
        df = ctx.sql(f"SELECT prospeo_status FROM enrich_person('{LEADS}')")
        assert df.to_arrow_table().num_rows == 120
        result = _open_elsewhere(cache)
        assert result.returncode == 0, result.stderr
        assert int(result.stdout) == sb.stats()["keys"]["demo"]["records"]
        # The same DataFrame runs again, served by the cache.
        assert df.to_arrow_table().num_rows == 120
        assert int(result.stdout) == sb.stats()["keys"]["demo"]["records"]


def test_an_error_while_streaming_is_the_packages_exception(monkeypatch):
    monkeypatch.setenv("PROSPEO_API_KEY", "not-the-demo-key")
    with prospeo.Sandbox() as sb:
        reader = prospeo.enrich_batches(LEADS, base_url=sb.base_url, cache=False)
        with pytest.raises(prospeo.ApiKeyError, match="refused"):
            for _ in reader:
                pass
