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
  claimers; a per-concurrency-key advisory lock plus a re-check in a later statement keeps a key
  exclusive under READ COMMITTED, where two claimers' snapshots can disagree about which run of
  the key is first.
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
import json
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from ..errors import SchemaVersionError, StoreError
from ._common import SCHEMA_VERSION, dumps, load_migrations, newer_schema_message, prefix_upper_bound
from .base import (
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
    RunQuery,
    RunRecord,
    RunStatus,
    StepRecord,
    Store,
    WriteResult,
)

log = logging.getLogger("durably_sched.store.postgres")
T = TypeVar("T")
Op = Callable[[Any, bool], Awaitable[T]]  # (connection, replay) -> result

CHANNEL = "durably_sched_runs"
# Advisory locks use the two-int form: (namespace, key). The namespace keeps them apart from other
# applications' locks on the same database ("dura" in ASCII).
LOCK_NAMESPACE = 0x64757261
MIGRATION_LOCK = 0  # (LOCK_NAMESPACE, 0): one migration at a time per database
KEY_LOCK_NAMESPACE = LOCK_NAMESPACE + 1  # (.., hashtext(concurrency_key))
SCHEDULE_LOCK_NAMESPACE = LOCK_NAMESPACE + 2  # (.., hashtext(schedule))
DEFAULT_POOL_MAX = 10
CONNECT_TIMEOUT = 10.0
LISTENER_CHECK_INTERVAL = 30.0
SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")

ACTIVE = "('pending', 'running')"
FINISHED = "('completed', 'failed', 'cancelled')"
RUN_COLUMNS = (
    "id, job_name, status, input, output, error, failed_step_name, idempotency_key, concurrency_key, "
    "labels, generation, worker_id, lease_expires_at, progress_current, progress_total, "
    "progress_message, step_count, attempt, created_at, started_at, completed_at, updated_at"
)
NOTIFY = f"pg_notify('{CHANNEL}', job_name)"

# -- SQL -------------------------------------------------------------------------------------------
# Logs travel as five parallel arrays; WITH ORDINALITY keeps their order in the id sequence.
_LOGS_FROM = (
    "unnest($3::text[], $4::text[], $5::text[], $6::json[], $7::timestamptz[]) "
    "WITH ORDINALITY AS l(step_name, level, message, data, created_at, ord)"
)

_INSERT_RUNS = f"""
WITH ins AS (
    INSERT INTO runs (id, job_name, status, input, idempotency_key, concurrency_key, labels, schedule_name)
    SELECT n.id, n.job_name, 'pending', n.input, n.idempotency_key, n.concurrency_key, n.labels,
           n.schedule_name
    FROM unnest($1::text[], $2::text[], $3::json[], $4::text[], $5::text[], $6::json[], $7::text[])
         WITH ORDINALITY AS n(id, job_name, input, idempotency_key, concurrency_key, labels,
                              schedule_name, ord)
    ORDER BY n.ord
    ON CONFLICT DO NOTHING
    RETURNING {RUN_COLUMNS}
)
SELECT {RUN_COLUMNS}, {NOTIFY} FROM ins
"""

# A keyed run is blocked by another active run of its key that is older, or that holds a live
# lease (same rule as sqlite.py). ``r`` is the candidate.
_KEY_BLOCKED = f"""
    SELECT 1 FROM runs o
    WHERE o.concurrency_key = r.concurrency_key AND o.concurrency_key IS NOT NULL
      AND o.status IN {ACTIVE} AND o.seq <> r.seq
      AND (o.seq < r.seq OR (o.status = 'running' AND o.lease_expires_at >= now()))
"""

_CLAIM_CANDIDATES = f"""
WITH c AS MATERIALIZED (
    SELECT r.seq, r.concurrency_key FROM runs r
    WHERE r.status IN {ACTIVE} AND r.job_name = ANY($1::text[]) {{only}}
      AND (r.status = 'pending' OR r.lease_expires_at < now())
      AND (r.concurrency_key IS NULL OR NOT EXISTS ({_KEY_BLOCKED}))
    ORDER BY r.seq
    LIMIT $2
    FOR UPDATE OF r SKIP LOCKED
)
SELECT seq, concurrency_key IS NULL
            OR pg_try_advisory_xact_lock({KEY_LOCK_NAMESPACE}, hashtext(concurrency_key))
FROM c ORDER BY seq
"""

