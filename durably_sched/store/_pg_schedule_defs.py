"""PostgreSQL's part of schedules as data (:mod:`.schedule_defs`): the SQL only; the decisions are
``schedule_defs.decide``. Every write holds one transaction-scoped advisory lock, so the changes
of schedules (API writes and every serve's sync) are applied one at a time, in ``seq`` order, and
each serve's scheduler hears of them through ``pg_notify`` on :data:`SCHEDULES_CHANNEL`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from . import schedule_defs as rules
from ._pg_base import PostgresAccess
from ._pg_sql import LOCK_NAMESPACE, SCHEDULES_CHANNEL, UPSERT_CURSOR

_LOCK = f"SELECT pg_advisory_xact_lock({LOCK_NAMESPACE + 4}, 0)"
_DEF = (
    "name, source, version, definition::text AS definition, deleted, path, line, seq, created_at, updated_at"
)
_VERSION = (
    "name, version, op, source, by, at, note, definition::text AS definition, changed::text AS changed, seq"
)
_INSERT_VERSION = (
    "INSERT INTO schedule_versions (name, version, op, source, by, note, definition, changed, at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, coalesce($9, now())) "
    "RETURNING name, version, seq, at"
)
_INSERT_VERSIONS = (
    "INSERT INTO schedule_versions (name, version, op, source, by, note, definition, changed, at) "
    "SELECT n, v, o, s, b, nt, d::jsonb, c::jsonb, coalesce(a, now()) FROM unnest($1::text[], $2::integer[], "
    "$3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::timestamptz[]) "
    "WITH ORDINALITY AS x(n, v, o, s, b, nt, d, c, a, ord) ORDER BY ord RETURNING name, version, seq, at"
)
_UPSERT_DEF = (
    "INSERT INTO schedule_defs (name, source, version, seq, deleted, job, labels, definition, path, line, "
    "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11, $11) "
    "ON CONFLICT (name) DO UPDATE SET source = EXCLUDED.source, version = EXCLUDED.version, seq = "
    "EXCLUDED.seq, deleted = EXCLUDED.deleted, job = EXCLUDED.job, labels = EXCLUDED.labels, definition = "
    "EXCLUDED.definition, path = EXCLUDED.path, line = EXCLUDED.line, updated_at = EXCLUDED.updated_at, "
    "created_at = CASE WHEN schedule_defs.deleted AND NOT EXCLUDED.deleted THEN EXCLUDED.created_at "
    "ELSE schedule_defs.created_at END"
)


_Write = tuple[rules.ScheduleDef | None, rules.ScheduleVersion, tuple[str | None, int | None]]
"""A planned change: the row it replaces, the version, the entry's place (path, line)."""


def whole_second(at: datetime) -> datetime:
    return at.replace(microsecond=0)


def _version_args(version: rules.ScheduleVersion) -> tuple[Any, ...]:
    """``_INSERT_VERSION``'s parameters for ``version``."""
    text = None if version.definition is None else json.dumps(version.definition, sort_keys=True)
    return (
        version.name, version.version, version.op, version.source, version.by, version.note, text,
        json.dumps(list(version.changed)), None if version.at == datetime.min else version.at,
    )  # fmt: skip


def _def_args(
    current: rules.ScheduleDef | None, version: rules.ScheduleVersion, where: tuple[str | None, int | None]
) -> tuple[Any, ...]:
    """``_UPSERT_DEF``'s parameters for ``version`` stored as ``version.seq`` at ``version.at``."""
    kept = version.definition if version.definition is not None else (current.definition if current else {})
    path, line = where if version.source == "yaml" else (None, None)
    return (
        version.name, version.source, version.version, version.seq, version.op == "delete",
        str(kept.get("job", "")), json.dumps(kept.get("labels") or {}), json.dumps(kept, sort_keys=True),
        path, line, version.at,
    )  # fmt: skip


_START_CURSOR = (
    "INSERT INTO schedule_cursors (schedule, last_fire_time) VALUES ($1, $2) ON CONFLICT DO NOTHING"
)


async def _apply(conn: Any, writes: Sequence[_Write]) -> list[rules.ScheduleVersion]:
    """Store each planned version (in plan order, so their seqs follow it), its definition and its
    cursor move: one statement for the versions and one pipelined batch each for the definitions
    and the cursors, not three round trips per schedule (10,000 schedules synced in ~6 s before)."""
    if len(writes) == 1:
        rows = [await conn.fetchrow(_INSERT_VERSION, *_version_args(writes[0][1]))]
    else:
        columns = list(zip(*(_version_args(version) for _, version, _ in writes), strict=True))
        rows = await conn.fetch(_INSERT_VERSIONS, *columns)
    stored_at = {(row["name"], row["version"]): row for row in rows}
    stored: list[rules.ScheduleVersion] = []
    for _, version, _ in writes:
        row = stored_at[version.name, version.version]
        stored.append(replace(version, at=row["at"], seq=row["seq"]))
    plans = list(zip(writes, stored, strict=True))
    defs = [_def_args(current, version, where) for (current, _, where), version in plans]
    await conn.executemany(_UPSERT_DEF, defs)
    for move, sql in (("start", _START_CURSOR), ("restart", UPSERT_CURSOR)):
        cursors = [
            (version.name, whole_second(version.at))
            for (current, planned, _), version in plans
            if rules.cursor_move(current, planned) == move
        ]
        if cursors:
            await conn.executemany(sql, cursors)
    return stored


