"""``enrich_batches`` streams: the job runs as the reader is read, a stream input is read as
it goes, and closing the reader early stops sending."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import prospeo
from conftest import LEADS, demo

COPIES = 42  # 42 x 120 = 5,040 rows; the copies differ by lead_id, so their records repeat


class CountingSource:
    """Copies of the sample leads (``lead_id`` shifted per copy), one batch a copy, counting
    the batches handed out."""

    def __init__(self, leads: pa.Table, copies: int = COPIES) -> None:
        self.leads = leads.combine_chunks()
        self.copies = copies
        self.yielded = 0

    @property
    def rows(self) -> int:
        return self.leads.num_rows * self.copies

    def expected_ids(self) -> list[int]:
        base = self.leads["lead_id"].to_pylist()
        return [i + k * 1_000_000 for k in range(self.copies) for i in base]

    def batches(self):
        for k in range(self.copies):
            ids = pc.add(self.leads["lead_id"], k * 1_000_000)
            copy = self.leads.set_column(0, "lead_id", ids)
            self.yielded += 1
            yield copy.to_batches()[0]

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.leads.schema, self.batches())


def test_a_stream_input_is_read_as_the_output_is_read(leads_table, fresh_sandbox):
    source = CountingSource(leads_table)
    reader = prospeo.enrich_batches(source.reader(), sandbox=fresh_sandbox)
    assert isinstance(reader, pa.RecordBatchReader)
    first = reader.read_next_batch()
    assert first.num_rows > 0
    assert source.yielded < COPIES, "the first rows come out before the input is exhausted"
    ids = first["lead_id"].to_pylist()
    statuses = first["prospeo_status"].to_pylist()
    for batch in reader:
        ids += batch["lead_id"].to_pylist()
        statuses += batch["prospeo_status"].to_pylist()
    assert source.yielded == COPIES
    assert ids == source.expected_ids(), "every row once, in input order"
    assert set(statuses) <= {"matched", "not_matched", "invalid_datapoints"}
    # The copies repeat the same records: each distinct one is sent once.
    assert demo(fresh_sandbox)["records"] == 111


def test_the_reader_has_the_schema_of_enrich(enriched_leads, fresh_sandbox):
    reader = prospeo.enrich_batches(LEADS, sandbox=fresh_sandbox)
    assert reader.schema.remove_metadata() == enriched_leads.schema.remove_metadata()
    table = reader.read_all()
    assert table["lead_id"].to_pylist() == enriched_leads["lead_id"].to_pylist()
    assert table["prospeo_status"].to_pylist() == enriched_leads["prospeo_status"].to_pylist()


def test_nothing_is_sent_until_the_reader_is_read(fresh_sandbox):
    reader = prospeo.enrich_batches(LEADS, sandbox=fresh_sandbox)
    try:
        assert demo(fresh_sandbox)["records"] == 0
    finally:
        reader.close()
    assert demo(fresh_sandbox)["records"] == 0


def test_closing_the_reader_early_stops_sending(fresh_sandbox):
    rows_per_batch, batches = 100, 50
    yielded = 0

    def distinct():
        """Leads of an email each: every row is a record of its own."""
        nonlocal yielded
        for b in range(batches):
            start = b * rows_per_batch
            ids = list(range(start, start + rows_per_batch))
            yielded += 1
            yield pa.record_batch(
                {"lead_id": ids, "Email": [f"lead{i}@company{i}.example" for i in ids]}
            )

    schema = pa.schema([("lead_id", pa.int64()), ("Email", pa.string())])
    reader = prospeo.enrich_batches(
        pa.RecordBatchReader.from_batches(schema, distinct()), sandbox=fresh_sandbox
    )
    first = reader.read_next_batch()
    assert first.num_rows > 0
    reader.close()
    sent = demo(fresh_sandbox)["records"]
    after_close = yielded
    assert after_close < batches, "the rest of the input is never read"
    assert sent < rows_per_batch * batches // 2, "nothing more is sent after the close"
    assert demo(fresh_sandbox)["records"] == sent


def test_a_bad_input_fails_before_reading(tmp_path, fresh_sandbox):
    bad = tmp_path / "bad.csv"
    bad.write_text("Notes\nx\n")
    with pytest.raises(prospeo.InputError, match='"Notes"'):
        prospeo.enrich_batches(bad, sandbox=fresh_sandbox)