_CLAIM_UPDATE = f"""
UPDATE runs r SET status = 'running', generation = r.generation + 1, worker_id = $2,
    lease_expires_at = clock_timestamp() + make_interval(secs => $3),
    started_at = COALESCE(r.started_at, now()), attempt = r.attempt + 1, updated_at = now()
WHERE r.seq = ANY($1::bigint[]) AND r.status IN {ACTIVE}
  AND (r.status = 'pending' OR r.lease_expires_at < now())
  AND (r.concurrency_key IS NULL OR NOT EXISTS ({_KEY_BLOCKED}))
RETURNING r.seq, {", ".join("r." + c.strip() for c in RUN_COLUMNS.split(","))}
"""

_CHECKPOINT = f"""
WITH run AS (
    SELECT id FROM runs
    WHERE id = $1 AND generation = $2 AND status IN ('running', 'cancelled')
    FOR UPDATE
), step AS (
    INSERT INTO steps (run_id, name, idx, output, started_at, completed_at, generation)
    SELECT run.id, $8::text, $9::integer, $10::text, $11::timestamptz, $12::timestamptz, $2 FROM run
    ON CONFLICT DO NOTHING
    RETURNING run_id
), upd AS (
    UPDATE runs SET step_count = step_count + 1, updated_at = now()
    WHERE id = (SELECT run_id FROM step)
    RETURNING status
), lg AS (
    INSERT INTO logs (run_id, step_name, level, message, data, created_at)
    SELECT $1, l.step_name, l.level, l.message, l.data, l.created_at FROM {_LOGS_FROM}
    WHERE EXISTS (SELECT 1 FROM upd)
    ORDER BY l.ord
)
SELECT status FROM upd
"""

_CHECKPOINT_REPLAYED = """
SELECT r.status FROM runs r JOIN steps s ON s.run_id = r.id
WHERE r.id = $1 AND r.generation = $2 AND r.status IN ('running', 'cancelled')
  AND s.name = $3 AND s.generation = $2
"""


def _fenced_sql(assignments: str, statuses: str, notify: bool = False) -> str:
    return f"""
WITH upd AS (
    UPDATE runs SET {assignments}, updated_at = now()
    WHERE id = $1 AND generation = $2 AND status IN {statuses}
    RETURNING status, job_name
), lg AS (
    INSERT INTO logs (run_id, step_name, level, message, data, created_at)
    SELECT $1, l.step_name, l.level, l.message, l.data, l.created_at FROM {_LOGS_FROM}
    WHERE EXISTS (SELECT 1 FROM upd)
    ORDER BY l.ord
)
SELECT status{", " + NOTIFY if notify else ""} FROM upd
"""


_HELD = "('running', 'cancelled')"
_SET_PROGRESS = _fenced_sql("progress_current = $8, progress_total = $9, progress_message = $10", _HELD)
_APPEND_LOGS = _fenced_sql("generation = generation", _HELD)
_COMPLETE = _fenced_sql(
    "status = 'completed', output = $8::json, completed_at = now(), lease_expires_at = NULL, "
    "error = NULL, failed_step_name = NULL",
    "('running')",
)
_FAIL = _fenced_sql(
    "status = 'failed', error = $8, failed_step_name = $9, completed_at = now(), lease_expires_at = NULL",
    "('running')",
)
_RELEASE = _fenced_sql(
    "status = 'pending', worker_id = NULL, lease_expires_at = NULL", "('running')", notify=True
)

_RENEW = """
UPDATE runs r SET lease_expires_at = CASE WHEN r.status = 'running'
        THEN clock_timestamp() + make_interval(secs => $3) ELSE r.lease_expires_at END
FROM unnest($1::text[], $2::bigint[]) AS l(id, generation)
WHERE r.id = l.id AND r.generation = l.generation AND r.status IN ('running', 'cancelled')
RETURNING r.id, r.status
"""

