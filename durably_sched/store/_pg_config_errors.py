"""PostgreSQL's part of the failed-reload contract (:mod:`.config_errors`): one small table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ._pg_base import PostgresAccess
from .config_errors import ConfigErrorRecord, ConfigErrorStore

_COLUMNS = "reporter, host, pid, path, line, message, since, checked_at"


class PostgresConfigErrors(PostgresAccess, ConfigErrorStore):
    """Mixed into the PostgreSQL store, whose ``_run`` (retries on lost connections) it uses.

    Every statement is safe to run twice: an upsert of the same values and deletes."""

    async def report_config_error(self, record: ConfigErrorRecord) -> None:
        async def upsert(conn: Any, replay: bool) -> None:
            await conn.execute(
                f"INSERT INTO config_errors ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                "ON CONFLICT (reporter) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid, "
                "path = EXCLUDED.path, line = EXCLUDED.line, message = EXCLUDED.message, "
                "since = EXCLUDED.since, checked_at = EXCLUDED.checked_at",
                *record.values(),
            )

        await self._run("report_config_error", upsert)

    async def clear_config_error(self, reporter: str) -> None:
        async def delete(conn: Any, replay: bool) -> None:
            await conn.execute("DELETE FROM config_errors WHERE reporter = $1", reporter)

        await self._run("clear_config_error", delete)

    async def list_config_errors(self, *, checked_after: datetime | None = None) -> list[ConfigErrorRecord]:
        async def read(conn: Any, replay: bool) -> list[ConfigErrorRecord]:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM config_errors WHERE $1::timestamptz IS NULL OR checked_at >= $1 "
                "ORDER BY since, reporter",
                checked_after,
            )
            return [ConfigErrorRecord(*row.values()) for row in rows]

        return await self._run("list_config_errors", read)
