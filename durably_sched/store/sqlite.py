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
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
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
from . import _activity, _runs_query
from ._common import (
    SCHEMA_VERSION,
    dt_to_ms,
    dumps,
    load_migrations,
    ms_to_dt,
    newer_schema_message,
    prefix_upper_bound,
)
from ._sqlite_config_errors import SqliteConfigErrors
from ._sqlite_writer import WriteFn, Writer, read_error
from ._web_sessions import SqliteWebSessions
from .attempts import ATTEMPTS_SQL, AttemptRecord, attempt_from_row
from .base import (
    COUNT_CAP,
    Checkpoint,
    Disposition,
    Fire,
    FireRecord,
    FireResult,
    LogRecord,
    NewLog,
    NewRun,
    Progress,
    RunChanges,
    RunPage,
    RunQuery,
    RunRecord,
    RunStatus,
    ScheduleActivity,
    ScheduleState,
    StateChange,
    StepRecord,
    Store,
    WorkerInfo,
    WorkerRecord,
    WriteResult,
)
from .rows import (
    ACTIVE_SQL,
    FINISHED_SQL,
    FIRE_COLUMNS,
    HELD_SQL,
    LEASED_RUNS,
    LOG_COLUMNS,
    RUN_COLUMNS,
    STATE_COLUMNS,
    STEP_COLUMNS,
    WORKER_COLUMNS,
    bounded_traceback,
    check_schema_version,
    columns,
    fence_result,
    fire_from_row,
    leased_by_worker,
    log_from_row,
    run_from_row,
    state_from_row,
    step_from_row,
    worker_from_row,
)

log = logging.getLogger("durably_sched.store.sqlite")

RUN_SELECT = columns(RUN_COLUMNS)
STATE_SELECT = columns(STATE_COLUMNS)
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


def _now_ms() -> int:
    return int(time.time() * 1000)


def _run(row: Any) -> RunRecord:
    return run_from_row(row, ms_to_dt)


def _fence(row: Any) -> WriteResult:
    return fence_result(None if row is None else row["status"])


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


def _insert_logs(conn: sqlite3.Connection, run_id: str, logs: Sequence[NewLog]) -> None:
    if logs:
        conn.executemany(
            "INSERT INTO logs (run_id, step_name, level, message, data, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (run_id, lg.step_name, lg.level, lg.message, dumps(lg.data), dt_to_ms(lg.created_at))
                for lg in logs
            ],
        )


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


