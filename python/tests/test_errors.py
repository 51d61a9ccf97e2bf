"""Errors are ProspeoErrors of the right class, say what to do, and never show the key."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import warnings

import pytest

import prospeo
from conftest import ACCOUNTS, LEADS, demo

SECRET = "pk-test-Zq7f0XsecretVALUE-9d41"
#: Nothing listens there: a call that would send anything fails on this machine.
NOWHERE = "http://127.0.0.1:9"


def test_the_exception_classes():
    for cls in (
        prospeo.InputError, prospeo.ApiKeyError, prospeo.CacheInUseError,
        prospeo.RequestError, prospeo.IncompleteError,
    ):
        assert issubclass(cls, prospeo.ProspeoError)
    assert issubclass(prospeo.InputError, ValueError)
    assert issubclass(prospeo.DeferredRowsWarning, UserWarning)


def test_a_missing_key_is_an_api_key_error(monkeypatch):
    monkeypatch.delenv("PROSPEO_API_KEY", raising=False)
    monkeypatch.delenv("PROSPEO_API_KEY_FILE", raising=False)
    with pytest.raises(prospeo.ApiKeyError, match="PROSPEO_API_KEY"):
        prospeo.enrich(LEADS, base_url=NOWHERE, progress=False)


def test_an_unreadable_key_file_is_an_api_key_error(tmp_path):
    with pytest.raises(prospeo.ApiKeyError):
        prospeo.enrich(
            LEADS, base_url=NOWHERE, api_key_file=tmp_path / "missing.key", progress=False
        )


def test_a_refused_key_is_an_api_key_error(monkeypatch, fresh_sandbox):
    monkeypatch.setenv("PROSPEO_API_KEY", "wrong")
    with pytest.raises(prospeo.ApiKeyError, match="refused"):
        prospeo.enrich(LEADS, base_url=fresh_sandbox.base_url, progress=False)
    assert fresh_sandbox.stats()["unauthorized"] >= 1
    assert demo(fresh_sandbox)["records"] == 0


def test_a_key_from_a_file_is_used(tmp_path, fresh_sandbox):
    key_file = tmp_path / "key"
    key_file.write_text("wrong\n")
    with pytest.raises(prospeo.ApiKeyError, match="refused"):
        prospeo.account(base_url=fresh_sandbox.base_url, api_key_file=key_file)
    assert fresh_sandbox.stats()["unauthorized"] == 1


def test_the_key_is_never_shown(monkeypatch, fresh_sandbox, caplog, capfd, tmp_path):
    monkeypatch.setenv("PROSPEO_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(prospeo.ApiKeyError) as enrich_error:
            prospeo.enrich(LEADS, base_url=fresh_sandbox.base_url, progress=False)
        with pytest.raises(prospeo.ApiKeyError) as to_error:
            prospeo.enrich_to(
                LEADS, tmp_path / "o.parquet", base_url=fresh_sandbox.base_url, progress=False
            )
        with pytest.raises(prospeo.ApiKeyError) as account_error:
            prospeo.account(base_url=fresh_sandbox.base_url)
        with pytest.raises(prospeo.ProspeoError) as sql_error:
            prospeo.sql(
                f"SELECT prospeo_status FROM enrich_person('{LEADS}')",
                base_url=fresh_sandbox.base_url,
            )
    for info in (enrich_error, to_error, account_error, sql_error):
        seen += [str(info.value), repr(info.value), str(info.value.args)]
    out, err = capfd.readouterr()
    seen += [out, err, caplog.text, repr(fresh_sandbox)]
    seen += [str(w.message) for w in caught]
    seen += [repr(prospeo.Summary({"rows": 1})), repr(prospeo.dry_run(LEADS))]
    assert fresh_sandbox.stats()["unauthorized"] >= 3, "the key was sent and refused"
    for text in seen:
        assert SECRET not in text
        assert SECRET[8:20] not in text


@pytest.mark.parametrize("name", ["api_key", "key", "apikey"])
def test_the_key_is_never_an_argument(name):
    with pytest.raises(prospeo.InputError, match="PROSPEO_API_KEY") as info:
        prospeo.enrich(LEADS, sandbox=True, **{name: SECRET})
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    with pytest.raises(prospeo.InputError):
        prospeo.enrich_to(LEADS, "x.parquet", sandbox=True, **{name: SECRET})
    with pytest.raises(prospeo.InputError):
        prospeo.sql("SELECT 1", **{name: SECRET})


def test_an_input_with_no_mappable_column_names_its_columns(tmp_path, fresh_sandbox):
    bad = tmp_path / "notes.csv"
    bad.write_text("Notes,Amount\nhello,3\nworld,4\n")
    with pytest.raises(prospeo.InputError) as info:
        prospeo.enrich(bad, sandbox=fresh_sandbox, progress=False)
    message = str(info.value)
    assert '"Notes"' in message and '"Amount"' in message
    assert "map" in message
    assert isinstance(info.value, ValueError)
    assert demo(fresh_sandbox)["requests"] == 0


def test_a_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(prospeo.InputError, match="nothing-here.csv"):
        prospeo.enrich(tmp_path / "nothing-here.csv", sandbox=True)


def test_an_unknown_option_names_the_options():
    with pytest.raises(prospeo.InputError, match="enrich_mobile"):
        prospeo.enrich(LEADS, sandbox=True, enrich_mobil=True)


def test_a_bad_option_value_is_an_input_error():
    with pytest.raises(prospeo.InputError, match="plan"):
        prospeo.dry_run(LEADS, plan="platinum")


def test_a_bad_mapping_is_an_input_error():
    with pytest.raises(prospeo.InputError):
        prospeo.dry_run(LEADS, mapping=[("Email", "email")])
    with pytest.raises(prospeo.InputError):
        prospeo.dry_run(LEADS, mapping={"Email": "shoe_size"})


def test_a_bad_sandbox_argument_is_an_input_error():
    with pytest.raises(prospeo.InputError, match="sandbox"):
        prospeo.enrich(LEADS, sandbox="yes")
    with pytest.raises(prospeo.InputError, match="outlives"):
        prospeo.enrich_batches(LEADS, sandbox=True)


@pytest.mark.parametrize("flag", ["enrich_mobile", "only_verified_email", "only_verified_mobile"])
def test_person_flags_with_companies_are_an_input_error(flag, fresh_sandbox):
    with pytest.raises(prospeo.InputError, match="person options"):
        prospeo.enrich_companies(ACCOUNTS, sandbox=fresh_sandbox, **{flag: True})
    with pytest.raises(prospeo.InputError, match="person options"):
        prospeo.dry_run(ACCOUNTS, companies=True, **{flag: True})
    assert demo(fresh_sandbox)["companies"]["requests"] == 0


HOLDER = r"""
import sys
import prospeo
with prospeo.Sandbox() as sb:
    reader = prospeo.enrich_batches(sys.argv[1], sandbox=sb, cache=sys.argv[2])
    print("holding", flush=True)
    sys.stdin.readline()
    del reader
