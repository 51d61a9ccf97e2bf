"""Every kind of input gives the rows the ``prospeo`` binary gives for the same rows: the same
columns, row order, statuses and values."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pytest

import prospeo
from conftest import LEADS, assert_same_as_cli, demo, run_cli

pd = pytest.importorskip("pandas")
pl = pytest.importorskip("polars")


def enrich_fresh(data, **options) -> pa.Table:
    """On a sandbox of its own, as the binary's ``--sandbox`` is: the costs are comparable."""
    with prospeo.Sandbox() as sb:
        return prospeo.enrich(data, sandbox=sb, progress=False, **options)


def lead_ids() -> list[int]:
    with LEADS.open(newline="") as f:
        return [int(row["lead_id"]) for row in csv.DictReader(f)]


def test_a_path_gives_the_binarys_output(enriched_leads, cli_leads):
    table, _ = cli_leads
    assert_same_as_cli(enriched_leads, table)


def test_a_path_gives_the_binarys_summary(enriched_leads, cli_leads):
    _, expected = cli_leads
    s = prospeo.summary(enriched_leads)
    assert s is not None
    # Not free_enrichments: how many answers the sandbox flags as free re-enrichments can
    # differ by one between runs when two concurrent requests ask for one person (see
    # conftest.SAME_TOTAL); the credits do not.
    for key in (
        "rows", "matched", "not_matched", "invalid_datapoints", "failed", "deferred",
        "duplicates", "credits", "records_sent",
    ):
        assert s[key] == expected[key], key
    assert s.rows == 120
    assert s.complete


def test_the_output_columns_are_the_inputs_then_person_company_and_status(enriched_leads):
    names = enriched_leads.column_names
    with LEADS.open(newline="") as f:
        header = next(csv.reader(f))
    assert names[: len(header)] == header
    rest = names[len(header):]
    assert rest[-4:] == ["prospeo_status", "prospeo_error", "prospeo_cost", "prospeo_free_enrichment"]
    person = [i for i, n in enumerate(rest) if n.startswith("prospeo_person_")]
    company = [i for i, n in enumerate(rest) if n.startswith("prospeo_company_")]
    assert person and company
    assert max(person) < min(company) and max(company) == len(rest) - 5
    assert set(enriched_leads["prospeo_status"].to_pylist()) <= {
        "matched", "not_matched", "invalid_datapoints", "failed", "deferred",
    }


def test_rows_keep_the_input_order_and_every_row_comes_out_once(enriched_leads):
    assert enriched_leads["lead_id"].to_pylist() == lead_ids()


def test_the_invalid_rows_are_never_sent_and_cost_nothing(enriched_leads):
    statuses = enriched_leads["prospeo_status"].to_pylist()
    costs = enriched_leads["prospeo_cost"].to_pylist()
    invalid = [c for s, c in zip(statuses, costs) if s == "invalid_datapoints"]
    assert invalid, "the sample has invalid rows"
    assert all(c == 0 for c in invalid)
    assert sum(costs) == prospeo.summary(enriched_leads).credits


def test_a_path_object_is_read_as_its_string(cli_leads):
    table, _ = cli_leads
    assert_same_as_cli(enrich_fresh(Path(LEADS)), table)


def test_a_pyarrow_table(leads_table, cli_leads):
    table, _ = cli_leads
    assert_same_as_cli(enrich_fresh(leads_table), table)


def test_a_pyarrow_record_batch(leads_table, cli_leads):
    table, _ = cli_leads
    batch = leads_table.combine_chunks().to_batches()[0]
    assert_same_as_cli(enrich_fresh(batch), table)


def test_a_pyarrow_record_batch_reader(leads_table, cli_leads):
    table, _ = cli_leads
    batches = leads_table.to_batches(max_chunksize=7)
    reader = pa.RecordBatchReader.from_batches(leads_table.schema, batches)
    assert_same_as_cli(enrich_fresh(reader), table)


def test_a_table_with_schema_metadata(leads_table, cli_leads):
    """Tables from pandas, Parquet files or other tools carry schema metadata of their own."""
    table, _ = cli_leads
    tagged = leads_table.replace_schema_metadata({"origin": "crm export"})
    assert_same_as_cli(enrich_fresh(tagged), table)


def test_a_pandas_dataframe_with_its_own_index(cli_leads):
    table, _ = cli_leads
    df = pd.read_csv(LEADS)
    df.index = pd.Index(range(1000, 1000 + 3 * len(df), 3), name="row_key")
    result = enrich_fresh(df)
    assert "row_key" not in result.column_names
    assert not any(n.startswith("__index_level") for n in result.column_names)
    assert_same_as_cli(result, table, input_types=False)


def test_a_pandas_dataframe_with_a_default_index(cli_leads):
    table, _ = cli_leads
    result = enrich_fresh(pd.read_csv(LEADS))
    assert_same_as_cli(result, table, input_types=False)


