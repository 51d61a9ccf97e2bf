"""``prospeo.sql`` and the datafusion-python table functions: the pushdowns keep what is sent
to what the query reads."""

from __future__ import annotations

import pyarrow as pa
import pytest

import prospeo
from conftest import ACCOUNTS, LEADS, demo

datafusion = pytest.importorskip("datafusion")
import prospeo.datafusion as pdf  # noqa: E402

OLIVIAS = 2  # rows of the sample with "First Name" = 'Olivia'


def count_olivias() -> int:
    import csv

    with LEADS.open(newline="") as f:
        return sum(1 for row in csv.DictReader(f) if row["First Name"] == "Olivia")


def test_the_sample_has_the_rows_the_filter_tests_expect():
    assert count_olivias() == OLIVIAS


# --- prospeo.sql ------------------------------------------------------------------------------


def test_sql_returns_a_pyarrow_table(fresh_sandbox):
    table = prospeo.sql(
        f"SELECT lead_id, prospeo_person_full_name, prospeo_status "
        f"FROM enrich_person('{LEADS}') ORDER BY lead_id LIMIT 3",
        sandbox=fresh_sandbox,
    )
    assert isinstance(table, pa.Table)
    assert table.column_names == ["lead_id", "prospeo_person_full_name", "prospeo_status"]
    assert table.num_rows == 3


def test_sql_count_sends_nothing(fresh_sandbox):
    table = prospeo.sql(f"SELECT count(*) AS n FROM enrich_person('{LEADS}')", sandbox=fresh_sandbox)
    assert table.to_pydict() == {"n": [120]}
    assert demo(fresh_sandbox)["requests"] == 0


def test_sql_a_query_of_input_columns_needs_no_key(monkeypatch):
    monkeypatch.delenv("PROSPEO_API_KEY", raising=False)
    table = prospeo.sql(
        f"SELECT \"First Name\" FROM enrich_person('{LEADS}') LIMIT 2",
        base_url="http://127.0.0.1:9",
    )
    assert table.num_rows == 2


def test_sql_limit_sends_at_most_the_limit(fresh_sandbox):
    table = prospeo.sql(
        f"SELECT prospeo_status FROM enrich_person('{LEADS}') LIMIT 5", sandbox=fresh_sandbox
    )
    assert table.num_rows == 5
    assert 0 < demo(fresh_sandbox)["records"] <= 5


def test_sql_a_filter_on_input_columns_sends_only_the_matching_rows(fresh_sandbox):
    table = prospeo.sql(
        f"SELECT \"First Name\", prospeo_status FROM enrich_person('{LEADS}') "
        "WHERE \"First Name\" = 'Olivia'",
        sandbox=fresh_sandbox,
    )
    assert table["First Name"].to_pylist() == ["Olivia"] * OLIVIAS
    assert demo(fresh_sandbox)["records"] == OLIVIAS


def test_sql_options_apply(fresh_sandbox):
    table = prospeo.sql(
        f"SELECT * FROM enrich_person('{LEADS}') LIMIT 1", sandbox=fresh_sandbox, prefix="e_"
    )
    assert "e_status" in table.column_names and "prospeo_status" not in table.column_names


def test_sql_enrich_company(fresh_sandbox):
    table = prospeo.sql(
        f"SELECT prospeo_company_name, prospeo_status FROM enrich_company('{ACCOUNTS}') LIMIT 4",
        sandbox=fresh_sandbox,
    )
    assert table.num_rows == 4
    companies = demo(fresh_sandbox)["companies"]
    assert 0 < companies["records"] <= 4


def test_sql_an_unknown_column_is_an_input_error(fresh_sandbox):
    """A query naming a column the table lacks is the user's to fix."""
    with pytest.raises(prospeo.InputError, match="person_full_name"):
        prospeo.sql(f"SELECT person_full_name FROM enrich_person('{LEADS}')", sandbox=fresh_sandbox)


# --- datafusion-python ------------------------------------------------------------------------


@pytest.fixture
def ctx(fresh_sandbox, monkeypatch, tmp_path):
    # A cache file of the test's own should the session's options name one.
    monkeypatch.setenv("PROSPEO_CACHE", str(tmp_path / "env-cache.redb"))
    config = datafusion.SessionConfig().with_extension(pdf.session_options())
    ctx = datafusion.SessionContext(config)
    pdf.register(ctx, sandbox=fresh_sandbox)
    return ctx


def test_datafusion_count_sends_nothing(ctx, fresh_sandbox):
    result = ctx.sql(f"SELECT count(*) AS n FROM enrich_person('{LEADS}')").to_pydict()
    assert result == {"n": [120]}
    assert demo(fresh_sandbox)["requests"] == 0


def test_datafusion_limit_sends_at_most_the_limit(ctx, fresh_sandbox):
    table = ctx.sql(f"SELECT * FROM enrich_person('{LEADS}') LIMIT 5").to_arrow_table()
    assert table.num_rows == 5
    assert "prospeo_status" in table.column_names
    assert 0 < demo(fresh_sandbox)["records"] <= 5


