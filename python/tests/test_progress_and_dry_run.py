"""Progress reports, dry runs (the binary's numbers), the account and the sandbox."""

from __future__ import annotations

import json

import pytest

import prospeo
from conftest import ACCOUNTS, LEADS, demo, run_cli


def test_progress_receives_counts_and_ends_settled(fresh_sandbox):
    calls: list[dict] = []
    table = prospeo.enrich(LEADS, sandbox=fresh_sandbox, progress=calls.append)
    assert calls, "the callback was called"
    for call in calls:
        assert call["total_rows"] == 120
        assert 0 <= call["settled_rows"] <= 120
        for key in ("matched", "credits", "not_matched", "invalid_datapoints", "deferred"):
            assert key in call
    settled = [c["settled_rows"] for c in calls]
    assert settled == sorted(settled), "settled rows never go back"
    last = calls[-1]
    s = prospeo.summary(table)
    assert last["settled_rows"] == 120
    assert last["matched"] == s.matched and last["credits"] == s.credits


def test_progress_for_enrich_to(fresh_sandbox, tmp_path):
    calls: list[dict] = []
    s = prospeo.enrich_to(LEADS, tmp_path / "o.parquet", sandbox=fresh_sandbox, progress=calls.append)
    assert calls[-1]["settled_rows"] == s.rows == 120
    assert calls[-1]["total_rows"] == 120


def test_a_progress_callback_that_raises_stops_the_call(fresh_sandbox):
    class Stop(Exception):
        pass

    def progress(counts):
        raise Stop

    with pytest.raises(Stop):
        prospeo.enrich(LEADS, sandbox=fresh_sandbox, progress=progress)


def test_progress_true_shows_a_bar_on_stderr(fresh_sandbox, capsys):
    pytest.importorskip("tqdm")
    prospeo.enrich(LEADS, sandbox=fresh_sandbox, progress=True)
    err = capsys.readouterr().err
    assert "prospeo" in err and "120/120" in err


def test_the_bar_takes_a_total_counted_after_its_first_report(capsys):
    # The first report can come before the input's rows are counted.
    pytest.importorskip("tqdm")
    progress = prospeo._Progress(True)
    progress._update(None, '{"matched": 0}')
    progress._update(120, '{"matched": 120}')
    progress.close()
    assert "120/120" in capsys.readouterr().err


def test_progress_false_prints_nothing(fresh_sandbox, capfd):
    prospeo.enrich(LEADS, sandbox=fresh_sandbox, progress=False)
    out, err = capfd.readouterr()
    assert out == "" and "120/120" not in err


def test_a_dry_run_sends_nothing_and_needs_no_key(monkeypatch):
    monkeypatch.delenv("PROSPEO_API_KEY", raising=False)
    d = prospeo.dry_run(LEADS, base_url="http://127.0.0.1:9")
    assert isinstance(d, prospeo.DryRun)
    assert d.rows == 120
    assert d.valid + d.invalid_datapoints == d.rows
    assert d.records_to_send == d.valid - d.duplicates - d.cached
    assert 'email <- "Email"' in d.mapping


@pytest.mark.parametrize(
    ("path", "flags", "kwargs"),
    [
        (LEADS, [], {}),
        (LEADS, ["--enrich-mobile"], {"enrich_mobile": True}),
        (ACCOUNTS, ["--companies"], {"companies": True}),
    ],
    ids=["leads", "leads-mobile", "accounts"],
)
def test_a_dry_run_gives_the_binarys_numbers(cli, tmp_path, path, flags, kwargs):
    report = tmp_path / "dry.json"
    run = run_cli(
        cli, "enrich", str(path), "--dry-run", "--sandbox", *flags, "--summary-json", str(report),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    expected = json.loads(report.read_text())
    d = prospeo.dry_run(path, **kwargs)
    for key in (
        "rows", "valid", "invalid_datapoints", "duplicates", "cached", "records_to_send",
        "worst_case_credits", "name_only",
    ):
        assert d[key] == expected[key], key
    for line in d.mapping.splitlines():
        assert line in run.stderr, line


def test_a_dry_run_agrees_with_the_run(enriched_leads):
    d = prospeo.dry_run(LEADS)
    s = prospeo.summary(enriched_leads)
    assert d.rows == s.rows
    assert d.invalid_datapoints == s.invalid_datapoints
    assert d.duplicates == s.duplicates
    assert d.records_to_send == s.records_sent
    assert d.worst_case_credits >= s.credits


def test_a_dry_run_counts_what_the_cache_answers(fresh_sandbox, tmp_path):
    cache = tmp_path / "c.redb"
    prospeo.enrich(LEADS, sandbox=fresh_sandbox, cache=cache, progress=False)
    d = prospeo.dry_run(LEADS, sandbox=fresh_sandbox, cache=cache)
    assert d.records_to_send == 0
    assert d.cached == demo(fresh_sandbox)["records"]


def test_the_account_of_the_sandbox(fresh_sandbox):
    a = prospeo.account(sandbox=fresh_sandbox)
    assert isinstance(a, prospeo.Account)
    assert a.plan == "PRO" and a.remaining_credits == 10000 and a.used_credits == 0
    assert a.day_left <= a.day_limit and a.minute_left <= a.minute_limit
    assert demo(fresh_sandbox)["records"] == 0


def test_the_sandbox_settings_show_in_the_account():
    with prospeo.Sandbox(credits=7, per_minute=11, per_day=13) as sb:
        a = prospeo.account(sandbox=sb)
    assert a.remaining_credits == 7 and a.minute_limit == 11 and a.day_limit == 13


def test_a_closed_sandbox():
    sb = prospeo.Sandbox()
    try:
        assert sb.base_url.startswith("http://127.0.0.1:")
        assert repr(sb) == f"Sandbox(base_url={sb.base_url!r})"
    finally:
        sb.close()
    sb.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        sb.stats()


def test_summary_of_a_foreign_table_is_none(leads_table):
    assert prospeo.summary(leads_table) is None


def test_summary_reads_the_schema_metadata(enriched_leads):
    raw = enriched_leads.schema.metadata[prospeo.SUMMARY_KEY.encode()]
    s = prospeo.summary(enriched_leads)
    assert s.to_dict() == json.loads(raw)
    assert prospeo.summary(enriched_leads.schema) == s
    assert s.rows_by_status == {
        k: enriched_leads["prospeo_status"].to_pylist().count(k)
        for k in ("matched", "not_matched", "invalid_datapoints", "failed", "deferred")
    }
    with pytest.raises(AttributeError):
        s.no_such_count  # noqa: B018


def test_companies_give_the_binarys_output(cli_accounts, fresh_sandbox):
    from conftest import assert_same_as_cli

    expected, summary = cli_accounts
    table = prospeo.enrich_companies(ACCOUNTS, sandbox=fresh_sandbox, progress=False)
    assert not any(n.startswith("prospeo_person_") for n in table.column_names)
    assert_same_as_cli(table, expected)
    s = prospeo.summary(table)
    for key in ("rows", "matched", "not_matched", "invalid_datapoints", "duplicates", "credits", "name_only"):
        assert s[key] == summary[key], key
    companies = demo(fresh_sandbox)["companies"]
    assert companies["records"] == s.records_sent > 0
    assert companies["credits_charged"] == s.credits
