"""What only the PostgreSQL store does: wake-ups by LISTEN/NOTIFY, surviving lost connections,
URL options, and clear errors for a database that cannot be used."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from durably_sched.errors import StoreError
from durably_sched.store import open_store
from durably_sched.store._common import SCHEMA_VERSION
from durably_sched.store.base import Checkpoint, RunQuery
from durably_sched.store.postgres import PostgresStore
from tests.backends import PostgresBackend

from .test_store_contract import JOB, checkpoint, claim_one, create, fire, log_line, new_run, now

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PostgresBackend]:
    backend = PostgresBackend(postgres_url)
    try:
        yield backend
    finally:
        await backend.close()


class Wakeups:
    """A set_wakeup callback that tests can wait on (no fixed sleeps)."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        self.event.set()

    async def next(self, timeout: float = 1.0) -> None:
        await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()


async def listening(pg: PostgresBackend) -> tuple[PostgresStore, Wakeups]:
    store = await pg.open_store()
    assert isinstance(store, PostgresStore)
    wakeups = Wakeups()
    store.set_wakeup(wakeups)
    await wakeups.next(timeout=5)  # the listener is connected (it looks for work once on connect)
    return store, wakeups


# -- wake-ups ------------------------------------------------------------------------------------------


async def test_runs_made_by_another_store_wake_the_listener(pg: PostgresBackend) -> None:
    worker, wakeups = await listening(pg)
    other = await pg.open_store(migrate=False)

    await create(other)  # create_runs
    await wakeups.next()
    await other.fire(fire("s", 0))  # a fire that made a run
    await wakeups.next()
    held = await claim_one(worker)
    await other.release_run(held.id, held.generation)  # a released run is claimable again
    await wakeups.next()
    again = await claim_one(worker)
    await other.fail_run(again.id, again.generation, "boom", None)
    await other.retry_run(again.id)  # a retried run is claimable again
    await wakeups.next()
    assert wakeups.calls >= 5


async def test_writes_that_make_no_run_send_nothing(pg: PostgresBackend) -> None:
    _, wakeups = await listening(pg)
    other = await pg.open_store(migrate=False)
    run = await create(other)
    await wakeups.next()
    await other.fire(fire("s", 0, run=False))
    await other.create_runs([new_run(run_id=run.id)])  # idempotent: nothing new
    await other.cancel_run(run.id)
    # A marker notification: everything before it has been delivered by the time it arrives.
    await create(other)
    await wakeups.next()
    assert wakeups.calls == 3  # connect, first run, marker


async def test_a_wakeup_registered_before_connect_starts_the_listener_on_connect(pg: PostgresBackend) -> None:
    store = pg.new_store()
    wakeups = Wakeups()
    store.set_wakeup(wakeups)
    await store.connect()
    await store.migrate()
    await wakeups.next(timeout=5)
    await create(await pg.open_store(migrate=False))
    await wakeups.next()


# -- lost connections --------------------------------------------------------------------------------


async def terminate_backends(pg: PostgresBackend) -> int:
    """Kill every other connection to the test database, as a server restart or failover would."""
    conn = await pg.admin()
    killed: int = await conn.fetchval(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()) t"
    )
    return killed


async def test_operations_and_the_listener_survive_terminated_connections(pg: PostgresBackend) -> None:
    worker, wakeups = await listening(pg)
    other = await pg.open_store(migrate=False)
    await create(other)
    await wakeups.next()
    held = await claim_one(worker)

    assert await terminate_backends(pg) >= 3  # two pools and the listener
    # Both stores carry on: their next operations reconnect (retrying if need be).
    assert await worker.checkpoint(checkpoint(held, "after-restart")) == "ok"
    assert await worker.renew_leases([(held.id, held.generation)], 30) == {held.id: "ok"}
    # The listener reconnects by itself and looks for work once (notifications may be lost)...
    await wakeups.next(timeout=10)
    # ...and later notifications wake it again.
    await create(other)
    await wakeups.next()

    # Killed in the middle of use, again: a checkpoint in flight is retried without a false "lost".
    assert await terminate_backends(pg) >= 3
    results = await asyncio.gather(
        *(worker.checkpoint(checkpoint(held, f"s{i}", i + 1)) for i in range(5)),
        other.list_runs(RunQuery()),
    )
    assert results[:5] == ["ok"] * 5
    record = await worker.get_run(held.id)
    assert record is not None and record.step_count == 6


class Proxy:
    """A TCP proxy in front of the server: lets a test cut connections and refuse new ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def stop(self) -> None:
        """Refuse new connections and cut the open ones (a network partition, a dead server)."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()


