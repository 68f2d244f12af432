"""What the PostgreSQL store's mixins share: its retrying ``_run`` and the helpers of its SQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from ..errors import InvalidArgumentError
from ._common import dumps
from ._pg_sql import RUN_SELECT
from .records import NewLog, RunRecord, WriteResult
from .rows import fence_result, run_from_row
from .rules import MakeRule

T = TypeVar("T")
ConnOp = Callable[[Any, bool], Awaitable[T]]
"""An operation of the store: (connection, replay) -> result (see ``PostgresStore._run``)."""


class PostgresAccess:
    """The PostgreSQL store's own ``_run`` (a pool connection, retried after lost connections),
    for the mixins that make up the store."""

    async def _run(self, what: str, op: ConnOp[T], *, budget: float | None = None) -> T:
        raise NotImplementedError  # pragma: no cover - the store's own

    async def _rule(self, what: str, make: MakeRule[T], *, atomic: bool = True) -> T:
        raise NotImplementedError  # pragma: no cover - PostgresRules's


def aware(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise InvalidArgumentError("naive datetime: durably-sched needs timezone-aware times")
    return dt


def free_text(value: str | None) -> str | None:
    """Free text for a text column. PostgreSQL text cannot hold NUL (SQLite's can): a NUL in an
    error or log message would make the write fail -- and a failure that cannot be recorded would
    be retried forever -- so it becomes U+FFFD instead."""
    return value.replace("\x00", "\ufffd") if value is not None and "\x00" in value else value


def log_arrays(logs: Sequence[NewLog]) -> list[list[Any]]:
    return [
        [lg.step_name for lg in logs],
        [lg.level for lg in logs],
        [free_text(lg.message) for lg in logs],
        [dumps(lg.data) for lg in logs],
        [aware(lg.created_at) for lg in logs],
    ]


def row_status(row: Any) -> WriteResult:
    return fence_result(None if row is None else row["status"])


async def fetch_run(conn: Any, run_id: str) -> RunRecord | None:
    row = await conn.fetchrow(f"SELECT {RUN_SELECT} FROM runs WHERE id = $1", run_id)
    return None if row is None else run_from_row(row)