_UPSERT_CURSOR = """
INSERT INTO schedule_cursors AS c (schedule, last_fire_time) VALUES ($1, $2)
ON CONFLICT (schedule) DO UPDATE SET last_fire_time = GREATEST(c.last_fire_time, EXCLUDED.last_fire_time)
RETURNING last_fire_time
"""

_FIRE_COLUMNS = "schedule, fire_time, outcome, run_id, recorded_at"


# -- row conversion ----------------------------------------------------------------------------------
def find_run_ids_query(prefix: str, limit: int) -> tuple[str, list[Any]]:
    """The statement of :meth:`PostgresStore.find_run_ids` and its arguments.

    ``~>=~`` and ``~<~`` compare in code point order whatever the database's collation, and are what
    the runs_id_prefix index (text_pattern_ops, migration 2) answers; a range or LIKE on ``id`` with
    the ordinary operators would need the "C" collation to use an index.
    """
    upper = prefix_upper_bound(prefix)
    bound = "AND id ~<~ $3 " if upper is not None else ""
    sql = f"SELECT id FROM runs WHERE id ~>=~ $1 {bound}ORDER BY id USING ~<~ LIMIT $2"
    return sql, [prefix, limit, upper] if upper is not None else [prefix, limit]


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _run_from_row(row: Sequence[Any], offset: int = 0) -> RunRecord:
    r = row[offset:] if offset else row
    progress = None
    if r[13] is not None:
        progress = Progress(current=r[13], total=r[14], message=r[15])
    return RunRecord(
        id=r[0],
        job_name=r[1],
        status=r[2],
        input=json.loads(r[3]),
        output=_loads(r[4]),
        error=r[5],
        failed_step_name=r[6],
        idempotency_key=r[7],
        concurrency_key=r[8],
        labels=json.loads(r[9]),
        generation=r[10],
        worker_id=r[11],
        lease_expires_at=r[12],
        progress=progress,
        step_count=r[16],
        attempt=r[17],
        created_at=r[18],
        started_at=r[19],
        completed_at=r[20],
        updated_at=r[21],
    )


def _fire_from_row(row: Sequence[Any]) -> FireRecord:
    return FireRecord(schedule=row[0], fire_time=row[1], outcome=row[2], run_id=row[3], recorded_at=row[4])


def _fence_result(status: str | None) -> WriteResult:
    if status is None:
        return "lost"
    return "cancelled" if status == "cancelled" else "ok"


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


def _is_connection_error(exc: BaseException) -> bool:
    """The connection is gone or unusable: retry on another one."""
    if isinstance(
        exc,
        (
            asyncpg.PostgresConnectionError,  # class 08, incl. "connection was closed in the middle"
            asyncpg.CannotConnectNowError,  # 57P03: starting up / shutting down
            asyncpg.AdminShutdownError,  # 57P01: pg_terminate_backend, fast shutdown
            asyncpg.CrashShutdownError,  # 57P02
            asyncpg.TooManyConnectionsError,  # 53300
            # A FATAL message that arrived while the connection sat idle in the pool (the server
            # terminated it) leaves asyncpg's protocol in a state where the next query fails with
            # "cannot switch to state ...", before anything is sent.
            asyncpg.InternalClientError,
            ConnectionError,
            OSError,
        ),
    ):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        # "connection is closed", or a proxy the pool detached because its connection died.
        text = str(exc)
        return "connection" in text and ("closed" in text or "released back to the pool" in text)
    return False


