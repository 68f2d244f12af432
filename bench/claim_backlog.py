"""Benchmark 11: claim latency as the backlog of *pending* runs grows (``python -m bench.claim_backlog``).

For each size (default 10^3, 10^4, 10^5) the runs table holds that many pending runs of the job
being claimed, inserted directly by one set-based statement (SQLite: a recursive CTE through
``sqlite3``; PostgreSQL: ``generate_series``); then ``store.claim`` is timed end to end, taking
the oldest runs: claims of one run (``--repeats`` times) and claims of ten runs in one call (a
worker with ten free slots: one statement on PostgreSQL, one write on SQLite). The backlog
shrinks by what the claims take (a few hundred runs: negligible). The figure that matters is the
ratio of the 10^5 latency to the 10^3 one: a claim whose cost does not grow with the backlog
keeps it near 1.

Both backends by default: SQLite (a file in a temporary directory, WAL, ``--sync``) and, when
``--postgres URL`` names a server, a fresh database there (created and dropped here).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import time
from typing import Any

from durably_sched.store import open_store
from durably_sched.store.base import Store

from ._pg import default_url, fresh_database, unreachable
from ._util import emit, median, percentile, scratch_dir

JOB = "bench"


async def fill(store: Store, url: str, start: int, count: int) -> None:
    """``count`` pending runs of JOB, ids ``backlog-<start>``..., in one statement."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.split("///", 1)[1].split("?", 1)[0])
        try:
            with conn:
                conn.execute(
                    "WITH RECURSIVE g(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM g WHERE n < ?) "
                    "INSERT INTO runs (id, job_name, status, input, created_at, updated_at) "
                    "SELECT 'backlog-' || n, ?, 'pending', '{}', 0, 0 FROM g",
                    (start, start + count - 1, JOB),
                )
        finally:
            conn.close()
        return
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO runs (id, job_name, status, input) "
            "SELECT 'backlog-' || g, $3, 'pending', '{}' FROM generate_series($1::int, $2::int) g",
            start,
            start + count - 1,
            JOB,
        )
        await conn.execute("ANALYZE runs")
    finally:
        await conn.close()


async def time_claims(store: Store, limit: int, repeats: int) -> list[float]:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        claimed = await store.claim("bench-worker", [JOB], limit, 300.0)
        samples.append((time.perf_counter() - t0) * 1000)
        assert len(claimed) == limit, "the backlog ran out"
        for run in claimed:  # as a worker would (untimed): no finished run stays ahead in the index
            await store.complete_run(run.id, run.generation, {})
    return samples


def figures(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": median(samples), "p99_ms": percentile(samples, 0.99)}


async def measure(url: str, sizes: list[int], repeats: int) -> dict[str, Any]:
    store = open_store(url)
    await store.connect()
    try:
        await store.migrate()
        have = 0
        out: list[dict[str, Any]] = []
        for size in sizes:
            t0 = time.perf_counter()
            await fill(store, url, have, size - have)
            fill_seconds = time.perf_counter() - t0
            have = size
            await time_claims(store, 1, 20)  # warm-up: caches, prepared statements
            one = await time_claims(store, 1, repeats)
            ten = await time_claims(store, 10, max(1, repeats // 5))
            out.append(
                {
                    "pending": size,
                    "fill_seconds": round(fill_seconds, 2),
                    "claim_1": figures(one),
                    "claim_10": figures(ten),
                    "claim_10_per_run_ms": median(ten) / 10,
                }
            )
        first, last = out[0], out[-1]
        return {
            "sizes": out,
            "ratio_claim_1_p50": last["claim_1"]["p50_ms"] / first["claim_1"]["p50_ms"],
            "ratio_claim_10_p50": last["claim_10"]["p50_ms"] / first["claim_10"]["p50_ms"],
        }
    finally:
        await store.close()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(s) for s in args.sizes.split(",")]
    tmp = scratch_dir("bench-claim-backlog-")
    url = f"sqlite:///{tmp / 'backlog.db'}?synchronous={args.sync}"
    result: dict[str, Any] = {"sqlite": await measure(url, sizes, args.repeats)}
    if args.postgres:
        problem = await unreachable(args.postgres)
        if problem is not None:
            result["postgres_skipped"] = problem
        else:
            async with fresh_database(args.postgres, "bench_backlog") as url:
                result["postgres"] = await measure(url, sizes, args.repeats)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default="1000,10000,100000", help="pending runs, comma-separated, ascending"
    )
    parser.add_argument("--repeats", type=int, default=200, help="claims of one run timed at each size")
    parser.add_argument("--sync", default="normal", choices=("off", "normal", "full", "extra"))
    parser.add_argument(
        "--postgres", metavar="URL", default=default_url(), help="a PostgreSQL server ('' to skip it)"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    emit(asyncio.run(main(parse_args())))