def test_datafusion_a_filter_sends_only_the_matching_rows(ctx, fresh_sandbox):
    table = ctx.sql(
        f"SELECT \"First Name\", prospeo_status FROM enrich_person('{LEADS}') "
        "WHERE \"First Name\" = 'Olivia'"
    ).to_arrow_table()
    assert table["First Name"].to_pylist() == ["Olivia"] * OLIVIAS
    assert demo(fresh_sandbox)["records"] == OLIVIAS


def test_datafusion_set_prefix_in_the_session(ctx):
    ctx.sql("SET prospeo.prefix = 'z_'")
    table = ctx.sql(f"SELECT * FROM enrich_person('{LEADS}') LIMIT 1").to_arrow_table()
    assert table.column_names[-4:] == ["z_status", "z_error", "z_cost", "z_free_enrichment"]


def test_datafusion_the_options_literal_goes_over_the_session(ctx):
    ctx.sql("SET prospeo.prefix = 'z_'")
    table = ctx.sql(
        f"SELECT * FROM enrich_person('{LEADS}', named_struct('prefix', 'q_')) LIMIT 1"
    ).to_arrow_table()
    assert "q_status" in table.column_names
    assert not any(n.startswith("z_") for n in table.column_names)


def test_datafusion_options_of_the_function_are_its_defaults(fresh_sandbox):
    ctx = datafusion.SessionContext()
    ctx.register_udtf(pdf.enrich_person(sandbox=fresh_sandbox, prefix="d_"))
    table = ctx.sql(f"SELECT * FROM enrich_person('{LEADS}') LIMIT 1").to_arrow_table()
    assert "d_status" in table.column_names


def test_datafusion_session_options_set_defaults(fresh_sandbox):
    config = datafusion.SessionConfig().with_extension(pdf.session_options(prefix="s_"))
    ctx = datafusion.SessionContext(config)
    ctx.register_udtf(pdf.enrich_person(sandbox=fresh_sandbox))
    table = ctx.sql(f"SELECT * FROM enrich_person('{LEADS}') LIMIT 1").to_arrow_table()
    assert "s_status" in table.column_names


def test_datafusion_enrich_company(fresh_sandbox):
    ctx = datafusion.SessionContext()
    ctx.register_udtf(pdf.enrich_company(sandbox=fresh_sandbox))
    table = ctx.sql(f"SELECT * FROM enrich_company('{ACCOUNTS}') LIMIT 3").to_arrow_table()
    assert table.num_rows == 3
    assert not any(n.startswith("prospeo_person_") for n in table.column_names)
    assert 0 < demo(fresh_sandbox)["companies"]["records"] <= 3


def test_datafusion_a_bad_argument_is_an_error(ctx, fresh_sandbox):
    with pytest.raises(Exception, match="enrich_person"):
        ctx.sql("SELECT * FROM enrich_person()").collect()
    assert demo(fresh_sandbox)["requests"] == 0


def test_datafusion_sandbox_answers_stay_out_of_the_environments_cache(monkeypatch, tmp_path):
    """As ``prospeo enrich --sandbox``: the cache ``PROSPEO_CACHE`` names is for paid answers."""
    paid = tmp_path / "paid.redb"
    monkeypatch.setenv("PROSPEO_CACHE", str(paid))
    query = f"SELECT prospeo_status FROM enrich_person('{LEADS}') LIMIT 5"
    for _ in range(2):
        with prospeo.Sandbox() as sb:
            config = datafusion.SessionConfig().with_extension(pdf.session_options())
            ctx = datafusion.SessionContext(config)
            pdf.register(ctx, sandbox=sb)
            assert ctx.sql(query).to_arrow_table().num_rows == 5
            assert demo(sb)["records"] == 5, "a new sandbox is asked again"
    assert not paid.exists()


def test_sql_sandbox_answers_stay_out_of_the_environments_cache(monkeypatch, tmp_path):
    paid = tmp_path / "paid.redb"
    monkeypatch.setenv("PROSPEO_CACHE", str(paid))
    with prospeo.Sandbox() as sb:
        prospeo.sql(f"SELECT prospeo_status FROM enrich_person('{LEADS}') LIMIT 5", sandbox=sb)
        prospeo.enrich(LEADS, sandbox=sb, progress=False)
    assert not paid.exists()


def test_datafusion_another_major_is_an_import_error(monkeypatch):
    monkeypatch.setattr(datafusion, "__version__", "54.0.0")
    with pytest.raises(ImportError, match="54.0.0"):
        pdf.enrich_person()
    with pytest.raises(ImportError):
        pdf.session_options()


def test_datafusion_major_is_the_installed_one():
    assert int(datafusion.__version__.split(".")[0]) == pdf.DATAFUSION_MAJOR