def via(url: str, port: int, **query: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    extra = "&".join(f"{k}={v}" for k, v in query.items())
    joined = "&".join(q for q in (parts.query, extra) if q)
    return urlunsplit((parts.scheme, netloc, parts.path, joined, ""))


async def test_an_outage_longer_than_the_retry_budget_raises_store_error_then_recovers(
    pg: PostgresBackend, caplog: pytest.LogCaptureFixture
) -> None:
    target = urlsplit(pg.database_url)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    try:
        url = via(pg.database_url, proxy.port, schema=pg.schema)
        store = PostgresStore(url, retry_timeout=1.0)
        pg.stores.append(store)
        await store.connect()
        await store.migrate()
        run = await create(store)

        await proxy.stop()
        caplog.set_level(logging.WARNING, logger="durably_sched.store.postgres")
        with pytest.raises(StoreError) as raised:
            await store.get_run(run.id)
        message = str(raised.value)
        assert "\n" not in message and f"127.0.0.1:{proxy.port}" in message, message
        assert any("retrying" in r.getMessage() for r in caplog.records)

        # The server comes back while an operation is retrying: it succeeds.
        async def back_soon() -> None:
            await asyncio.sleep(0.3)
            await proxy.start()

        store.retry_timeout = 10.0
        record, _ = await asyncio.gather(store.get_run(run.id), back_soon())
        assert record == run
    finally:
        await proxy.stop()


async def test_replayed_writes_whose_commit_was_not_acknowledged_report_what_the_first_did(
    pg: PostgresBackend,
) -> None:
    """The connection can die after COMMIT reached the server but before the answer came back.

    The store then runs the operation again (``replay``). Simulate exactly that: each operation runs
    and commits, then runs again as a replay; the replay must report the first attempt's outcome.
    """

    class AnswerLostOnce(PostgresStore):
        async def _run(
            self, what: str, op: Callable[[Any, bool], Any], *, budget: float | None = None
        ) -> Any:
            async def twice(conn: Any, replay: bool) -> Any:
                await op(conn, False)
                return await op(conn, True)

            return await super()._run(what, twice, budget=budget)

    plain = await pg.open_store()
    store = AnswerLostOnce(pg.url)
    pg.stores.append(store)
    await store.connect()

    [(run, disposition)] = await store.create_runs([new_run(key="k")])
    assert disposition == "created"
    assert len(await plain.list_runs(RunQuery())) == 1

    held = await claim_one(plain)
    cp = checkpoint(held, "s", logs=[log_line("once")])
    assert await store.checkpoint(cp) == "ok"
    record = await plain.get_run(run.id)
    assert record is not None and record.step_count == 1
    assert [lg.message for lg in await plain.get_logs(run.id)] == ["once"]
    # The same for a step without log lines (its own statement, answered by a unique violation
    # on replay).
    assert await store.checkpoint(checkpoint(held, "t", 1)) == "ok"
    record = await plain.get_run(run.id)
    assert record is not None and record.step_count == 2
    assert [s.name for s in await plain.get_steps(run.id)] == ["s", "t"]
    # A genuinely stale or duplicate write is still refused on replay.
    assert await store.checkpoint(Checkpoint(**{**_fields(cp), "generation": held.generation + 7})) == "lost"
    assert await plain.checkpoint(checkpoint(held, "t", 2)) == "lost"
    record = await plain.get_run(run.id)
    assert record is not None and record.step_count == 2

    assert await store.complete_run(run.id, held.generation, {"v": 1}) == "ok"
    assert await store.complete_run(run.id, held.generation - 1, {"v": 1}) == "lost"

    failing = await create(plain)
    held = await claim_one(plain)
    assert held.id == failing.id
    assert await store.fail_run(held.id, held.generation, "boom", None) == "ok"

    releasing = await create(plain)
    held = await claim_one(plain)
    assert await store.release_run(releasing.id, held.generation) == "ok"

    result = await store.fire(fire("s", 0))
    assert result.outcome == "triggered" and result.run is not None
    assert (await plain.fire(fire("s", 0))).outcome == "deduplicated"

    gone = await create(plain)
    assert await store.delete_run(gone.id) is True


def _fields(cp: Checkpoint) -> dict[str, Any]:
    return {name: getattr(cp, name) for name in Checkpoint.__dataclass_fields__}


# -- schema, URL options, errors -------------------------------------------------------------------


async def test_concurrent_migrations_from_many_stores_end_at_the_current_version(pg: PostgresBackend) -> None:
    url = pg.fresh_url()
    stores = [await pg.open_store(url, migrate=False) for _ in range(5)]
    assert await asyncio.gather(*(s.migrate() for s in stores)) == [SCHEMA_VERSION] * 5
    schema = url.rsplit("schema=", 1)[1]
    conn = await pg.admin()
    version = await conn.fetchval(
        f'SELECT value FROM "{schema}".durably_meta WHERE key = $1', "schema_version"
    )
    assert version == str(SCHEMA_VERSION)
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    tables = {r["tablename"] for r in rows}
    # Every migration ran once, in the schema of the URL.
    assert tables >= {
        "runs",
        "steps",
        "logs",
        "schedule_cursors",
        "fire_records",
        "schedule_states",
        "run_labels",
        "workers",
        "durably_meta",
    }


async def test_using_an_unmigrated_schema_says_to_migrate(pg: PostgresBackend) -> None:
    store = await pg.open_store(pg.fresh_url(), migrate=False)
    with pytest.raises(StoreError, match="migrate") as raised:
        await store.list_runs(RunQuery())
    assert "\n" not in str(raised.value)


async def test_schemas_keep_stores_apart(pg: PostgresBackend) -> None:
    a = await pg.open_store()
    b = await pg.open_store(pg.fresh_url())
    run = await create(a)
    assert await b.get_run(run.id) is None
    assert await b.list_runs(RunQuery()) == []


def test_url_options() -> None:
    store = PostgresStore("postgresql://u:secret@db.example:6543/app?schema=jobs&pool_max=3&sslmode=disable")
    assert (store.schema, store.max_size, store.database) == ("jobs", 3, "app")
    assert "schema" not in store._dsn and "pool_max" not in store._dsn and "sslmode=disable" in store._dsn
    assert "db.example:6543" in store.where and "secret" not in store.where
    assert PostgresStore("postgres://h/db").max_size == 10
    assert PostgresStore("postgres://h/db", max_size=4).max_size == 4
    assert isinstance(open_store("postgres://h/db"), PostgresStore)
    with pytest.raises(StoreError, match="schema"):
        PostgresStore("postgresql://h/db?schema=drop table x")
    with pytest.raises(StoreError, match="pool_max"):
        PostgresStore("postgresql://h/db?pool_max=zero")


async def test_a_missing_database_is_one_clear_line_without_the_password(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    user = parts.username or "postgres"
    url = urlunsplit(
        (parts.scheme, f"{user}:hunter2@{parts.hostname}:{parts.port or 5432}", "/no_such_db_here", "", "")
    )
    store = PostgresStore(url)
    with pytest.raises(StoreError) as raised:
        await store.connect()
    message = str(raised.value)
    assert "no_such_db_here" in message and "does not exist" in message, message
    assert "hunter2" not in message and "\n" not in message


async def test_an_unreachable_server_is_one_clear_line(postgres_url: str) -> None:
    store = PostgresStore("postgresql://someone:hunter2@127.0.0.1:1/app")
    with pytest.raises(StoreError) as raised:
        await store.connect()
    message = str(raised.value)
    assert "127.0.0.1:1" in message and "'app'" in message and "refused" in message, message
    assert "hunter2" not in message and "\n" not in message


async def test_operations_before_connect_raise_store_error() -> None:
    store = PostgresStore("postgresql://127.0.0.1:1/app")
    with pytest.raises(StoreError, match="not connected"):
        await store.get_run("x")


async def test_times_come_from_the_database_clock(pg: PostgresBackend) -> None:
    store = await pg.open_store()
    conn = await pg.admin()
    before = await conn.fetchval("SELECT clock_timestamp()")
    run = await create(store)
    held = await claim_one(store, lease=60)
    after = await conn.fetchval("SELECT clock_timestamp()")
    assert before <= run.created_at <= after
    assert held.lease_expires_at is not None
    assert before + timedelta(seconds=60) <= held.lease_expires_at <= after + timedelta(seconds=60)
    assert abs(held.lease_expires_at - (now() + timedelta(seconds=60))) < timedelta(seconds=5)


async def test_run_id_prefixes_use_an_index_under_a_linguistic_collation(postgres_url: str) -> None:
    """`runs show 33fc6f80` on a big PostgreSQL database whose collation is not "C" (en-US here):
    the lookup reads the runs_id index, never the whole table, and finds exactly the ids that start
    with the prefix (a linguistic order would scatter them). The same unique index (text_pattern_ops,
    schema v15) answers a look-up by the whole id: a run's id has one index, not two."""
    import asyncpg

    from durably_sched.store._pg_sql import find_run_ids_query

    from ..conftest import _admin, with_database

    name = f"durably_icu_{uuid.uuid4().hex[:8]}"
    admin_url = with_database(postgres_url, "postgres")
    try:
        _admin(
            admin_url,
            f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' "
            "LOCALE 'C.UTF-8'",
        )
    except Exception as exc:  # a server built without ICU
        pytest.skip(f"cannot create an ICU (en-US) database here: {exc}")
    url = with_database(postgres_url, name)
    store = open_store(url)
    try:
        await store.connect()
        await store.migrate()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "INSERT INTO runs (id, job_name, status, input) SELECT gen_random_uuid()::text, 'job', "
                "'completed', '{}' FROM generate_series(1, 20000)"
            )
            await conn.executemany(
                "INSERT INTO runs (id, job_name, status, input) VALUES ($1, 'job', 'pending', '{}')",
                [("abcdef-1",), ("abcdef-2",), ("abcdef1",), ("abcdeg",)],
            )
            await conn.execute("ANALYZE runs")
            sql, args = find_run_ids_query("abcdef", 11)
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *args))
            by_id = "\n".join(
                r[0] for r in await conn.fetch("EXPLAIN SELECT * FROM runs WHERE id = $1", "abcdef-1")
            )
            indexes = "SELECT indexname FROM pg_indexes WHERE tablename = 'runs'"
            ids = [r[0] for r in await conn.fetch(indexes)]
        finally:
            await conn.close()
        assert "using runs_id on runs" in plan and "Seq Scan" not in plan, plan
        assert "Index Scan using runs_id on runs" in by_id, by_id
        assert "runs_id_prefix" not in ids and "runs_id_key" not in ids, ids
        assert await store.find_run_ids("abcdef", 11) == ["abcdef-1", "abcdef-2", "abcdef1"]
    finally:
        await store.close()
        _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_checkpoint_the_server_refuses_fails_only_its_own_run_in_a_batch(pg: PostgresBackend) -> None:
    """Group commit: checkpoints waiting together go as one statement; one the server refuses (a
    NUL in its output: PostgreSQL text cannot hold it) makes that statement fail, and then each is
    sent on its own -- the others are written, the refused one raises for its run alone."""
    store = await pg.open_store()
    assert isinstance(store, PostgresStore)
    await store.create_runs([new_run() for _ in range(6)])
    runs = await store.claim("w", ["job"], 6, 30)
    cps = [checkpoint(run, "s", output_json="a\x00" if i == 3 else '"fine"') for i, run in enumerate(runs)]
    results = await asyncio.gather(*(store.checkpoint(cp) for cp in cps), return_exceptions=True)
    assert isinstance(results[3], StoreError), results
    assert [r for i, r in enumerate(results) if i != 3] == ["ok"] * 5
    # The five that waited for the first went together, were refused, then went one by one.
    assert (store._checkpoints.batches, store._checkpoints.refused) == (0, 1)
    for i, run in enumerate(runs):
        record = await store.get_run(run.id)
        assert record is not None and record.step_count == (0 if i == 3 else 1)


