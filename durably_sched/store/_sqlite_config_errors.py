"""SQLite's part of the failed-reload contract (:mod:`.config_errors`): one small table."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from ._common import dt_to_ms, ms_to_dt
from ._sqlite_base import SqliteAccess
from .config_errors import ConfigErrorRecord, ConfigErrorStore

_COLUMNS = "reporter, host, pid, path, line, message, since, checked_at"


def _record(row: Any) -> ConfigErrorRecord:
    since, checked = ms_to_dt(row["since"]), ms_to_dt(row["checked_at"])
    assert since is not None and checked is not None
    return ConfigErrorRecord(
        row["reporter"], row["host"], row["pid"], row["path"], row["line"], row["message"], since, checked
    )


class SqliteConfigErrors(SqliteAccess, ConfigErrorStore):
    """Mixed into the SQLite store, whose ``_write`` and ``_read`` it uses."""

    async def report_config_error(self, record: ConfigErrorRecord) -> None:
        *fields, since, checked_at = record.values()
        values = (*fields, dt_to_ms(since), dt_to_ms(checked_at))

        def upsert(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO config_errors ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values
            )

        await self._write(upsert)

    async def clear_config_error(self, reporter: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM config_errors WHERE reporter = ?", (reporter,))

        await self._write(delete)

    async def list_config_errors(self, *, checked_after: datetime | None = None) -> list[ConfigErrorRecord]:
        after = -(2**62) if checked_after is None else dt_to_ms(checked_after)
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM config_errors WHERE checked_at >= ? ORDER BY since, reporter", (after,)
        )
        return [_record(row) for row in rows]
