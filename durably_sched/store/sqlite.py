"""SQLite store: the embedded default. One file, several processes on one host.

Concurrency model, per process:

* one **writer** (``_sqlite_writer.Writer``): every write is a small synchronous function of a
  ``sqlite3.Connection``; writes queued while the previous batch was committing run together in one
  ``BEGIN IMMEDIATE`` transaction (group commit), on the event loop when that costs less than a
  thread hop, on the writer's thread when it could block;
* one **reader** connection (aiosqlite) for queries: WAL readers never block the writer.

Across processes SQLite's file lock serialises writers. ``BEGIN IMMEDIATE`` takes the write lock up
front, so a read-then-write transaction never fails half-way with SQLITE_BUSY; the writer's retry
loop with backoff keeps "database is locked" from reaching users.

Durability: WAL with ``synchronous=NORMAL`` by default. A committed transaction survives a crash of
the process (kill -9); a power cut or OS crash may lose the last transactions before the WAL is
synced, never corrupting the file. ``?synchronous=full`` in the URL makes every commit durable at
the cost of an fsync per commit.

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``; options ``synchronous``
(off, normal, full, extra) and ``busy_timeout`` (seconds). A read-only store (``read_only=True``,
used by commands that only look) opens the file with ``mode=ro`` and never creates or changes it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import aiosqlite

from ..errors import (
    DatabaseCorruptError,
    DatabaseLockedError,
    DatabaseReadOnlyError,
    DatabaseUrlError,
    DiskFullError,
    SchemaVersionError,
    StoreError,
)
from ._common import SCHEMA_VERSION, load_migrations, newer_schema_message
from ._sqlite_base import T
from ._sqlite_buckets import SqliteBuckets
from ._sqlite_config_errors import SqliteConfigErrors
from ._sqlite_rules import SqliteRules
from ._sqlite_runs import SqliteRuns
from ._sqlite_schedule_defs import SqliteScheduleDefs
from ._sqlite_schedules import SqliteSchedules
from ._sqlite_waits import SqliteWaits
from ._sqlite_work import SqliteWork
from ._sqlite_writer import Writer, read_error
from ._web_sessions import SqliteWebSessions
from .base import Store
from .rows import check_schema_version

log = logging.getLogger("durably_sched.store.sqlite")

URL_OPTIONS = ("busy_timeout", "synchronous")
SYNCHRONOUS_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
URL_FORMS = "sqlite:///relative/path.db or sqlite:////absolute/path.db"


# SQLite's primary result codes (the low byte of an extended code).
SQLITE_BUSY, SQLITE_LOCKED, SQLITE_READONLY, SQLITE_IOERR = 5, 6, 8, 10
SQLITE_CORRUPT, SQLITE_FULL, SQLITE_CANTOPEN, SQLITE_NOTADB = 11, 13, 14, 26


def classify_sqlite_error(exc: BaseException, path: str, busy_timeout: float) -> StoreError:
    """The StoreError (subclass) for a sqlite3 error: what is wrong with which file, in one line."""
    if isinstance(exc, StoreError):
        return exc
    text = " ".join(str(exc).split()) or type(exc).__name__
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == SQLITE_FULL or "disk is full" in text:
        return DiskFullError(
            f"the disk holding {path} is full or failing ({text}): free space (or raise the file's size "
            "limit) and the writes go through again"
        )
    if primary == SQLITE_READONLY or "readonly" in text or "read-only" in text:
        return DatabaseReadOnlyError(
            f"the database {path} is read-only here: the file or its directory is not writable "
            f"by this user, or its filesystem is mounted read-only ({text})"
        )
    if primary in (SQLITE_CORRUPT, SQLITE_NOTADB) or "not a database" in text or "malformed" in text:
        return DatabaseCorruptError(f"the file is not a SQLite database or is corrupt ({text})")
    if primary in (SQLITE_BUSY, SQLITE_LOCKED) or "locked" in text:
        return DatabaseLockedError(
            f"database {path} stayed locked for more than {busy_timeout:g}s: another process holds "
            "its write lock"
        )
    if primary == SQLITE_CANTOPEN or "unable to open" in text:
        return DatabaseReadOnlyError(
            f"the file or its directory is not writable, or the file cannot be opened ({text})"
        )
    if primary == SQLITE_IOERR or "disk I/O error" in text:
        return StoreError(f"the disk holding {path} is full or failing ({text})")
    return StoreError(f"{path}: {text}")


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """(file path, options) of a ``sqlite:`` URL; StoreError with the right form for a bad one."""
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        raise DatabaseUrlError(f"not a SQLite URL: {url!r} (use {URL_FORMS})")
    if parts.netloc:
        # "sqlite://durably.db": urlsplit reads durably.db as a host name.
        guess = parts.netloc + parts.path
        raise DatabaseUrlError(
            f"database URL {url!r} has two slashes after 'sqlite:'; a relative path takes three "
            f"(sqlite:///{guess}) and an absolute path four (sqlite:////var/lib/durably/{os.path.basename(guess)})"
        )
    path = parts.path
    if path.startswith("//"):
        path = path[1:]  # sqlite:////abs.db -> /abs.db
    elif path.startswith("/"):
        path = path[1:]  # sqlite:///rel.db -> rel.db
    if not path or path.endswith("/"):
        raise DatabaseUrlError(f"database URL {url!r} names no file (use {URL_FORMS})")
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in URL_OPTIONS:
            raise DatabaseUrlError(
                f"database URL {url!r}: unknown option {key!r} (SQLite URLs take: {', '.join(URL_OPTIONS)})"
            )
        options[key] = value
    return path, options


def _split_sql(script: str) -> list[str]:
    """Split a migration file into statements (sqlite3.complete_statement knows the grammar)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        if not current and (not line.strip() or line.lstrip().startswith("--")):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