async def _notify(conn: Any, versions: Sequence[rules.ScheduleVersion]) -> None:
    if versions:
        await conn.execute("SELECT pg_notify($1, $2)", SCHEDULES_CHANNEL, str(max(v.seq for v in versions)))


_SEQ = "SELECT coalesce(max(seq), 0) FROM schedule_versions"
_MARK = (
    f"INSERT INTO schedule_sync_mark (id, fingerprint, seq) VALUES (1, $1, ({_SEQ})) "
    "ON CONFLICT (id) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, seq = EXCLUDED.seq"
)


async def _sync(
    conn: Any, entries: Sequence[rules.SyncEntry], by: str | None, at: datetime | None, fingerprint: str
) -> rules.SyncResult:
    mark = await conn.fetchrow(f"SELECT fingerprint, seq, ({_SEQ}) AS newest FROM schedule_sync_mark")
    stored = None if mark is None else (mark["fingerprint"], mark["seq"])
    if mark is not None and rules.synced_already(stored, fingerprint, mark["newest"]):
        return rules.SyncResult()  # the same entries synced last, no change since: nothing to write
    rows = {row["name"]: rules.def_of(row) for row in await conn.fetch(f"SELECT {_DEF} FROM schedule_defs")}
    plan = rules.plan_sync(rows, entries, by, at)
    versions = await _apply(conn, plan.writes) if plan.writes else []
    if plan.moved:
        await conn.executemany("UPDATE schedule_defs SET path = $2, line = $3 WHERE name = $1", plan.moved)
    if not plan.refused:
        await conn.execute(_MARK, fingerprint)
    await _notify(conn, versions)
    return rules.SyncResult(versions, plan.refused)


class PostgresScheduleDefs(PostgresAccess, rules.ScheduleDefStore):
    """Mixed into the PostgreSQL store."""

    async def save_schedule(self, change: rules.DefChange) -> rules.ScheduleVersion | None:
        async def write(conn: Any, replay: bool) -> rules.ScheduleVersion | None:
            async with conn.transaction():
                await conn.execute(_LOCK)
                row = await conn.fetchrow(f"SELECT {_DEF} FROM schedule_defs WHERE name = $1", change.name)
                current = None if row is None else rules.def_of(row)
                version = rules.decide(current, change, replay)
                if version is None:
                    return None
                where = (current.path, current.line) if current is not None else (None, None)
                stored = await _apply(conn, [(current, version, where)])
                await _notify(conn, stored)
                return stored[0]

        return await self._run("save_schedule", write)

    async def sync_schedules(
        self, entries: Sequence[rules.SyncEntry], *, by: str | None, at: datetime | None = None
    ) -> rules.SyncResult:
        fingerprint = rules.sync_fingerprint(entries)  # before the lock: it orders every change

        async def write(conn: Any, replay: bool) -> rules.SyncResult:
            async with conn.transaction():
                await conn.execute(_LOCK)
                return await _sync(conn, entries, by, at, fingerprint)

        return await self._run("sync_schedules", write)

    async def get_schedule_def(self, name: str) -> rules.ScheduleDef | None:
        async def read(conn: Any, replay: bool) -> rules.ScheduleDef | None:
            row = await conn.fetchrow(f"SELECT {_DEF} FROM schedule_defs WHERE name = $1", name)
            return None if row is None else rules.def_of(row)

        return await self._run("get_schedule_def", read)

    _NAME_HAS = "strpos(lower(d.name), ?) > 0"

    def _labels_match(self, labels: Mapping[str, str]) -> list[tuple[str, list[Any]]]:
        return [("d.labels @> ?::jsonb", [json.dumps(dict(labels))])] if labels else []

    async def _find_schedule_defs(self, where: str, params: list[Any], limit: int) -> list[rules.ScheduleDef]:
        numbered = where.split("?")
        where = "".join(f"{part}${n}" for n, part in enumerate(numbered[:-1], 1)) + numbered[-1]
        columns = ", ".join("d." + c for c in _DEF.split(", "))
        sql = f"SELECT {columns} FROM schedule_defs d WHERE {where} ORDER BY d.name LIMIT ${len(params) + 1}"

        async def read(conn: Any, replay: bool) -> list[Any]:
            return list(await conn.fetch(sql, *params, limit))

        return [rules.def_of(row) for row in await self._run("list_schedule_defs", read)]

    async def schedule_defs_since(self, seq: int) -> list[rules.ScheduleDef]:
        async def read(conn: Any, replay: bool) -> list[rules.ScheduleDef]:
            rows = await conn.fetch(f"SELECT {_DEF} FROM schedule_defs WHERE seq > $1 ORDER BY seq", seq)
            return [rules.def_of(row) for row in rows]

        return await self._run("schedule_defs_since", read)

    async def schedule_versions(self, name: str) -> list[rules.ScheduleVersion]:
        async def read(conn: Any, replay: bool) -> list[rules.ScheduleVersion]:
            rows = await conn.fetch(
                f"SELECT {_VERSION} FROM schedule_versions WHERE name = $1 ORDER BY version", name
            )
            return [rules.version_of(row) for row in rows]

        return await self._run("schedule_versions", read)

    async def schedule_seq(self) -> int:
        async def read(conn: Any, replay: bool) -> int:
            return int(await conn.fetchval(_SEQ))

        return await self._run("schedule_seq", read)


__all__ = ["SCHEDULES_CHANNEL", "PostgresScheduleDefs"]
