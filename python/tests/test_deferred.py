"""Deferred rows are statuses: a warning (or, with ``strict``, an IncompleteError carrying the
table), and the same call later sends only them."""

from __future__ import annotations

import warnings

import pyarrow.parquet as pq
import pytest

import prospeo
from conftest import LEADS, demo

PER_DAY = 30


@pytest.fixture
def quota_sandbox():
    """A demo key allowed 30 records a day, on a clock that moves only when told."""
    with prospeo.Sandbox(per_day=PER_DAY, manual_clock=True) as sb:
        yield sb


def statuses(table) -> list[str]:
    return table["prospeo_status"].to_pylist()


def test_deferred_rows_warn_and_the_table_is_returned(quota_sandbox, tmp_path):
    with pytest.warns(prospeo.DeferredRowsWarning, match="deferred") as caught:
        table = prospeo.enrich(
            LEADS, sandbox=quota_sandbox, cache=tmp_path / "c.redb", progress=False
        )
    assert caught[0].filename == __file__, "the warning points at the caller"
    assert table.num_rows == 120
    s = prospeo.summary(table)
    assert not s.complete
    assert s.deferred == statuses(table).count("deferred") > 0
    assert demo(quota_sandbox)["records"] == PER_DAY
    assert s.records_sent == PER_DAY
    assert s.quota_returns_at is not None
    assert s.advice and str(s.deferred) in s.advice[0]
    assert s.exit_code == 3


def test_strict_raises_an_incomplete_error_carrying_the_table_and_summary(quota_sandbox):
    with warnings.catch_warnings():
        warnings.simplefilter("error", prospeo.DeferredRowsWarning)
        with pytest.raises(prospeo.IncompleteError) as info:
            prospeo.enrich(LEADS, sandbox=quota_sandbox, strict=True, progress=False)
    error = info.value
    assert isinstance(error, prospeo.ProspeoError)
    assert error.table is not None and error.table.num_rows == 120
    assert error.summary.deferred == statuses(error.table).count("deferred") > 0
    assert prospeo.summary(error.table) == error.summary
    assert "deferred" in str(error)


def test_running_again_after_the_quota_returns_sends_only_the_deferred_rows(
    quota_sandbox, tmp_path
):
    cache = tmp_path / "c.redb"
    with pytest.warns(prospeo.DeferredRowsWarning):
        first = prospeo.enrich(LEADS, sandbox=quota_sandbox, cache=cache, progress=False)
    answered = [i for i, s in enumerate(statuses(first)) if s in ("matched", "not_matched")]
    assert len(answered) >= PER_DAY

    # The same day: nothing more goes out, the answered rows come from the cache.
    with pytest.warns(prospeo.DeferredRowsWarning):
        same_day = prospeo.enrich(LEADS, sandbox=quota_sandbox, cache=cache, progress=False)
    assert demo(quota_sandbox)["records"] == PER_DAY
    assert prospeo.summary(same_day).cached == PER_DAY
    assert statuses(same_day) == statuses(first)

    quota_sandbox.advance_clock(2 * 24 * 3600)
    with pytest.warns(prospeo.DeferredRowsWarning):
        next_day = prospeo.enrich(LEADS, sandbox=quota_sandbox, cache=cache, progress=False)
    assert demo(quota_sandbox)["records"] == 2 * PER_DAY, "a new day's quota, deferred rows only"
    s = prospeo.summary(next_day)
    assert s.cached >= PER_DAY and s.records_sent == PER_DAY
    assert s.deferred < prospeo.summary(first).deferred
    for i in answered:
        assert statuses(next_day)[i] == statuses(first)[i]


def test_enrich_to_warns_or_raises_after_writing_the_output(quota_sandbox, tmp_path):
    out = tmp_path / "partial.parquet"
    with pytest.warns(prospeo.DeferredRowsWarning):
        s = prospeo.enrich_to(LEADS, out, sandbox=quota_sandbox, progress=False)
    assert not s.complete
    assert pq.read_table(out)["prospeo_status"].to_pylist().count("deferred") == s.deferred > 0

    strict_out = tmp_path / "strict.parquet"
    with pytest.raises(prospeo.IncompleteError) as info:
        prospeo.enrich_to(LEADS, strict_out, sandbox=quota_sandbox, strict=True, progress=False)
    assert info.value.summary.deferred > 0
    assert pq.read_table(strict_out).num_rows == 120, "the output is written before the raise"


def test_max_credits_defers_the_rest(fresh_sandbox):
    with pytest.warns(prospeo.DeferredRowsWarning):
        table = prospeo.enrich(LEADS, sandbox=fresh_sandbox, max_credits=5, progress=False)
    s = prospeo.summary(table)
    assert s.credits <= 5
    assert s.deferred > 0
    assert demo(fresh_sandbox)["credits_charged"] <= 5


def test_a_sandbox_without_credits_defers_every_valid_row(tmp_path):
    with prospeo.Sandbox(credits=0) as sb:
        with pytest.warns(prospeo.DeferredRowsWarning):
            table = prospeo.enrich(LEADS, sandbox=sb, progress=False)
        assert demo(sb)["credits_charged"] == 0
    s = prospeo.summary(table)
    assert s.matched == 0 and s.credits == 0
    assert s.deferred + s.invalid_datapoints + s.failed == 120