def _is_transient(exc: BaseException) -> bool:
    """Worth running again: a lost connection, or a transaction the server rolled back."""
    return _is_connection_error(exc) or isinstance(
        exc, (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _keep_session(conn: Any) -> None:
    """Pool reset hook: no per-release RESET ALL round trip.

    The store never changes session state (no SET, LISTEN, cursors or session-level advisory
    locks on pool connections), and asyncpg still rolls back a transaction left open by a
    cancelled operation before calling this. Saves one round trip per operation.
    """


class PostgresStore(Store):
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
            raise StoreError(f"not a PostgreSQL URL: {self._redact(url)}")
        keep: list[tuple[str, str]] = []
        schema = "public"
        pool_max: int | None = None
        query_host: str | None = None
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "schema":
                schema = value
            elif key == "pool_max":
                try:
                    pool_max = int(value)
                except ValueError:
                    pool_max = 0
                if pool_max < 1:
                    raise StoreError(
                        f"database URL option pool_max must be a positive integer, not {value!r}"
                    )
            else:
                if key == "host":
                    query_host = value
                keep.append((key, value))
        if not SCHEMA_NAME.match(schema):
            raise StoreError(
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
            raise StoreError(f"database URL {self._redact(url)} has an invalid port") from exc
        self.user = unquote(parts.username) if parts.username else os.environ.get("PGUSER")
        self.database = unquote(parts.path.lstrip("/")) or os.environ.get("PGDATABASE") or self.user or "?"
        self.where = f"PostgreSQL at {host}:{port}, database '{self.database}'"
        self._password = unquote(parts.password) if parts.password else None
        self._pool: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener_task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def _server_settings(self) -> dict[str, str]:
        return {"search_path": f'"{self.schema}"', "application_name": "durably-sched"}

    async def connect(self) -> None:
        if self._pool is not None:
            return
        self._loop = asyncio.get_running_loop()
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
            self._start_listener()

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
            reason = _describe(exc)
        return StoreError(self._redact(f"cannot connect to {self.where}: {reason}"))

    def _redact(self, text: str) -> str:
        password = getattr(self, "_password", None)
        return text.replace(password, "***") if password else text

    async def close(self) -> None:
        await self._stop_listener()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 10.0)
            except Exception:
                pool.terminate()

    def set_wakeup(self, callback: Callable[[], None]) -> None:
        super().set_wakeup(callback)
        if self._pool is not None:
            self._start_listener()

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
          conflict with a row that has *our* id means our first attempt committed: "created";
        * checkpoint: the step row's key makes a replay insert nothing, which alone would say
          "lost"; on replay a step row written by our generation on a run we still hold is ours:
          "ok"/"cancelled" (steps record the writing generation for exactly this);
        * complete/fail/release: on replay a run already completed/failed/pending with our
          generation is our own committed write: "ok" (generation only changes on claims);
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
                async with pool.acquire() as conn:
                    try:
                        return await op(conn, attempt > 0)
                    except Exception as exc:
                        if _is_connection_error(exc):
                            # Never hand a broken connection back to the pool. (A connection that
                            # closed has already been detached from its proxy: nothing to do.)
                            with contextlib.suppress(asyncpg.InterfaceError):
                                if not conn.is_closed():
                                    conn.terminate()
                        raise
            except Exception as exc:
                if isinstance(exc, asyncpg.InterfaceError) and "pool is clos" in str(exc):
                    raise StoreError("store is closed") from None
                if isinstance(exc, asyncpg.PostgresError) and not _is_transient(exc):
                    hint = ""
                    if isinstance(exc, (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError)):
                        hint = " (is the schema migrated? run `durably-sched migrate`)"
                    raise StoreError(f"{what} on {self.where} failed: {_describe(exc)}{hint}") from exc
                if not _is_transient(exc):
                    raise
                now = time.monotonic()
                if deadline is None:
                    deadline = now + (self.retry_timeout if budget is None else budget)
                if now + delay > deadline:
                    raise StoreError(
                        f"{what}: lost {self.where} and could not get it back "
                        f"within {self.retry_timeout if budget is None else budget:.0f}s: {_describe(exc)}"
                    ) from None
                log.warning("%s failed (%s); retrying in %.2fs", what, _describe(exc), delay)
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

        found = await self._run("check_schema", read)
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(newer_schema_message(found))
        if found < SCHEMA_VERSION:
            raise SchemaVersionError(
                f"database schema version {found} is older than {SCHEMA_VERSION}: run `durably-sched migrate`"
            )

    async def ping(self) -> None:
        async def one(conn: Any, replay: bool) -> None:
            await conn.fetchval("SELECT 1")

        await self._run("ping", one, budget=3.0)

    # -- runs: creation and queries ---------------------------------------------------------------
    async def _insert_runs(
        self, conn: Any, runs: Sequence[NewRun], replay: bool
    ) -> list[tuple[RunRecord, Disposition]]:
        rows = await conn.fetch(
            _INSERT_RUNS,
            [r.id for r in runs],
            [r.job_name for r in runs],
            [dumps(r.input) for r in runs],
            [r.idempotency_key for r in runs],
            [r.concurrency_key for r in runs],
            [dumps(r.labels) for r in runs],
            [r.labels.get("schedule") for r in runs],
        )
        created = {row[0]: _run_from_row(row) for row in rows}
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
                    f"SELECT {RUN_COLUMNS} FROM runs WHERE job_name = $1 AND idempotency_key = $2",
                    run.job_name,
                    run.idempotency_key,
                )
            if row is None:  # the conflict was on the run id itself
                row = await conn.fetchrow(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1", run.id)
            if row is not None:
                return _run_from_row(row)
            # The conflicting row was deleted (purged) meanwhile: try the insert once more.
            rows = await conn.fetch(
                _INSERT_RUNS,
                [run.id],
                [run.job_name],
                [dumps(run.input)],
                [run.idempotency_key],
                [run.concurrency_key],
                [dumps(run.labels)],
                [run.labels.get("schedule")],
            )
            if rows:
                return _run_from_row(rows[0])
        raise StoreError(f"could not insert or find run {run.id}")  # pragma: no cover

    async def create_runs(self, runs: Sequence[NewRun]) -> list[tuple[RunRecord, Disposition]]:
        if not runs:
            return []

        async def insert(conn: Any, replay: bool) -> list[tuple[RunRecord, Disposition]]:
            return await self._insert_runs(conn, runs, replay)

        return await self._run("create_runs", insert)

    async def _fetch_run(self, conn: Any, run_id: str) -> RunRecord | None:
        row = await conn.fetchrow(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = $1", run_id)
        return None if row is None else _run_from_row(row)

    async def get_run(self, run_id: str) -> RunRecord | None:
        async def read(conn: Any, replay: bool) -> RunRecord | None:
            return await self._fetch_run(conn, run_id)

        return await self._run("get_run", read)

    async def get_run_statuses(self, run_ids: Sequence[str]) -> dict[str, RunStatus]:
        if not run_ids:
            return {}

        async def read(conn: Any, replay: bool) -> dict[str, RunStatus]:
            rows = await conn.fetch("SELECT id, status FROM runs WHERE id = ANY($1::text[])", list(run_ids))
            return {r[0]: r[1] for r in rows}

        return await self._run("get_run_statuses", read)

    async def list_runs(self, query: RunQuery) -> list[RunRecord]:
        where: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        if query.statuses:
            where.append(f"status = ANY({param(list(query.statuses))}::text[])")
        if query.job_name is not None:
            where.append(f"job_name = {param(query.job_name)}")
        if query.schedule is not None:
            where.append(f"schedule_name = {param(query.schedule)}")
        if query.before_created is not None:
            where.append(f"created_at < {param(_aware(query.before_created))}")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {RUN_COLUMNS} FROM runs {clause} ORDER BY seq DESC LIMIT {param(query.limit)}"

        async def read(conn: Any, replay: bool) -> list[RunRecord]:
            return [_run_from_row(r) for r in await conn.fetch(sql, *params)]

        return await self._run("list_runs", read)

    async def find_run_ids(self, prefix: str, limit: int) -> list[str]:
        sql, args = find_run_ids_query(prefix, limit)

        async def read(conn: Any, replay: bool) -> list[str]:
            rows = await conn.fetch(sql, *args)
            return [r[0] for r in rows if r[0].startswith(prefix)]

        return await self._run("find_run_ids", read)

    async def count_runs_by_status(self) -> dict[tuple[str, str], int]:
        async def read(conn: Any, replay: bool) -> dict[tuple[str, str], int]:
            rows = await conn.fetch("SELECT job_name, status, count(*) FROM runs GROUP BY job_name, status")
            return {(r[0], r[1]): r[2] for r in rows}

        return await self._run("count_runs_by_status", read)

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        async def read(conn: Any, replay: bool) -> list[StepRecord]:
            rows = await conn.fetch(
                "SELECT name, idx, output, started_at, completed_at FROM steps "
                "WHERE run_id = $1 ORDER BY idx",
                run_id,
            )
            return [
                StepRecord(
                    run_id=run_id, index=r[1], name=r[0], output_json=r[2], started_at=r[3], completed_at=r[4]
                )
                for r in rows
            ]

        return await self._run("get_steps", read)

    async def get_logs(self, run_id: str, after_id: int = 0, limit: int = 1000) -> list[LogRecord]:
        async def read(conn: Any, replay: bool) -> list[LogRecord]:
            rows = await conn.fetch(
                "SELECT id, step_name, level, message, data, created_at FROM logs "
                "WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                run_id,
                after_id,
                limit,
            )
            return [
                LogRecord(
                    id=r[0],
                    run_id=run_id,
                    step_name=r[1],
                    level=r[2],
                    message=r[3],
                    data=json.loads(r[4]),
                    created_at=r[5],
                )
                for r in rows
            ]

        return await self._run("get_logs", read)

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
        """Claim up to ``limit`` runs, oldest first; one transaction of two statements.

        1. Pick candidates in creation order with ``FOR UPDATE SKIP LOCKED`` (claimers running at
           the same time take different rows), excluding keyed runs that the key rule blocks so
           they cannot use up the limit. For each keyed candidate, try the key's transaction-level
           advisory lock; a key another claimer is working on is skipped, never waited for (no
           deadlocks, and at most one run per key is runnable anyway).
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
        candidates_sql = _CLAIM_CANDIDATES.format(only="AND r.id = ANY($3::text[])" if only else "")
        args: list[Any] = [jobs, limit] + ([only] if only else [])

        async def claim(conn: Any, replay: bool) -> list[RunRecord]:
            async with conn.transaction():
                rows = await conn.fetch(candidates_sql, *args)
                seqs = [r[0] for r in rows if r[1]]
                if not seqs:
                    return []
                claimed = await conn.fetch(_CLAIM_UPDATE, seqs, worker_id, float(lease_seconds))
            claimed = sorted(claimed, key=lambda r: r[0])
            return [_run_from_row(r, 1) for r in claimed]

        return await self._run("claim", claim)

    async def renew_leases(
        self, leases: Sequence[tuple[str, int]], lease_seconds: float
    ) -> dict[str, WriteResult]:
        if not leases:
            return {}

        async def renew(conn: Any, replay: bool) -> dict[str, WriteResult]:
            rows = await conn.fetch(
                _RENEW, [r for r, _ in leases], [g for _, g in leases], float(lease_seconds)
            )
            found = {r[0]: _fence_result(r[1]) for r in rows}
            return {run_id: found.get(run_id, "lost") for run_id, _ in leases}

        return await self._run("renew_leases", renew)

    async def checkpoint(self, cp: Checkpoint) -> WriteResult:
        args = (
            cp.run_id,
            cp.generation,
            *_log_arrays(cp.logs),
            cp.name,
            cp.index,
            cp.output_json,
            _aware(cp.started_at),
            _aware(cp.completed_at),
        )

        async def write(conn: Any, replay: bool) -> WriteResult:
            status = await conn.fetchval(_CHECKPOINT, *args)
            if status is None and replay:
                status = await conn.fetchval(_CHECKPOINT_REPLAYED, cp.run_id, cp.generation, cp.name)
            return _fence_result(status)

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
            return _fence_result(None if row is None else row[0])

        return await self._run(what, write)

    async def set_progress(
        self, run_id: str, generation: int, progress: Progress, logs: Sequence[NewLog] = ()
    ) -> WriteResult:
        return await self._fenced(
            "set_progress",
            _SET_PROGRESS,
            run_id,
            generation,
            logs,
            (progress.current, progress.total, _text(progress.message)),
        )

    async def append_logs(self, run_id: str, generation: int, logs: Sequence[NewLog]) -> WriteResult:
        return await self._fenced("append_logs", _APPEND_LOGS, run_id, generation, logs)

    async def complete_run(
        self, run_id: str, generation: int, output: Any, logs: Sequence[NewLog] = ()
    ) -> WriteResult:
        return await self._fenced(
            "complete_run", _COMPLETE, run_id, generation, logs, (dumps(output),), "completed"
        )

    async def fail_run(
        self,
        run_id: str,
        generation: int,
        error: str,
        failed_step_name: str | None,
        logs: Sequence[NewLog] = (),
    ) -> WriteResult:
        return await self._fenced(
            "fail_run", _FAIL, run_id, generation, logs, (_text(error), failed_step_name), "failed"
        )

    async def release_run(self, run_id: str, generation: int) -> WriteResult:
        return await self._fenced("release_run", _RELEASE, run_id, generation, (), (), "pending")

    # -- operator actions ----------------------------------------------------------------------------
    async def cancel_run(self, run_id: str) -> RunRecord | None:
        async def cancel(conn: Any, replay: bool) -> RunRecord | None:
            row = await conn.fetchrow(
                "UPDATE runs SET status = 'cancelled', completed_at = now(), updated_at = now() "
                f"WHERE id = $1 AND status IN {ACTIVE} RETURNING {RUN_COLUMNS}",
                run_id,
            )
            return _run_from_row(row) if row is not None else await self._fetch_run(conn, run_id)

        return await self._run("cancel_run", cancel)

    async def retry_run(self, run_id: str) -> RunRecord | None:
        async def retry(conn: Any, replay: bool) -> RunRecord | None:
            row = await conn.fetchrow(
                "UPDATE runs SET status = 'pending', error = NULL, failed_step_name = NULL, "
                "completed_at = NULL, worker_id = NULL, lease_expires_at = NULL, updated_at = now() "
                f"WHERE id = $1 AND status IN ('failed', 'cancelled') RETURNING {RUN_COLUMNS}, {NOTIFY}",
                run_id,
            )
            return _run_from_row(row) if row is not None else await self._fetch_run(conn, run_id)

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
                    "l AS (DELETE FROM logs WHERE run_id = $1) DELETE FROM runs WHERE id = $1",
                    run_id,
                )
                return True

        return await self._run("delete_run", delete)

    async def purge_runs(self, older_than: datetime, batch_size: int = 500) -> int:
        cutoff = _aware(older_than)

        async def purge(conn: Any, replay: bool) -> int:
            async with conn.transaction():
                ids = [
                    r[0]
                    for r in await conn.fetch(
                        f"SELECT id FROM runs WHERE status IN {FINISHED} AND completed_at < $1 "
                        "ORDER BY completed_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                        cutoff,
                        batch_size,
                    )
                ]
                if not ids:
                    return 0
                await conn.execute(
                    "WITH s AS (DELETE FROM steps WHERE run_id = ANY($1::text[])), "
                    "l AS (DELETE FROM logs WHERE run_id = ANY($1::text[])) "
                    "DELETE FROM runs WHERE id = ANY($1::text[])",
                    ids,
                )
                return len(ids)

        return await self._run("purge_runs", purge)

    # -- schedules ----------------------------------------------------------------------------------
    async def get_cursors(self) -> dict[str, datetime]:
        async def read(conn: Any, replay: bool) -> dict[str, datetime]:
            rows = await conn.fetch("SELECT schedule, last_fire_time FROM schedule_cursors")
            return {r[0]: r[1] for r in rows}

        return await self._run("get_cursors", read)

    async def advance_cursor(self, schedule: str, to: datetime) -> datetime:
        when = _aware(to)

        async def advance(conn: Any, replay: bool) -> datetime:
            value: datetime = await conn.fetchval(_UPSERT_CURSOR, schedule, when)
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
                    await conn.execute(_UPSERT_CURSOR, *key)
                # The fire record is the authority: its primary key serialises concurrent fires of
                # one slot (a second insert waits for the first transaction, then does nothing).
                first: FireOutcome = fire.outcome_without_run if fire.run is None else "triggered"
                inserted = await conn.fetchval(
                    "INSERT INTO fire_records (schedule, fire_time, outcome, run_id, recorded_at) "
                    "VALUES ($1, $2, $3, NULL, now()) ON CONFLICT DO NOTHING RETURNING true",
                    *key,
                    first,
                )
                if not inserted:
                    existing = await conn.fetchrow(
                        "SELECT outcome, run_id FROM fire_records WHERE schedule = $1 AND fire_time = $2",
                        *key,
                    )
                    run_id = existing[1] if existing is not None else None
                    run = await self._fetch_run(conn, run_id) if run_id else None
                    if (
                        replay
                        and fire.run is not None
                        and run_id == fire.run.id
                        and existing[0] == "triggered"
                    ):
                        return FireResult("triggered", run)  # our own first attempt committed
                    return FireResult("deduplicated", run)
                if fire.run is None:
                    return FireResult(first, None)
                if fire.skip_if_active and await conn.fetchval(
                    f"SELECT true FROM runs WHERE schedule_name = $1 AND status IN {ACTIVE} LIMIT 1",
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
                    f"SELECT {_FIRE_COLUMNS} FROM fire_records WHERE schedule = $1 "
                    "ORDER BY fire_time DESC LIMIT $2",
                    schedule,
                    limit,
                )
            else:
                rows = await conn.fetch(
                    f"SELECT {_FIRE_COLUMNS} FROM fire_records WHERE schedule = $1 AND fire_time < $3 "
                    "ORDER BY fire_time DESC LIMIT $2",
                    schedule,
                    limit,
                    _aware(before),
                )
            return [_fire_from_row(r) for r in rows]

        return await self._run("list_fire_records", read)

    async def last_fire_records(self) -> dict[str, FireRecord]:
        async def read(conn: Any, replay: bool) -> dict[str, FireRecord]:
            rows = await conn.fetch(
                f"SELECT DISTINCT ON (schedule) {_FIRE_COLUMNS} FROM fire_records "
                "ORDER BY schedule, fire_time DESC"
            )
            return {r[0]: _fire_from_row(r) for r in rows}

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

    # -- LISTEN/NOTIFY ---------------------------------------------------------------------------------
    def _start_listener(self) -> None:
        if self._listener_task is None or self._listener_task.done():
            loop = self._loop or asyncio.get_running_loop()
            self._listener_task = loop.create_task(self._listen_forever(), name="durably-pg-listener")

    async def _stop_listener(self) -> None:
        task, self._listener_task = self._listener_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _notified(self, *_: Any) -> None:
        # asyncpg calls listeners on the connection's loop; hop through call_soon_threadsafe anyway
        # so a callback registered from elsewhere always runs on the store's loop.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._call_wakeup)

    def _call_wakeup(self) -> None:
        callback = self._wakeup
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("wake-up callback failed")

    async def _listen_forever(self) -> None:
        """Keep one LISTEN connection open; reconnect with backoff whenever it is lost."""
        delay = 0.1
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(
                    self._dsn, server_settings=self._server_settings(), timeout=CONNECT_TIMEOUT
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._notified)
                delay = 0.1
                # Notifications sent while we were not listening are gone: look for work once.
                self._call_wakeup()
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), LISTENER_CHECK_INTERVAL)
                    except TimeoutError:
                        # A half-open TCP connection never reports termination: probe it.
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), 10.0)
                log.warning("notification listener lost its connection to %s; reconnecting", self.where)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "notification listener on %s failed (%s); retrying in %.1fs",
                    self.where,
                    _describe(exc),
                    delay,
                )
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(delay * (0.75 + random.random() / 2))
            delay = min(delay * 2, 5.0)
