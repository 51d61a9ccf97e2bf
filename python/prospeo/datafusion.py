"""``enrich_person`` and ``enrich_company`` inside a datafusion-python ``SessionContext``::

    from datafusion import SessionContext
    import prospeo.datafusion

    ctx = SessionContext()
    ctx.register_udtf(prospeo.datafusion.enrich_person())
    ctx.sql("SELECT prospeo_person_full_name FROM enrich_person('leads.parquet')").to_pandas()

Needs PyPI's ``datafusion`` 55.x (the DataFusion this package is built on): another major is an
``ImportError``. Options given here are the functions' defaults; ``prospeo.*`` options set in the
session (register :func:`session_options` with ``SessionConfig.with_extension``, then ``SET
prospeo.plan = 'pro'``) and the options literal of a call (``enrich_person('x.csv',
named_struct('enrich_mobile', true))``) go over them. The pushdowns work as in Rust: a query that
reads no enrichment column is free, ``LIMIT`` and filters on input columns run before anything
is sent.

The functions read files (a path, glob or ``s3://``, ``gs://``, ``az://``, ``http(s)://`` URL,
object stores configured from the environment), not the tables of the Python session: to enrich
a table or DataFrame of the session, pass its rows to :func:`prospeo.enrich`
(``prospeo.enrich(ctx.table("leads"))``). Each query opens the response cache while it runs and
closes it after.
"""

from __future__ import annotations

import os
from typing import Any

from prospeo import Sandbox, _mapping_pairs, _option_pairs, _prospeo
from prospeo.exceptions import InputError

__all__ = ["enrich_person", "enrich_company", "session_options", "register", "DATAFUSION_MAJOR"]

#: The datafusion-python major this package's FFI functions are built for.
DATAFUSION_MAJOR: int = _prospeo.DATAFUSION_MAJOR


def _datafusion() -> Any:
    """The installed datafusion-python, checked to be the major this package is built on (an
    FFI capsule of another major would crash the process instead of failing)."""
    try:
        import datafusion
    except ImportError as e:
        raise ImportError(
            f"prospeo.datafusion needs datafusion-python {DATAFUSION_MAJOR}.x: "
            f"pip install 'datafusion>={DATAFUSION_MAJOR},<{DATAFUSION_MAJOR + 1}'"
        ) from e
    version = getattr(datafusion, "__version__", "0")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = -1
    if major != DATAFUSION_MAJOR:
        raise ImportError(
            f"prospeo.datafusion is built for datafusion-python {DATAFUSION_MAJOR}.x, but "
            f"{version} is installed: pip install 'datafusion>={DATAFUSION_MAJOR},"
            f"<{DATAFUSION_MAJOR + 1}' (or use prospeo.enrich / prospeo.sql, which need no "
            "datafusion-python)"
        )
    return datafusion


def _literal_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class _Call:
    """The Python side of ``enrich_person(...)`` in SQL: reads the call's arguments and asks
    the engine for the table (an FFI table provider that supports filter pushdown)."""

    def __init__(self, function: Any) -> None:
        self._function = function
        self.__name__ = function.name

    def __call__(self, *args: Any, session: Any) -> Any:
        name = self._function.name
        usage = f"usage: {name}('path, glob or URL' [, named_struct('option', value, ...)])"
        if not args or len(args) > 2:
            raise InputError(f"{name}: expected one or two arguments; {usage}")
        try:
            value = args[0].python_value()
        except Exception:  # noqa: BLE001 - not a literal
            value = None
        value = value.as_py() if hasattr(value, "as_py") else value
        if not isinstance(value, str):
            raise InputError(f"{name}: the first argument must be a string; {usage}")
        literal: list[tuple[str, str]] = []
        if len(args) == 2:
            literal = _options_literal(name, args[1])
        return self._function.provider(value, literal, session)


def _options_literal(name: str, expr: Any) -> list[tuple[str, str]]:
    """The options of ``named_struct('option', value, ...)`` or ``MAP {'option': value}`` (both
    reach a table function folded into a literal)."""
    try:
        value = expr.python_value()
    except Exception as e:  # noqa: BLE001 - reported with the usage
        raise InputError(
            f"{name}: options must be named_struct('option', value, ...) or MAP {{'option': value}}"
        ) from e
    row = value.as_py() if hasattr(value, "as_py") else value
    items = row.items() if isinstance(row, dict) else (row or [])
    pairs: list[tuple[str, str]] = []
    for key, item in items:
        if str(key).strip().lower() == "map":
            entries = item.items() if isinstance(item, dict) else (item or [])
            pairs.append(("map", ",".join(f"{c}={_literal_value(d)}" for c, d in entries)))
        else:
            pairs.append((str(key), _literal_value(item)))
    return pairs


def _function(
    endpoint: str,
    name: str,
    sandbox: Sandbox | None,
    api_key_file: str | os.PathLike[str] | None,
    options: dict[str, Any],
) -> Any:
    datafusion = _datafusion()
    if sandbox is not None and not isinstance(sandbox, Sandbox):
        raise InputError("sandbox must be a prospeo.Sandbox that outlives the session")
    mapping = options.pop("mapping", None)
    pairs = _option_pairs(options)
    if mapping is not None:
        pairs.append(("map", ",".join(_mapping_pairs(mapping) or [])))
    function = _prospeo.TableFunction(
        endpoint,
        pairs,
        sandbox=None if sandbox is None else sandbox._inner,
        api_key_file=None if api_key_file is None else os.fspath(api_key_file),
    )
    return datafusion.udtf(_Call(function), name, with_session=True)


def enrich_person(
    *,
    sandbox: Sandbox | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Any:
    """The ``enrich_person`` table function for ``ctx.register_udtf``."""
    return _function("person", "enrich_person", sandbox, api_key_file, options)


def enrich_company(
    *,
    sandbox: Sandbox | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Any:
    """The ``enrich_company`` table function for ``ctx.register_udtf``."""
    return _function("company", "enrich_company", sandbox, api_key_file, options)


def session_options(**options: Any) -> Any:
    """The ``prospeo.*`` options as a config extension:
    ``SessionConfig().with_extension(prospeo.datafusion.session_options(plan="pro"))`` makes
    ``SET prospeo.<option> = value`` work in the session."""
    _datafusion()
    return _prospeo.SessionOptions(_option_pairs(options))


def register(
    ctx: Any,
    *,
    sandbox: Sandbox | None = None,
    api_key_file: str | os.PathLike[str] | None = None,
    **options: Any,
) -> None:
    """Registers ``enrich_person`` and ``enrich_company`` on ``ctx``."""
    ctx.register_udtf(enrich_person(sandbox=sandbox, api_key_file=api_key_file, **options))
    ctx.register_udtf(enrich_company(sandbox=sandbox, api_key_file=api_key_file, **options))
