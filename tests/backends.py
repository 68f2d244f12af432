"""The two store backends as test fixtures: each test gets an empty database of its own.

``backend`` (a fixture in tests/conftest.py) is parametrized over ``sqlite`` and ``postgres``: a file
in tmp_path, or a fresh PostgreSQL schema via ``?schema=`` inside the session's database from
``postgres_url``. A few things no store operation does (expire a lease now, age a run, bump the
schema version) are done with raw SQL through the backend, in each database's own terms.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from durably_sched.store import open_store
from durably_sched.store._common import dt_to_ms
from durably_sched.store.base import Store


class Backend:
    name: str
    url: str

    def __init__(self) -> None:
        self.stores: list[Store] = []

    def fresh_url(self) -> str:
        """Another, empty database on the same backend."""
        raise NotImplementedError

    def new_store(self, url: str | None = None) -> Store:
        store = open_store(url or self.url)
        self.stores.append(store)
        return store

    async def open_store(self, url: str | None = None, *, migrate: bool = True) -> Store:
        """A connected store (another instance, with its own connections) on this database."""
        store = self.new_store(url)
        await store.connect()
        if migrate:
            await store.migrate()
        return store

    async def close(self) -> None:
        for store in self.stores:
            await store.close()

    # -- raw access for setups the contract has no operation for -----------------------------------
    async def expire_lease(self, run_id: str) -> None:
        raise NotImplementedError

    async def set_completed_at(self, run_id: str, when: datetime) -> None:
        raise NotImplementedError

    async def set_schema_version(self, version: int) -> None:
        raise NotImplementedError

    async def live_running(self, concurrency_key: str) -> list[str]:
        """Ids of runs with the key that are running under a lease that has not expired."""
        raise NotImplementedError


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, tmp_path: Path) -> None:
        super().__init__()
        self.tmp_path = tmp_path
        self.path = tmp_path / "contract.db"
        self.url = f"sqlite:///{self.path}"

    def fresh_url(self) -> str:
        return f"sqlite:///{self.tmp_path / f'fresh-{uuid.uuid4().hex[:8]}.db'}"

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    async def expire_lease(self, run_id: str) -> None:
        self._execute(
            "UPDATE runs SET lease_expires_at = ? WHERE id = ?", (int(time.time() * 1000) - 60_000, run_id)
        )

    async def set_completed_at(self, run_id: str, when: datetime) -> None:
        self._execute("UPDATE runs SET completed_at = ? WHERE id = ?", (dt_to_ms(when), run_id))

    async def set_schema_version(self, version: int) -> None:
        self._execute(f"PRAGMA user_version = {int(version)}")

    async def live_running(self, concurrency_key: str) -> list[str]:
        rows = self._execute(
            "SELECT id FROM runs WHERE concurrency_key = ? AND status = 'running' AND lease_expires_at >= ?",
            (concurrency_key, int(time.time() * 1000)),
        )
        return [r[0] for r in rows]


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, database_url: str) -> None:
        super().__init__()
        self.database_url = database_url
        self.schema = f"t_{uuid.uuid4().hex[:12]}"
        self.url = self.schema_url(self.schema)
        self._conn: Any = None

    def schema_url(self, schema: str) -> str:
        joiner = "&" if urlsplit(self.database_url).query else "?"
        return f"{self.database_url}{joiner}schema={schema}"

    def fresh_url(self) -> str:
        return self.schema_url(f"t_{uuid.uuid4().hex[:12]}")

    async def admin(self) -> Any:
        """A plain asyncpg connection to the test's schema (outside any store)."""
        import asyncpg

        if self._conn is None:
            self._conn = await asyncpg.connect(
                self.database_url, server_settings={"search_path": f'"{self.schema}"'}
            )
        return self._conn

    async def close(self) -> None:
        await super().close()
        if self._conn is not None:
            await self._conn.close()

    async def expire_lease(self, run_id: str) -> None:
        conn = await self.admin()
        await conn.execute(
            "UPDATE runs SET lease_expires_at = now() - interval '1 minute' WHERE id = $1", run_id
        )

    async def set_completed_at(self, run_id: str, when: datetime) -> None:
        conn = await self.admin()
        await conn.execute("UPDATE runs SET completed_at = $2 WHERE id = $1", run_id, when)

    async def set_schema_version(self, version: int) -> None:
        conn = await self.admin()
        await conn.execute(
            "UPDATE durably_meta SET value = $1 WHERE key = 'schema_version'", str(int(version))
        )

    async def live_running(self, concurrency_key: str) -> list[str]:
        conn = await self.admin()
        rows = await conn.fetch(
            "SELECT id FROM runs WHERE concurrency_key = $1 AND status = 'running' "
            "AND lease_expires_at >= now()",
            concurrency_key,
        )
        return [r[0] for r in rows]
