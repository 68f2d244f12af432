"""SQLite store on aiosqlite: the embedded default.

Concurrency model, per process:

* one **writer** connection. Every write is a small synchronous function of a ``sqlite3.Connection``;
  writes queued while the previous batch was committing are run together in one ``BEGIN IMMEDIATE``
  transaction, each inside its own savepoint, in **one** hop to aiosqlite's connection thread. Runs
  executing at the same time therefore share commits (group commit), and a checkpoint costs one
  thread hop instead of one per statement.
* one **reader** connection for queries (WAL readers never block the writer).

Across processes SQLite's file lock serialises writers. ``BEGIN IMMEDIATE`` takes the write lock up
front, so a read-then-write transaction never fails half-way with SQLITE_BUSY; the busy timeout plus
a retry loop with backoff keep "database is locked" from reaching users.

Durability: WAL with ``synchronous=NORMAL`` by default. A committed transaction survives a crash of
the process (kill -9); a power cut or OS crash may lose the last transactions before the WAL is
synced, never corrupting the file. ``?synchronous=full`` in the URL makes every commit durable at
the cost of an fsync per commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import aiosqlite

from ..errors import SchemaVersionError, StoreError
from ._common import (
    SCHEMA_VERSION,
    dt_to_ms,
    dumps,
    load_migrations,
    ms_to_dt,
    newer_schema_message,
    prefix_upper_bound,
)
from .base import (
    Checkpoint,
    Disposition,
    Fire,
    FireRecord,
    FireResult,
    LogRecord,
    NewLog,
    NewRun,
    Progress,
    RunQuery,
    RunRecord,
    RunStatus,
    StepRecord,
    Store,
    WriteResult,
)

log = logging.getLogger("durably_sched.store.sqlite")
T = TypeVar("T")
WriteFn = Callable[[sqlite3.Connection], Any]

RUN_COLUMNS = (
    "id, job_name, status, input, output, error, failed_step_name, idempotency_key, concurrency_key, "
    "labels, generation, worker_id, lease_expires_at, progress_current, progress_total, "
    "progress_message, step_count, attempt, created_at, started_at, completed_at, updated_at"
)
ACTIVE = "('pending', 'running')"


def _now_ms() -> int:
    return int(time.time() * 1000)


def _run_from_row(row: Sequence[Any]) -> RunRecord:
    progress = None
    if row[13] is not None:
        progress = Progress(current=row[13], total=row[14], message=row[15])
    created = ms_to_dt(row[18])
    updated = ms_to_dt(row[21])
    assert created is not None and updated is not None
    return RunRecord(
        id=row[0],
        job_name=row[1],
        status=row[2],
        input=json.loads(row[3]),
        output=None if row[4] is None else json.loads(row[4]),
        error=row[5],
        failed_step_name=row[6],
        idempotency_key=row[7],
        concurrency_key=row[8],
        labels=json.loads(row[9]),
        generation=row[10],
        worker_id=row[11],
        lease_expires_at=ms_to_dt(row[12]),
        progress=progress,
        step_count=row[16],
        attempt=row[17],
        created_at=created,
        started_at=ms_to_dt(row[19]),
        completed_at=ms_to_dt(row[20]),
        updated_at=updated,
    )


def _fetch_run(conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else _run_from_row(row)


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


def _is_busy(exc: BaseException) -> bool:
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return "locked" in text or "busy" in text


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


class SqliteStore(Store):
    """Store on one SQLite file. URL: ``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db``."""

    def __init__(self, url: str, *, busy_timeout: float = 60.0) -> None:
        self.url = url
        parts = urlsplit(url)
        path = parts.path
        if parts.netloc:  # sqlite://host/... is not a thing; treat "sqlite://x.db" leniently
            path = parts.netloc + path
        if path.startswith("/") and not path.startswith("//"):
            path = path[1:]  # sqlite:///rel.db -> rel.db
        elif path.startswith("//"):
            path = path[1:]  # sqlite:////abs.db -> /abs.db
        if not path:
            raise StoreError(f"database URL {url!r} names no file")
        self.path = path
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.synchronous = options.get("synchronous", "normal").upper()
        if self.synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise StoreError(f"database URL {url!r}: synchronous must be off, normal, full or extra")
        self.busy_timeout = float(options.get("busy_timeout", busy_timeout))
        # Without fsync on commit (WAL + NORMAL/OFF) a commit is a few microseconds of memory work:
        # cheaper on the event loop than a hop to aiosqlite's thread. With FULL, commits fsync and
        # stay on the thread.
        self.inline_writes = self.synchronous in ("OFF", "NORMAL")
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._pending: list[tuple[WriteFn, asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._writer_task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------
    async def connect(self) -> None:
        if self._writer_conn is not None:
            return
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StoreError(f"cannot open database {self.path}: directory {directory} does not exist")
        try:
            self._writer_conn = await self._open(writer=True)
            self._reader = await self._open(writer=False)
            # The first real read tells a corrupt or foreign file from a database.
            await self._reader.execute_fetchall("SELECT count(*) FROM sqlite_master")
        except sqlite3.DatabaseError as exc:
            await self.close()
            raise StoreError(f"cannot open database {self.path}: {self._explain(exc)}") from None
        self._writer_task = asyncio.get_running_loop().create_task(
            self._write_loop(), name="durably-sqlite-writer"
        )

    async def _open(self, *, writer: bool) -> aiosqlite.Connection:
        # After set-up the writer waits for locks in its own retry loop (on aiosqlite's thread),
        # never inside SQLite, so an inline attempt on the event loop never blocks on another process.
        conn = await aiosqlite.connect(
            self.path, isolation_level=None, timeout=self.busy_timeout, check_same_thread=not writer
        )
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            mode = await self._switch_to_wal(conn)
            if mode is None or str(mode[0]).lower() != "wal":
                raise StoreError(f"cannot switch {self.path} to WAL mode (got {mode})")
            await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            if writer:
                await conn.execute("PRAGMA busy_timeout = 0")
                if self.inline_writes:
                    # Checkpoints (which fsync) run on the connection thread, see _write_loop.
                    await conn.execute("PRAGMA wal_autocheckpoint = 0")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _switch_to_wal(self, conn: aiosqlite.Connection) -> Any:
        """``PRAGMA journal_mode = WAL``, retried: when several processes open a new file at once,
        SQLite answers "database is locked" at once instead of calling the busy handler."""
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.005
        while True:
            try:
                rows = list(await conn.execute_fetchall("PRAGMA journal_mode = WAL"))
                return rows[0] if rows else None
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.1)

    def _explain(self, exc: BaseException) -> str:
        text = str(exc)
        if "not a database" in text or "malformed" in text:
            return "the file is not a SQLite database or is corrupt"
        if "unable to open" in text or "readonly" in text or "read-only" in text:
            return "the file or its directory is not writable"
        return text

    async def close(self) -> None:
        task, self._writer_task = self._writer_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _fn, fut in self._pending:
            if not fut.done():
                fut.set_exception(StoreError("store closed"))
        self._pending.clear()
        for name in ("_writer_conn", "_reader"):
            conn = getattr(self, name)
            setattr(self, name, None)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    # -- the writer: group commit on aiosqlite's thread -----------------------------------
    async def _write(self, fn: WriteFn) -> Any:
        if self._writer_task is None:
            raise StoreError("store is not connected")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((fn, fut))
        self._wake.set()
        return await fut

    async def _write_loop(self) -> None:
        conn = self._writer_conn
        assert conn is not None
        raw: sqlite3.Connection = conn._conn
        commits = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            fns = [fn for fn, _ in batch]
            try:
                results = self._run_batch(raw, fns, wait=False) if self.inline_writes else None
                if results is None:
                    # Locked by another process (or FULL durability): run the batch on aiosqlite's
                    # thread, where waiting for the lock does not block the loop. aiosqlite's public
                    # API hops once per statement; _execute runs one function there, so a whole batch
                    # costs a single hop.
                    results = await conn._execute(self._run_batch, raw, fns)  # type: ignore[no-untyped-call]
                commits += 1
                if self.inline_writes and commits % CHECKPOINT_EVERY == 0:
                    await conn._execute(_checkpoint, raw)  # type: ignore[no-untyped-call]
            except asyncio.CancelledError:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(StoreError("store closed"))
                raise
            except BaseException as exc:  # the transaction as a whole failed
                error = exc if isinstance(exc, StoreError) else StoreError(self._explain(exc))
                results = [(False, error)] * len(batch)
            for (_, fut), (ok, value) in zip(batch, results, strict=True):
                if fut.done():
                    continue
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    def _run_batch(
        self, conn: sqlite3.Connection, fns: list[WriteFn], wait: bool = True
    ) -> list[tuple[bool, Any]] | None:
        """One IMMEDIATE transaction, one savepoint per write.

        ``wait=False`` (on the event loop): returns None at once if another connection holds the
        write lock. ``wait=True`` (on the connection thread): retries with backoff up to the busy
        timeout.
        """
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.002
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if not wait and _is_busy(exc):
                    return None
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    if _is_busy(exc):
                        raise StoreError(
                            f"database {self.path} stayed locked for {self.busy_timeout:.0f}s"
                        ) from None
                    raise
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.1)
        results: list[tuple[bool, Any]] = []
        try:
            single = len(fns) == 1
            for fn in fns:
                if single:
                    try:
                        results.append((True, fn(conn)))
                    except Exception as exc:
                        conn.execute("ROLLBACK")
                        return [(False, exc)]
                    continue
                conn.execute("SAVEPOINT w")
                try:
                    value = fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO w")
                    conn.execute("RELEASE w")
                    results.append((False, exc))
                else:
                    conn.execute("RELEASE w")
                    results.append((True, value))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return results

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        if self._reader is None:
            raise StoreError("store is not connected")
        return list(await self._reader.execute_fetchall(sql, params))

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

        result: int = await self._write(apply)
        return result

    async def check_schema(self) -> None:
        rows = await self._read("PRAGMA user_version")
        found = rows[0][0]
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(newer_schema_message(found))
        if found < SCHEMA_VERSION:
            raise SchemaVersionError(
                f"database schema version {found} is older than {SCHEMA_VERSION}: run `durably-sched migrate`"
            )

    async def ping(self) -> None:
        try:
            await self._read("SELECT 1")
        except sqlite3.Error as exc:
            raise StoreError(self._explain(exc)) from None

    # -- runs --------------------------------------------------------------------------------
    async def create_runs(self, runs: Sequence[NewRun]) -> list[tuple[RunRecord, Disposition]]:
        def insert(conn: sqlite3.Connection) -> list[tuple[RunRecord, Disposition]]:
            now = _now_ms()
            out: list[tuple[RunRecord, Disposition]] = []
            for run in runs:
                out.append(_insert_run(conn, run, now))
            return out

        result: list[tuple[RunRecord, Disposition]] = await self._write(insert)
        return result

    async def get_run(self, run_id: str) -> RunRecord | None:
        rows = await self._read(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return _run_from_row(rows[0]) if rows else None

    async def get_run_statuses(self, run_ids: Sequence[str]) -> dict[str, RunStatus]:
        if not run_ids:
            return {}
        marks = ",".join("?" * len(run_ids))
        rows = await self._read(f"SELECT id, status FROM runs WHERE id IN ({marks})", list(run_ids))
        return {r[0]: r[1] for r in rows}

    async def list_runs(self, query: RunQuery) -> list[RunRecord]:
        where: list[str] = []
        params: list[Any] = []
        if query.statuses:
            where.append(f"status IN ({','.join('?' * len(query.statuses))})")
            params.extend(query.statuses)
        if query.job_name is not None:
            where.append("job_name = ?")
            params.append(query.job_name)
        if query.schedule is not None:
            where.append("schedule_name = ?")
            params.append(query.schedule)
        if query.before_created is not None:
            where.append("created_at < ?")
            params.append(dt_to_ms(query.before_created))
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._read(
            f"SELECT {RUN_COLUMNS} FROM runs {clause} ORDER BY seq DESC LIMIT ?", [*params, query.limit]
        )
        return [_run_from_row(r) for r in rows]

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
        return [r[0] for r in rows if r[0].startswith(prefix)]

    async def count_runs_by_status(self) -> dict[tuple[str, str], int]:
        rows = await self._read("SELECT job_name, status, count(*) FROM runs GROUP BY job_name, status")
        return {(r[0], r[1]): r[2] for r in rows}

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        rows = await self._read(
            "SELECT name, idx, output, started_at, completed_at FROM steps WHERE run_id = ? ORDER BY idx",
            (run_id,),
        )
        return [
            StepRecord(
                run_id=run_id,
                index=r[1],
                name=r[0],
                output_json=r[2],
                started_at=ms_to_dt(r[3]),  # type: ignore[arg-type]
                completed_at=ms_to_dt(r[4]),  # type: ignore[arg-type]
            )
            for r in rows
        ]

    async def get_logs(self, run_id: str, after_id: int = 0, limit: int = 1000) -> list[LogRecord]:
        rows = await self._read(
            "SELECT id, step_name, level, message, data, created_at FROM logs "
            "WHERE run_id = ? AND id > ? ORDER BY id LIMIT ?",
            (run_id, after_id, limit),
        )
        return [
            LogRecord(
                id=r[0],
                run_id=run_id,
                step_name=r[1],
                level=r[2],
                message=r[3],
                data=json.loads(r[4]),
                created_at=ms_to_dt(r[5]),  # type: ignore[arg-type]
            )
            for r in rows
        ]

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

        def claim(conn: sqlite3.Connection) -> list[RunRecord]:
            now = _now_ms()
            marks = ",".join("?" * len(jobs))
            # INDEXED BY: read only active runs, however much history the table holds (the planner
            # would otherwise pick runs_job and walk every run the job ever had).
            scan = (
                f"SELECT seq, concurrency_key FROM runs INDEXED BY runs_active WHERE status IN {ACTIVE} "
                f"AND job_name IN ({marks}) {only_clause}"
                "AND (status = 'pending' OR lease_expires_at < ?) AND seq > ? ORDER BY seq LIMIT 256"
            )
            claimed: list[RunRecord] = []
            keys_decided: set[str] = set()  # taken in this claim, or blocked
            last_seq = 0
            while len(claimed) < limit:
                # Each page is read completely before any update (no update under a live cursor).
                page = conn.execute(scan, [*jobs, *only, now, last_seq]).fetchall()
                if not page:
                    break
                for seq, key in page:
                    last_seq = seq
                    if key is not None:
                        if key in keys_decided:
                            continue
                        keys_decided.add(key)
                        blocked = conn.execute(
                            f"SELECT 1 FROM runs WHERE concurrency_key = ? AND status IN {ACTIVE} "
                            "AND seq != ? AND (seq < ? OR (status = 'running' AND lease_expires_at >= ?)) "
                            "LIMIT 1",
                            (key, seq, seq, now),
                        ).fetchone()
                        if blocked is not None:
                            continue
                    row = conn.execute(
                        "UPDATE runs SET status = 'running', generation = generation + 1, worker_id = ?, "
                        "lease_expires_at = ?, started_at = COALESCE(started_at, ?), attempt = attempt + 1, "
                        f"updated_at = ? WHERE seq = ? RETURNING {RUN_COLUMNS}",
                        (worker_id, now + lease_ms, now, now, seq),
                    ).fetchone()
                    claimed.append(_run_from_row(row))
                    if len(claimed) >= limit:
                        break
            return claimed

        result: list[RunRecord] = await self._write(claim)
        return result

    async def renew_leases(
        self, leases: Sequence[tuple[str, int]], lease_seconds: float
    ) -> dict[str, WriteResult]:
        if not leases:
            return {}
        lease_ms = int(lease_seconds * 1000)

        def renew(conn: sqlite3.Connection) -> dict[str, WriteResult]:
            now = _now_ms()
            out: dict[str, WriteResult] = {}
            for run_id, generation in leases:
                row = conn.execute(
                    "UPDATE runs SET lease_expires_at = CASE WHEN status = 'running' THEN ? "
                    "ELSE lease_expires_at END WHERE id = ? AND generation = ? "
                    "AND status IN ('running', 'cancelled') RETURNING status",
                    (now + lease_ms, run_id, generation),
                ).fetchone()
                out[run_id] = _fence_result(row)
            return out

        result: dict[str, WriteResult] = await self._write(renew)
        return result

    async def checkpoint(self, cp: Checkpoint) -> WriteResult:
        def write(conn: sqlite3.Connection) -> WriteResult:
            now = _now_ms()
            inserted = conn.execute(
                "INSERT INTO steps (run_id, name, idx, output, started_at, completed_at) "
                "SELECT ?, ?, ?, ?, ?, ? FROM runs WHERE id = ? AND generation = ? "
                "AND status IN ('running', 'cancelled') ON CONFLICT DO NOTHING",
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
            return _fence_result(row)

        result: WriteResult = await self._write(write)
        return result

    async def _fenced_update(
        self,
        run_id: str,
        generation: int,
        assignments: str,
        params: Sequence[Any],
        logs: Sequence[NewLog],
        statuses: str = "('running', 'cancelled')",
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
            return _fence_result(row)

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
    ) -> WriteResult:
        return await self._fenced_update(
            run_id,
            generation,
            "status = 'failed', error = ?, failed_step_name = ?, completed_at = ?, lease_expires_at = NULL",
            (error, failed_step_name, _now_ms()),
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
                f"WHERE id = ? AND status IN {ACTIVE}",
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
                "completed_at = NULL, worker_id = NULL, lease_expires_at = NULL, updated_at = ? "
                "WHERE id = ? AND status IN ('failed', 'cancelled')",
                (now, run_id),
            )
            return _fetch_run(conn, run_id)

        result: RunRecord | None = await self._write(retry)
        return result

    async def delete_run(self, run_id: str) -> bool:
        def delete(conn: sqlite3.Connection) -> bool:
            gone = conn.execute("DELETE FROM runs WHERE id = ? AND status != 'running'", (run_id,)).rowcount
            if gone:
                conn.execute("DELETE FROM steps WHERE run_id = ?", (run_id,))
                conn.execute("DELETE FROM logs WHERE run_id = ?", (run_id,))
            return bool(gone)

        result: bool = await self._write(delete)
        return result

    async def purge_runs(self, older_than: datetime, batch_size: int = 500) -> int:
        cutoff = dt_to_ms(older_than)

        def purge(conn: sqlite3.Connection) -> int:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM runs INDEXED BY runs_finished "
                    "WHERE status IN ('completed', 'failed', 'cancelled') "
                    "AND completed_at < ? ORDER BY completed_at LIMIT ?",
                    (cutoff, batch_size),
                )
            ]
            if not ids:
                return 0
            marks = ",".join("?" * len(ids))
            conn.execute(f"DELETE FROM steps WHERE run_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM logs WHERE run_id IN ({marks})", ids)
            conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids)
            return len(ids)

        result: int = await self._write(purge)
        return result

    # -- schedules ------------------------------------------------------------------------
    async def get_cursors(self) -> dict[str, datetime]:
        rows = await self._read("SELECT schedule, last_fire_time FROM schedule_cursors")
        return {r[0]: ms_to_dt(r[1]) for r in rows}  # type: ignore[misc]

    async def advance_cursor(self, schedule: str, to: datetime) -> datetime:
        to_ms = dt_to_ms(to)

        def advance(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "INSERT INTO schedule_cursors (schedule, last_fire_time) VALUES (?, ?) "
                "ON CONFLICT (schedule) DO UPDATE SET "
                "last_fire_time = max(last_fire_time, excluded.last_fire_time) RETURNING last_fire_time",
                (schedule, to_ms),
            ).fetchone()
            return int(row[0])

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
                "SELECT run_id FROM fire_records WHERE schedule = ? AND fire_time = ?",
                (fire.schedule, fire_ms),
            ).fetchone()
            if existing is not None:
                run = _fetch_run(conn, existing[0]) if existing[0] else None
                return FireResult("deduplicated", run)
            run_record: RunRecord | None = None
            if fire.run is None:
                outcome = fire.outcome_without_run
            elif (
                fire.skip_if_active
                and conn.execute(
                    f"SELECT 1 FROM runs INDEXED BY runs_schedule_active WHERE schedule_name = ? "
                    f"AND status IN {ACTIVE} LIMIT 1",
                    (fire.schedule,),
                ).fetchone()
            ):
                outcome = "skipped"
            else:
                run_record, disposition = _insert_run(conn, fire.run, now)
                outcome = "triggered" if disposition == "created" else "deduplicated"
            conn.execute(
                "INSERT INTO fire_records (schedule, fire_time, outcome, run_id, recorded_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (fire.schedule, fire_ms, outcome, run_record.id if run_record else None, now),
            )
            return FireResult(outcome, run_record)

        result: FireResult = await self._write(handle)
        return result

    async def list_fire_records(
        self, schedule: str, limit: int = 50, before: datetime | None = None
    ) -> list[FireRecord]:
        bound = dt_to_ms(before) if before is not None else 2**62
        rows = await self._read(
            "SELECT schedule, fire_time, outcome, run_id, recorded_at FROM fire_records "
            "WHERE schedule = ? AND fire_time < ? ORDER BY fire_time DESC LIMIT ?",
            (schedule, bound, limit),
        )
        return [_fire_from_row(r) for r in rows]

    async def last_fire_records(self) -> dict[str, FireRecord]:
        rows = await self._read(
            "SELECT f.schedule, f.fire_time, f.outcome, f.run_id, f.recorded_at FROM fire_records f "
            "JOIN (SELECT schedule, max(fire_time) AS t FROM fire_records GROUP BY schedule) m "
            "ON m.schedule = f.schedule AND m.t = f.fire_time"
        )
        return {r[0]: _fire_from_row(r) for r in rows}

    async def purge_fire_records(self, older_than: datetime, batch_size: int = 500) -> int:
        cutoff = dt_to_ms(older_than)

        def purge(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM fire_records WHERE (schedule, fire_time) IN (SELECT schedule, fire_time "
                "FROM fire_records WHERE fire_time < ? LIMIT ?)",
                (cutoff, batch_size),
            ).rowcount

        result: int = await self._write(purge)
        return result


CHECKPOINT_EVERY = 200
"""With inline writes the writer's auto-checkpoint is off; it checkpoints (PASSIVE) on its thread
after this many commits instead, so the WAL stays small without fsyncs on the event loop."""


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


def _fence_result(row: Sequence[Any] | None) -> WriteResult:
    if row is None:
        return "lost"
    return "cancelled" if row[0] == "cancelled" else "ok"


def _fire_from_row(row: Sequence[Any]) -> FireRecord:
    return FireRecord(
        schedule=row[0],
        fire_time=ms_to_dt(row[1]),  # type: ignore[arg-type]
        outcome=row[2],
        run_id=row[3],
        recorded_at=ms_to_dt(row[4]),  # type: ignore[arg-type]
    )


def _insert_run(conn: sqlite3.Connection, run: NewRun, now: int) -> tuple[RunRecord, Disposition]:
    row = conn.execute(
        "INSERT INTO runs (id, job_name, status, input, idempotency_key, concurrency_key, labels, "
        "schedule_name, created_at, updated_at) VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?) "
        f"ON CONFLICT DO NOTHING RETURNING {RUN_COLUMNS}",
        (
            run.id,
            run.job_name,
            dumps(run.input),
            run.idempotency_key,
            run.concurrency_key,
            dumps(run.labels),
            run.labels.get("schedule"),
            now,
            now,
        ),
    ).fetchone()
    if row is not None:
        return _run_from_row(row), "created"
    existing = conn.execute(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE job_name = ? AND idempotency_key = ?",
        (run.job_name, run.idempotency_key),
    ).fetchone()
    if existing is None:  # the conflict was on the run id itself
        existing = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run.id,)).fetchone()
    return _run_from_row(existing), "idempotent"
