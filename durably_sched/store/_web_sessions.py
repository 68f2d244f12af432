"""Dashboard sessions in the database (the contract, and its SQLite and PostgreSQL mixins).

A session lives as a row until it expires or its user logs out, so that logging out ends it in
every ``serve`` process sharing the database, and a restart does not. The web layer hands in an
opaque ``session_id`` (a hash of the secret in the browser's cookie: the table never holds a
usable credential) and a lifetime; each backend measures expiry by the clock it trusts (the local
clock for SQLite, the database's for PostgreSQL), as it does for leases. Creating a session prunes
the expired ones, so the table stays as small as the sessions in use.
"""

from __future__ import annotations

import abc
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

__all__ = ["PostgresWebSessions", "SqliteWebSessions", "WebSessionStore"]

T = TypeVar("T")


class WebSessionStore(abc.ABC):
    """The part of the store contract that keeps dashboard sessions."""

    @abc.abstractmethod
    async def create_web_session(self, session_id: str, role: str, lifetime: float) -> None:
        """Record a session valid for ``lifetime`` seconds from now; drop expired sessions."""

    @abc.abstractmethod
    async def web_session_role(self, session_id: str) -> str | None:
        """The role of a recorded, unexpired session; None for any other id."""

    @abc.abstractmethod
    async def delete_web_session(self, session_id: str) -> bool:
        """End a session (logout); False when there was none."""

    @abc.abstractmethod
    async def purge_web_sessions(self) -> int:
        """Delete expired sessions; returns how many."""


class _SqliteAccess(Protocol):
    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, heavy: bool = False) -> T: ...

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


class SqliteWebSessions:
    """:class:`WebSessionStore` for :class:`~durably_sched.store.sqlite.SqliteStore`."""

    async def create_web_session(self: _SqliteAccess, session_id: str, role: str, lifetime: float) -> None:
        def insert(conn: sqlite3.Connection) -> None:
            now = _now_ms()
            conn.execute("DELETE FROM web_sessions WHERE expires_at <= ?", (now,))
            conn.execute(
                "INSERT OR REPLACE INTO web_sessions (id, role, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (session_id, role, now, now + round(lifetime * 1000)),
            )

        await self._write(insert)

    async def web_session_role(self: _SqliteAccess, session_id: str) -> str | None:
        rows = await self._read(
            "SELECT role FROM web_sessions WHERE id = ? AND expires_at > ?", (session_id, _now_ms())
        )
        return str(rows[0]["role"]) if rows else None

    async def delete_web_session(self: _SqliteAccess, session_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM web_sessions WHERE id = ?", (session_id,)).rowcount > 0

        return bool(await self._write(delete))

    async def purge_web_sessions(self: _SqliteAccess) -> int:
        def purge(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM web_sessions WHERE expires_at <= ?", (_now_ms(),)).rowcount

        return int(await self._write(purge))


class _PostgresAccess(Protocol):
    async def _run(
        self, what: str, op: Callable[[Any, bool], Awaitable[T]], *, budget: float | None = None
    ) -> T: ...


class PostgresWebSessions:
    """:class:`WebSessionStore` for :class:`~durably_sched.store.postgres.PostgresStore`; every
    statement is safe to replay after a lost connection."""

    async def create_web_session(self: _PostgresAccess, session_id: str, role: str, lifetime: float) -> None:
        async def insert(conn: Any, replay: bool) -> None:
            async with conn.transaction():
                await conn.execute("DELETE FROM web_sessions WHERE expires_at <= now()")
                await conn.execute(
                    "INSERT INTO web_sessions (id, role, expires_at) "
                    "VALUES ($1, $2, now() + make_interval(secs => $3)) ON CONFLICT (id) DO NOTHING",
                    session_id,
                    role,
                    float(lifetime),
                )

        await self._run("create_web_session", insert)

    async def web_session_role(self: _PostgresAccess, session_id: str) -> str | None:
        async def read(conn: Any, replay: bool) -> str | None:
            found = await conn.fetchval(
                "SELECT role FROM web_sessions WHERE id = $1 AND expires_at > now()", session_id
            )
            return None if found is None else str(found)

        return await self._run("web_session_role", read)

    async def delete_web_session(self: _PostgresAccess, session_id: str) -> bool:
        async def delete(conn: Any, replay: bool) -> bool:
            rows = await conn.fetch("DELETE FROM web_sessions WHERE id = $1 RETURNING 1", session_id)
            return bool(rows)

        return await self._run("delete_web_session", delete)

    async def purge_web_sessions(self: _PostgresAccess) -> int:
        async def purge(conn: Any, replay: bool) -> int:
            rows = await conn.fetch("DELETE FROM web_sessions WHERE expires_at <= now() RETURNING 1")
            return len(rows)

        return await self._run("purge_web_sessions", purge)
