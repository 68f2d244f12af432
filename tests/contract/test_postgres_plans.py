"""PostgreSQL: the run-list queries can be answered from indexes, in page order.

With ``enable_seqscan`` and ``enable_sort`` off the planner avoids table scans and sorts whenever an
index makes that possible; a plan that still scans ``runs`` or sorts all matching runs would mean a
query shape no index serves. (At 10^6 runs bench/web.py measures the real plans; the SQLite side
is pinned in tests/unit/test_query_plans.py.)
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from durably_sched.store import _activity, _runs_query
from durably_sched.store._pg_sql import RUN_SELECT
from durably_sched.store.base import RunQuery
from durably_sched.store.postgres import PostgresStore, _aware
from tests.backends import PostgresBackend

pytestmark = pytest.mark.postgres

QUERIES = {
    "one status": RunQuery(statuses=("failed",)),
    "jobs x statuses": RunQuery(job_names=("a", "b"), statuses=("failed", "completed")),
    "a label": RunQuery(labels={"team": "ops"}),
    "schedule": RunQuery(schedule="nightly"),
    "the schedule label": RunQuery(labels={"schedule": "nightly"}),
    "created after": RunQuery(created_after=datetime(2024, 1, 1, tzinfo=UTC)),
    "no filter, next page": RunQuery(cursor="100"),
}


@pytest.fixture
async def pg(postgres_url: str) -> AsyncIterator[PostgresBackend]:
    backend = PostgresBackend(postgres_url)
    try:
        yield backend
    finally:
        await backend.close()


@pytest.mark.parametrize("name", list(QUERIES))
async def test_pages_and_counts_read_indexes(pg: PostgresBackend, name: str) -> None:
    backend = pg
    store = await backend.open_store()
    assert isinstance(store, PostgresStore)
    conn = await backend.admin()
    await conn.executemany(
        "INSERT INTO runs (id, job_name, status, input, labels, schedule_name) "
        "VALUES ($1, $2, $3, '{}', $4, $5)",
        [
            (str(uuid.uuid4()), "ab"[i % 2], ("failed", "completed", "pending")[i % 3],
             json.dumps({"team": "ops"} if i % 4 == 0 else {}), "nightly" if i % 5 == 0 else None)
            for i in range(300)
        ],
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO run_labels SELECT l.key, l.value, r.seq FROM runs r, json_each_text(r.labels) l"
    )
    await conn.execute("ANALYZE")
    query = QUERIES[name]
    built = [
        _runs_query.page_sql(query, RUN_SELECT, "postgres", _aware),
        _runs_query.count_sql(query, "postgres", _aware, 10_000),
    ]
    async with conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL enable_sort = off")
        for item in built:
            assert item is not None
            sql, params = item
            plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, *params))
            assert "Seq Scan on runs" not in plan and "Seq Scan on run_labels" not in plan, plan
            sorts = plan.count("Sort  (")
            walks = len(query.job_names or [None]) * len(query.statuses or [None]) if not query.labels else 1
            assert sorts <= (1 if walks > 1 else 0), plan  # only the merge of several walks sorts


async def test_schedule_activity_reads_the_window_from_runs_created(pg: PostgresBackend) -> None:
    """The home page's sparklines: one query whose cost follows the runs of the window (an index
    range on runs_created), not the history kept."""
    store = await pg.open_store()
    assert isinstance(store, PostgresStore)
    conn = await pg.admin()
    await conn.execute(
        "INSERT INTO runs (id, job_name, status, input, labels, schedule_name, created_at) "
        "SELECT gen_random_uuid()::text, 'a', 'completed', '{}', '{}', 's' || (i % 50), "
        "now() - make_interval(hours => i % 2000) FROM generate_series(1, 3000) i"
    )
    await conn.execute("ANALYZE")
    until = datetime.now(UTC)
    since = until - timedelta(hours=24)
    plan = "\n".join(
        r[0] for r in await conn.fetch("EXPLAIN " + _activity.POSTGRES, since, 3600 * 10**6, until)
    )
    assert "runs_created" in plan and "Seq Scan on runs" not in plan, plan
    activity = await store.schedule_activity(until, timedelta(hours=1), 24)
    in_window = sum(1 for i in range(1, 3001) if i % 2000 < 24)  # created 0-23 hours before now
    assert sum(sum(a.runs) for a in activity.values()) == in_window


async def test_a_run_stream_read_finds_new_steps_by_their_index(pg: PostgresBackend) -> None:
    """A live stream reads each watched run's steps past the last one it sent, every tick: by the
    steps_order index (schema v13), never by sorting all the run's steps."""
    from durably_sched.store._pg_runs import _STREAM_SQL

    await pg.open_store()
    conn = await pg.admin()
    await conn.execute(
        "INSERT INTO steps (run_id, name, idx, output, started_at, completed_at, generation) "
        "SELECT 'r' || (i % 20), 's' || i, i / 20, '1', now(), now(), 1 FROM generate_series(0, 39999) i"
    )
    await conn.execute("ANALYZE steps")
    args = (["r1", "r2"], [0, 0], [1500, 10], [0, 0], 100)
    plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + _STREAM_SQL, *args))
    assert "Index Scan using steps_order on steps" in plan, plan
    assert "Sort" not in plan, plan


async def test_a_run_created_claimed_asks_once_whether_older_runs_wait(pg: PostgresBackend) -> None:
    """The insert of a run created claimed (trigger_and_wait, a trigger with a free slot) tests "no
    older run of these jobs waits to be claimed" once. Written as a CTE that PostgreSQL inlined into
    each of its seven uses, it was planned and run seven times: planning alone took 0.7 ms of a
    ~2 ms run on a table with statistics, and sequential one-step runs fell from 500 to 240 a second
    as the table grew (decision 57)."""
    from durably_sched.store._pg_sql import INSERT_CLAIMED, INSERT_CLAIMED_NO_LABELS

    await pg.open_store()
    conn = await pg.admin()
    await conn.executemany(
        "INSERT INTO runs (id, job_name, status, input) VALUES ($1, 'j', $2, '{}')",
        [(str(uuid.uuid4()), ("completed", "pending")[i % 2]) for i in range(400)],
    )
    await conn.execute("ANALYZE runs")
    for sql in (INSERT_CLAIMED, INSERT_CLAIMED_NO_LABELS):
        args = (str(uuid.uuid4()), "j", "{}", None, '{"a": "b"}', None, None, None, "w", 30.0, ["j"])
        (plan,) = json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args))

        def scans(node: dict[str, object]) -> list[str]:
            found = [str(node["Alias"])] if node.get("Relation Name") == "runs" and "Alias" in node else []
            for child in node.get("Plans", []):  # type: ignore[attr-defined]
                found += scans(child)
            return found

        assert [alias for alias in scans(plan["Plan"]) if alias.startswith("w")] == ["w"], plan
