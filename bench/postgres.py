"""Benchmark 8: PostgreSQL, several worker processes (``python -m bench.postgres``).

A scratch schema (``?schema=bench_<random>``) in the database named by ``--database`` is migrated;
``--workers`` processes (bench/pg_worker.py) each run a worker on it. This process only triggers:

* **runs/s**: ``--runs`` one-step runs created by one ``batch_trigger``; the rate is the number of
  runs over the time from just before the trigger to the last run's ``completed_at``.
* **trigger-to-start latency** across processes: one run at a time is triggered while the workers
  are idle; latency is the run's ``started_at`` (stamped by the claiming worker's transaction, on
  the database clock of the same host) minus the time just before ``trigger``. The workers poll
  only every ``--polling-interval`` seconds (1 s, the default), so a low latency means the
  LISTEN/NOTIFY wake-up worked.

Skipped, with the reason recorded, when durably_sched.store.postgres cannot be imported or the
server cannot be reached. The scratch schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import uuid
from typing import Any

from ._util import ROOT, emit, percentile

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import asyncpg

        import durably_sched.store.postgres  # noqa: F401
    except Exception as exc:
        return {"skipped": f"durably_sched.store.postgres is not importable: {type(exc).__name__}: {exc}"}
    from durably_sched import create_durably

    from .pg_worker import JOB

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    url = f"{args.database}?schema={schema}"
    try:
        admin = await asyncpg.connect(args.database, timeout=10)
    except Exception as exc:
        return {"skipped": f"PostgreSQL at {args.database} is not reachable: {type(exc).__name__}: {exc}"}
    settings = {
        name: await admin.fetchval(f"SHOW {name}")
        for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method", "max_connections")
    }
    workers: list[asyncio.subprocess.Process] = []
    durably = create_durably(url).register([JOB])
    try:
        await durably.migrate()
        await durably.start(worker=False)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for _ in range(args.workers):
            workers.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.pg_worker",
                    "--database",
                    url,
                    "--concurrency",
                    str(args.concurrency),
                    "--polling-interval",
                    str(args.polling_interval),
                    cwd=ROOT,
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for proc in workers:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if line.strip() != b"READY":
                raise RuntimeError(f"a worker failed to start (exit {proc.returncode})")
        job = durably.job("one-step")

        async def finished_count() -> int:
            return int(
                await admin.fetchval(
                    f"SELECT count(*) FROM {schema}.runs WHERE status IN ('completed', 'failed', 'cancelled')"
                )
            )

        # warm-up: connections, plans
        warm = await job.batch_trigger([{}] * 200)
        await asyncio.gather(*(durably.wait_for_run(r.id, timeout=60) for r in warm))

        rates = []
        for _ in range(args.rounds):
            before = await finished_count()
            t0 = time.time()
            await job.batch_trigger([{}] * args.runs)
            deadline = time.monotonic() + 300
            while await finished_count() < before + args.runs:
                if time.monotonic() > deadline:
                    raise RuntimeError("runs did not finish within 300 s")
                await asyncio.sleep(0.05)
            last = await admin.fetchval(f"SELECT extract(epoch FROM max(completed_at)) FROM {schema}.runs")
            rates.append(args.runs / (float(last) - t0))
        failed = await admin.fetchval(f"SELECT count(*) FROM {schema}.runs WHERE status != 'completed'")

        await asyncio.sleep(1.0)  # let every worker go idle
        latencies = []
        for i in range(args.latency):
            t0 = time.time()
            run = await job.trigger({})
            record = await durably.wait_for_run(run.id, timeout=30)
            assert record.started_at is not None
            latencies.append((record.started_at.timestamp() - t0) * 1000)
            await asyncio.sleep(0.02 + 0.01 * (i % 4))
        return {
            "workers": args.workers,
            "concurrency_per_worker": args.concurrency,
            "polling_interval": args.polling_interval,
            "runs_per_round": args.runs,
            "runs_per_s_rounds": rates,
            "runs_per_s": sorted(rates)[len(rates) // 2],
            "not_completed": failed,
            "trigger_to_start_ms": {
                "count": len(latencies),
                "p50": percentile(latencies, 0.5),
                "p99": percentile(latencies, 0.99),
                "max": max(latencies),
            },
            "server": settings,
            "url": url,
        }
    finally:
        for proc in workers:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers:
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await durably.close()
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_URL))
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--polling-interval", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=int, default=100)
    return parser.parse_args(argv)


if __name__ == "__main__":
    emit(asyncio.run(measure(parse_args())))