def test_a_polars_dataframe(cli_leads):
    table, _ = cli_leads
    result = enrich_fresh(pl.read_csv(LEADS))
    assert_same_as_cli(result, table, input_types=False)


def test_the_result_goes_back_to_pandas_and_polars(enriched_leads):
    df = enriched_leads.to_pandas()
    assert len(df) == 120 and "prospeo_status" in df.columns
    frame = pl.from_arrow(enriched_leads)
    assert frame.height == 120
    assert frame["prospeo_status"].to_list() == enriched_leads["prospeo_status"].to_pylist()


@pytest.fixture(scope="module")
def split_leads(tmp_path_factory) -> Path:
    """The sample leads as two CSV files, ``part-1.csv`` then ``part-2.csv``."""
    dir = tmp_path_factory.mktemp("glob")
    lines = LEADS.read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    (dir / "part-1.csv").write_text(header + "".join(rows[:50]))
    (dir / "part-2.csv").write_text(header + "".join(rows[50:]))
    return dir


def test_a_glob_reads_every_file_as_the_binary_does(split_leads, cli, tmp_path):
    pattern = str(split_leads / "*.csv")
    out = tmp_path / "glob.parquet"
    run = run_cli(cli, "enrich", pattern, "-o", str(out), "--sandbox", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    import pyarrow.parquet as pq

    expected = pq.read_table(out)
    result = enrich_fresh(pattern)
    assert result.num_rows == 120
    assert sorted(result["lead_id"].to_pylist()) == sorted(lead_ids())
    assert_same_as_cli(result, expected)


def test_a_mapping_names_a_column_the_aliases_do_not_know(tmp_path, sandbox):
    src = tmp_path / "renamed.csv"
    text = LEADS.read_text().replace("LinkedIn URL", "Profile Link", 1)
    src.write_text(text)
    plain = prospeo.dry_run(src)
    mapped = prospeo.dry_run(src, mapping={"Profile Link": "linkedin_url"})
    assert "Profile Link" not in plain.mapping
    assert 'linkedin_url <- "Profile Link"' in mapped.mapping
    ignored = prospeo.dry_run(LEADS, mapping={"Email": None})
    assert 'email <- "Email"' not in ignored.mapping
    assert 'email <- "Email"' in plain.mapping


def test_sandbox_true_runs_on_a_sandbox_of_the_call(tmp_path):
    small = tmp_path / "five.csv"
    small.write_text("".join(LEADS.read_text().splitlines(keepends=True)[:6]))
    table = prospeo.enrich(small, sandbox=True, progress=False)
    assert table["lead_id"].to_pylist() == lead_ids()[:5]
    assert prospeo.summary(table).rows == 5


def test_a_second_call_with_the_same_cache_sends_nothing(fresh_sandbox, tmp_path):
    cache = tmp_path / "c.redb"
    first = prospeo.enrich(LEADS, sandbox=fresh_sandbox, cache=cache, progress=False)
    sent = demo(fresh_sandbox)["records"]
    assert sent == prospeo.summary(first).records_sent > 0
    second = prospeo.enrich(LEADS, sandbox=fresh_sandbox, cache=cache, progress=False)
    assert demo(fresh_sandbox)["records"] == sent, "the second call sends nothing"
    s = prospeo.summary(second)
    assert s.records_sent == 0 and s.credits == 0 and s.cached == sent
    assert second["prospeo_status"].to_pylist() == first["prospeo_status"].to_pylist()
    assert second["prospeo_person_full_name"].to_pylist() == first["prospeo_person_full_name"].to_pylist()


def test_without_a_cache_path_a_sandbox_call_keeps_no_answers(fresh_sandbox):
    five = prospeo.sql(
        "SELECT prospeo_status FROM enrich_person('" + str(LEADS) + "') LIMIT 5",
        sandbox=fresh_sandbox,
    )
    assert five.num_rows == 5
    again = prospeo.sql(
        "SELECT prospeo_status FROM enrich_person('" + str(LEADS) + "') LIMIT 5",
        sandbox=fresh_sandbox,
    )
    assert again.num_rows == 5
    assert demo(fresh_sandbox)["records"] == 10, "each call sends its rows: no cache between calls"


def test_an_unreadable_object_is_an_input_error():
    with pytest.raises(prospeo.InputError, match="cannot read a object"):
        prospeo.enrich(object(), sandbox=True)


def test_a_prefix_renames_the_enrichment_columns(sandbox, tmp_path):
    small = tmp_path / "five.csv"
    small.write_text("".join(LEADS.read_text().splitlines(keepends=True)[:6]))
    table = prospeo.enrich(small, sandbox=sandbox, prefix="x_", progress=False)
    assert table.column_names[-4:] == ["x_status", "x_error", "x_cost", "x_free_enrichment"]
    assert not any(n.startswith("prospeo_") for n in table.column_names)
    assert "x_person_full_name" in table.column_names

