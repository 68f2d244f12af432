"""Where the time of durably-sched's PostgreSQL path goes (``python -m bench.pg_trace``).

Runs two workloads in one process on a database created for it (dropped afterwards):

* **steps**: one run of ``--steps`` checkpointed no-op steps (benchmark 1);
* **runs**: ``--runs`` one-step runs, one ``trigger_and_wait`` at a time (benchmark 4);

and traces them at two levels, without changing the store:

* every asyncpg call (``execute``/``fetch``/``fetchrow``/``fetchval``/``executemany``; ``BEGIN`` and
  ``COMMIT`` of explicit transactions go through ``execute`` too) is one round trip once asyncpg's
  statement cache is warm: counted and timed, and filed under the store operation it served;
* every store operation (``checkpoint``, ``claim``, ``complete_run``, ...) is counted and timed, and
  for the sequential runs the gaps between them: trigger -> claim (the wake-up), complete -> the
  caller resumed.

It prints a table of round trips, commits and time per step and per run, and emits one result line
(see bench/_util.py) with the same figures. Tracing adds a little time to every call; the shares
are what matters. Add ``--profile FILE`` for a cProfile of the two workloads (``python -m pstats``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import cProfile
import functools
import re
import time
from collections import defaultdict
from typing import Any

from ._pg import default_url, fresh_database, server_settings, unreachable
from ._util import emit

CALLS = ("execute", "fetch", "fetchrow", "fetchval", "executemany")
current_op: contextvars.ContextVar[str] = contextvars.ContextVar("current_op", default="(outside the store)")
# A statement that changes rows (so its commit waits for a WAL flush). ``FOR UPDATE`` alone does
# not count: a claim that locks nothing writes nothing.
WRITE = re.compile(r"\bINSERT\s+INTO\b|\bUPDATE\s+\w+(\s+\w+)?\s+SET\b|\bDELETE\s+FROM\b", re.IGNORECASE)


class Trace:
    """Round trips and store operations, with their times, while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self.trips: dict[str, list[float]] = defaultdict(list)  # op -> round-trip seconds
        self.kinds: dict[str, int] = defaultdict(int)  # op + statement kind -> count
        self.ops: dict[str, list[float]] = defaultdict(list)  # op -> seconds
        self.timeline: list[tuple[str, float, float, list[str]]] = []  # (op, start, end, run ids)
        self.write_commits = 0  # commits that change data (each waits for its WAL flush)
        self.in_tx: set[int] = set()  # connections inside an explicit transaction
        self.tx_writes: dict[int, bool] = {}

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]
        self.active = True


TRACE = Trace()


def _kind(sql: str) -> str:
    head = sql.lstrip().split(None, 1)[0].upper().rstrip(";") if sql.strip() else "?"
    if head == "WITH":
        return "WITH+write" if WRITE.search(sql) else "WITH"
    return head


