"""durably-sched's PostgreSQL hot paths as a share of the server's commit rate (``python -m bench.pg_ratio``).

The targets of benchmarks 1, 4c and 2 on PostgreSQL are ratios to the server's one-row commit rate
(``bench.pg_commit``). On a shared machine the commit rate drifts by several times within a minute
(other processes' disk writes make each WAL flush wait), so a ratio of two figures measured in
turn, seconds apart, is mostly noise. This program measures both sides in ONE process on one
database, interleaved one operation at a time, so both see the same moment of the server:

* **1** (checkpointed no-op steps in one run): the job itself alternates a timed ``step.run`` and
  a timed one-row commit on a connection of its own (outside the step);
* **4c** (sequential one-step runs): a timed ``trigger_and_wait`` of a one-step run, then a timed
  one-row commit, and so on;
* **2** (50 runs at once, aggregate steps/s): blocks, a one-row-commit block before and after each
  block of 50 runs (their commits cannot be interleaved one by one).

Each round gives one ratio per benchmark (durably's rate divided by the commit rate measured
alongside); the result is min/median/max over ``--rounds`` rounds. The reference is
``bench.pg_commit``'s: a prepared one-row ``INSERT`` in autocommit on one asyncpg connection.
Prints one line per round and emits one result line (see bench/_util.py).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from ._pg import default_url, fresh_database, one_row_insert, server_settings, unreachable
from ._util import emit, median

TIMES: dict[str, list[float]] = {"step": [], "ref": []}
"""Seconds per timed operation inside the job of benchmark 1 (a module global: the job reads it)."""
REF: list[Any] = []
"""The reference's prepared INSERT (set once the database exists)."""


async def noop() -> None:
    return None


async def interleaved(step: Any, p: dict[str, Any]) -> dict[str, Any]:
    """Benchmark 1's job, with a one-row commit between its steps, each timed on its own."""
    insert = REF[0]
    for i in range(p["n"]):
        t0 = time.perf_counter()
        await step.run(f"s{i}", noop)
        t1 = time.perf_counter()
        await insert.fetchval("row")
        TIMES["step"].append(t1 - t0)
        TIMES["ref"].append(time.perf_counter() - t1)
    return {}


async def one_step(step: Any, p: dict[str, Any]) -> dict[str, Any]:
    for i in range(p["n"]):
        await step.run(f"s{i}", noop)
    return {}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg

    from durably_sched import create_durably, define_job

    why = await unreachable(args.postgres)
    if why is not None:
        return {"skipped": why}
    jobs = [define_job(name="interleaved", run=interleaved), define_job(name="many", run=one_step)]
    ratios: dict[str, list[float]] = {"1": [], "4c": [], "2": []}
    async with fresh_database(args.postgres, "bench_ratio") as url:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            settings = await server_settings(conn)
            insert = await one_row_insert(conn)
            REF[:] = [insert]

            async def ref_rate(n: int) -> float:
                t0 = time.perf_counter()
                for _ in range(n):
                    await insert.fetchval("row")
                return n / (time.perf_counter() - t0)

            async with create_durably(url, max_concurrent_runs=args.concurrency).register(jobs) as durably:
                steps, many = durably.job("interleaved"), durably.job("many")
                await steps.trigger_and_wait({"n": 50})  # warm-up: plans, pages, connections
                for _ in range(50):
                    await many.trigger_and_wait({"n": 1})
                await asyncio.gather(*(many.trigger_and_wait({"n": 5}) for _ in range(args.parallel_runs)))
                for rnd in range(args.rounds):
                    TIMES["step"].clear()
                    TIMES["ref"].clear()
                    await steps.trigger_and_wait({"n": args.steps})
                    ratios["1"].append(sum(TIMES["ref"]) / sum(TIMES["step"]))

                    run_s = ref_s = 0.0
                    for _ in range(args.runs):
                        t0 = time.perf_counter()
                        await many.trigger_and_wait({"n": 1})
                        t1 = time.perf_counter()
                        await insert.fetchval("row")
                        run_s += t1 - t0
                        ref_s += time.perf_counter() - t1
                    ratios["4c"].append(ref_s / run_s)

                    before = await ref_rate(args.ref_block)
                    t0 = time.perf_counter()
                    await asyncio.gather(
                        *(
                            many.trigger_and_wait({"n": args.parallel_steps})
                            for _ in range(args.parallel_runs)
                        )
                    )
                    rate = args.parallel_runs * args.parallel_steps / (time.perf_counter() - t0)
                    after = await ref_rate(args.ref_block)
                    ratios["2"].append(rate / ((before + after) / 2))
                    print(
                        f"round {rnd + 1}: "
                        + ", ".join(f"{k} {v[-1]:.3f}" for k, v in ratios.items())
                        + f" (commits/s about {after:,.0f})",
                        flush=True,
                    )
        finally:
            await conn.close()
    return {
        "server": settings,
        "rounds": args.rounds,
        "ratios": {
            k: {"min": min(v), "median": median(v), "max": max(v), "all": v} for k, v in ratios.items()
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", metavar="URL", default=default_url(), help="a database on the server")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1000, help="benchmark 1: steps per round")
    parser.add_argument("--runs", type=int, default=300, help="benchmark 4c: runs per round")
    parser.add_argument("--parallel-runs", type=int, default=50, help="benchmark 2: runs at once")
    parser.add_argument("--parallel-steps", type=int, default=40, help="benchmark 2: steps per run")
    parser.add_argument("--ref-block", type=int, default=300, help="benchmark 2: commits before and after")
    parser.add_argument("--concurrency", type=int, default=64)
    return parser.parse_args(argv)


if __name__ == "__main__":
    result = asyncio.run(measure(parse_args()))
    for name, r in result.get("ratios", {}).items():
        print(
            f"{name:>3}: ratio to the commit rate min/median/max "
            f"{r['min']:.3f}/{r['median']:.3f}/{r['max']:.3f}"
        )
    emit(result)