class SqliteStore(
    SqliteRuns,
    SqliteWork,
    SqliteSchedules,
    SqliteRules,
    SqliteConfigErrors,
    SqliteWebSessions,
    SqliteBuckets,
    SqliteWaits,
    SqliteScheduleDefs,
    Store,
):
    """Store on one SQLite file. URL: ``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db``.

    Its parts by concern, mixed in: run reads and operator actions (_sqlite_runs), the worker side
    (_sqlite_work), schedules (_sqlite_schedules), the domain rules' answers (_sqlite_rules)."""

    def __init__(self, url: str, *, busy_timeout: float = 60.0, read_only: bool = False) -> None:
        self.url = url
        self.path, options = parse_sqlite_url(url)
        self.synchronous = options.get("synchronous", "normal").upper()
        if self.synchronous not in SYNCHRONOUS_LEVELS:
            raise DatabaseUrlError(f"database URL {url!r}: synchronous must be off, normal, full or extra")
        try:
            self.busy_timeout = float(options.get("busy_timeout", busy_timeout))
        except ValueError:
            self.busy_timeout = -1.0
        if not self.busy_timeout >= 0:
            raise DatabaseUrlError(f"database URL {url!r}: busy_timeout must be a number of seconds")
        self.read_only = read_only
        self.writer = Writer(
            self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout, classify=self._classify
        )
        self._reader: aiosqlite.Connection | None = None

    async def connect(self) -> None:
        if self._reader is not None:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            hint = ""
            if not os.path.isabs(self.path) and os.path.isdir(os.path.dirname("/" + self.path)):
                hint = f" (an absolute path needs four slashes: sqlite:////{self.path})"
            raise StoreError(f"cannot open database {self.path}: directory {directory} does not exist{hint}")
        if self.read_only and not os.path.exists(self.path):
            raise StoreError(f"database file {self.path} does not exist")
        try:
            if self.read_only:
                self._reader = await self._open_read_only()
            else:
                await self.writer.open()
                self._reader = await self._open_reader()
            # The first real read tells a corrupt or foreign file from a database.
            await self._reader.execute_fetchall("SELECT count(*) FROM sqlite_master")
        except (sqlite3.DatabaseError, StoreError) as exc:
            await self.close()
            error = exc if isinstance(exc, StoreError) else self._classify(exc)
            raise type(error)(f"cannot open database {self.path}: {error}") from None

    async def _open_reader(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _open_read_only(self) -> aiosqlite.Connection:
        """``mode=ro``; in a directory we cannot write, a WAL database that no process has open (no
        -wal file) cannot create its -shm file: then it is read as immutable (nothing writes it)."""
        directory = os.path.dirname(os.path.abspath(self.path))
        if os.access(self.path, os.W_OK) and os.access(directory, os.W_OK):
            # Writable after all: a plain connection (that only reads) tidies the -wal and -shm
            # files away when it closes last, which a mode=ro connection never does.
            return await self._open_reader()
        base = f"file:{quote(os.path.abspath(self.path))}?mode=ro"
        conn = await aiosqlite.connect(base, uri=True, isolation_level=None, timeout=self.busy_timeout)
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute_fetchall("SELECT count(*) FROM sqlite_master")
            return conn
        except BaseException as exc:
            await conn.close()
            if (
                not isinstance(exc, sqlite3.OperationalError)
                or os.access(directory, os.W_OK)
                or os.path.exists(self.path + "-wal")
            ):
                raise
        conn = await aiosqlite.connect(base + "&immutable=1", uri=True, isolation_level=None)
        conn.row_factory = sqlite3.Row
        return conn

    def _explain(self, exc: BaseException) -> str:
        return str(self._classify(exc))

    def _classify(self, exc: BaseException) -> StoreError:
        """A sqlite3 error as the StoreError subclass of its cause, in one line."""
        return classify_sqlite_error(exc, self.path, self.busy_timeout)

    async def close(self) -> None:
        await self.writer.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                await reader.close()
            except Exception as exc:  # closing a connection whose file went away
                log.debug("closing the reader failed: %r", exc)

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, heavy: bool = False) -> T:
        if self.read_only:
            raise StoreError(f"database {self.path} was opened read-only")
        return await self.writer.write(fn, heavy=heavy)

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._reader is None:
            raise StoreError("store is not connected")
        try:
            return list(await self._reader.execute_fetchall(sql, params))
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            raise read_error(exc, self._classify, self.path) from None

    async def migrate(self) -> int:
        migrations = load_migrations("sqlite")

        def apply(conn: sqlite3.Connection) -> int:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise SchemaVersionError(newer_schema_message(found))
            for version, sql in migrations:
                if version > found:
                    for statement in _split_sql(sql):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {version}")
            return SCHEMA_VERSION

        return await self._write(apply, heavy=True)

    async def check_schema(self) -> None:
        rows = await self._read("PRAGMA user_version")
        check_schema_version(rows[0][0])

    async def ping(self) -> None:
        await self._read("SELECT 1")


__all__ = ["SqliteStore", "classify_sqlite_error", "parse_sqlite_url"]
