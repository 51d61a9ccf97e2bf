"""Prospeo person and company enrichment for notebooks and ETL jobs.

A pandas or polars DataFrame, a pyarrow Table or RecordBatchReader, or a path, glob or
``s3://`` / ``gs://`` / ``az://`` / ``http(s)://`` URL of Parquet, CSV or NDJSON goes in; every
input row comes out once, in input order, with the person and company columns and a status and
cost per row, as a :class:`pyarrow.Table`::

    import prospeo
    table = prospeo.enrich(df, enrich_mobile=True)          # PROSPEO_API_KEY from the environment
    prospeo.summary(table)                                   # rows by status, credits, ...
    df = table.to_pandas()                                   # or polars.from_arrow(table)

Every answer is stored in a response cache as it arrives, so running the same call again
(after Ctrl-C, a crash, a quota stop) pays only for rows never answered. The engine is the
``prospeo`` binary's (the Rust crate ``datafusion-prospeo``): same mapping, schema, statuses and
option names. The API key is never an argument: ``PROSPEO_API_KEY``, ``PROSPEO_API_KEY_FILE`` or
``api_key_file=``.

Options (keyword arguments, named as the SQL options and CLI flags): ``only_verified_email``,
``enrich_mobile``, ``only_verified_mobile``; ``plan`` (``"starter"``, ``"growth"``, ``"pro"``),
``per_second``, ``per_minute``, ``per_day``; ``concurrency``; ``max_credits``; ``cache`` (``True``
for the default file, a path, or ``False``); ``cache_ttl`` (``"30d"`` or a ``timedelta``);
``base_url``; ``request_timeout``; ``prefix``; ``format``, ``csv_has_header``,
``csv_delimiter``, ``csv_quote`` for files; ``mapping`` (``{"Work Email": "email", "Notes":
None}``); ``api_key_file``; ``sandbox``; ``progress``; ``strict``; ``coordinator``
(``"postgres://user@host:port/db"``, else ``PROSPEO_COORDINATOR``), ``coordinator_lease_secs``
(default ``"30s"``) and ``coordinator_wait_secs`` (default ``"60s"``), each a duration string or
a ``timedelta``.

Many workers on one key (parallel Airflow tasks, notebooks, threads, pods) behave as one client
through a PostgreSQL coordinator: ``coordinator=`` (or ``PROSPEO_COORDINATOR``) names the
database, whose schema ``prospeo coordinator init`` creates once. They share pacing, claims on
the people being asked for and the answers (stored in the coordinator's ``answers`` table: no
cache file is opened), so no record is sent twice and an answer another worker paid for costs 0.
The password never goes in the URL (that is refused, without echoing it): it comes from
``PGPASSWORD``, a ``PGPASSFILE`` or ``~/.pgpass``. An unreachable coordinator at the start is an
error before anything is sent.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any

import pyarrow as pa

from prospeo import _prospeo, exceptions
from prospeo.exceptions import (
    ApiKeyError,
    CacheInUseError,
    IncompleteError,
    InputError,
    ProspeoError,
    RequestError,
)

__all__ = [
    "enrich",
    "enrich_companies",
    "enrich_batches",
    "enrich_to",
    "dry_run",
    "account",
    "sql",
    "summary",
    "Sandbox",
    "Summary",
    "DryRun",
    "Account",
    "DeferredRowsWarning",
    "ProspeoError",
    "InputError",
    "ApiKeyError",
    "CacheInUseError",
    "RequestError",
    "IncompleteError",
]

__version__: str = _prospeo.__version__

#: The schema metadata key of the run summary in a returned table.
SUMMARY_KEY: str = _prospeo.summary_key()


class DeferredRowsWarning(UserWarning):
    """Some rows were deferred (quota, credits, budget) or failed: they are in the table with
    that status; running the same call again sends only them."""


# ---------------------------------------------------------------------------------------------
# Results


class _Record(Mapping[str, Any]):
    """A read-only record: keys as attributes (``summary.matched``) and as a mapping."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_data"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict."""
        return dict(self._data)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self._data.items())
        return f"{type(self).__name__}({fields})"


class Summary(_Record):
    """The numbers of a run: ``rows``; rows by status (``matched``, ``not_matched``,
    ``invalid_datapoints``, ``failed``, ``deferred``); ``cached`` and ``duplicates`` (answered
    without a request); ``credits``, ``records_sent``, ``requests``, ``retries``,
    ``rate_limited`` (429s), ``quota_wait_seconds``, ``quota_returns_at`` (when deferred rows
    can be sent, if the API said), ``elapsed_seconds``, ``advice``."""

    @property
    def rows_by_status(self) -> dict[str, int]:
        """Rows by status."""
        return {
            status: self._data.get(key, 0)
            for status, key in [
                ("matched", "matched"),
                ("not_matched", "not_matched"),
                ("invalid_datapoints", "invalid_datapoints"),
                ("failed", "failed"),
                ("deferred", "deferred"),
            ]
        }

    @property
    def complete(self) -> bool:
        """Whether every row is settled (none deferred or failed)."""
        return not (self._data.get("deferred", 0) or self._data.get("failed", 0))


class DryRun(_Record):
    """What a run would do: ``rows``, ``valid``, ``invalid_datapoints``, ``duplicates``,
    ``cached``, ``records_to_send``, ``name_only``, ``worst_case_credits``, and ``mapping`` (how
    the input's columns map to datapoints)."""


class Account(_Record):
    """The account: ``plan``, ``remaining_credits``, ``used_credits``, the quota left
    (``minute_left``, ``day_left``) and the limits (``minute_limit``, ``day_limit``)."""


def summary(table: pa.Table | pa.Schema) -> Summary | None:
    """The summary of the run that made ``table`` (carried in its schema metadata), or ``None``
    for a table :func:`enrich` did not return (an :func:`enrich_batches` reader has none: its
    schema is fixed before the run ends)."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    raw = (schema.metadata or {}).get(SUMMARY_KEY.encode())
    return Summary(json.loads(raw)) if raw is not None else None


# ---------------------------------------------------------------------------------------------
# The sandbox


class Sandbox:
    """The embedded sandbox of the Prospeo API, in this process on 127.0.0.1: the sample
    directory (``sample-data/`` in the repository) and a demo key, nothing paid. Pass it as
    ``sandbox=`` to any call::

        with prospeo.Sandbox() as sb:
            table = prospeo.enrich("sample-data/leads.csv", sandbox=sb)
            sb.stats()     # what it served

    ``credits``, ``per_minute`` and ``per_day`` change the demo key's balance and limits;
    ``manual_clock=True`` stops its clock (``advance_clock`` moves it: a new day, say);
    ``latency`` (seconds) delays every answer, as a distant API would.
    """

    def __init__(
        self,
        *,
        credits: int | None = None,
        per_minute: int | None = None,
        per_day: int | None = None,
        manual_clock: bool = False,
        latency: float = 0.0,
    ) -> None:
        self._inner = _prospeo.Sandbox(
            credits=credits,
            per_minute=per_minute,
            per_day=per_day,
            manual_clock=manual_clock,
            latency=latency,
        )

    @property
    def base_url(self) -> str:
        """The sandbox's base URL."""
        return self._inner.base_url

    def stats(self) -> dict[str, Any]:
        """What the sandbox served, per key (``stats()["keys"]["demo"]``: requests, records,
        credits, ...), as its ``/_sandbox/stats`` endpoint reports it."""
        return json.loads(self._inner.stats_json())

    def advance_clock(self, by: float | timedelta) -> None:
        """Moves a ``manual_clock`` sandbox's clock forward."""
        seconds = by.total_seconds() if isinstance(by, timedelta) else float(by)
        self._inner.advance_clock(seconds)

    def close(self) -> None:
        """Stops the sandbox."""
        self._inner.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Sandbox(base_url={self.base_url!r})"


# ---------------------------------------------------------------------------------------------
# Arguments

_HANDLED = {"mapping", "sandbox", "api_key_file", "progress", "strict", "companies"}
_RENAMED = {"request_timeout": "request_timeout_secs", "input_format": "format"}


def _value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return f"{int(value.total_seconds())}s"
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None:
        return ""
    return str(value)


def _option_pairs(options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Keyword options as ``prospeo.*`` option names and values (checked by the engine, with
    the messages `SET prospeo.*` gives)."""
    pairs: list[tuple[str, str]] = []
    for name, value in options.items():
        if name in ("api_key", "key", "apikey"):
            raise InputError(
                "the API key is never an argument: set PROSPEO_API_KEY or PROSPEO_API_KEY_FILE, "
                "or pass api_key_file="
            )
        if name == "cache":
            if value is True or value is None:
                continue
            if value is False:
                pairs.append(("cache", "false"))
            else:
                pairs.append(("cache_path", _value(name, value)))
            continue
        pairs.append((_RENAMED.get(name, name), _value(name, value)))
    return pairs


def _mapping_pairs(mapping: Mapping[str, str | None] | None) -> list[str] | None:
    if mapping is None:
        return None
    if not isinstance(mapping, Mapping):
        raise InputError(
            "mapping must be a dict of column to datapoint, e.g. {'Work Email': 'email', "
            "'Notes': None}"
        )
    return [f"{column}={datapoint or ''}" for column, datapoint in mapping.items()]


def _streams(source: Any) -> bool:
    """Whether rows are read as the job goes (a reader, a lazy relation) rather than held in
    memory already (a Table or DataFrame: read at once, and counted for the progress bar)."""
    if isinstance(source, (str, pa.Table)):
        return False
    return not (type(source).__module__ or "").startswith("polars")


def _source(data: Any) -> Any:
    """What the engine reads: a path, or an object with ``__arrow_c_stream__``."""
    if isinstance(data, (str, os.PathLike)):
        return os.fspath(data)
    module = type(data).__module__ or ""
    if module.startswith("pandas"):
        # The index is not a column.
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if hasattr(data, "__arrow_c_stream__"):
        return data
    if hasattr(data, "to_arrow"):
        return data.to_arrow()
    raise InputError(
        f"cannot read a {type(data).__name__}: pass a path or URL, a pandas or polars DataFrame, "
        "or an object with __arrow_c_stream__ (pyarrow Table or RecordBatchReader, duckdb "
        "relation, datafusion DataFrame)"
    )


class _Sandboxed:
    """The sandbox of a call: the caller's, one for this call alone (``sandbox=True``), or
    none."""

    def __init__(self, sandbox: Sandbox | bool | None) -> None:
        self._own: Sandbox | None = None
        if sandbox is True:
            self._own = Sandbox()
            self.inner = self._own._inner
        elif isinstance(sandbox, Sandbox):
            self.inner = sandbox._inner
        elif sandbox in (None, False):
            self.inner = None
        else:
            raise InputError("sandbox must be a prospeo.Sandbox, True or False")

    def __enter__(self) -> Any:
        return self.inner

    def __exit__(self, *exc: object) -> None:
        if self._own is not None:
            self._own.close()


def _counts(total: int | None, counts: str) -> dict[str, Any]:
    data = json.loads(counts)
    settled = sum(
        data.get(k, 0)
        for k in ("matched", "not_matched", "invalid_datapoints", "failed", "deferred")
    )
    return {"total_rows": total, "settled_rows": settled, **data}


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Progress:
    """The progress reporter: a callable of the user's, a tqdm bar, or nothing."""

    def __init__(self, progress: bool | Callable[[dict[str, Any]], Any] | None) -> None:
        self._bar: Any = None
        self._tqdm: Any = None
        self.callback: Callable[[int | None, str], None] | None = None
        if progress is False:
            return
        if callable(progress):
            user = progress
            self.callback = lambda total, counts: user(_counts(total, counts))
            return
        # By default a bar only where someone watches: a notebook or a terminal (not a cron
        # job's or an Airflow task's log); progress=True asks for one anywhere.
        if progress is None and not (_in_notebook() or _stderr_is_terminal()):
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            return
        self._tqdm = tqdm
        self.callback = self._update

    def _update(self, total: int | None, counts: str) -> None:
        c = _counts(total, counts)
        if self._bar is None:
            self._bar = self._tqdm(total=total, unit="row", desc="prospeo", leave=True)
        elif total is not None and self._bar.total != total:
            # The first report can come before the input's rows are counted; `reset` also
            # resizes a notebook's widget, which setting `total` alone does not.
            self._bar.reset(total=total)
        self._bar.n = c["settled_rows"]
        self._bar.set_postfix(
            matched=c.get("matched", 0), credits=c.get("credits", 0), refresh=False
        )
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _endpoint(companies: bool) -> str:
    return "company" if companies else "person"


def _settle(table: pa.Table, strict: bool) -> pa.Table:
    """Warns about (or, with ``strict``, raises for) deferred and failed rows."""
    s = summary(table)
    if s is None or s.complete:
        return table
    message = " ".join(s.get("advice") or []) or (
        f"{s.deferred} rows were deferred and {s.failed} failed: run the same call again later"
    )
    if strict:
        raise IncompleteError(message, table=table, summary=s)
    warnings.warn(message, DeferredRowsWarning, stacklevel=3)
    return table


# ---------------------------------------------------------------------------------------------
# The calls


def enrich(
    data: Any,
    *,
    companies: bool = False,
    mapping: Mapping[str, str | None] | None = None,
    sandbox: Sandbox | bool | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
    progress: bool | Callable[[dict[str, Any]], Any] | None = None,
    strict: bool = False,
    **options: Any,
) -> pa.Table:
    """Enriches every row of ``data`` and returns them, in input order, as a pyarrow Table: the
    input's columns, then the person and company columns, ``prospeo_status``, the cost, and
    the error of rows that failed.

    ``data``: a path, glob or URL (read exactly as ``prospeo enrich`` reads it), a pandas
    DataFrame (its index is not a column), or any object with ``__arrow_c_stream__`` (pyarrow
    Table or RecordBatchReader, polars DataFrame, duckdb relation, datafusion DataFrame).
    ``companies=True`` enriches an accounts table through Bulk Enrich Company instead.

    Deferred or failed rows are statuses, not exceptions: the table is returned and a
    :class:`DeferredRowsWarning` says how many and when the quota returns. With
    ``strict=True`` an :class:`IncompleteError` carrying the table and the summary is raised
    instead (an Airflow task fails and is retried; the retry pays only for those rows).
    Ctrl-C stops sending, waits for the answers on the wire (stored in the cache) and raises
    ``KeyboardInterrupt``. :func:`summary` reads the run's numbers from the returned table.
    """
    pairs = _option_pairs(options)
    source = _source(data)
    reporter = _Progress(progress)
    try:
        with _Sandboxed(sandbox) as sb:
            reader = _prospeo.enrich(
                source,
                _endpoint(companies),
                pairs,
                mapping=_mapping_pairs(mapping),
                sandbox=sb,
                api_key_file=_path(api_key_file),
                progress=reporter.callback,
            )
            table = reader.read_all()
    finally:
        reporter.close()
    return _settle(table, strict)


def enrich_companies(data: Any, **kwargs: Any) -> pa.Table:
    """:func:`enrich` through Bulk Enrich Company: an accounts table (company name, website,
    LinkedIn page) in, the company columns out."""
    return enrich(data, companies=True, **kwargs)


def enrich_batches(
    data: Any,
    *,
    companies: bool = False,
    mapping: Mapping[str, str | None] | None = None,
    sandbox: Sandbox | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
    **options: Any,
) -> pa.RecordBatchReader:
    """Streams the enriched rows as a :class:`pyarrow.RecordBatchReader`: the job runs as the
    reader is read, and memory stays flat in the input's size (a RecordBatchReader input is
    read as it goes). For jobs that do not fit in a DataFrame::

        reader = prospeo.enrich_batches(pa.ipc.open_stream(...))
        for batch in reader: ...

    Close the reader (or let it go) to stop early: nothing more is sent. ``sandbox`` must be a
    :class:`Sandbox` that outlives the reader.
    """
    if sandbox is True:
        raise InputError("enrich_batches needs a prospeo.Sandbox that outlives the reader, not True")
    source = _source(data)
    with _Sandboxed(sandbox) as sb:
        reader = _prospeo.enrich_batches(
            source,
            _endpoint(companies),
            _option_pairs(options),
            mapping=_mapping_pairs(mapping),
            sandbox=sb,
            api_key_file=_path(api_key_file),
            stream=_streams(source),
        )
    return pa.RecordBatchReader.from_batches(reader.schema, _reraising(reader))


_TAGGED = re.compile(r"\[prospeo:(\w+)\] (.*)", re.S)


def _reraising(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    """The reader's batches; an error of the job raised as this package's exception (pyarrow
    would raise every error of the stream as ``ArrowInvalid``)."""
    try:
        yield from reader
    except pa.ArrowException as e:
        found = _TAGGED.search(str(e))
        if found is None:
            raise
        name, message = found.groups()
        if name == "KeyboardInterrupt":
            raise KeyboardInterrupt from None
        raise getattr(exceptions, name, RequestError)(message) from None
    finally:
        reader.close()


def enrich_to(
    data: Any,
    output: str | os.PathLike[str],
    *,
    output_format: str | None = None,
    companies: bool = False,
    mapping: Mapping[str, str | None] | None = None,
    sandbox: Sandbox | bool | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
    progress: bool | Callable[[dict[str, Any]], Any] | None = None,
    strict: bool = False,
    **options: Any,
) -> Summary:
    """Enriches ``data`` into ``output``, as ``prospeo enrich -o`` does: Parquet (zstd), CSV,
    NDJSON or Arrow IPC by extension or ``output_format``, a local path or an ``s3://``,
    ``gs://``, ``az://`` URL; written to a temporary file or upload and committed only when
    complete. Returns the run's :class:`Summary`; deferred rows warn (or, with ``strict``,
    raise :class:`IncompleteError`, the output already written)."""
    pairs = _option_pairs(options)
    source = _source(data)
    reporter = _Progress(progress)
    try:
        with _Sandboxed(sandbox) as sb:
            raw = _prospeo.enrich_to(
                source,
                os.fspath(output),
                _endpoint(companies),
                pairs,
                mapping=_mapping_pairs(mapping),
                sandbox=sb,
                api_key_file=_path(api_key_file),
                progress=reporter.callback,
                output_format=output_format,
                stream=_streams(source),
            )
    finally:
        reporter.close()
    s = Summary(json.loads(raw))
    if not s.complete:
        message = " ".join(s.get("advice") or [])
        if strict:
            raise IncompleteError(message, table=None, summary=s)
        warnings.warn(message, DeferredRowsWarning, stacklevel=2)
    return s


def dry_run(
    data: Any,
    *,
    companies: bool = False,
    mapping: Mapping[str, str | None] | None = None,
    sandbox: Sandbox | bool | None = None,
    **options: Any,
) -> DryRun:
    """What a run would do, as ``prospeo enrich --dry-run`` counts it: rows valid, invalid,
    duplicate and already cached, records to send and the worst-case credits. Sends nothing
    and needs no key."""
    pairs = _option_pairs(options)
    with _Sandboxed(sandbox) as sb:
        raw, mapping_text = _prospeo.dry_run(
            _source(data), _endpoint(companies), pairs, mapping=_mapping_pairs(mapping), sandbox=sb
        )
    return DryRun({**json.loads(raw), "mapping": mapping_text})


def account(
    *,
    sandbox: Sandbox | bool | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Account:
    """The account's plan, credits and the quota left this minute and today (free)."""
    pairs = _option_pairs(options)
    with _Sandboxed(sandbox) as sb:
        raw = _prospeo.account(pairs, sandbox=sb, api_key_file=_path(api_key_file))
    return Account(json.loads(raw))


def sql(
    query: str,
    *,
    sandbox: Sandbox | bool | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
    **options: Any,
) -> pa.Table:
    """Runs one SQL query in a session with ``enrich_person`` and ``enrich_company``
    registered and ``options`` as its ``prospeo.*`` options; returns the result as a pyarrow
    Table::

        prospeo.sql("SELECT prospeo_person_full_name, prospeo_status FROM enrich_person('leads.csv')")

    Queries that read no enrichment column are free and need no key.
    """
    pairs = _option_pairs(options)
    with _Sandboxed(sandbox) as sb:
        reader = _prospeo.sql(query, pairs, sandbox=sb, api_key_file=_path(api_key_file))
        return reader.read_all()


def _path(path: str | os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)
