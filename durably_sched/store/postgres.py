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
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from .._ratelimit import RateLimitedLog
from ..errors import DatabaseUnavailableError, DatabaseUrlError, SchemaVersionError, StoreError
from ._common import SCHEMA_VERSION, load_migrations, newer_schema_message
from ._pg_base import ConnOp, T, aware
from ._pg_buckets import PostgresBuckets
from ._pg_config_errors import PostgresConfigErrors
from ._pg_errors import describe, is_connection_error, is_transient, statement_error
from ._pg_group_commit import GroupCommit
from ._pg_listener import Listener
from ._pg_rules import PostgresRules
from ._pg_runs import PostgresRuns
from ._pg_schedule_defs import PostgresScheduleDefs
from ._pg_schedules import PostgresSchedules
from ._pg_sql import CONNECT_TIMEOUT, DEFAULT_POOL_MAX, LOCK_NAMESPACE, MIGRATION_LOCK, SCHEMA_NAME
from ._pg_statistics import RunStatistics
from ._pg_waits import PostgresWaits
from ._pg_work import PostgresWork
from ._web_sessions import PostgresWebSessions
from .base import Store
from .records import Fire, FireResult
from .rows import check_schema_version

log = logging.getLogger("durably_sched.store.postgres")
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
_aware = aware  # the name tests know it by


async def _keep_session(conn: Any) -> None:
    """Pool reset hook: no per-release RESET ALL round trip.

    The store never changes session state (no SET, LISTEN, cursors or session-level advisory
    locks on pool connections), and asyncpg still rolls back a transaction left open by a
    cancelled operation before calling this. Saves one round trip per operation.
    """


class PostgresStore(
    PostgresRuns,
    PostgresWork,
    PostgresSchedules,
    PostgresRules,
    PostgresConfigErrors,
    PostgresWebSessions,
    PostgresBuckets,
    PostgresWaits,
    PostgresScheduleDefs,
    Store,
):
    """Store on a PostgreSQL database through an asyncpg connection pool.

    Its parts by concern, mixed in: run reads and operator actions (_pg_runs), the worker side
    (_pg_work), schedules (_pg_schedules), the domain rules' answers (_pg_rules); its SQL in _pg_sql."""

    stream_lookback = 2.0  # a transaction holding a smaller run_events id may commit after a larger one

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
        self._listener = Listener(
            self._dsn,
            self._server_settings(),
            self.where,
            lambda: self._wakeup,
            self.schedules_changed,
            self.run_events_written,
        )
        self._checkpoints = GroupCommit(self._checkpoint_one, self._checkpoint_batch)
        self._completions = GroupCommit(self._end_one, self._complete_batch)
        self._statistics = RunStatistics(lambda op: self._run("analyze", op))

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
        if self._wakeup is not None or self.__dict__.get("_schedule_callbacks") or self._run_event_listeners:
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
        await self._statistics.close()
        await self._checkpoints.close()
        await self._completions.close()
        await self._listener.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._release_idle(pool)
            try:
                await asyncio.wait_for(pool.close(), 10.0)
            except Exception:
                pool.terminate()

    async def fire_many(self, fires: Sequence[Fire]) -> list[FireResult]:
        results = await super().fire_many(fires)
        # A burst of new runs: the planner must know, or claims read the whole backlog
        # (_pg_statistics).
        self._statistics.inserted(sum(1 for r in results if r.outcome == "triggered"))
        return results

    def set_wakeup(self, callback: Callable[[], None]) -> None:
        super().set_wakeup(callback)
        if self._pool is not None:
            self._listener.start(asyncio.get_running_loop())

    def on_schedules_changed(self, callback: Callable[[], None], *, add: bool = True) -> None:
        super().on_schedules_changed(callback, add=add)
        if add and self._pool is not None:
            self._listener.start(asyncio.get_running_loop())

    def on_run_events(self, callback: Callable[[], None], *, add: bool = True) -> None:
        super().on_run_events(callback, add=add)
        self._listener.want_run_events(self._run_event_listeners)
        if add and self._pool is not None:
            self._listener.start(asyncio.get_running_loop())

    @property
    def _run_event_listeners(self) -> bool:
        return bool(self.__dict__.get("_run_event_callbacks"))

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

    async def _run(self, what: str, op: ConnOp[T], *, budget: float | None = None) -> T:
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
