"""SQLite's part of schedules as data (:mod:`.schedule_defs`): the SQL only; the decisions are
``schedule_defs.decide``. Every write runs in one ``BEGIN IMMEDIATE`` transaction of the writer."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from ._common import dt_to_ms, ms_to_dt
from ._sqlite_base import SqliteAccess, now_ms
from ._sqlite_rules import ADVANCE_CURSOR
from .schedule_defs import (
    DefChange,
    ScheduleDef,
    ScheduleDefStore,
    ScheduleVersion,
    SyncEntry,
    SyncResult,
    cursor_move,
    decide,
    def_of,
    plan_sync,
    sync_fingerprint,
    synced_already,
    version_of,
)

_DEF = "name, source, version, definition, deleted, path, line, seq, created_at, updated_at"
_VERSION = "name, version, op, source, by, at, note, definition, changed, seq"


def _current(conn: sqlite3.Connection, name: str) -> ScheduleDef | None:
    row = conn.execute(f"SELECT {_DEF} FROM schedule_defs WHERE name = ?", (name,)).fetchone()
    return None if row is None else def_of(row, ms_to_dt)


def _apply(
    conn: sqlite3.Connection,
    current: ScheduleDef | None,
    version: ScheduleVersion,
    at: int,
    where: tuple[str | None, int | None],
) -> ScheduleVersion:
    """Write the version and make it the schedule's row; the version as stored."""
    text = None if version.definition is None else json.dumps(version.definition, sort_keys=True)
    seq = conn.execute(
        "INSERT INTO schedule_versions (name, version, op, source, by, at, note, definition, changed) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (version.name, version.version, version.op, version.source, version.by, at, version.note, text,
         json.dumps(list(version.changed))),
    ).lastrowid  # fmt: skip
    assert seq is not None
    kept = version.definition if version.definition is not None else (current.definition if current else {})
    path, line = where if version.source == "yaml" else (None, None)
    conn.execute(
        "INSERT INTO schedule_defs (name, source, version, seq, deleted, job, labels, definition, path, "
        "line, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO "
        "UPDATE SET source = excluded.source, version = excluded.version, seq = excluded.seq, "
        "deleted = excluded.deleted, job = excluded.job, labels = excluded.labels, definition = "
        "excluded.definition, path = excluded.path, line = excluded.line, updated_at = excluded.updated_at, "
        "created_at = CASE WHEN schedule_defs.deleted AND NOT excluded.deleted THEN excluded.created_at "
        "ELSE schedule_defs.created_at END",
        (version.name, version.source, version.version, seq, int(version.op == "delete"),
         str(kept.get("job", "")), json.dumps(kept.get("labels") or {}, sort_keys=True),
         json.dumps(kept, sort_keys=True), path, line, at, at),
    )  # fmt: skip
    move = cursor_move(current, version)
    if move != "keep":
        start = at // 1000 * 1000  # the change's whole second
        sql = "INSERT OR IGNORE INTO schedule_cursors (schedule, last_fire_time) VALUES (?, ?)"
        conn.execute(sql if move == "start" else ADVANCE_CURSOR, (version.name, start))
    stamp = ms_to_dt(at)
    assert stamp is not None
    return replace(version, at=stamp, seq=seq)


_SEQ = "SELECT coalesce(max(seq), 0) FROM schedule_versions"


def _sync(
    conn: sqlite3.Connection,
    entries: Sequence[SyncEntry],
    by: str | None,
    when: datetime | None,
    fingerprint: str,
) -> SyncResult:
    mark = conn.execute(f"SELECT fingerprint, seq, ({_SEQ}) AS newest FROM schedule_sync_mark").fetchone()
    stored = None if mark is None else (mark["fingerprint"], mark["seq"])
    if mark is not None and synced_already(stored, fingerprint, mark["newest"]):
        return SyncResult()  # the same entries synced last, no change since: nothing to write
    rows = {row["name"]: def_of(row, ms_to_dt) for row in conn.execute(f"SELECT {_DEF} FROM schedule_defs")}
    plan = plan_sync(rows, entries, by, when)
    at = now_ms() if when is None else dt_to_ms(when)
    versions = [_apply(conn, current, version, at, where) for current, version, where in plan.writes]
    conn.executemany("UPDATE schedule_defs SET path = ?, line = ? WHERE name = ?",
                     [(path, line, name) for name, path, line in plan.moved])  # fmt: skip
    if not plan.refused:
        conn.execute(
            f"INSERT OR REPLACE INTO schedule_sync_mark (id, fingerprint, seq) VALUES (1, ?, ({_SEQ}))",
            (fingerprint,),
        )
    return SyncResult(versions, plan.refused)


class SqliteScheduleDefs(SqliteAccess, ScheduleDefStore):
    """Mixed into the SQLite store."""

    async def save_schedule(self, change: DefChange) -> ScheduleVersion | None:
        def write(conn: sqlite3.Connection) -> ScheduleVersion | None:
            current = _current(conn, change.name)
            version = decide(current, change)
            if version is None:
                return None
            where = (current.path, current.line) if current is not None else (None, None)
            at = now_ms() if change.at is None else dt_to_ms(change.at)
            return _apply(conn, current, version, at, where)

        return await self._write(write)

    async def sync_schedules(
        self, entries: Sequence[SyncEntry], *, by: str | None, at: datetime | None = None
    ) -> SyncResult:
        fingerprint = sync_fingerprint(entries)  # outside the write transaction
        return await self._write(lambda conn: _sync(conn, entries, by, at, fingerprint), heavy=True)

    async def get_schedule_def(self, name: str) -> ScheduleDef | None:
        rows = await self._read(f"SELECT {_DEF} FROM schedule_defs WHERE name = ?", (name,))
        return def_of(rows[0], ms_to_dt) if rows else None

    _NAME_HAS = "instr(lower(d.name), ?) > 0"

    def _labels_match(self, labels: Mapping[str, str]) -> list[tuple[str, list[Any]]]:
        return [("json_extract(d.labels, ?) = ?", [f'$."{key}"', value]) for key, value in labels.items()]

    async def _find_schedule_defs(self, where: str, params: list[Any], limit: int) -> list[ScheduleDef]:
        sql = (
            f"SELECT {', '.join('d.' + c for c in _DEF.split(', '))} FROM schedule_defs d "
            f"WHERE {where} ORDER BY d.name LIMIT ?"
        )
        return [def_of(row, ms_to_dt) for row in await self._read(sql, (*params, limit))]

    async def schedule_defs_since(self, seq: int) -> list[ScheduleDef]:
        rows = await self._read(f"SELECT {_DEF} FROM schedule_defs WHERE seq > ? ORDER BY seq", (seq,))
        return [def_of(row, ms_to_dt) for row in rows]

    async def schedule_versions(self, name: str) -> list[ScheduleVersion]:
        rows = await self._read(
            f"SELECT {_VERSION} FROM schedule_versions WHERE name = ? ORDER BY version", (name,)
        )
        return [version_of(row, ms_to_dt) for row in rows]

    async def schedule_seq(self) -> int:
        rows = await self._read("SELECT max(seq) AS seq FROM schedule_versions")
        return int(rows[0]["seq"] or 0)


__all__ = ["SqliteScheduleDefs"]
