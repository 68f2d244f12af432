"""PostgreSQL store on asyncpg: for several processes or hosts sharing one database.

URL: ``postgresql://user:password@host:5432/db`` (``postgres://`` works too). Options in the query
string, removed before the DSN goes to asyncpg (everything else, e.g. ``sslmode``, is passed on):

* ``schema=NAME``: keep every table in that PostgreSQL schema (default ``public``). Each pool
  connection starts with ``search_path`` set to it; ``migrate()`` creates it if missing.
* ``pool_max=N``: the connection pool's size (default 10; a worker needs about one connection per
  concurrently running run plus two).

How the contract is kept, in the order of base.py:

* **Clock.** Leases and every time the store stamps (created, started, completed, updated) come from
  the database's clock (``now()``, ``clock_timestamp()``), so hosts with skewed clocks agree on
  who holds a lease. Times a caller measured itself (step start/end, log times, fire times) are
  stored as given. Values come back as aware UTC datetimes.
* **JSON.** ``json`` columns (not ``jsonb``), step outputs in ``text``: both keep the encoded text
  exactly, so values read back are what the SQLite store returns, key order included, and a
  ``"\\u0000"`` that jsonb would reject is stored like any other string.
* **Claims** (see :meth:`PostgresStore.claim`): ``FOR UPDATE SKIP LOCKED`` spreads runs over
  claimers, in one statement for runs without a concurrency key; a per-concurrency-key advisory
  lock plus a re-check in a later statement keeps a key exclusive under READ COMMITTED, where two
  claimers' snapshots can disagree about which run of the key is first. ``create_and_claim`` can
  insert a run already claimed (a trigger whose own worker has a free slot).
* **Fenced writes** are single statements (CTEs): the run-row update, the step insert and the
  logs go in one round trip, conditioned on ``id``, ``generation`` and status.
* **Wake-ups.** Every write that makes a run claimable (create, fire, retry, release) sends
  ``pg_notify('durably_sched_runs', job_name)`` in its own transaction, so it is delivered on
  commit. A dedicated LISTEN connection (opened once ``set_wakeup`` has a callback) calls the
  callback; it reconnects by itself, and polling stays the fallback.
* **Lost connections** are retried with exponential backoff for up to ``retry_timeout`` seconds
  (30 by default), then raise StoreError. See :meth:`PostgresStore._run` for why retrying a write
  whose COMMIT outcome is unknown is safe for each operation.
* **Errors** a user can cause (server unreachable, login rejected, no such database, schema not
  migrated) are StoreError with one line naming host, port and database, never the password.
* **Text.** PostgreSQL text cannot hold NUL; in free text (error messages, log and progress
  messages) a NUL is stored as U+FFFD rather than failing the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from .._ratelimit import RateLimitedLog
from ..errors import DatabaseUnavailableError, DatabaseUrlError, SchemaVersionError, StoreError
from . import _activity, _runs_query
from ._common import SCHEMA_VERSION, dumps, load_migrations, newer_schema_message
from ._pg_config_errors import PostgresConfigErrors
from ._pg_errors import describe, is_connection_error, is_transient, statement_error
from ._pg_listener import Listener
from ._pg_sql import (
    APPEND_LOGS,
    BEAT,
    CHECKPOINT,
    CHECKPOINT_NO_LOGS,
    CHECKPOINT_REPLAYED,
    CLAIM_CANDIDATES,
    CLAIM_ONE_STATEMENT,
    CLAIM_UPDATE,
    COALESCE_LOCK,
    COALESCE_TARGET,
    COMPLETE,
    CONNECT_TIMEOUT,
    DEFAULT_POOL_MAX,
    FAIL,
    INSERT_CLAIMED,
    INSERT_RUNS,
    LOCK_NAMESPACE,
    MIGRATION_LOCK,
    NOTIFY,
    PAUSE_SCHEDULE,
    RELEASE,
    RENEW,
    RENEW_WITH_BEAT,
    RESUME_SCHEDULE,
    RETRY_LATER,
    RUN_SELECT,
    SCHEDULE_LOCK_NAMESPACE,
    SCHEMA_NAME,
    SET_PROGRESS,
    STATE_SELECT,
    UPSERT_CURSOR,
    find_run_ids_query,
)
from ._web_sessions import PostgresWebSessions
from .attempts import ATTEMPTS_SQL, AttemptRecord, attempt_from_row
from .base import (
    COUNT_CAP,
    Checkpoint,
    Disposition,
    Fire,
    FireOutcome,
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
    LEASED_RUNS,
    LOG_COLUMNS,
    RUN_COLUMNS,
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

log = logging.getLogger("durably_sched.store.postgres")
T = TypeVar("T")
URL_OPTIONS = (
    # durably-sched's own, removed before the DSN goes to asyncpg
    "schema",
    "pool_max",
    # what asyncpg reads from the query string of a DSN
    "host",
    "port",
    "user",
    "password",
    "dbname",
    "database",
    "passfile",
    "service",
    "sslmode",
    "sslcert",
    "sslkey",
    "sslrootcert",
    "sslcrl",
    "sslpassword",
    "sslnegotiation",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "target_session_attrs",
    "krbsrvname",
    "gsslib",
)
"""Query options a PostgreSQL URL may carry. Anything else is refused: asyncpg would send it to the
server as a session setting, where a typo only surfaces as an obscure error at connect time."""
Op = Callable[[Any, bool], Awaitable[T]]  # (connection, replay) -> result


def _aware(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        raise ValueError("naive datetime: durably-sched needs timezone-aware times")
    return dt


def _text(value: str | None) -> str | None:
    """Free text for a text column. PostgreSQL text cannot hold NUL (SQLite's can): a NUL in an
    error or log message would make the write fail -- and a failure that cannot be recorded would
    be retried forever -- so it becomes U+FFFD instead."""
    return value.replace("\x00", "\ufffd") if value is not None and "\x00" in value else value


def _log_arrays(logs: Sequence[NewLog]) -> list[list[Any]]:
    return [
        [lg.step_name for lg in logs],
        [lg.level for lg in logs],
        [_text(lg.message) for lg in logs],
        [dumps(lg.data) for lg in logs],
        [_aware(lg.created_at) for lg in logs],
    ]


def _status(row: Any) -> WriteResult:
    return fence_result(None if row is None else row["status"])


async def _keep_session(conn: Any) -> None:
    """Pool reset hook: no per-release RESET ALL round trip.

    The store never changes session state (no SET, LISTEN, cursors or session-level advisory
    locks on pool connections), and asyncpg still rolls back a transaction left open by a
    cancelled operation before calling this. Saves one round trip per operation.
    """


class PostgresStore(PostgresConfigErrors, PostgresWebSessions, Store):
    """Store on a PostgreSQL database through an asyncpg connection pool."""

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int | None = None,
        retry_timeout: float = 30.0,
    ) -> None:
        self.url = url
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("postgres", "postgresql"):
            raise DatabaseUrlError(f"not a PostgreSQL URL: {self._redact(url)}")
        keep: list[tuple[str, str]] = []
        schema = "public"
        pool_max: int | None = None
        query_host: str | None = None
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in URL_OPTIONS:
                raise DatabaseUrlError(
                    f"database URL {self._redact(url)}: unknown option {key!r} "
                    f"(PostgreSQL URLs take: {', '.join(URL_OPTIONS)})"
                )
            if key == "schema":
                schema = value
            elif key == "pool_max":
                try:
                    pool_max = int(value)
                except ValueError:
                    pool_max = 0
                if pool_max < 1:
                    raise DatabaseUrlError(
                        f"database URL option pool_max must be a positive integer, not {value!r}"
                    )
            else:
                if key == "host":
                    query_host = value
                keep.append((key, value))
        if not SCHEMA_NAME.match(schema):
            raise DatabaseUrlError(
                f"database URL option schema={schema!r} is not a plain identifier (letters, digits, _)"
            )
        self.schema = schema
        self._dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(keep), ""))
        self.min_size = max(0, min_size)
        self.max_size = max(max_size or pool_max or DEFAULT_POOL_MAX, self.min_size, 1)
        self.retry_timeout = retry_timeout
        # For messages: where we connect, never the password.
        host = parts.hostname or query_host or os.environ.get("PGHOST") or "localhost"
        try:
            port = parts.port or int(os.environ.get("PGPORT", "5432"))
        except ValueError as exc:
            raise DatabaseUrlError(f"database URL {self._redact(url)} has an invalid port") from exc
        self.user = unquote(parts.username) if parts.username else os.environ.get("PGUSER")
        self.database = unquote(parts.path.lstrip("/")) or os.environ.get("PGDATABASE") or self.user or "?"
        self.where = f"PostgreSQL at {host}:{port}, database '{self.database}'"
        self._password = unquote(parts.password) if parts.password else None
        self._pool: Any = None
        self._idle: list[Any] = []  # connections kept between operations (see _acquire)
        self._waiting = 0  # operations waiting in the pool's acquire
        self._warnings = RateLimitedLog(log)
        self._listener = Listener(self._dsn, self._server_settings(), self.where, lambda: self._wakeup)

    # -- lifecycle ------------------------------------------------------------------------------
    def _server_settings(self) -> dict[str, str]:
        return {"search_path": f'"{self.schema}"', "application_name": "durably-sched"}

    async def connect(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                server_settings=self._server_settings(),
                timeout=CONNECT_TIMEOUT,
                reset=_keep_session,
            )
        except Exception as exc:
            raise self._connect_error(exc) from None
        if self._wakeup is not None:
            self._listener.start(asyncio.get_running_loop())

    def _connect_error(self, exc: BaseException) -> StoreError:
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            reason = f"database '{self.database}' does not exist"
        elif isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):  # incl. bad password
            reason = f"login as '{self.user}' rejected: {str(exc).strip()}"
        elif isinstance(exc, ConnectionRefusedError):
            reason = "connection refused (is the server running and listening there?)"
        elif isinstance(exc, TimeoutError):
            reason = f"no answer within {CONNECT_TIMEOUT:.0f}s"
        elif isinstance(exc, OSError):
            reason = exc.strerror or str(exc) or type(exc).__name__
        else:
            reason = describe(exc)
        unreachable = isinstance(exc, OSError | TimeoutError) or is_connection_error(exc)
        kind = DatabaseUnavailableError if unreachable else StoreError
        return kind(self._redact(f"cannot connect to {self.where}: {reason}"))

    def _redact(self, text: str) -> str:
        password = getattr(self, "_password", None)
        return text.replace(password, "***") if password else text

    async def close(self) -> None:
        await self._listener.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._release_idle(pool)
            try:
                await asyncio.wait_for(pool.close(), 10.0)
            except Exception:
                pool.terminate()

    def set_wakeup(self, callback: Callable[[], None]) -> None:
        super().set_wakeup(callback)
        if self._pool is not None:
            self._listener.start(asyncio.get_running_loop())

    # -- connections ---------------------------------------------------------------------------
    async def _acquire(self, pool: Any) -> Any:
        """A connection for one operation: the one used last, if it is idle, else one from the pool.

        A connection whose operation succeeded is kept on a short list instead of going back to
        asyncpg's pool: the next operation takes it without the pool's acquire and release (a
        queue, a proxy and a shielded release task: ~40 µs of CPU each time, on an operation whose
        round trip may take less). One that failed or was cancelled always goes back to the pool,
        which knows how to clean up after an interrupted query, and so does every connection while
        another operation waits for the pool (else it would wait for ever: see _keep).
        """
        idle = self._idle
        while idle:
            conn = idle.pop()
            if not conn.is_closed():
                return conn
            await pool.release(conn)
        self._waiting += 1
        try:
            return await pool.acquire()
        finally:
            self._waiting -= 1

    def _keep(self, pool: Any, conn: Any) -> bool:
        # With operations waiting for the pool, the connection goes back to it (and so to them).
        if self._waiting or self._pool is not pool or conn.is_closed() or conn.is_in_transaction():
            return False
        self._idle.append(conn)
        return True

    async def _release_idle(self, pool: Any) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await pool.release(conn)

    # -- the retry loop -------------------------------------------------------------------------
    async def _run(self, what: str, op: Op[T], *, budget: float | None = None) -> T:
        """Run ``op(conn, replay)`` on a pool connection; retry on lost connections.

        ``replay`` is True on every attempt after a failed one. A failure may have struck after
        the server committed (the connection died before the answer arrived), so each operation
        must be safe to run twice and must report the same outcome the first run would have:

        * reads, renew_leases, set_progress, cancel/retry, cursors, purges, migrate: running them
          again leaves the same state (a purge may report fewer rows; a replayed set_progress or
          append_logs may store its log lines twice -- logs carry no client id to dedupe on;
          that is the one documented imprecision);
        * create_runs: ids are chosen by the caller and inserts tolerate conflicts; on replay a
          conflict with a row that has *our* id means our first attempt committed: "created"
          (a coalescing trigger checks for a run with its id before looking for one to join);
        * checkpoint: the step row's key makes a replay insert nothing, which alone would say
          "lost"; on replay a step row written by our generation on a run we still hold is ours:
          "ok"/"cancelled" (steps record the writing generation for exactly this);
        * complete/fail/release/retry_later: on replay a run already completed/failed/pending
          with our generation is our own committed write: "ok" (generation only changes on claims);
        * the worker registry (register, heartbeat, deregister, take_over_worker, purge): upserts,
          stamps and deletes that leave the same state when run twice; a replayed take-over finds
          the leases already expired and returns fewer run ids (they are claimable either way);
        * claim: runs claimed by a commit we never heard about stay running under a lease
          nobody renews; they are recovered when it expires, exactly like after a worker crash;
        * fire: on replay a fire record pointing at the run id we asked to create is ours:
          "triggered";
        * delete_run: on replay a run that is gone was deleted by us.

        Deadlocks and serialization failures are rolled back by the server and simply run again.
        """
        pool = self._pool
        if pool is None:
            raise StoreError("store is not connected")
        deadline: float | None = None
        delay = 0.05
        attempt = 0
        while True:
            try:
                conn = await self._acquire(pool)
                kept = False
                try:
                    result = await op(conn, attempt > 0)
                    kept = self._keep(pool, conn)
                    return result
                except Exception as exc:
                    if is_connection_error(exc):
                        # Never hand a broken connection back to the pool. (A connection that
                        # closed has already been detached from its proxy: nothing to do.)
                        with contextlib.suppress(asyncpg.InterfaceError):
                            if not conn.is_closed():
                                conn.terminate()
                    raise
                finally:
                    if not kept:
                        await pool.release(conn)
            except Exception as exc:
                if isinstance(exc, asyncpg.InterfaceError) and "pool is clos" in str(exc):
                    raise StoreError("store is closed") from None
                if isinstance(exc, asyncpg.PostgresError) and not is_transient(exc):
                    raise statement_error(exc, what, self.where) from exc
                if not is_transient(exc):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + (self.retry_timeout if budget is None else budget)
                if now + delay > deadline:
                    raise DatabaseUnavailableError(
                        f"{what}: lost {self.where} and could not get it back "
                        f"within {self.retry_timeout if budget is None else budget:.0f}s: {describe(exc)}"
                    ) from None
                self._warnings.warning(
                    "%s failed (%s); retrying in %.2fs",
                    what,
                    describe(exc),
                    delay,
                    key=f"retry {what}: {describe(exc)}",
                )
                await asyncio.sleep(delay * (0.75 + random.random() / 2))
                delay = min(delay * 2, 2.0)
                attempt += 1

    # -- schema ------------------------------------------------------------------------------------
    async def _version(self, conn: Any) -> int:
        try:
            value = await conn.fetchval("SELECT value FROM durably_meta WHERE key = 'schema_version'")
        except asyncpg.UndefinedTableError:
            return 0
        return int(value) if value is not None else 0

    async def migrate(self) -> int:
        migrations = load_migrations("postgres")

        async def apply(conn: Any, replay: bool) -> int:
            async with conn.transaction():
                # Two processes migrating at once: the second waits here, then finds it done.
                await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_NAMESPACE, MIGRATION_LOCK)
                if not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", self.schema):
                    await conn.execute(f'CREATE SCHEMA "{self.schema}"')
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS durably_meta (key text PRIMARY KEY, value text NOT NULL)"
                )
                found = await self._version(conn)
                if found > SCHEMA_VERSION:
                    raise SchemaVersionError(newer_schema_message(found))
                for version, sql in migrations:
                    if version > found:
                        await conn.execute(sql)
                        await conn.execute(
                            "INSERT INTO durably_meta (key, value) VALUES ('schema_version', $1) "
                            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                            str(version),
                        )
            return SCHEMA_VERSION

        return await self._run("migrate", apply)

    async def check_schema(self) -> None:
        async def read(conn: Any, replay: bool) -> int:
            return await self._version(conn)

        check_schema_version(await self._run("check_schema", read))

    async def ping(self) -> None:
        async def one(conn: Any, replay: bool) -> None:
            await conn.fetchval("SELECT 1")

        await self._run("ping", one, budget=3.0)

    # -- runs: creation and queries ---------------------------------------------------------------
    async def _insert_runs(
        self, conn: Any, runs: Sequence[NewRun], replay: bool
    ) -> list[tuple[RunRecord, Disposition]]:
        rows = await conn.fetch(
            INSERT_RUNS,
            [r.id for r in runs],
            [r.job_name for r in runs],
            [dumps(r.input) for r in runs],
            [r.idempotency_key for r in runs],
            [r.concurrency_key for r in runs],
            [dumps(r.labels) for r in runs],
            [r.labels.get("schedule") for r in runs],
            [None if r.retry_policy is None else dumps(r.retry_policy) for r in runs],
            [r.timeout for r in runs],
        )
        created = {row["id"]: run_from_row(row) for row in rows}
        out: list[tuple[RunRecord, Disposition]] = []
        for run in runs:
            record = created.pop(run.id, None)
            if record is not None:
                out.append((record, "created"))
                continue
            existing = await self._existing_run(conn, run)
            # On replay, a run that already has our id was inserted by our own first attempt.
            out.append((existing, "created" if replay and existing.id == run.id else "idempotent"))
        return out

    async def _existing_run(self, conn: Any, run: NewRun) -> RunRecord:
        for _ in range(10):
            row = None
            if run.idempotency_key is not None:
                row = await conn.fetchrow(
                    f"SELECT {RUN_SELECT} FROM runs WHERE job_name = $1 AND idempotency_key = $2",
                    run.job_name,
                    run.idempotency_key,
                )
            if row is None:  # the conflict was on the run id itself
                row = await conn.fetchrow(f"SELECT {RUN_SELECT} FROM runs WHERE id = $1", run.id)
            if row is not None:
                return run_from_row(row)
            # The conflicting row was deleted (purged) meanwhile: try the insert once more.
            rows = await conn.fetch(
                INSERT_RUNS,
                [run.id],
                [run.job_name],
                [dumps(run.input)],
                [run.idempotency_key],
                [run.concurrency_key],
                [dumps(run.labels)],
                [run.labels.get("schedule")],
                [None if run.retry_policy is None else dumps(run.retry_policy)],
                [run.timeout],
            )
            if rows:
                return run_from_row(rows[0])
        raise StoreError(f"could not insert or find run {run.id}")  # pragma: no cover

    async def _insert_coalescing(self, conn: Any, run: NewRun, replay: bool) -> tuple[RunRecord, Disposition]:
        """One coalescing trigger, inside the caller's transaction (see COALESCE_LOCK)."""
        await conn.execute(COALESCE_LOCK, run.job_name, run.concurrency_key)
        if replay:
            mine = await self._fetch_run(conn, run.id)
            if mine is not None:  # our first attempt committed the insert
                return mine, "created"
        if run.idempotency_key is not None:
            row = await conn.fetchrow(
                f"SELECT {RUN_SELECT} FROM runs WHERE job_name = $1 AND idempotency_key = $2",
                run.job_name,
                run.idempotency_key,
            )
            if row is not None:
                return run_from_row(row), "idempotent"
        row = await conn.fetchrow(COALESCE_TARGET, run.job_name, run.concurrency_key)
        if row is not None:
            return run_from_row(row), "coalesced"
        [result] = await self._insert_runs(conn, [run], replay)
        return result

    async def create_runs(self, runs: Sequence[NewRun]) -> list[tuple[RunRecord, Disposition]]:
        if not runs:
            return []
        coalescing = any(r.coalesce and r.concurrency_key is not None for r in runs)

        async def insert(conn: Any, replay: bool) -> list[tuple[RunRecord, Disposition]]:
            return await self._insert_runs(conn, runs, replay)

        async def insert_in_order(conn: Any, replay: bool) -> list[tuple[RunRecord, Disposition]]:
            out: list[tuple[RunRecord, Disposition]] = []
            async with conn.transaction():
                for run in runs:
                    if run.coalesce and run.concurrency_key is not None:
                        out.append(await self._insert_coalescing(conn, run, replay))
                    else:
                        out.extend(await self._insert_runs(conn, [run], replay))
            return out

        return await self._run("create_runs", insert_in_order if coalescing else insert)

    async def create_and_claim(
        self, run: NewRun, worker_id: str, job_names: Sequence[str], lease_seconds: float
    ) -> tuple[RunRecord, Disposition]:
        if run.concurrency_key is not None or run.coalesce:
            [result] = await self.create_runs([run])
            return result
        args = (
            run.id,
            run.job_name,
            dumps(run.input),
            run.idempotency_key,
            dumps(run.labels),
            run.labels.get("schedule"),
            None if run.retry_policy is None else dumps(run.retry_policy),
            run.timeout,
            worker_id,
            float(lease_seconds),
            list(job_names),
        )

        async def insert(conn: Any, replay: bool) -> tuple[RunRecord, Disposition]:
            row = await conn.fetchrow(INSERT_CLAIMED, *args)
            if row is not None:
                return run_from_row(row), "created"
            # A conflict: an existing run of the idempotency key, or on replay our own first
            # attempt (then as it committed it: claimed or not).
            existing = await self._existing_run(conn, run)
            return existing, "created" if replay and existing.id == run.id else "idempotent"

        return await self._run("create_runs", insert)

    async def _fetch_run(self, conn: Any, run_id: str) -> RunRecord | None:
        row = await conn.fetchrow(f"SELECT {RUN_SELECT} FROM runs WHERE id = $1", run_id)
        return None if row is None else run_from_row(row)

    async def get_run(self, run_id: str) -> RunRecord | None:
        async def read(conn: Any, replay: bool) -> RunRecord | None:
            return await self._fetch_run(conn, run_id)

        return await self._run("get_run", read)

    async def get_run_statuses(self, run_ids: Sequence[str]) -> dict[str, RunStatus]:
        if not run_ids:
            return {}

        async def read(conn: Any, replay: bool) -> dict[str, RunStatus]:
            rows = await conn.fetch("SELECT id, status FROM runs WHERE id = ANY($1::text[])", list(run_ids))
            return {r["id"]: r["status"] for r in rows}

        return await self._run("get_run_statuses", read)

    async def list_runs(self, query: RunQuery) -> list[RunRecord]:
        return (await self.list_runs_page(query)).runs

    async def list_runs_page(self, query: RunQuery) -> RunPage:
        built = _runs_query.page_sql(query, RUN_SELECT, "postgres", _aware)
        if built is None:
            return RunPage([], None)
        sql, params = built

        async def read(conn: Any, replay: bool) -> RunPage:
            rows = await conn.fetch(sql, *params)
            return RunPage(
                [run_from_row(r) for r in rows[: query.limit]], _runs_query.next_cursor(rows, query.limit)
            )

        return await self._run("list_runs", read)

    async def count_runs(self, query: RunQuery, cap: int = COUNT_CAP) -> tuple[int, bool]:
        built = _runs_query.count_sql(query, "postgres", _aware, cap)
        if built is None:
            return 0, False
        sql, params = built

        async def read(conn: Any, replay: bool) -> int:
            return int(await conn.fetchval(sql, *params))

        count = await self._run("count_runs", read)
        return min(count, cap), count > cap

    async def get_runs_by_id(self, run_ids: Sequence[str]) -> dict[str, RunRecord]:
        if not run_ids:
            return {}

        async def read(conn: Any, replay: bool) -> dict[str, RunRecord]:
            rows = await conn.fetch(
                f"SELECT {RUN_SELECT} FROM runs WHERE id = ANY($1::text[])", list(run_ids)
            )
            return {r["id"]: run_from_row(r) for r in rows}

        return await self._run("get_runs_by_id", read)

    async def get_steps_since(self, positions: Mapping[str, int]) -> dict[str, list[StepRecord]]:
        if not positions:
            return {}

        async def read(conn: Any, replay: bool) -> dict[str, list[StepRecord]]:
            rows = await conn.fetch(
                f"SELECT {columns(STEP_COLUMNS, 's.')} "
                "FROM unnest($1::text[], $2::integer[]) AS p(run_id, idx) "
                "JOIN steps s ON s.run_id = p.run_id AND s.idx >= p.idx ORDER BY s.run_id, s.idx",
                list(positions),
                list(positions.values()),
            )
            out: dict[str, list[StepRecord]] = {}
            for r in rows:
                out.setdefault(r["run_id"], []).append(step_from_row(r))
            return out

        return await self._run("get_steps_since", read)

    async def get_logs_since(
        self, positions: Mapping[str, int], limit: int = 1000
    ) -> dict[str, list[LogRecord]]:
        if not positions:
            return {}

        async def read(conn: Any, replay: bool) -> dict[str, list[LogRecord]]:
            rows = await conn.fetch(
                f"SELECT {columns(LOG_COLUMNS, 'x.')} "
                "FROM unnest($1::text[], $2::bigint[]) AS p(run_id, after) "
                f"CROSS JOIN LATERAL (SELECT {columns(LOG_COLUMNS)} FROM logs l "
                "WHERE l.run_id = p.run_id AND l.id > p.after ORDER BY l.id LIMIT $3) AS x "
                "ORDER BY x.run_id, x.id",
                list(positions),
                list(positions.values()),
                limit,
            )
            out: dict[str, list[LogRecord]] = {}
            for r in rows:
                out.setdefault(r["run_id"], []).append(log_from_row(r))
            return out

        return await self._run("get_logs_since", read)

    async def poll_run_changes(
        self, after_seq: int | None, finished_since: datetime | None, active_limit: int = 500
    ) -> RunChanges:
        async def read(conn: Any, replay: bool) -> RunChanges:
            active = await conn.fetch(
                f"SELECT {RUN_SELECT} FROM runs WHERE status IN {ACTIVE_SQL} ORDER BY seq DESC LIMIT $1",
                active_limit,
            )
            created: list[Any] = []
            if after_seq is None:
                last_seq = int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM runs"))
            else:
                created = await conn.fetch(
                    f"SELECT seq, {RUN_SELECT} FROM runs WHERE seq > $1 ORDER BY seq LIMIT 500", after_seq
                )
                last_seq = int(created[-1]["seq"]) if created else after_seq
            finished: list[Any] = []
            if finished_since is not None:
                finished = await conn.fetch(
                    f"SELECT {RUN_SELECT} FROM runs WHERE status IN {FINISHED_SQL} AND completed_at >= $1 "
                    "ORDER BY completed_at LIMIT 500",
                    _aware(finished_since),
                )
            return RunChanges(
                active=[run_from_row(r) for r in active],
                created=[run_from_row(r) for r in created],
                finished=[run_from_row(r) for r in finished],
                last_seq=last_seq,
            )

        return await self._run("poll_run_changes", read)

    async def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        sql, args = find_run_ids_query(prefix, limit)

        async def read(conn: Any, replay: bool) -> list[str]:
            rows = await conn.fetch(sql, *args)
            return [r["id"] for r in rows if r["id"].startswith(prefix)]

        return await self._run("find_run_ids", read)

    async def count_runs_by_status(self) -> dict[tuple[str, str], int]:
        async def read(conn: Any, replay: bool) -> dict[tuple[str, str], int]:
            rows = await conn.fetch(
                "SELECT job_name, status, count(*) AS n FROM runs GROUP BY job_name, status"
            )
            return {(r["job_name"], r["status"]): r["n"] for r in rows}

        return await self._run("count_runs_by_status", read)

    async def get_attempts(self, run_id: str, after: int = 0) -> list[AttemptRecord]:
        async def read(conn: Any, replay: bool) -> list[AttemptRecord]:
            rows = await conn.fetch(ATTEMPTS_SQL.format(run="$1", after="$2"), run_id, after)
            return [attempt_from_row(r) for r in rows]

        return await self._run("get_attempts", read)

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        async def read(conn: Any, replay: bool) -> list[StepRecord]:
            rows = await conn.fetch(
                f"SELECT {columns(STEP_COLUMNS)} FROM steps WHERE run_id = $1 ORDER BY idx", run_id
            )
            return [step_from_row(r) for r in rows]

        return await self._run("get_steps", read)

    async def get_logs(self, run_id: str, after_id: int = 0, limit: int = 1000) -> list[LogRecord]:
        async def read(conn: Any, replay: bool) -> list[LogRecord]:
            rows = await conn.fetch(
                f"SELECT {columns(LOG_COLUMNS)} FROM logs WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                run_id,
                after_id,
                limit,
            )
            return [log_from_row(r) for r in rows]

        return await self._run("get_logs", read)

    async def last_log_id(self, run_id: str) -> int:
        async def read(conn: Any, replay: bool) -> int:
            value = await conn.fetchval("SELECT max(id) FROM logs WHERE run_id = $1", run_id)
            return int(value or 0)

        return await self._run("last_log_id", read)

    # -- claims and fenced writes -----------------------------------------------------------------
    async def claim(
        self,
        worker_id: str,
        job_names: Sequence[str],
        limit: int,
        lease_seconds: float,
        *,
        run_ids: Sequence[str] | None = None,
    ) -> list[RunRecord]:
        """Claim up to ``limit`` runs, oldest first.

        First one statement without an explicit transaction (CLAIM_ONE_STATEMENT: one round trip,
        where a transaction costs three): it locks the candidates in creation order with
        ``FOR UPDATE SKIP LOCKED`` (claimers running at the same time take different rows) and
        claims those without a concurrency key at once. If keyed candidates were among them, the
        keyed rule needs more than one snapshot, so a transaction of two statements follows for
        the rest of the limit (:meth:`_claim_keyed`):

        1. Pick candidates in creation order, again with ``FOR UPDATE SKIP LOCKED``, excluding
           keyed runs that the key rule blocks so they cannot use up the limit. For each keyed
           candidate, try the key's transaction-level advisory lock; a key another claimer is
           working on is skipped, never waited for (no deadlocks, and at most one run per key is
           runnable anyway).
        2. Claim them with one UPDATE that re-checks the whole rule. Under READ COMMITTED the
           first statement's snapshot may be stale: two claimers could each see a different run
           of the key as "first" (e.g. an older run retried in between). The UPDATE's snapshot is
           taken after our key locks were granted, so it sees every claim committed by earlier
           holders of those locks; only one claim of a key can pass the re-check at a time.
        """
        if limit <= 0 or not job_names or (run_ids is not None and not run_ids):
            return []
        jobs = list(job_names)
        only = list(run_ids) if run_ids is not None else None
        only_sql = "AND r.id = ANY($5::text[])" if only else ""
        quick_sql = CLAIM_ONE_STATEMENT.format(only=only_sql)
        quick_args: list[Any] = [jobs, limit, worker_id, float(lease_seconds)] + ([only] if only else [])

        async def claim(conn: Any, replay: bool) -> list[RunRecord]:
            # Runs without a concurrency key: one statement, no explicit transaction.
            rows = await conn.fetch(quick_sql, *quick_args)
            out = [
                (r["seq"], run_from_row(r, previous_worker_id=r["previous_worker_id"]))
                for r in rows
                if r["seq"] is not None
            ]
            room = limit - len(out)
            if rows[0]["keyed"] and room > 0:
                out.extend(await self._claim_keyed(conn, jobs, room, worker_id, lease_seconds, only))
            if len(out) > 1:
                out.sort(key=lambda pair: pair[0])
            return [record for _, record in out]

        return await self._run("claim", claim)

    async def _claim_keyed(
        self,
        conn: Any,
        jobs: list[str],
        limit: int,
        worker_id: str,
        lease_seconds: float,
        only: list[str] | None,
    ) -> list[tuple[int, RunRecord]]:
        """The claim of runs with a concurrency key (and any others among the candidates): one
        transaction of two statements, see :meth:`claim`."""
        candidates_sql = CLAIM_CANDIDATES.format(only="AND r.id = ANY($3::text[])" if only else "")
        args: list[Any] = [jobs, limit] + ([only] if only else [])
        async with conn.transaction():
            rows = await conn.fetch(candidates_sql, *args)
            previous = {r["seq"]: r["worker_id"] for r in rows if r["free"]}
            if not previous:
                return []
            claimed = await conn.fetch(CLAIM_UPDATE, list(previous), worker_id, float(lease_seconds))
        return [(r["seq"], run_from_row(r, previous_worker_id=previous.get(r["seq"]))) for r in claimed]

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
        args: list[Any] = [[r for r, _ in leases], [g for _, g in leases], float(lease_seconds)]
        sql = RENEW
        if worker is not None:
            sql = RENEW_WITH_BEAT
            args += [worker[0], worker[1]]

        async def renew(conn: Any, replay: bool) -> dict[str, WriteResult]:
            rows = await conn.fetch(sql, *args)
            found = {r["id"]: fence_result(r["status"]) for r in rows}
            return {run_id: found.get(run_id, "lost") for run_id, _ in leases}

        return await self._run("renew_leases", renew)

    async def checkpoint(self, cp: Checkpoint) -> WriteResult:
        step = (cp.name, cp.index, cp.output_json, _aware(cp.started_at), _aware(cp.completed_at))
        if cp.logs:
            sql, args = CHECKPOINT, (cp.run_id, cp.generation, *_log_arrays(cp.logs), *step)
        else:
            sql, args = CHECKPOINT_NO_LOGS, (cp.run_id, cp.generation, *step)

        async def write(conn: Any, replay: bool) -> WriteResult:
            status = await conn.fetchval(sql, *args)
            if status is None and replay:
                status = await conn.fetchval(CHECKPOINT_REPLAYED, cp.run_id, cp.generation, cp.name)
            return fence_result(status)

        return await self._run("checkpoint", write)

    async def _fenced(
        self,
        what: str,
        sql: str,
        run_id: str,
        generation: int,
        logs: Sequence[NewLog],
        params: Sequence[Any] = (),
        replayed_status: str | None = None,
    ) -> WriteResult:
        args = (run_id, generation, *_log_arrays(logs), *params)

        async def write(conn: Any, replay: bool) -> WriteResult:
            row = await conn.fetchrow(sql, *args)
            if row is None and replay and replayed_status is not None:
                status = await conn.fetchval(
                    "SELECT status FROM runs WHERE id = $1 AND generation = $2", run_id, generation
                )
                if status == replayed_status:
                    return "ok"
            return _status(row)

        return await self._run(what, write)

    async def set_progress(
        self, run_id: str, generation: int, progress: Progress, logs: Sequence[NewLog] = ()
    ) -> WriteResult:
        return await self._fenced(
            "set_progress",
            SET_PROGRESS,
            run_id,
            generation,
            logs,
            (progress.current, progress.total, _text(progress.message)),
        )

    async def append_logs(self, run_id: str, generation: int, logs: Sequence[NewLog]) -> WriteResult:
        return await self._fenced("append_logs", APPEND_LOGS, run_id, generation, logs)

    async def complete_run(
        self, run_id: str, generation: int, output: Any, logs: Sequence[NewLog] = ()
    ) -> WriteResult:
        return await self._fenced(
            "complete_run", COMPLETE, run_id, generation, logs, (dumps(output),), "completed"
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
        params = (_text(error), failed_step_name, _text(bounded_traceback(traceback)))
        return await self._fenced("fail_run", FAIL, run_id, generation, logs, params, "failed")

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
        params = (
            _text(error),
            failed_step_name,
            _text(bounded_traceback(traceback)),
            max(0.0, float(delay_seconds)),
        )
        # A replay that finds the run pending with our generation found our own committed write.
        return await self._fenced("retry_later", RETRY_LATER, run_id, generation, logs, params, "pending")

    async def release_run(self, run_id: str, generation: int) -> WriteResult:
        return await self._fenced("release_run", RELEASE, run_id, generation, (), (), "pending")

    # -- operator actions ----------------------------------------------------------------------------
    async def cancel_run(self, run_id: str) -> RunRecord | None:
        async def cancel(conn: Any, replay: bool) -> RunRecord | None:
            row = await conn.fetchrow(
                "UPDATE runs SET status = 'cancelled', completed_at = now(), updated_at = now() "
                f"WHERE id = $1 AND status IN {ACTIVE_SQL} RETURNING {RUN_SELECT}",
                run_id,
            )
            return run_from_row(row) if row is not None else await self._fetch_run(conn, run_id)

        return await self._run("cancel_run", cancel)

    async def retry_run(self, run_id: str) -> RunRecord | None:
        async def retry(conn: Any, replay: bool) -> RunRecord | None:
            row = await conn.fetchrow(
                "UPDATE runs SET status = 'pending', error = NULL, failed_step_name = NULL, "
                "traceback = NULL, completed_at = NULL, worker_id = NULL, lease_expires_at = NULL, "
                "failed_attempts = 0, not_before = NULL, "
                "updated_at = now() "
                f"WHERE id = $1 AND status IN ('failed', 'cancelled') RETURNING {RUN_SELECT}, {NOTIFY}",
                run_id,
            )
            return run_from_row(row) if row is not None else await self._fetch_run(conn, run_id)

        return await self._run("retry_run", retry)

    async def delete_run(self, run_id: str) -> bool:
        async def delete(conn: Any, replay: bool) -> bool:
            async with conn.transaction():
                # Lock the run first: the deleting statement's snapshot then includes every step a
                # cancelled-but-still-executing holder committed (its checkpoint locks the row too).
                status = await conn.fetchval("SELECT status FROM runs WHERE id = $1 FOR UPDATE", run_id)
                if status is None:
                    return replay  # gone: on replay, most likely by our own first attempt
                if status == "running":
                    return False
                await conn.execute(
                    "WITH s AS (DELETE FROM steps WHERE run_id = $1), "
                    "l AS (DELETE FROM logs WHERE run_id = $1), "
                    "b AS (DELETE FROM run_labels WHERE seq IN (SELECT seq FROM runs WHERE id = $1)) "
                    "DELETE FROM runs WHERE id = $1",
                    run_id,
                )
                return True

        return await self._run("delete_run", delete)

    async def delete_steps(self, run_id: str) -> int:
        async def delete(conn: Any, replay: bool) -> int:
            rows = await conn.fetch(
                "DELETE FROM steps WHERE run_id = $1 AND EXISTS "
                "(SELECT 1 FROM runs WHERE id = $1 AND status = 'completed') RETURNING 1",
                run_id,
            )
            return len(rows)

        return await self._run("delete_steps", delete)

    async def purge_runs(self, older_than: datetime, batch_size: int = 500) -> int:
        cutoff = _aware(older_than)

        async def purge(conn: Any, replay: bool) -> int:
            async with conn.transaction():
                ids = [
                    r["id"]
                    for r in await conn.fetch(
                        f"SELECT id FROM runs WHERE status IN {FINISHED_SQL} AND completed_at < $1 "
                        "ORDER BY completed_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                        cutoff,
                        batch_size,
                    )
                ]
                if not ids:
                    return 0
                await conn.execute(
                    "WITH s AS (DELETE FROM steps WHERE run_id = ANY($1::text[])), "
                    "l AS (DELETE FROM logs WHERE run_id = ANY($1::text[])), "
                    "b AS (DELETE FROM run_labels WHERE seq IN "
                    "(SELECT seq FROM runs WHERE id = ANY($1::text[]))) "
                    "DELETE FROM runs WHERE id = ANY($1::text[])",
                    ids,
                )
                return len(ids)

        return await self._run("purge_runs", purge)

    # -- the worker registry ---------------------------------------------------------------------------
    async def register_worker(self, info: WorkerInfo) -> None:
        args = (
            info.id,
            info.host,
            info.host_key,
            info.pid,
            info.process_start,
            info.version,
            dumps(list(info.jobs)),
            info.concurrency,
            float(info.lease_seconds),
        )

        async def register(conn: Any, replay: bool) -> None:
            await conn.execute(
                "INSERT INTO workers (id, host, host_key, pid, process_start, version, jobs, concurrency, "
                "lease_seconds, runs_held, started_at, heartbeat_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7::json, $8, $9, 0, clock_timestamp(), clock_timestamp()) "
                "ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, host_key = EXCLUDED.host_key, "
                "pid = EXCLUDED.pid, process_start = EXCLUDED.process_start, version = EXCLUDED.version, "
                "jobs = EXCLUDED.jobs, concurrency = EXCLUDED.concurrency, "
                "lease_seconds = EXCLUDED.lease_seconds, heartbeat_at = EXCLUDED.heartbeat_at, "
                "gone_at = NULL, gone_by = NULL",
                *args,
            )

        await self._run("register_worker", register)

    async def heartbeat_worker(self, worker_id: str, runs_held: int) -> bool:
        async def beat(conn: Any, replay: bool) -> bool:
            return bool(await conn.fetchval(BEAT, worker_id, runs_held))

        return await self._run("heartbeat_worker", beat)

    async def deregister_worker(self, worker_id: str) -> None:
        async def delete(conn: Any, replay: bool) -> None:
            await conn.execute("DELETE FROM workers WHERE id = $1", worker_id)

        await self._run("deregister_worker", delete)

    async def list_workers(self) -> list[WorkerRecord]:
        async def read(conn: Any, replay: bool) -> list[WorkerRecord]:
            rows = await conn.fetch(
                f"SELECT {columns(WORKER_COLUMNS)}, clock_timestamp() AS read_at FROM workers "
                "ORDER BY started_at, id"
            )
            if not rows:
                return []
            held = leased_by_worker(await conn.fetch(LEASED_RUNS.format(now="$1"), rows[0]["read_at"]))
            return [worker_from_row(r, r["read_at"], leased=held) for r in rows]

        return await self._run("list_workers", read)

    async def take_over_worker(self, worker_id: str, by: str) -> list[str]:
        async def take(conn: Any, replay: bool) -> list[str]:
            async with conn.transaction():
                await conn.execute(
                    "UPDATE workers SET gone_at = COALESCE(gone_at, clock_timestamp()), "
                    "gone_by = COALESCE(gone_by, $2) WHERE id = $1",
                    worker_id,
                    by,
                )
                rows = await conn.fetch(
                    "UPDATE runs SET lease_expires_at = clock_timestamp() - interval '1 millisecond' "
                    "WHERE worker_id = $1 AND status = 'running' AND lease_expires_at >= clock_timestamp() "
                    f"RETURNING id, {NOTIFY}",
                    worker_id,
                )
            return [r["id"] for r in rows]

        return await self._run("take_over_worker", take)

    async def purge_workers(self, older_than: datetime) -> int:
        cutoff = _aware(older_than)

        async def purge(conn: Any, replay: bool) -> int:
            rows = await conn.fetch("DELETE FROM workers WHERE heartbeat_at < $1 RETURNING 1", cutoff)
            return len(rows)

        return await self._run("purge_workers", purge)

    async def pending_counts(self) -> dict[str, int]:
        async def read(conn: Any, replay: bool) -> dict[str, int]:
            rows = await conn.fetch(
                "SELECT job_name, count(*) AS n FROM runs WHERE status = 'pending' GROUP BY job_name"
            )
            return {r["job_name"]: r["n"] for r in rows}

        return await self._run("pending_counts", read)

    async def queue_blocker(self, run_id: str) -> RunRecord | None:
        async def read(conn: Any, replay: bool) -> RunRecord | None:
            row = await conn.fetchrow(
                f"SELECT {columns(RUN_COLUMNS, 'o.')} FROM runs r JOIN runs o "
                f"ON o.concurrency_key = r.concurrency_key AND o.seq <> r.seq AND o.status IN {ACTIVE_SQL} "
                "AND (o.seq < r.seq OR (o.status = 'running' AND o.lease_expires_at >= now())) "
                "WHERE r.id = $1 AND r.concurrency_key IS NOT NULL "
                "ORDER BY o.status = 'running' DESC, o.seq LIMIT 1",
                run_id,
            )
            return None if row is None else run_from_row(row)

        return await self._run("queue_blocker", read)

    # -- schedules ----------------------------------------------------------------------------------
    async def get_cursors(self) -> dict[str, datetime]:
        async def read(conn: Any, replay: bool) -> dict[str, datetime]:
            rows = await conn.fetch("SELECT schedule, last_fire_time FROM schedule_cursors")
            return {r["schedule"]: r["last_fire_time"] for r in rows}

        return await self._run("get_cursors", read)

    async def advance_cursor(self, schedule: str, to: datetime) -> datetime:
        when = _aware(to)

        async def advance(conn: Any, replay: bool) -> datetime:
            value: datetime = await conn.fetchval(UPSERT_CURSOR, schedule, when)
            return value

        return await self._run("advance_cursor", advance)

    async def fire(self, fire: Fire) -> FireResult:
        fire_time = _aware(fire.fire_time)
        key = (fire.schedule, fire_time)

        async def handle(conn: Any, replay: bool) -> FireResult:
            async with conn.transaction():
                # One fire() per schedule at a time, as on SQLite: the skip_if_active check below
                # then sees runs created by fires of other slots that committed before us.
                await conn.execute(
                    "SELECT pg_advisory_xact_lock($1, hashtext($2))", SCHEDULE_LOCK_NAMESPACE, fire.schedule
                )
                if fire.advance_cursor:
                    await conn.execute(UPSERT_CURSOR, *key)
                # The fire record is the authority: its primary key serialises concurrent fires of
                # one slot (a second insert waits for the first transaction, then does nothing).
                first: FireOutcome = fire.outcome_without_run if fire.run is None else "triggered"
                inserted = await conn.fetchval(
                    "INSERT INTO fire_records (schedule, fire_time, outcome, run_id, recorded_at) "
                    "VALUES ($1, $2, $3, NULL, now()) ON CONFLICT DO NOTHING RETURNING true",
                    *key,
                    first,
                )
                if not inserted and fire.replace_paused:
                    # Catch-up on resume: a paused record is handled again as if it were new.
                    inserted = await conn.fetchval(
                        "UPDATE fire_records SET outcome = $3, run_id = NULL, recorded_at = now() "
                        "WHERE schedule = $1 AND fire_time = $2 AND outcome = 'paused' RETURNING true",
                        *key,
                        first,
                    )
                if not inserted:
                    existing = await conn.fetchrow(
                        "SELECT outcome, run_id FROM fire_records WHERE schedule = $1 AND fire_time = $2",
                        *key,
                    )
                    run_id = existing["run_id"] if existing is not None else None
                    run = await self._fetch_run(conn, run_id) if run_id else None
                    if (
                        replay
                        and fire.run is not None
                        and run_id == fire.run.id
                        and existing["outcome"] == "triggered"
                    ):
                        return FireResult("triggered", run)  # our own first attempt committed
                    return FireResult("deduplicated", run)
                if fire.run is None:
                    return FireResult(first, None)
                if fire.skip_if_active and await conn.fetchval(
                    f"SELECT true FROM runs WHERE schedule_name = $1 AND status IN {ACTIVE_SQL} LIMIT 1",
                    fire.schedule,
                ):
                    await conn.execute(
                        "UPDATE fire_records SET outcome = 'skipped' WHERE schedule = $1 AND fire_time = $2",
                        *key,
                    )
                    return FireResult("skipped", None)
                [(record, disposition)] = await self._insert_runs(conn, [fire.run], False)
                outcome: FireOutcome = "triggered" if disposition == "created" else "deduplicated"
                await conn.execute(
                    "UPDATE fire_records SET outcome = $3, run_id = $4 "
                    "WHERE schedule = $1 AND fire_time = $2",
                    *key,
                    outcome,
                    record.id,
                )
                return FireResult(outcome, record)

        return await self._run("fire", handle)

    async def list_fire_records(
        self, schedule: str, limit: int = 50, before: datetime | None = None
    ) -> list[FireRecord]:
        async def read(conn: Any, replay: bool) -> list[FireRecord]:
            if before is None:
                rows = await conn.fetch(
                    f"SELECT {columns(FIRE_COLUMNS)} FROM fire_records WHERE schedule = $1 "
                    "ORDER BY fire_time DESC LIMIT $2",
                    schedule,
                    limit,
                )
            else:
                rows = await conn.fetch(
                    f"SELECT {columns(FIRE_COLUMNS)} FROM fire_records "
                    "WHERE schedule = $1 AND fire_time < $3 ORDER BY fire_time DESC LIMIT $2",
                    schedule,
                    limit,
                    _aware(before),
                )
            return [fire_from_row(r) for r in rows]

        return await self._run("list_fire_records", read)

    async def last_fire_records(self) -> dict[str, FireRecord]:
        async def read(conn: Any, replay: bool) -> dict[str, FireRecord]:
            rows = await conn.fetch(
                f"SELECT DISTINCT ON (schedule) {columns(FIRE_COLUMNS)} FROM fire_records "
                "ORDER BY schedule, fire_time DESC"
            )
            return {r["schedule"]: fire_from_row(r) for r in rows}

        return await self._run("last_fire_records", read)

    async def purge_fire_records(self, older_than: datetime, batch_size: int = 500) -> int:
        cutoff = _aware(older_than)

        async def purge(conn: Any, replay: bool) -> int:
            rows = await conn.fetch(
                "DELETE FROM fire_records WHERE (schedule, fire_time) IN (SELECT schedule, fire_time "
                "FROM fire_records WHERE fire_time < $1 ORDER BY fire_time LIMIT $2) RETURNING 1",
                cutoff,
                batch_size,
            )
            return len(rows)

        return await self._run("purge_fire_records", purge)

    # -- schedule states ----------------------------------------------------------------------------
    async def get_schedule_states(self, *, attention_only: bool = False) -> dict[str, ScheduleState]:
        where = " WHERE paused OR consecutive_failures > 0" if attention_only else ""

        async def read(conn: Any, replay: bool) -> dict[str, ScheduleState]:
            rows = await conn.fetch(f"SELECT {STATE_SELECT} FROM schedule_states{where}")
            return {r["schedule"]: state_from_row(r) for r in rows}

        return await self._run("get_schedule_states", read)

    async def get_schedule_state(self, schedule: str) -> ScheduleState | None:
        async def read(conn: Any, replay: bool) -> ScheduleState | None:
            row = await conn.fetchrow(
                f"SELECT {STATE_SELECT} FROM schedule_states WHERE schedule = $1", schedule
            )
            return None if row is None else state_from_row(row)

        return await self._run("get_schedule_state", read)

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
        when = None if at is None else _aware(at)

        async def pause(conn: Any, replay: bool) -> StateChange:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO schedule_states (schedule) VALUES ($1) ON CONFLICT DO NOTHING", schedule
                )
                row = await conn.fetchrow(
                    PAUSE_SCHEDULE, schedule, by, _text(reason), auto, min_failures or 0, when
                )
                if row is not None:
                    return StateChange(state_from_row(row), True)
                found = await conn.fetchrow(
                    f"SELECT {STATE_SELECT} FROM schedule_states WHERE schedule = $1", schedule
                )
            # Not changed: paused already or, for an automatic pause, too few failures. On replay, a
            # pause with our author and reason is our own first attempt, committed unheard.
            state = state_from_row(found)
            mine = replay and state.paused and state.paused_by == by and state.pause_reason == _text(reason)
            return StateChange(state, mine)

        return await self._run("pause_schedule", pause)

    async def resume_schedule(
        self, schedule: str, *, by: str, at: datetime | None = None
    ) -> StateChange | None:
        when = None if at is None else _aware(at)

        async def resume(conn: Any, replay: bool) -> StateChange | None:
            async with conn.transaction():
                row = await conn.fetchrow(RESUME_SCHEDULE, schedule, by, when)
                if row is not None:
                    await conn.execute(UPSERT_CURSOR, schedule, row["resumed_at"])
                    return StateChange(state_from_row(row), True)
                found = await conn.fetchrow(
                    f"SELECT {STATE_SELECT} FROM schedule_states WHERE schedule = $1", schedule
                )
            if found is None:
                return None
            state = state_from_row(found)
            # On replay, a resume by us that committed unheard reads as "not paused": it was ours.
            mine = replay and state.resumed_by == by
            return StateChange(state, mine)

        return await self._run("resume_schedule", resume)

    async def schedule_activity(
        self, until: datetime, bucket: timedelta, buckets: int
    ) -> dict[str, ScheduleActivity]:
        since = _activity.window(until, bucket, buckets)
        step = bucket // timedelta(microseconds=1)

        async def read(conn: Any, replay: bool) -> list[Any]:
            return list(await conn.fetch(_activity.POSTGRES, since, step, until))

        rows = await self._run("schedule_activity", read)
        return _activity.activity_from_rows(rows, since, bucket, buckets)

    async def last_run_times(self) -> dict[str, datetime]:
        async def read(conn: Any, replay: bool) -> dict[str, datetime]:
            rows = await conn.fetch(
                "SELECT c.schedule, (SELECT runs.created_at FROM runs WHERE runs.schedule_name = c.schedule "
                "ORDER BY runs.seq DESC LIMIT 1) AS created_at FROM schedule_cursors c"
            )
            return {r["schedule"]: r["created_at"] for r in rows if r["created_at"] is not None}

        return await self._run("last_run_times", read)
