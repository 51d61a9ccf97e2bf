"""Enriching leads from a notebook, on the embedded sandbox (nothing is paid, no key needed).

Run it as a script (``python examples/notebook.py``) or paste the cells into a notebook. It
reads the repository's sample data and writes only to a temporary directory. For real runs,
drop ``sandbox=sb`` and set ``PROSPEO_API_KEY``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from datafusion import SessionContext

import prospeo
import prospeo.datafusion

ROOT = Path(__file__).resolve().parents[1]
LEADS = ROOT / "sample-data" / "leads.csv"
ACCOUNTS = ROOT / "sample-data" / "accounts.csv"


def show(title: str, value: object) -> None:
    print(f"\n== {title}")
    print(value)


with tempfile.TemporaryDirectory(prefix="prospeo-notebook-") as tmp, prospeo.Sandbox() as sb:
    work = Path(tmp)
    cache = work / "responses.redb"  # answers are kept here: a re-run pays nothing again

    # %% What a run would send and cost (sends nothing, needs no key).
    dry = prospeo.dry_run(LEADS, cache=cache)
    show("dry run", f"{dry.rows} rows, {dry.records_to_send} to send, "
         f"at most {dry.worst_case_credits} credits")
    show("column mapping", dry.mapping)

    # %% pandas in, pyarrow out.
    leads = pd.read_csv(LEADS)
    table: pa.Table = prospeo.enrich(leads, sandbox=sb, cache=cache, progress=False)
    summary = prospeo.summary(table)
    show("summary", f"{summary.rows} rows: {summary.rows_by_status}; "
         f"{summary.credits} credits, {summary.records_sent} records sent")
    enriched = table.to_pandas()
    matched = enriched[enriched["prospeo_status"] == "matched"]
    show("matched leads (first 5)", matched[
        ["First Name", "Last Name", "prospeo_person_full_name",
         "prospeo_person_current_job_title", "prospeo_company_name"]
    ].head(5).to_string(index=False))

    # %% The same rows again: every answer comes from the cache.
    again = prospeo.summary(prospeo.enrich(leads, sandbox=sb, cache=cache, progress=False))
    show("second run", f"{again.cached} answers from the cache, {again.credits} credits")

    # %% polars in, polars out.
    us = pl.read_csv(LEADS).filter(pl.col("Country") == "United States")
    frame = pl.from_arrow(prospeo.enrich(us, sandbox=sb, cache=cache, progress=False))
    show("United States leads by status",
         frame.group_by("prospeo_status").len().sort("prospeo_status"))

    # %% Companies, and a file written by the engine (Parquet, CSV, NDJSON or Arrow).
    accounts = prospeo.enrich_companies(ACCOUNTS, sandbox=sb, cache=cache, progress=False)
    show("accounts", f"{accounts.num_rows} accounts, "
         f"{prospeo.summary(accounts).matched} matched")
    out = work / "enriched.parquet"
    written = prospeo.enrich_to(LEADS, out, sandbox=sb, cache=cache, progress=False)
    show("written", f"{written.rows} rows to {out.name}: "
         f"{pq.read_metadata(out).num_rows} rows read back")

    # %% SQL in datafusion-python: filters and LIMIT run before anything is sent.
    ctx = SessionContext()
    prospeo.datafusion.register(ctx, sandbox=sb)
    spain = ctx.sql(
        f"SELECT \"First Name\", \"Last Name\", prospeo_person_current_job_title, prospeo_status "
        f"FROM enrich_person('{LEADS}') WHERE \"Country\" = 'Spain'"
    ).to_pandas()
    show("leads in Spain (datafusion-python)", spain.to_string(index=False))

    stats = sb.stats()["keys"]["demo"]  # "records" counts both endpoints
    companies = stats["companies"]["records"]
    show("what the sandbox served",
         f"{stats['records'] - companies} person records, {companies} company records, "
         f"{stats['credits_charged']} credits")

print(f"\nnotebook example finished: {summary.rows} leads enriched")