async def test_transitions_of_another_store_wake_a_run_feed_only_while_one_reads(pg: PostgresBackend) -> None:
    """Every transition notifies durably_sched_run_events; a process listens to it only while its
    run feed reads (a worker alone does not pay for other processes' transitions)."""
    reader, _ = await listening(pg)
    other = await pg.open_store(migrate=False)
    feed = Wakeups()
    reader.on_run_events(feed)
    await feed.next(timeout=5)  # listening now (called once when it starts, as on every connect)
    run = await create(other)
    held = await claim_one(other)
    assert held.id == run.id
    await feed.next()  # the claim
    assert await other.complete_run(held.id, held.generation, None) == "ok"
    await feed.next()  # the completion
    reader.on_run_events(feed, add=False)
    assert not reader._listener._want_run_events
    await other.close()


async def test_a_backlog_of_keyed_runs_is_claimed_by_the_transaction_alone_with_the_key_rule(
    pg: PostgresBackend,
) -> None:
    """Scheduled runs are keyed by their schedule (overlap "queue"), so a scheduler's backlog is all
    keyed runs. Once a claim met some, the next claims skip the one statement (which could only
    count them) and go straight to the transaction, which claims keyed and plain runs alike under
    the key rule; the one statement comes back when a claim takes no keyed run."""
    from durably_sched.store.records import RunRecord

    store = await pg.open_store()
    assert isinstance(store, PostgresStore)

    async def claim(limit: int) -> list[RunRecord]:
        return await store.claim("w1", [JOB], limit, 30.0)

    first_a = await create(store, ckey="schedule:a")
    second_a = await create(store, ckey="schedule:a")
    first_b = await create(store, ckey="schedule:b")
    plain = await create(store)
    assert not store._keyed_backlog
    [held] = await claim(1)  # the one statement, then the transaction
    assert held.id == first_a.id and store._keyed_backlog
    # The transaction alone: a's second run waits for its first (the key rule), b's and the plain
    # run are taken, oldest first.
    assert [r.id for r in await claim(3)] == [first_b.id, plain.id]
    assert store._keyed_backlog
    assert await claim(3) == []  # a's second run still waits: nothing taken, no keyed run
    assert not store._keyed_backlog
    assert await store.complete_run(held.id, held.generation, {}) == "ok"
    assert [r.id for r in await claim(3)] == [second_a.id]  # the one statement, then the transaction
