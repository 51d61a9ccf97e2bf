"""The exceptions of the ``prospeo`` package.

Every exception the package raises on purpose is a :class:`ProspeoError`. Messages name the
file, column or option at fault and say what to do, in the words of the ``prospeo`` binary.
The API key never appears in one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

    from prospeo import Summary

__all__ = [
    "ProspeoError",
    "InputError",
    "ApiKeyError",
    "CacheInUseError",
    "RequestError",
    "IncompleteError",
]


class ProspeoError(Exception):
    """The base of every error this package raises."""


class InputError(ProspeoError, ValueError):
    """The input, an option or the output is wrong: no mappable column, an unknown option, a
    bad value, an unreadable file. Fix the call; nothing was paid for."""


class ApiKeyError(ProspeoError):
    """The API key is missing, unreadable or was refused. Set ``PROSPEO_API_KEY`` or
    ``PROSPEO_API_KEY_FILE``, or pass ``api_key_file=``."""


class CacheInUseError(ProspeoError):
    """Another process holds the response cache file. Wait for it, or pass ``cache=PATH`` (a
    file of this job's own) or ``cache=False``."""


class RequestError(ProspeoError):
    """Something failed that is neither the input nor the key: the API kept failing, the
    network, the disk. Answers already received are in the cache: running the same call
    again does not pay for them twice."""


class IncompleteError(ProspeoError):
    """Raised with ``strict=True`` when some rows were deferred (quota, credits, budget) or
    failed. Carries the whole result: ``error.table`` (every row, with its status) and
    ``error.summary``. Running the same call again sends only those rows (the rest comes from
    the cache)."""

    def __init__(self, message: str, table: pa.Table | None = None, summary: Summary | None = None) -> None:
        super().__init__(message)
        self.table = table
        self.summary = summary

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.table, self.summary))
