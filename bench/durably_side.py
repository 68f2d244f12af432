"""Benchmarks 1-4 for durably-sched, in one fresh process (``python -m bench.durably_side ...``).

1. checkpointed no-op steps/s in one run (``async def`` step functions)
1s. the same with sync step functions: ``step.run(name, lambda: i)``
2. the same with many runs at once (aggregate steps/s)
3. one-step runs/s, trigger -> completed (concurrent ``trigger_and_wait`` calls; and ``batch_trigger``)
4. ``trigger_and_wait`` latency of a one-step run, one call at a time (and the sequential runs/s)

On SQLite (a file in a temporary directory, WAL, ``--sync`` level) by default; with
``--postgres URL`` on a database created for this process on that server and dropped afterwards.
The shapes match bench/dbos_side.py call for call. Prints one result line (see bench/_util.py).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from durably_sched import Step, create_durably, define_job

from ._pg import fresh_database, server_settings
from ._util import emit, percentile, scratch_dir

BENCHMARKS = ("1", "1s", "2", "3", "4")


async def noop() -> None:
    return None


async def many(step: Step, p: dict[str, Any]) -> dict[str, Any]:
    if p.get("sync"):
        for i in range(p["n"]):
            await step.run(f"s{i}", lambda i=i: i)
    else:
        for i in range(p["n"]):
            await step.run(f"s{i}", noop)
    return {}


JOB = define_job(name="many", run=many)


def _rate(count: int, seconds: float, cpu: float) -> dict[str, float]:
    return {"count": count, "seconds": seconds, "rate": count / seconds, "cpu_seconds": cpu}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    if args.postgres:
        async with fresh_database(args.postgres, "bench_durably") as url:
            return await measure(args, url)
    tmp = scratch_dir("bench-durably-")
    return await measure(args, f"sqlite:///{tmp / 'bench.db'}?synchronous={args.sync}", str(tmp))


async def measure(args: argparse.Namespace, url: str, tmp: str | None = None) -> dict[str, Any]:
    which = set(args.benchmarks.split(","))
    out: dict[str, Any] = {"database_url": url.replace(tmp, "<tmp>") if tmp else url}
    async with create_durably(url, max_concurrent_runs=args.concurrency).register([JOB]) as durably:
        job = durably.job("many")
        if args.postgres:
            out["backend"] = "postgres"
            out["server"] = await server_settings(durably.store._pool)  # type: ignore[attr-defined]
            out["synchronous_commit"] = out["server"]["synchronous_commit"]
        else:
            rows = await durably.store._read("PRAGMA journal_mode")  # type: ignore[attr-defined]
            out["backend"] = "sqlite"
            out["journal_mode"] = rows[0][0]
            out["synchronous"] = args.sync.upper()

        # 1. steps/s in one run; 1s. the same with sync step functions
        for key, sync in (("1", False), ("1s", True)):
            if key not in which:
                continue
            await job.trigger_and_wait({"n": 100, "sync": sync})  # warm-up
            c0, t0 = time.process_time(), time.perf_counter()
            await job.trigger_and_wait({"n": args.steps, "sync": sync})
            out["steps_one_run_sync" if sync else "steps_one_run"] = _rate(
                args.steps, time.perf_counter() - t0, time.process_time() - c0
            )
        if "2" not in which and "3" not in which and "4" not in which:
            return out

        # 2. steps/s with N runs at once
        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(
            *(job.trigger_and_wait({"n": args.parallel_steps}) for _ in range(args.parallel_runs))
        )
        total = args.parallel_runs * args.parallel_steps
        out["steps_parallel"] = {
            **_rate(total, time.perf_counter() - t0, time.process_time() - c0),
            "runs": args.parallel_runs,
        }

        # 3. one-step runs/s: each run triggered and awaited on its own, all at once
        await asyncio.gather(*(job.trigger_and_wait({"n": 1}) for _ in range(50)))  # warm-up
        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(job.trigger_and_wait({"n": 1}) for _ in range(args.runs)))
        out["runs_per_s"] = _rate(args.runs, time.perf_counter() - t0, time.process_time() - c0)
        # 3b. the same runs created by one batch_trigger call (one insert transaction)
        c0, t0 = time.process_time(), time.perf_counter()
        runs = await job.batch_trigger([{"n": 1}] * args.runs)
        await asyncio.gather(*(durably.wait_for_run(r.id) for r in runs))
        out["runs_per_s_batch"] = _rate(args.runs, time.perf_counter() - t0, time.process_time() - c0)

        # 4. trigger_and_wait latency, one at a time
        for _ in range(20):
            await job.trigger_and_wait({"n": 1})
        samples = []
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(args.latency):
            t1 = time.perf_counter()
            await job.trigger_and_wait({"n": 1})
            samples.append((time.perf_counter() - t1) * 1000)
        out["sequential_runs_per_s"] = _rate(len(samples), time.perf_counter() - t0, time.process_time() - c0)
        out["latency_ms"] = {
            "count": len(samples),
            "p50": percentile(samples, 0.5),
            "p99": percentile(samples, 0.99),
            "mean": sum(samples) / len(samples),
        }
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sync", default="full", choices=["off", "normal", "full", "extra"], help="SQLite synchronous level"
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="run on PostgreSQL: a fresh database on this server (created and dropped here)",
    )
    parser.add_argument(
        "--benchmarks",
        default="1,2,3,4",
        help=f"comma-separated subset of {','.join(BENCHMARKS)} (2-4 always run together)",
    )
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--parallel-runs", type=int, default=50)
    parser.add_argument("--parallel-steps", type=int, default=200)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--latency", type=int, default=500)
    return parser.parse_args(argv)


if __name__ == "__main__":
    emit(asyncio.run(main(parse_args())))
