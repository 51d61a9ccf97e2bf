"""The Rust extension module under the ``prospeo`` package (``python/src/lib.rs``).

Thin: the public API, its docstrings and the exception classes live in ``prospeo`` itself.
Options travel as ``prospeo.*`` option names and string values, the mapping as
``COLUMN=datapoint`` strings; results that are records travel as JSON text.
"""

from collections.abc import Callable, Sequence
from typing import Any, final

import pyarrow as pa

__version__: str
#: The datafusion-python major the FFI functions are built for.
DATAFUSION_MAJOR: int

_Options = Sequence[tuple[str, str]]
#: Called with ``(total_rows, counts_json)`` while a job runs.
_ProgressCallback = Callable[[int | None, str], Any]

@final
class Sandbox:
    """The embedded sandbox, in process on 127.0.0.1: the sample directory and the demo key."""

    def __new__(
        cls,
        *,
        credits: int | None = None,
        per_minute: int | None = None,
        per_day: int | None = None,
        manual_clock: bool = False,
        latency: float = 0.0,
    ) -> Sandbox: ...
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
    def stats_json(self) -> str:
        """What the sandbox has served (``/_sandbox/stats``), as JSON."""
    def advance_clock(self, seconds: float) -> None:
        """Moves a ``manual_clock`` sandbox's clock forward."""
    def close(self) -> None:
        """Stops the sandbox (idempotent)."""

@final
class TableFunction:
    """``enrich_person`` / ``enrich_company`` for a datafusion-python ``SessionContext``."""

    def __new__(
        cls,
        endpoint: str,
        options: _Options,
        sandbox: Sandbox | None = None,
        api_key_file: str | None = None,
    ) -> TableFunction: ...
    @property
    def name(self) -> str:
        """The function's name in SQL."""
    def provider(
        self, input: str, literal: _Options, session: Any
    ) -> Provider:
        """The table of one call in the datafusion-python session ``session``."""

@final
class Provider:
    """The table of one ``enrich_person(...)`` call, an FFI table provider."""

    def __datafusion_table_provider__(self, session: Any) -> Any: ...

@final
class SessionOptions:
    """The ``prospeo.*`` options as a datafusion-python config extension."""

    def __new__(cls, options: _Options) -> SessionOptions: ...
    def __datafusion_extension_options__(self) -> Any: ...

def enrich(
    data: Any,
    endpoint: str,
    options: _Options,
    mapping: Sequence[str] | None = None,
    sandbox: Sandbox | None = None,
    api_key_file: str | None = None,
    progress: _ProgressCallback | None = None,
) -> pa.RecordBatchReader:
    """Runs a job; its rows with the summary (JSON) in the schema metadata."""

def enrich_to(
    data: Any,
    output: str,
    endpoint: str,
    options: _Options,
    mapping: Sequence[str] | None = None,
    sandbox: Sandbox | None = None,
    api_key_file: str | None = None,
    progress: _ProgressCallback | None = None,
    output_format: str | None = None,
    stream: bool = True,
) -> str:
    """Runs a job into ``output``; returns the summary as JSON. ``stream``: read ``data`` as it
    goes (never counted first) rather than held in memory."""

def enrich_batches(
    data: Any,
    endpoint: str,
    options: _Options,
    mapping: Sequence[str] | None = None,
    sandbox: Sandbox | None = None,
    api_key_file: str | None = None,
    stream: bool = True,
) -> pa.RecordBatchReader:
    """A reader that runs the job as it is read."""

def dry_run(
    data: Any,
    endpoint: str,
    options: _Options,
    mapping: Sequence[str] | None = None,
    sandbox: Sandbox | None = None,
) -> tuple[str, str]:
    """``(report_json, mapping_text)``; sends nothing."""

def account(
    options: _Options,
    sandbox: Sandbox | None = None,
    api_key_file: str | None = None,
) -> str:
    """The account's plan, credits and quota, as JSON."""

def sql(
    query: str,
    options: _Options,
    sandbox: Sandbox | None = None,
    api_key_file: str | None = None,
) -> pa.RecordBatchReader:
    """Runs one query in a session with the table functions registered."""

def option_names() -> list[str]:
    """The names of the ``prospeo.*`` options."""

def summary_key() -> str:
    """The schema metadata key of the summary JSON."""
