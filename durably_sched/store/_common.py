"""Pieces both backends share: migration files, JSON columns, time conversion."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

from ..errors import InvalidArgumentError

SCHEMA_VERSION = 15
NOT_UNICODE = "a text argument is not valid Unicode (a lone surrogate such as \\ud800 has no UTF-8 form)"
"""Both stores refuse such text with InvalidArgumentError (the facade names the field first)."""


def load_migrations(backend: str) -> list[tuple[int, str]]:
    """(version, sql) for every ``NNNN_name.sql`` of the backend, in version order."""
    folder = resources.files("durably_sched.store") / "migrations" / backend
    found: list[tuple[int, str]] = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql"):
            found.append((int(name.split("_", 1)[0]), entry.read_text(encoding="utf-8")))
    found.sort()
    if [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{backend} migrations are not numbered 1..N: {[v for v, _ in found]}")
    if found[-1][0] != SCHEMA_VERSION:
        raise RuntimeError(f"{backend} migrations end at {found[-1][0]}, code expects {SCHEMA_VERSION}")
    return found


def as_stored(row: Mapping[str, Any], names: str) -> dict[str, Any]:
    """The columns ``names`` (separated by spaces) of ``row`` as they are stored, keyed by name: the
    record fields that take a column's value unchanged. (Hot: every run read goes through it, so
    each ``names`` string is split once and kept.)"""
    split = _SPLIT.get(names)
    if split is None:
        split = _SPLIT[names] = tuple(names.split())
    return {name: row[name] for name in split}


_SPLIT: dict[str, tuple[str, ...]] = {}


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """Compact JSON for database columns (``json.dumps`` with these options makes a new encoder at
    every call: a third of the cost of a run's small labels)."""
    return _COMPACT.encode(value)


_DECODE = json.JSONDecoder().raw_decode


def loads(text: str) -> Any:
    """``json.loads`` of a stored JSON text: the decoder's scanner without ``json.loads``' per-call
    checks, a third of its cost for the small values a busy stream reads per step. Text that is
    not exactly one document (surrounding whitespace, or not JSON) or not a ``str`` (bytes) goes
    to ``json.loads``, which reads it or raises as always."""
    try:
        value, end = _DECODE(text)
    except (ValueError, TypeError):
        return json.loads(text)
    return value if end == len(text) else json.loads(text)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ms_to_dt(ms: int | None) -> datetime | None:
    """A stored time (integer milliseconds since the epoch) as an aware UTC datetime: the epoch plus
    whole seconds and microseconds, exact, and half the cost of ``datetime.fromtimestamp`` (a run's
    stream converts two per step)."""
    if ms is None:
        return None
    seconds, rest = divmod(ms, 1000)
    return _EPOCH + timedelta(0, seconds, rest * 1000)


def dt_to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise InvalidArgumentError("naive datetime: durably-sched needs timezone-aware times")
    return round(dt.timestamp() * 1000)


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string above every string that starts with ``prefix``, in code point order.

    ``prefix <= s < bound`` is then exactly "s starts with prefix" (None: no such bound, read to the
    end). Code point order is SQLite's BINARY collation and PostgreSQL's ``~<~`` operators.
    """
    stripped = prefix
    while stripped:
        last = ord(stripped[-1])
        if last < 0x10FFFF:
            nxt = last + 1 if last + 1 != 0xD800 else 0xE000  # surrogates cannot be stored
            return stripped[:-1] + chr(nxt)
        stripped = stripped[:-1]
    return None


def newer_schema_message(found: int) -> str:
    return (
        f"database schema version {found} is newer than this durably-sched supports "
        f"({SCHEMA_VERSION}); upgrade durably-sched"
    )
