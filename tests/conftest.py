"""Fixtures shared by every test layer.

``postgres_url``: a fresh, empty PostgreSQL database for this test session, on the server named by
``DURABLY_TEST_POSTGRES_URL`` (e.g. ``postgresql://postgres@127.0.0.1:5432/test``). It is created
through the server's ``postgres`` database and dropped when the session ends. Without the variable,
or when the server cannot be reached, tests that use it are skipped -- unless
``DURABLY_REQUIRE_POSTGRES=1`` (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.backends import Backend, PostgresBackend, SqliteBackend

POSTGRES_URL_ENV = "DURABLY_TEST_POSTGRES_URL"
REQUIRE_POSTGRES_ENV = "DURABLY_REQUIRE_POSTGRES"


def postgres_unavailable(reason: str) -> None:
    """Skip (or, with DURABLY_REQUIRE_POSTGRES=1, fail) a test that needs PostgreSQL."""
    if os.environ.get(REQUIRE_POSTGRES_ENV) == "1":
        pytest.fail(f"{reason} (and {REQUIRE_POSTGRES_ENV}=1)", pytrace=False)
    pytest.skip(reason)


def with_database(url: str, database: str) -> str:
    """The same server URL, pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


def _admin(url: str, statement: str) -> None:
    """Run one statement on its own connection and event loop.

    A thread of its own: the fixture may be set up from inside a running loop (an async fixture
    asking for it), where asyncio.run() is not allowed.
    """
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        postgres_unavailable(f"{POSTGRES_URL_ENV} is not set; PostgreSQL tests need a server")
        return
    parts = urlsplit(base)
    where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}"
    admin_url = with_database(base, "postgres")
    name = f"durably_test_{uuid.uuid4().hex[:12]}"
    try:
        _admin(admin_url, f'CREATE DATABASE "{name}"')
    except Exception as exc:
        postgres_unavailable(
            f"PostgreSQL at {where} ({POSTGRES_URL_ENV}) is not usable: {type(exc).__name__}: {exc}"
        )
        return
    try:
        yield with_database(base, name)
    finally:
        _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> str:
    """A URL on the session's test database with a fresh, unused schema (created by migrate)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in postgres_url else "?"
    return f"{postgres_url}{separator}schema={schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """An empty database of the backend the test is parametrized with (see tests/backends.py)."""
    made: Backend
    if request.param == "sqlite":
        made = SqliteBackend(tmp_path)
    else:
        # Requested lazily so SQLite runs never touch (or skip on) the PostgreSQL fixture.
        made = PostgresBackend(request.getfixturevalue("postgres_url"))
    try:
        yield made
    finally:
        await made.close()
