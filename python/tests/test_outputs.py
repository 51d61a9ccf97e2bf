"""``enrich_to`` writes every format the binary writes, committed only when complete."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq
import pytest

import prospeo
from conftest import LEADS, demo


def read_back(path, fmt: str) -> pa.Table:
    if fmt == "parquet":
        return pq.read_table(path)
    if fmt == "csv":
        return pacsv.read_csv(
            path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)
        )
    if fmt == "ndjson":
        # Null fields are left out of a line: a column never set is absent from the inference.
        return pajson.read_json(path)
    with pa.ipc.open_file(path) as f:
        return f.read_all()


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for the module: only the first run pays."""
    return tmp_path_factory.mktemp("out-cache") / "c.redb"


@pytest.mark.parametrize("fmt", ["parquet", "csv", "ndjson", "arrow"])
def test_each_format_reads_back_with_the_same_rows_in_order(
    fmt, tmp_path, sandbox, shared_cache, enriched_leads
):
    out = tmp_path / f"enriched.{fmt}"
    s = prospeo.enrich_to(LEADS, out, sandbox=sandbox, cache=shared_cache, progress=False)
    assert isinstance(s, prospeo.Summary)
    assert s.rows == 120 and s.complete
    assert s.output.endswith(f"enriched.{fmt}")
    back = read_back(out, fmt)
    assert back.num_rows == 120
    assert back["lead_id"].to_pylist() == enriched_leads["lead_id"].to_pylist()
    assert back["prospeo_status"].to_pylist() == enriched_leads["prospeo_status"].to_pylist()
    assert back["prospeo_person_full_name"].to_pylist() == (
        enriched_leads["prospeo_person_full_name"].to_pylist()
    )
    if fmt == "ndjson":
        assert set(back.column_names) <= set(enriched_leads.column_names)
    else:
        assert back.column_names == enriched_leads.column_names
    assert not [p for p in tmp_path.iterdir() if p.name != out.name], "no temporary file is left"


def test_the_parquet_output_has_the_types_of_the_returned_table(
    tmp_path, sandbox, shared_cache, enriched_leads
):
    out = tmp_path / "typed.parquet"
    prospeo.enrich_to(LEADS, out, sandbox=sandbox, cache=shared_cache, progress=False)
    assert pq.read_schema(out).remove_metadata() == enriched_leads.schema.remove_metadata()


def test_output_format_overrides_the_extension(tmp_path, sandbox, shared_cache):
    out = tmp_path / "enriched.out"
    prospeo.enrich_to(
        LEADS, out, output_format="ndjson", sandbox=sandbox, cache=shared_cache, progress=False
    )
    assert pajson.read_json(out).num_rows == 120


def test_the_summary_counts_the_rows_written(tmp_path, fresh_sandbox):
    out = tmp_path / "enriched.parquet"
    s = prospeo.enrich_to(LEADS, out, sandbox=fresh_sandbox, progress=False)
    statuses = pq.read_table(out)["prospeo_status"].to_pylist()
    assert s.rows_by_status == {k: statuses.count(k) for k in s.rows_by_status}
    assert s.records_sent == demo(fresh_sandbox)["records"]
    assert s.credits == demo(fresh_sandbox)["credits_charged"]


@pytest.mark.parametrize(
    "name", ["a-file/enriched.parquet", "missing-dir/deeper/enriched.parquet"]
)
def test_an_unwritable_output_is_an_input_error_before_anything_is_sent(
    tmp_path, fresh_sandbox, name
):
    (tmp_path / "a-file").write_text("not a directory")
    with pytest.raises(prospeo.InputError, match="cannot write"):
        prospeo.enrich_to(LEADS, tmp_path / name, sandbox=fresh_sandbox, progress=False)
    assert demo(fresh_sandbox)["records"] == 0
    assert demo(fresh_sandbox)["requests"] == 0


def test_an_unknown_extension_or_format_is_an_input_error(tmp_path, fresh_sandbox):
    with pytest.raises(prospeo.InputError, match="extension"):
        prospeo.enrich_to(LEADS, tmp_path / "out.xyz", sandbox=fresh_sandbox, progress=False)
    with pytest.raises(prospeo.InputError, match="unknown output format"):
        prospeo.enrich_to(
            LEADS, tmp_path / "out.parquet", output_format="xlsx", sandbox=fresh_sandbox
        )
    assert demo(fresh_sandbox)["records"] == 0
    assert not (tmp_path / "out.parquet").exists()


def test_a_pyarrow_table_can_be_written(tmp_path, sandbox, shared_cache, leads_table, enriched_leads):
    out = tmp_path / "from-table.parquet"
    s = prospeo.enrich_to(
        leads_table, out, sandbox=sandbox, cache=shared_cache, progress=False
    )
    assert s.rows == 120
    back = pq.read_table(out)
    assert back["lead_id"].to_pylist() == enriched_leads["lead_id"].to_pylist()
    assert back["prospeo_status"].to_pylist() == enriched_leads["prospeo_status"].to_pylist()


def test_a_record_batch_reader_can_be_written(tmp_path, sandbox, shared_cache, leads_table):
    out = tmp_path / "from-reader.arrow"
    reader = pa.RecordBatchReader.from_batches(
        leads_table.schema, leads_table.to_batches(max_chunksize=16)
    )
    s = prospeo.enrich_to(reader, out, sandbox=sandbox, cache=shared_cache, progress=False)
    assert s.rows == 120
    assert read_back(out, "arrow")["lead_id"].to_pylist() == leads_table["lead_id"].to_pylist()


def test_a_polars_dataframe_can_be_written(tmp_path, sandbox, shared_cache):
    pl = pytest.importorskip("polars")
    out = tmp_path / "from-polars.parquet"
    frame = pl.read_csv(LEADS)
    s = prospeo.enrich_to(frame, out, sandbox=sandbox, cache=shared_cache, progress=False)
    assert s.rows == 120
    assert pq.read_table(out)["lead_id"].to_pylist() == frame["lead_id"].to_list()
