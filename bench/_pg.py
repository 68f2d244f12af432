"""PostgreSQL helpers for the benchmark programs: a fresh database per measurement, server facts.

Each side of a PostgreSQL comparison gets a database of its own, created just before it runs and
dropped right after, on the same server: neither side sees the other's tables, indexes, dead
tuples or cached plans.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
SETTINGS = ("server_version", "synchronous_commit", "fsync", "wal_sync_method", "max_connections")


def default_url() -> str:
    return os.environ.get("BENCH_POSTGRES_URL", DEFAULT_URL)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead (query string and credentials kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, ""))


async def unreachable(url: str) -> str | None:
    """None if the server answers at ``url``, else why not (for a 'skipped' result)."""
    try:
        import asyncpg
    except Exception as exc:
        return f"asyncpg is not importable: {type(exc).__name__}: {exc}"
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except Exception as exc:
        return f"PostgreSQL at {url} is not reachable: {type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def server_settings(conn: Any) -> dict[str, str]:
    """What the durability of a commit depends on, read back from a connection (asyncpg)."""
    return {name: str(await conn.fetchval(f"SHOW {name}")) for name in SETTINGS}


async def one_row_insert(conn: Any) -> Any:
    """The physical reference's statement (``bench.pg_commit``): a table of its own and a prepared
    one-row ``INSERT`` (``await insert.fetchval("text")`` commits one row in autocommit)."""
    await conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, payload text NOT NULL)")
    return await conn.prepare("INSERT INTO t (payload) VALUES ($1)")


@asynccontextmanager
async def fresh_database(base_url: str, prefix: str) -> AsyncIterator[str]:
    """Create an empty database on the server of ``base_url``; yield its URL; drop it afterwards."""
    import asyncpg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(base_url, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield with_database(base_url, name)
        finally:
            # FORCE (PostgreSQL 13+) ends connections the measured library may have left open.
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