"""


def test_a_cache_held_by_another_process_is_a_cache_in_use_error(tmp_path, fresh_sandbox):
    cache = tmp_path / "shared.redb"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(LEADS), str(cache)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The holder opens the cache before it says so; it then waits for a line on stdin.
        line = holder.stdout.readline()
        assert line.strip() == "holding", holder.stderr.read() if not line else line
        with pytest.raises(prospeo.CacheInUseError) as info:
            prospeo.enrich(LEADS, sandbox=fresh_sandbox, cache=cache, progress=False)
        assert str(cache) in str(info.value)
        assert demo(fresh_sandbox)["records"] == 0
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    # Released: the cache is usable again.
    table = prospeo.enrich(LEADS, sandbox=fresh_sandbox, cache=cache, progress=False)
    assert table.num_rows == 120


def test_incomplete_error_pickles_with_its_table_and_summary(leads_table):
    s = prospeo.Summary({"rows": 3, "deferred": 1})
    error = prospeo.IncompleteError("1 rows were deferred", table=leads_table.slice(0, 3), summary=s)
    back = pickle.loads(pickle.dumps(error))
    assert isinstance(back, prospeo.IncompleteError)
    assert str(back) == "1 rows were deferred"
    assert back.table.equals(leads_table.slice(0, 3))
    assert back.summary == s and back.summary.deferred == 1