def install() -> None:
    """Wrap asyncpg's connection calls and the PostgreSQL store's operations."""
    import asyncpg.connection

    from durably_sched.store.postgres import PostgresStore

    for name in CALLS:
        original = getattr(asyncpg.connection.Connection, name)

        @functools.wraps(original)
        async def traced(self: Any, query: Any, *args: Any, __original: Any = original, **kw: Any) -> Any:
            if not TRACE.active:
                return await __original(self, query, *args, **kw)
            sql = query if isinstance(query, str) else str(query)
            kind = _kind(sql)
            t0 = time.perf_counter()
            try:
                return await __original(self, query, *args, **kw)
            finally:
                op = current_op.get()
                TRACE.trips[op].append(time.perf_counter() - t0)
                TRACE.kinds[f"{op}: {kind}"] += 1
                key = id(self)
                if kind == "BEGIN":
                    TRACE.in_tx.add(key)
                    TRACE.tx_writes[key] = False
                elif kind in ("COMMIT", "END"):
                    if TRACE.tx_writes.pop(key, False):
                        TRACE.write_commits += 1
                    TRACE.in_tx.discard(key)
                elif kind in ("ROLLBACK",):
                    TRACE.in_tx.discard(key)
                    TRACE.tx_writes.pop(key, None)
                elif WRITE.search(sql):
                    if key in TRACE.in_tx:
                        TRACE.tx_writes[key] = True
                    else:
                        TRACE.write_commits += 1  # autocommit: one statement, one commit

        setattr(asyncpg.connection.Connection, name, traced)

    for name in dir(PostgresStore):
        if name.startswith("_") or name in ("connect", "close", "set_wakeup"):
            continue
        original = getattr(PostgresStore, name)
        if not asyncio.iscoroutinefunction(original):
            continue

        @functools.wraps(original)
        async def op(self: Any, *args: Any, __original: Any = original, __name: str = name, **kw: Any) -> Any:
            if not TRACE.active or current_op.get() != "(outside the store)":
                # An operation called by another (fire -> fire_many, list_runs -> list_runs_page)
                # counts as part of the outer one.
                return await __original(self, *args, **kw)
            token = current_op.set(__name)
            t0 = time.perf_counter()
            result = None
            try:
                result = await __original(self, *args, **kw)
                return result
            finally:
                t1 = time.perf_counter()
                current_op.reset(token)
                TRACE.ops[__name].append(t1 - t0)
                TRACE.timeline.append((__name, t0, t1, _run_ids(__name, args, result)))

        setattr(PostgresStore, name, op)


def summarize(seconds: float, units: int, unit: str) -> dict[str, Any]:
    trips = sum(len(v) for v in TRACE.trips.values())
    trip_time = sum(sum(v) for v in TRACE.trips.values())
    op_time = sum(sum(v) for v in TRACE.ops.values())
    return {
        "unit": unit,
        "count": units,
        "wall_us_per_unit": 1e6 * seconds / units,
        "rate": units / seconds,
        "round_trips_per_unit": trips / units,
        "write_commits_per_unit": TRACE.write_commits / units,
        "round_trip_us_mean": 1e6 * trip_time / trips if trips else None,
        "share_in_round_trips": trip_time / seconds,
        "share_in_store_ops": op_time / seconds,
        "ops_per_unit": {op: len(v) / units for op, v in sorted(TRACE.ops.items())},
        "op_us_mean": {op: 1e6 * sum(v) / len(v) for op, v in sorted(TRACE.ops.items())},
        "round_trips_by_op_per_unit": {op: len(v) / units for op, v in sorted(TRACE.trips.items())},
        "statements_per_unit": {k: n / units for k, n in sorted(TRACE.kinds.items())},
    }


def _run_ids(op: str, args: tuple[Any, ...], result: Any) -> list[str]:
    """The runs a store operation concerned (for the per-run timeline)."""
    if op == "create_runs":
        return [r.id for r in args[0]]
    if op == "claim":
        return [r.id for r in result or ()]
    if op == "create_and_claim":
        return [args[0].id]
    if op == "checkpoint":
        return [args[0].run_id]
    if op in ("complete_run", "fail_run", "release_run"):
        return [args[0]]
    return []