def _fetch_run(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    row = conn.execute(f"SELECT {RUN_SELECT} FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else _run(row)


class SqliteStore(SqliteConfigErrors, SqliteWebSessions, Store):
    """Store on one SQLite file. URL: ``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db``."""

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

    # -- lifecycle ----------------------------------------------------------------------
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

    async def _write(self, fn: WriteFn, *, heavy: bool = False) -> Any:
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

    # -- schema -----------------------------------------------------------------------------
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

        result: int = await self._write(apply, heavy=True)
        return result

    async def check_schema(self) -> None:
        rows = await self._read("PRAGMA user_version")
        check_schema_version(rows[0][0])

    async def ping(self) -> None:
        await self._read("SELECT 1")

    # -- runs --------------------------------------------------------------------------------
    async def create_runs(self, runs: Sequence[NewRun]) -> list[tuple[RunRecord, Disposition]]:
        def insert(conn: sqlite3.Connection) -> list[tuple[RunRecord, Disposition]]:
            now = _now_ms()
            return [_insert_run(conn, run, now) for run in runs]

        result: list[tuple[RunRecord, Disposition]] = await self._write(insert)
        return result

    async def get_run(self, run_id: str) -> RunRecord | None:
        rows = await self._read(f"SELECT {RUN_SELECT} FROM runs WHERE id = ?", (run_id,))
        return _run(rows[0]) if rows else None

    async def get_run_statuses(self, run_ids: Sequence[str]) -> dict[str, RunStatus]:
        if not run_ids:
            return {}
        marks = ",".join("?" * len(run_ids))
        rows = await self._read(f"SELECT id, status FROM runs WHERE id IN ({marks})", list(run_ids))
        return {r["id"]: r["status"] for r in rows}

    async def list_runs(self, query: RunQuery) -> list[RunRecord]:
        return (await self.list_runs_page(query)).runs

    async def list_runs_page(self, query: RunQuery) -> RunPage:
        built = _runs_query.page_sql(query, RUN_SELECT, "sqlite", dt_to_ms)
        if built is None:
            return RunPage([], None)
        rows = await self._read(*built)
        return RunPage([_run(r) for r in rows[: query.limit]], _runs_query.next_cursor(rows, query.limit))

    async def count_runs(self, query: RunQuery, cap: int = COUNT_CAP) -> tuple[int, bool]:
        built = _runs_query.count_sql(query, "sqlite", dt_to_ms, cap)
        if built is None:
            return 0, False
        count = int((await self._read(*built))[0][0])
        return min(count, cap), count > cap

    async def get_runs_by_id(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        if not run_ids:
            return {}
        marks = ",".join("?" * len(run_ids))
        rows = await self._read(f"SELECT {RUN_SELECT} FROM runs WHERE id IN ({marks})", list(run_ids))
        return {r["id"]: _run(r) for r in rows}

    async def get_steps_since(self, positions: Mapping[str, int]) -> dict[str, list[StepRecord]]:
        if not positions:
            return {}
        sql = " UNION ALL ".join(
            f"SELECT {columns(STEP_COLUMNS)} FROM steps WHERE run_id = ? AND idx >= ?" for _ in positions
        )
        out: dict[str, list[StepRecord]] = {}
        for r in await self._read(sql, [value for item in positions.items() for value in item]):
            out.setdefault(r["run_id"], []).append(step_from_row(r, ms_to_dt))
        for steps in out.values():
            steps.sort(key=lambda step: step.index)
        return out

    async def get_logs_since(
        self, positions: Mapping[str, int], limit: int = 1000
    ) -> dict[str, list[LogRecord]]:
        if not positions:
            return {}
        sql = " UNION ALL ".join(
            f"SELECT * FROM (SELECT {columns(LOG_COLUMNS)} FROM logs WHERE run_id = ? AND id > ? "
            "ORDER BY id LIMIT ?)"
            for _ in positions
        )
        params = [value for run_id, after in positions.items() for value in (run_id, after, limit)]
        out: dict[str, list[LogRecord]] = {}
        for r in await self._read(sql, params):
            out.setdefault(r["run_id"], []).append(log_from_row(r, ms_to_dt))
        for logs in out.values():
            logs.sort(key=lambda entry: entry.id)
        return out

    async def poll_run_changes(
        self, after_seq: int | None, finished_since: datetime | None, active_limit: int = 500
    ) -> RunChanges:
        active = await self._read(
            f"SELECT {RUN_SELECT} FROM runs INDEXED BY runs_active WHERE status IN {ACTIVE_SQL} "
            "ORDER BY seq DESC LIMIT ?",
            (active_limit,),
        )
        created: list[Any] = []
        if after_seq is None:
            rows = await self._read("SELECT max(seq) AS last FROM runs")
            last_seq = int(rows[0]["last"] or 0)
        else:
            created = await self._read(
                f"SELECT seq, {RUN_SELECT} FROM runs WHERE seq > ? ORDER BY seq LIMIT 500", (after_seq,)
            )
            last_seq = int(created[-1]["seq"]) if created else after_seq
        finished: list[Any] = []
        if finished_since is not None:
            finished = await self._read(
                f"SELECT {RUN_SELECT} FROM runs INDEXED BY runs_finished WHERE status IN {FINISHED_SQL} "
                "AND completed_at >= ? ORDER BY completed_at LIMIT 500",
                (dt_to_ms(finished_since),),
            )
        return RunChanges(
            active=[_run(r) for r in active],
            created=[_run(r) for r in created],
            finished=[_run(r) for r in finished],
            last_seq=last_seq,
        )

    async def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        # A range on the id's unique index (BINARY collation = code point order), not LIKE, which
        # is case-insensitive in SQLite and would not use the index.
        upper = prefix_upper_bound(prefix)
        if upper is None:
            sql, params = "SELECT id FROM runs WHERE id >= ? ORDER BY id LIMIT ?", [prefix, limit]
        else:
            sql = "SELECT id FROM runs WHERE id >= ? AND id < ? ORDER BY id LIMIT ?"
            params = [prefix, upper, limit]
        rows = await self._read(sql, params)
        return [r["id"] for r in rows if r["id"].startswith(prefix)]

    async def count_runs_by_status(self) -> dict[tuple[str, str], int]:
        rows = await self._read("SELECT job_name, status, count(*) AS n FROM runs GROUP BY job_name, status")
        return {(r["job_name"], r["status"]): r["n"] for r in rows}

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        rows = await self._read(
            f"SELECT {columns(STEP_COLUMNS)} FROM steps WHERE run_id = ? ORDER BY idx", (run_id,)
        )
        return [step_from_row(r, ms_to_dt) for r in rows]

    async def get_attempts(self, run_id: str, after: int = 0) -> list[AttemptRecord]:
        rows = await self._read(ATTEMPTS_SQL.format(run="?", after="?"), (run_id, after))
        return [attempt_from_row(r, ms_to_dt) for r in rows]

    async def get_logs(self, run_id: str, after_id: int = 0, limit: int = 1000) -> list[LogRecord]:
        rows = await self._read(
            f"SELECT {columns(LOG_COLUMNS)} FROM logs WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?",
            (run_id, after_id, limit),
        )
        return [log_from_row(r, ms_to_dt) for r in rows]

    async def last_log_id(self, run_id: str) -> int:
        rows = await self._read("SELECT max(id) AS last FROM logs WHERE run_id = ?", (run_id,))
        return int(rows[0]["last"] or 0)

    # -- claims and fenced writes -----------------------------------------------------------
    async def claim(
        self,
        worker_id: str,
        job_names: Sequence[str],
        limit: int,
        lease_seconds: float,
        *,
        run_ids: Sequence[str] | None = None,
    ) -> list[RunRecord]:
        if limit <= 0 or not job_names or (run_ids is not None and not run_ids):
            return []
        jobs = list(job_names)
        only = list(run_ids) if run_ids is not None else []
        only_clause = f"AND id IN ({','.join('?' * len(only))}) " if only else ""
        lease_ms = int(lease_seconds * 1000)
        marks = ",".join("?" * len(jobs))
        # INDEXED BY: read only active runs, however much history the table holds (the planner
        # would otherwise pick runs_job and walk every run the job ever had).
        scan = (
            "SELECT seq, concurrency_key, worker_id FROM runs INDEXED BY runs_active "
            f"WHERE status IN {ACTIVE_SQL} AND job_name IN ({marks}) {only_clause}"
            "AND (status = 'pending' OR lease_expires_at < ?) AND (not_before IS NULL OR not_before <= ?) "
            "AND seq > ? ORDER BY seq LIMIT 256"
        )

        def claim(conn: sqlite3.Connection) -> list[RunRecord]:
            now = _now_ms()
            claimed: list[RunRecord] = []
            keys_decided: set[str] = set()  # taken in this claim, or blocked
            last_seq = 0
            while len(claimed) < limit:
                # Each page is read completely before any update (no update under a live cursor).
                page = conn.execute(scan, [*jobs, *only, now, now, last_seq]).fetchall()
                if not page:
                    break
                for candidate in page:
                    seq, key = candidate["seq"], candidate["concurrency_key"]
                    last_seq = seq
                    if key is not None:
                        if key in keys_decided:
                            continue
                        keys_decided.add(key)
                        blocked = conn.execute(
                            f"SELECT 1 FROM runs WHERE concurrency_key = ? AND status IN {ACTIVE_SQL} "
                            "AND seq != ? AND (seq < ? OR (status = 'running' AND lease_expires_at >= ?)) "
                            "LIMIT 1",
                            (key, seq, seq, now),
                        ).fetchone()
                        if blocked is not None:
                            continue
                    row = conn.execute(
                        "UPDATE runs SET status = 'running', generation = generation + 1, worker_id = ?, "
                        "lease_expires_at = ?, started_at = COALESCE(started_at, ?), attempt = attempt + 1, "
                        "attempt_started_at = ?, not_before = NULL, updated_at = ? "
                        f"WHERE seq = ? RETURNING {RUN_SELECT}",
                        (worker_id, now + lease_ms, now, now, now, seq),
                    ).fetchone()
                    claimed.append(run_from_row(row, ms_to_dt, candidate["worker_id"]))
                    if len(claimed) >= limit:
                        break
            return claimed

        result: list[RunRecord] = await self._write(claim)
        return result

    async def renew_leases(
        self,
        leases: Sequence[tuple[str, int]],
        lease_seconds: float,
        *,
        worker: tuple[str, int] | None = None,
    ) -> dict[str, WriteResult]:
        if not leases:
            if worker is not None:
                await self.heartbeat_worker(*worker)
            return {}
        lease_ms = int(lease_seconds * 1000)

        def renew(conn: sqlite3.Connection) -> dict[str, WriteResult]:
            now = _now_ms()
            if worker is not None:
                _beat(conn, worker[0], worker[1], now)
            out: dict[str, WriteResult] = {}
            for run_id, generation in leases:
                row = conn.execute(
                    "UPDATE runs SET lease_expires_at = CASE WHEN status = 'running' THEN ? "
                    "ELSE lease_expires_at END WHERE id = ? AND generation = ? "
                    f"AND status IN {HELD_SQL} RETURNING status",
                    (now + lease_ms, run_id, generation),
                ).fetchone()
                out[run_id] = _fence(row)
            return out

        result: dict[str, WriteResult] = await self._write(renew)
        return result

    async def checkpoint(self, cp: Checkpoint) -> WriteResult:
        def write(conn: sqlite3.Connection) -> WriteResult:
            now = _now_ms()
            inserted = conn.execute(
                "INSERT INTO steps (run_id, name, idx, output, started_at, completed_at) "
                "SELECT ?, ?, ?, ?, ?, ? FROM runs WHERE id = ? AND generation = ? "
                f"AND status IN {HELD_SQL} ON CONFLICT DO NOTHING",
                (
                    cp.run_id,
                    cp.name,
                    cp.index,
                    cp.output_json,
                    dt_to_ms(cp.started_at),
                    dt_to_ms(cp.completed_at),
                    cp.run_id,
                    cp.generation,
                ),
            ).rowcount
            if inserted != 1:
                return "lost"
            row = conn.execute(
                "UPDATE runs SET step_count = step_count + 1, updated_at = ? WHERE id = ? RETURNING status",
                (now, cp.run_id),
            ).fetchone()
            _insert_logs(conn, cp.run_id, cp.logs)
            return _fence(row)

        result: WriteResult = await self._write(write)
        return result

    async def _fenced_update(
        self,
        run_id: str,
        generation: int,
        assignments: str,
        params: Sequence[Any],
        logs: Sequence[NewLog],
        statuses: str = HELD_SQL,
    ) -> WriteResult:
        def write(conn: sqlite3.Connection) -> WriteResult:
            now = _now_ms()
            row = conn.execute(
                f"UPDATE runs SET {assignments}, updated_at = ? WHERE id = ? AND generation = ? "
                f"AND status IN {statuses} RETURNING status",
                (*params, now, run_id, generation),
            ).fetchone()
            if row is not None:
                _insert_logs(conn, run_id, logs)
            return _fence(row)

        result: WriteResult = await self._write(write)
        return result

    async def set_progress(
        self, run_id: str, generation: int, progress: Progress, logs: Sequence[NewLog] = ()
    ) -> WriteResult:
        return await self._fenced_update(
            run_id,
            generation,
            "progress_current = ?, progress_total = ?, progress_message = ?",
            (progress.current, progress.total, progress.message),
            logs,
        )

    async def append_logs(self, run_id: str, generation: int, logs: Sequence[NewLog]) -> WriteResult:
        return await self._fenced_update(run_id, generation, "generation = generation", (), logs)

    async def complete_run(
        self, run_id: str, generation: int, output: Any, logs: Sequence[NewLog] = ()
    ) -> WriteResult:
        return await self._fenced_update(
            run_id,
            generation,
            "status = 'completed', output = ?, completed_at = ?, lease_expires_at = NULL, "
            "error = NULL, failed_step_name = NULL",
            (dumps(output), _now_ms()),
            logs,
            statuses="('running')",
        )

    async def fail_run(
        self,
        run_id: str,
        generation: int,
        error: str,
        failed_step_name: str | None,
        logs: Sequence[NewLog] = (),
        *,
        traceback: str | None = None,
    ) -> WriteResult:
        return await self._fenced_update(
            run_id,
            generation,
            "status = 'failed', error = ?, failed_step_name = ?, traceback = ?, completed_at = ?, "
            "lease_expires_at = NULL, failed_attempts = failed_attempts + 1",
            (error, failed_step_name, bounded_traceback(traceback), _now_ms()),
            logs,
            statuses="('running')",
        )

    async def retry_later(
        self,
        run_id: str,
        generation: int,
        error: str,
        failed_step_name: str | None,
        delay_seconds: float,
        logs: Sequence[NewLog] = (),
        *,
        traceback: str | None = None,
    ) -> WriteResult:
        return await self._fenced_update(
            run_id,
            generation,
            "status = 'pending', error = ?, failed_step_name = ?, traceback = ?, not_before = ?, "
            "lease_expires_at = NULL, failed_attempts = failed_attempts + 1",
            (error, failed_step_name, bounded_traceback(traceback), _now_ms() + _delay_ms(delay_seconds)),
            logs,
            statuses="('running')",
        )

    async def release_run(self, run_id: str, generation: int) -> WriteResult:
        return await self._fenced_update(
            run_id,
            generation,
            "status = 'pending', worker_id = NULL, lease_expires_at = NULL",
            (),
            (),
            statuses="('running')",
        )

    # -- operator actions -----------------------------------------------------------------
    async def cancel_run(self, run_id: str) -> RunRecord | None:
        def cancel(conn: sqlite3.Connection) -> RunRecord | None:
            now = _now_ms()
            conn.execute(
                f"UPDATE runs SET status = 'cancelled', completed_at = ?, updated_at = ? "
                f"WHERE id = ? AND status IN {ACTIVE_SQL}",
                (now, now, run_id),
            )
            return _fetch_run(conn, run_id)

        result: RunRecord | None = await self._write(cancel)
        return result

    async def retry_run(self, run_id: str) -> RunRecord | None:
        def retry(conn: sqlite3.Connection) -> RunRecord | None:
            now = _now_ms()
            conn.execute(
                "UPDATE runs SET status = 'pending', error = NULL, failed_step_name = NULL, "
                "traceback = NULL, completed_at = NULL, worker_id = NULL, lease_expires_at = NULL, "
                "failed_attempts = 0, not_before = NULL, updated_at = ? "
                "WHERE id = ? AND status IN ('failed', 'cancelled')",
                (now, run_id),
            )
            return _fetch_run(conn, run_id)

        result: RunRecord | None = await self._write(retry)
        return result

    async def delete_run(self, run_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "DELETE FROM run_labels WHERE seq IN "
                "(SELECT seq FROM runs WHERE id = ? AND status != 'running')",
                (run_id,),
            )
            gone = conn.execute("DELETE FROM runs WHERE id = ? AND status != 'running'", (run_id,)).rowcount
            if gone:
                conn.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM logs WHERE run_id = ?", (run_id,))
            return bool(gone)

        result: bool = await self._write(delete, heavy=True)
        return result

    async def delete_steps(self, run_id: str) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM steps WHERE run_id = ? AND EXISTS "
                "(SELECT 1 FROM runs WHERE id = ? AND status = 'completed')",
                (run_id, run_id),
            ).rowcount

        result: int = await self._write(delete)
        return result

    async def purge_runs(self, older_than: datetime, batch_size: int = 500) -> int:
        cutoff = dt_to_ms(older_than)

        def purge(conn: sqlite3.Connection) -> int:
            ids = [
                r["id"]
                for r in conn.execute(
                    f"SELECT id FROM runs INDEXED BY runs_finished WHERE status IN {FINISHED_SQL} "
                    "AND completed_at < ? ORDER BY completed_at LIMIT ?",
                    (cutoff, batch_size),
                )
            ]
            if not ids:
                return 0
            marks = ",".join("?" * len(ids))
            conn.execute(
                f"DELETE FROM run_labels WHERE seq IN (SELECT seq FROM runs WHERE id IN ({marks}))", ids
            )
            conn.execute(f"DELETE FROM steps WHERE run_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM logs WHERE run_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)
            return len(ids)

        result: int = await self._write(purge, heavy=True)
        return result

    # -- the worker registry ---------------------------------------------------------------
    async def register_worker(self, info: WorkerInfo) -> None:
        def register(conn: sqlite3.Connection) -> None:
            now = _now_ms()
            conn.execute(
                f"INSERT INTO workers ({columns(WORKER_COLUMNS)}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, NULL, NULL) "
                "ON CONFLICT (id) DO UPDATE SET host = excluded.host, host_key = excluded.host_key, "
                "pid = excluded.pid, process_start = excluded.process_start, version = excluded.version, "
                "jobs = excluded.jobs, concurrency = excluded.concurrency, "
                "lease_seconds = excluded.lease_seconds, heartbeat_at = excluded.heartbeat_at, "
                "gone_at = NULL, gone_by = NULL",
                (
                    info.id,
                    info.host,
                    info.host_key,
                    info.pid,
                    info.process_start,
                    info.version,
                    dumps(list(info.jobs)),
                    info.concurrency,
                    float(info.lease_seconds),
                    now,
                    now,
                ),
            )

        await self._write(register)

    async def heartbeat_worker(self, worker_id: str, runs_held: int) -> bool:
        def beat(conn: sqlite3.Connection) -> bool:
            return _beat(conn, worker_id, runs_held, _now_ms())

        result: bool = await self._write(beat)
        return result

    async def deregister_worker(self, worker_id: str) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

        await self._write(delete)

    async def list_workers(self) -> list[WorkerRecord]:
        now_ms = _now_ms()
        now = ms_to_dt(now_ms)
        assert now is not None
        rows = await self._read(f"SELECT {columns(WORKER_COLUMNS)} FROM workers ORDER BY started_at, id")
        held = leased_by_worker(await self._read(LEASED_RUNS.format(now="?"), (now_ms,)) if rows else [])
        return [worker_from_row(r, now, ms_to_dt, held) for r in rows]

    async def take_over_worker(self, worker_id: str, by: str) -> list[str]:
        def take(conn: sqlite3.Connection) -> list[str]:
            now = _now_ms()
            conn.execute(
                "UPDATE workers SET gone_at = COALESCE(gone_at, ?), gone_by = COALESCE(gone_by, ?) "
                "WHERE id = ?",
                (now, by, worker_id),
            )
            rows = conn.execute(
                "UPDATE runs SET lease_expires_at = ? WHERE worker_id = ? AND status = 'running' "
                "AND lease_expires_at >= ? RETURNING id",
                (now - 1, worker_id, now),
            ).fetchall()
            return [r["id"] for r in rows]

        result: list[str] = await self._write(take)
        return result

    async def purge_workers(self, older_than: datetime) -> int:
        cutoff = dt_to_ms(older_than)

        def purge(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM workers WHERE heartbeat_at < ?", (cutoff,)).rowcount

        result: int = await self._write(purge)
        return result

    async def pending_counts(self) -> dict[str, int]:
        rows = await self._read(
            "SELECT job_name, count(*) AS n FROM runs WHERE status = 'pending' GROUP BY job_name"
        )
        return {r["job_name"]: r["n"] for r in rows}

    async def queue_blocker(self, run_id: str) -> RunRecord | None:
        rows = await self._read(
            f"SELECT {columns(RUN_COLUMNS, 'o.')} FROM runs r JOIN runs o "
            f"ON o.concurrency_key = r.concurrency_key AND o.seq != r.seq AND o.status IN {ACTIVE_SQL} "
            "AND (o.seq < r.seq OR (o.status = 'running' AND o.lease_expires_at >= ?)) "
            "WHERE r.id = ? AND r.concurrency_key IS NOT NULL ORDER BY o.status = 'running' DESC, o.seq "
            "LIMIT 1",
            (_now_ms(), run_id),
        )
        return _run(rows[0]) if rows else None

    # -- schedules ------------------------------------------------------------------------
    async def get_cursors(self) -> dict[str, datetime]:
        rows = await self._read("SELECT schedule, last_fire_time FROM schedule_cursors")
        return {r["schedule"]: ms_to_dt(r["last_fire_time"]) for r in rows}  # type: ignore[misc]

    async def advance_cursor(self, schedule: str, to: datetime) -> datetime:
        to_ms = dt_to_ms(to)

        def advance(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "INSERT INTO schedule_cursors (schedule, last_fire_time) VALUES (?, ?) "
                "ON CONFLICT (schedule) DO UPDATE SET "
                "last_fire_time = max(last_fire_time, excluded.last_fire_time) RETURNING last_fire_time",
                (schedule, to_ms),
            ).fetchone()
            return int(row["last_fire_time"])

        cursor = ms_to_dt(await self._write(advance))
        assert cursor is not None
        return cursor

    async def fire(self, fire: Fire) -> FireResult:
        fire_ms = dt_to_ms(fire.fire_time)

        def handle(conn: sqlite3.Connection) -> FireResult:
            now = _now_ms()
            if fire.advance_cursor:
                conn.execute(
                    "INSERT INTO schedule_cursors (schedule, last_fire_time) VALUES (?, ?) "
                    "ON CONFLICT (schedule) DO UPDATE SET "
                    "last_fire_time = max(last_fire_time, excluded.last_fire_time)",
                    (fire.schedule, fire_ms),
                )
            existing = conn.execute(
                "SELECT outcome, run_id FROM fire_records WHERE schedule = ? AND fire_time = ?",
                (fire.schedule, fire_ms),
            ).fetchone()
            if existing is not None and not (fire.replace_paused and existing["outcome"] == "paused"):
                run_id = existing["run_id"]
                return FireResult("deduplicated", _fetch_run(conn, run_id) if run_id else None)
            run_record: RunRecord | None = None
            if fire.run is None:
                outcome = fire.outcome_without_run
            elif (
                fire.skip_if_active
                and conn.execute(
                    f"SELECT 1 FROM runs INDEXED BY runs_schedule_active WHERE schedule_name = ? "
                    f"AND status IN {ACTIVE_SQL} LIMIT 1",
                    (fire.schedule,),
                ).fetchone()
            ):
                outcome = "skipped"
            else:
                run_record, disposition = _insert_run(conn, fire.run, now)
                outcome = "triggered" if disposition == "created" else "deduplicated"
            conn.execute(
                "INSERT INTO fire_records (schedule, fire_time, outcome, run_id, recorded_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (schedule, fire_time) DO UPDATE SET "
                "outcome = excluded.outcome, run_id = excluded.run_id, recorded_at = excluded.recorded_at",
                (fire.schedule, fire_ms, outcome, run_record.id if run_record else None, now),
            )  # a conflict only for a paused record being replaced (checked above, same transaction)
            return FireResult(outcome, run_record)

        result: FireResult = await self._write(handle)
        return result

    async def list_fire_records(
        self, schedule: str, limit: int = 50, before: datetime | None = None
    ) -> list[FireRecord]:
        bound = dt_to_ms(before) if before is not None else 2**62
        rows = await self._read(
            f"SELECT {columns(FIRE_COLUMNS)} FROM fire_records "
            "WHERE schedule = ? AND fire_time < ? ORDER BY fire_time DESC LIMIT ?",
            (schedule, bound, limit),
        )
        return [fire_from_row(r, ms_to_dt) for r in rows]

    async def last_fire_records(self) -> dict[str, FireRecord]:
        rows = await self._read(
            f"SELECT {columns(FIRE_COLUMNS, 'f.')} FROM fire_records f "
            "JOIN (SELECT schedule, max(fire_time) AS t FROM fire_records GROUP BY schedule) m "
            "ON m.schedule = f.schedule AND m.t = f.fire_time"
        )
        return {r["schedule"]: fire_from_row(r, ms_to_dt) for r in rows}

    async def purge_fire_records(self, older_than: datetime, batch_size: int = 500) -> int:
        cutoff = dt_to_ms(older_than)

        def purge(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM fire_records WHERE (schedule, fire_time) IN (SELECT schedule, fire_time "
                "FROM fire_records WHERE fire_time < ? LIMIT ?)",
                (cutoff, batch_size),
            ).rowcount

        result: int = await self._write(purge, heavy=True)
        return result

    # -- schedule states ----------------------------------------------------------------------------
    async def get_schedule_states(self, *, attention_only: bool = False) -> dict[str, ScheduleState]:
        where = " WHERE paused = 1 OR consecutive_failures > 0" if attention_only else ""
        rows = await self._read(f"SELECT {STATE_SELECT} FROM schedule_states{where}")
        return {r["schedule"]: state_from_row(r, ms_to_dt) for r in rows}

    async def get_schedule_state(self, schedule: str) -> ScheduleState | None:
        rows = await self._read(f"SELECT {STATE_SELECT} FROM schedule_states WHERE schedule = ?", (schedule,))
        return state_from_row(rows[0], ms_to_dt) if rows else None

    async def pause_schedule(
        self,
        schedule: str,
        *,
        reason: str | None,
        by: str,
        auto: bool = False,
        min_failures: int | None = None,
        at: datetime | None = None,
    ) -> StateChange:
        def pause(conn: sqlite3.Connection) -> StateChange:
            now = _now_ms() if at is None else dt_to_ms(at)
            conn.execute(
                "INSERT INTO schedule_states (schedule, updated_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (schedule, now),
            )
            row = conn.execute(
                "UPDATE schedule_states SET paused = 1, "
                "paused_at = CASE WHEN ? THEN coalesce(last_failure_at, ?) ELSE ? END, "
                "paused_by = ?, pause_reason = ?, auto_paused = ?, updated_at = ? "
                "WHERE schedule = ? AND paused = 0 AND consecutive_failures - failures_at_resume >= ? "
                f"RETURNING {STATE_SELECT}",
                (int(auto), now, now, by, reason, int(auto), now, schedule, min_failures or 0),
            ).fetchone()
            changed = row is not None
            if row is None:
                row = _fetch_state(conn, schedule)
            return StateChange(state_from_row(row, ms_to_dt), changed)

        result: StateChange = await self._write(pause)
        return result

    async def resume_schedule(
        self, schedule: str, *, by: str, at: datetime | None = None
    ) -> StateChange | None:
        def resume(conn: sqlite3.Connection) -> StateChange | None:
            now = _now_ms() if at is None else dt_to_ms(at)
            row = conn.execute(
                "UPDATE schedule_states SET paused = 0, resumed_at = ?, resumed_by = ?, "
                "failures_at_resume = consecutive_failures, updated_at = ? WHERE schedule = ? AND paused = 1 "
                f"RETURNING {STATE_SELECT}",
                (now, by, now, schedule),
            ).fetchone()
            if row is None:
                row = _fetch_state(conn, schedule)
                return None if row is None else StateChange(state_from_row(row, ms_to_dt), False)
            conn.execute(
                "INSERT INTO schedule_cursors (schedule, last_fire_time) VALUES (?, ?) "
                "ON CONFLICT (schedule) DO UPDATE SET "
                "last_fire_time = max(last_fire_time, excluded.last_fire_time)",
                (schedule, now),
            )
            return StateChange(state_from_row(row, ms_to_dt), True)

        result: StateChange | None = await self._write(resume)
        return result

    async def schedule_activity(
        self, until: datetime, bucket: timedelta, buckets: int
    ) -> dict[str, ScheduleActivity]:
        since = _activity.window(until, bucket, buckets)
        start, step = dt_to_ms(since), max(1, round(bucket.total_seconds() * 1000))
        rows = await self._read(_activity.SQLITE, (start, step, start, dt_to_ms(until)))
        return _activity.activity_from_rows(rows, since, bucket, buckets)

    async def last_run_times(self) -> dict[str, datetime]:
        rows = await self._read(
            "SELECT c.schedule, (SELECT runs.created_at FROM runs WHERE runs.schedule_name = c.schedule "
            "ORDER BY runs.seq DESC LIMIT 1) AS created_at FROM schedule_cursors c"
        )
        return {r["schedule"]: ms_to_dt(r["created_at"]) for r in rows if r["created_at"] is not None}  # type: ignore[misc]


def _fetch_state(conn: sqlite3.Connection, schedule: str) -> Any:
    return conn.execute(
        f"SELECT {STATE_SELECT} FROM schedule_states WHERE schedule = ?", (schedule,)
    ).fetchone()


def _index_labels(conn: sqlite3.Connection, run_id: str) -> None:
    """The labels index of run lists: written when a run is created, never by checkpoints."""
    conn.execute(
        "INSERT INTO run_labels (key, value, seq) "
        "SELECT j.key, j.value, r.seq FROM runs r, json_each(r.labels) j WHERE r.id = ?",
        (run_id,),
    )


def _coalesce_target(conn: sqlite3.Connection, run: NewRun) -> tuple[RunRecord, Disposition] | None:
    """For a coalescing trigger: the existing run it resolves to, if any (inside the insert's
    ``BEGIN IMMEDIATE`` transaction, which holds the file's write lock: no other process can create
    a run between this read and the insert that follows when it finds nothing)."""
    if run.idempotency_key is not None:
        existing = conn.execute(
            f"SELECT {RUN_SELECT} FROM runs WHERE job_name = ? AND idempotency_key = ?",
            (run.job_name, run.idempotency_key),
        ).fetchone()
        if existing is not None:
            return _run(existing), "idempotent"
    pending = conn.execute(
        f"SELECT {RUN_SELECT} FROM runs INDEXED BY runs_concurrency_active WHERE concurrency_key = ? "
        f"AND status IN {ACTIVE_SQL} AND status = 'pending' AND job_name = ? AND started_at IS NULL "
        "ORDER BY seq LIMIT 1",
        (run.concurrency_key, run.job_name),
    ).fetchone()
    return None if pending is None else (_run(pending), "coalesced")


def _delay_ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


def _beat(conn: sqlite3.Connection, worker_id: str, runs_held: int, now: int) -> bool:
    row = conn.execute(
        "UPDATE workers SET heartbeat_at = ?, runs_held = ? WHERE id = ? RETURNING 1",
        (now, runs_held, worker_id),
    ).fetchone()
    return row is not None


def _insert_run(conn: sqlite3.Connection, run: NewRun, now: int) -> tuple[RunRecord, Disposition]:
    if run.coalesce and run.concurrency_key is not None:
        target = _coalesce_target(conn, run)
        if target is not None:
            return target
    row = conn.execute(
        "INSERT INTO runs (id, job_name, status, input, idempotency_key, concurrency_key, labels, "
        "schedule_name, retry_policy, timeout, created_at, updated_at) "
        "VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        f"ON CONFLICT DO NOTHING RETURNING {RUN_SELECT}",
        (
            run.id,
            run.job_name,
            dumps(run.input),
            run.idempotency_key,
            run.concurrency_key,
            dumps(run.labels),
            run.labels.get("schedule"),
            None if run.retry_policy is None else dumps(run.retry_policy),
            run.timeout,
            now,
            now,
        ),
    ).fetchone()
    if row is not None:
        if run.labels:
            _index_labels(conn, run.id)
        return _run(row), "created"
    existing = conn.execute(
        f"SELECT {RUN_SELECT} FROM runs WHERE job_name = ? AND idempotency_key = ?",
        (run.job_name, run.idempotency_key),
    ).fetchone()
    if existing is None:  # the conflict was on the run id itself
        existing = conn.execute(f"SELECT {RUN_SELECT} FROM runs WHERE id = ?", (run.id,)).fetchone()
    return _run(existing), "idempotent"


__all__ = ["SqliteStore", "parse_sqlite_url"]
