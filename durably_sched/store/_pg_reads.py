"""Reads of the PostgreSQL store that turn every row of one query into a record."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ._pg_base import PostgresAccess
from .rows import by_run

R = TypeVar("R")


async def fetch_records(
    access: PostgresAccess, what: str, record: Callable[[Any], R], sql: str, *args: Any
) -> list[R]:
    """The rows of ``sql`` (with ``args``) as records, in the order of the rows."""

    async def read(conn: Any, replay: bool) -> list[R]:
        return [record(row) for row in await conn.fetch(sql, *args)]

    return await access._run(what, read)


async def fetch_by_run(
    access: PostgresAccess,
    what: str,
    record: Callable[[Any], R],
    sql: str,
    positions: Mapping[str, int],
    *args: Any,
) -> dict[str, list[R]]:
    """The rows of ``sql`` grouped by run: ``$1`` is the run ids of ``positions``, ``$2`` their
    positions, then ``args``. No runs, no query."""
    if not positions:
        return {}

    async def read(conn: Any, replay: bool) -> dict[str, list[R]]:
        rows = await conn.fetch(sql, list(positions), list(positions.values()), *args)
        return by_run(rows, record)

    return await access._run(what, read)