def run_phases(returned: dict[str, float]) -> dict[str, Any]:
    """For sequential one-step runs: where one run's time goes, median µs per phase.

    ``returned`` maps run id to the moment its ``trigger_and_wait`` returned.
    """
    import statistics

    by_run: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    empty_claims = 0
    for op, t0, t1, ids in TRACE.timeline:
        if op == "claim" and not ids:
            empty_claims += 1
        for run_id in ids:
            by_run[run_id].setdefault(op, (t0, t1))
    phases: dict[str, list[float]] = defaultdict(list)
    for run_id, ops in by_run.items():
        if run_id not in returned:
            continue
        if {"create_and_claim", "checkpoint", "complete_run"} <= set(ops) and "claim" not in ops:
            # Claimed in the insert: three writes a run (insert, checkpoint, completion).
            c, s, f = ops["create_and_claim"], ops["checkpoint"], ops["complete_run"]
            phases["1 create_and_claim (INSERT, already claimed)"].append(c[1] - c[0])
            phases["2 inserted -> checkpoint starts (task, step)"].append(s[0] - c[1])
            phases["3 checkpoint"].append(s[1] - s[0])
            phases["4 checkpointed -> complete_run starts"].append(f[0] - s[1])
            phases["5 complete_run"].append(f[1] - f[0])
            phases["6 completed -> trigger_and_wait returns"].append(returned[run_id] - f[1])
            continue
        if not {"create_runs", "claim", "checkpoint", "complete_run"} <= set(ops):
            continue
        c, k, s, f = ops["create_runs"], ops["claim"], ops["checkpoint"], ops["complete_run"]
        phases["1 create_runs (INSERT)"].append(c[1] - c[0])
        phases["2 wake-up: trigger returned -> claim starts"].append(k[0] - c[1])
        phases["3 claim"].append(k[1] - k[0])
        phases["4 claimed -> checkpoint starts (task, step)"].append(s[0] - k[1])
        phases["5 checkpoint"].append(s[1] - s[0])
        phases["6 checkpointed -> complete_run starts"].append(f[0] - s[1])
        phases["7 complete_run"].append(f[1] - f[0])
        phases["8 completed -> trigger_and_wait returns"].append(returned[run_id] - f[1])
    return {
        "runs_traced": max((len(v) for v in phases.values()), default=0),
        "empty_claims_per_run": empty_claims / max(len(returned), 1),
        "phase_us_median": {k: 1e6 * statistics.median(v) for k, v in sorted(phases.items()) if v},
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    why = await unreachable(args.postgres)
    if why is not None:
        return {"skipped": why}
    install()
    from durably_sched import Step, create_durably, define_job

    async def noop() -> None:
        return None

    async def many(step: Step, p: dict[str, Any]) -> dict[str, Any]:
        for i in range(p["n"]):
            await step.run(f"s{i}", noop)
        return {}

    profiler = cProfile.Profile() if args.profile else None
    out: dict[str, Any] = {}
    async with fresh_database(args.postgres, "bench_trace") as url:
        async with create_durably(url, max_concurrent_runs=4).register(
            [define_job(name="many", run=many)]
        ) as d:
            out["server"] = await server_settings(d.store._pool)  # type: ignore[attr-defined]
            job = d.job("many")
            await job.trigger_and_wait({"n": 200})  # warm-up: pool, statement caches
            for _ in range(50):
                await job.trigger_and_wait({"n": 1})

            TRACE.reset()
            if profiler:
                profiler.enable()
            t0 = time.perf_counter()
            await job.trigger_and_wait({"n": args.steps})
            seconds = time.perf_counter() - t0
            TRACE.active = False
            out["steps"] = summarize(seconds, args.steps, "step")

            TRACE.reset()
            returned: dict[str, float] = {}
            t0 = time.perf_counter()
            for _ in range(args.runs):
                result = await job.trigger_and_wait({"n": 1})
                returned[result.id] = time.perf_counter()
            seconds = time.perf_counter() - t0
            if profiler:
                profiler.disable()
            TRACE.active = False
            out["runs"] = summarize(seconds, args.runs, "run")
            out["runs"].update(run_phases(returned))
        async with fresh_database(args.postgres, "bench_layers") as layers_url:
            out["checkpoint_layers"] = await checkpoint_layers(layers_url, args.layers)
    if profiler:
        profiler.dump_stats(args.profile)
        out["profile"] = args.profile
    return out


def show(result: dict[str, Any]) -> None:
    for key in ("steps", "runs"):
        r = result[key]
        unit = r["unit"]
        print(
            f"\n{key}: {r['count']} {unit}s, {r['rate']:,.0f}/s, {r['wall_us_per_unit']:,.0f} µs per {unit}"
        )
        print(
            f"  {r['round_trips_per_unit']:.2f} round trips and {r['write_commits_per_unit']:.2f} writing "
            f"commits per {unit}; a round trip takes {r['round_trip_us_mean'] or 0:,.0f} µs on average; "
            f"{100 * r['share_in_round_trips']:.0f} % of the wall time is spent in round trips, "
            f"{100 * r['share_in_store_ops']:.0f} % in store operations"
        )
        for op, n in r["ops_per_unit"].items():
            trips = r["round_trips_by_op_per_unit"].get(op, 0.0)
            mean = r["op_us_mean"][op]
            print(
                f"  {op:<22} {n:6.2f} per {unit}, {mean:8,.0f} µs each, {trips:5.2f} round trips per {unit}"
            )
        for stmt, n in r["statements_per_unit"].items():
            print(f"    {stmt:<40} {n:6.2f} per {unit}")
        if "phase_us_median" in r:
            print(
                f"  one run phase by phase (median of {r['runs_traced']} runs; "
                f"{r['empty_claims_per_run']:.2f} claims per run found nothing):"
            )
            for phase, us in r["phase_us_median"].items():
                print(f"    {phase:<48} {us:8,.0f} µs")
    d = result.get("checkpoint_layers")
    if d:
        print("\none checkpoint, layer by layer (µs each, sequential, one run held by this process):")
        for name, us in d.items():
            print(f"  {name:<60} {us:8,.0f} µs")


async def checkpoint_layers(url: str, n: int) -> dict[str, float]:
    """One checkpoint's cost, layer by layer, each layer measured ``n`` times in sequence:

    a round trip alone; the server's one-row commit; the store's checkpoint statement sent directly
    on one connection (same parameters, no pool); ``store.checkpoint()`` (adds the pool, the retry
    wrapper, argument building). The steps workload above adds the step machinery and the event
    loop on top (traced, so slightly slower than benchmark 1).
    """
    import datetime as dt

    import asyncpg

    from durably_sched.store import _pg_sql as pgmod
    from durably_sched.store.base import Checkpoint, NewRun
    from durably_sched.store.postgres import PostgresStore

    out: dict[str, float] = {}
    store = PostgresStore(url)
    await store.connect()
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await store.migrate()
        await conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, payload text NOT NULL)")
        insert = await conn.prepare("INSERT INTO t (payload) VALUES ($1)")
        select = await conn.prepare("SELECT 1")

        async def timed(fn: Any) -> float:
            for i in range(50):
                await fn(f"warm-{i}")
            t0 = time.perf_counter()
            for i in range(n):
                await fn(f"x{i}")
            return 1e6 * (time.perf_counter() - t0) / n

        out["a. round trip: SELECT 1"] = await timed(lambda _i: select.fetchval())
        out["b. one-row INSERT commit (the physical reference)"] = await timed(insert.fetchval)
        await store.create_runs([NewRun(id="layers", job_name="j", input={})])
        (run,) = await store.claim("tracer", ["j"], 1, 600)
        now = dt.datetime.now(dt.UTC)
        # The statement the store sends for a step without log lines (CHECKPOINT before it existed).
        sql = getattr(pgmod, "CHECKPOINT_NO_LOGS", None)
        logs_args: list[Any] = []
        if sql is None:
            sql = getattr(pgmod, "CHECKPOINT", None)
            logs_args = [[], [], [], [], []]
        index = iter(range(10**9))
        await conn.execute(f"SET search_path TO {store.schema}")
        if sql is not None:  # the statement as the store sends it (found by name: skipped if renamed)

            async def direct(name: str) -> Any:
                return await conn.fetchval(
                    sql,
                    run.id,
                    run.generation,
                    *logs_args,
                    "d-" + name,
                    next(index),
                    "null",
                    now,
                    now,
                )

            out["c. the store's checkpoint statement, direct on one connection"] = await timed(direct)

        async def via_store(name: str) -> Any:
            return await store.checkpoint(
                Checkpoint(run.id, run.generation, next(index), "s-" + name, "null", now, now)
            )

        out["d. store.checkpoint() (pool, retry wrapper, arguments)"] = await timed(via_store)
    finally:
        await conn.close()
        await store.close()
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", metavar="URL", default=default_url(), help="a database on the server")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--layers", type=int, default=1000, help="repetitions per layer of one checkpoint")
    parser.add_argument("--profile", metavar="FILE", help="also write a cProfile of both workloads here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    result = asyncio.run(measure(parse_args()))
    if "skipped" not in result:
        show(result)
    emit(result)
