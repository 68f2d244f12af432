"""Durable waits: how late a sleeping run resumes, and what 10,000 sleepers cost a worker's poll.

``python -m bench.waits [--postgres URL] [--sleepers 20] [--reps 3] [--idle 10000]``

Wake-up latency: ``--sleepers`` runs each ``step.sleep_until`` the same instant T (3 s ahead); the
step after the sleep records the wall clock; the latency of a run is that time minus T. The worker
polls every second (the default ``polling_interval``), so on SQLite the expected bound is the
polling interval; on PostgreSQL the worker's timer is set from the database's answer (the time
until the earliest ``wake_at``), so the bound is about a claim's round trip.

Idle cost: ``--idle`` runs stored as sleeping for an hour; ``Store.wake_due`` (one worker poll) is
timed 50 times.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from durably_sched import Step, create_durably, define_job
from durably_sched.store.base import NewRun
from durably_sched.store.waits import NewWait

from ._util import emit, median, percentile, scratch_dir

WOKE: dict[str, float] = {}


async def sleeper(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    await step.sleep_until("until", datetime.fromtimestamp(payload["at"], UTC))
    await step.run("woke", lambda: WOKE.setdefault(step.run_id, time.time()))
    return {}


async def latencies(url: str, sleepers: int) -> list[float]:
    WOKE.clear()
    job = define_job(name="sleeper", run=sleeper)
    async with create_durably(url, max_concurrent_runs=32).register([job]) as durably:
        at = time.time() + 3.0
        runs = [await durably.trigger("sleeper", {"at": at}) for _ in range(sleepers)]
        for run in runs:
            await durably.wait_for_run(run.id, timeout=30)
        return [WOKE[r.id] - at for r in runs if r.id in WOKE]


async def idle_poll(url: str, count: int) -> list[float]:
    job = define_job(name="sleeper", run=sleeper)
    async with create_durably(url).register([job]) as durably:
        await durably.stop()
        store = durably.store
        until = datetime.now(UTC) + timedelta(hours=1)
        for start in range(0, count, 500):
            batch = [NewRun(id=f"idle-{i}", job_name="sleeper", input={}) for i in range(start, start + 500)]
            await store.create_runs(batch)
            for run in await store.claim("bench", ["sleeper"], 500, 60.0):
                await store.suspend_run(run.id, run.generation, NewWait("sleep", "until", until=until))
        times = []
        for _ in range(50):
            started = time.perf_counter()
            result = await store.wake_due()
            times.append(time.perf_counter() - started)
            assert result.woken == 0
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--sleepers", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--idle", type=int, default=10_000)
    args = parser.parse_args()
    scratch = scratch_dir("waits")
    for name in ("sqlite", "postgres"):
        values: list[float] = []
        for rep in range(args.reps):
            if name == "sqlite":
                url = f"sqlite:///{scratch / f'wake-{rep}.db'}"
            else:
                url = f"{args.postgres}?schema=bench_waits_{rep}_{int(time.time())}"
            values += asyncio.run(latencies(url, args.sleepers))
        idle_url = (
            f"sqlite:///{scratch / 'idle.db'}"
            if name == "sqlite"
            else f"{args.postgres}?schema=bench_waits_idle_{int(time.time())}"
        )
        polls = asyncio.run(idle_poll(idle_url, args.idle))
        emit(
            {
                "benchmark": f"waits-{name}",
                "wake_latency_p50_s": round(median(values), 3),
                "wake_latency_p99_s": round(percentile(values, 0.99), 3),
                "wake_latency_max_s": round(max(values), 3),
                "woken": len(values),
                "expected": args.sleepers * args.reps,
                "idle_sleepers": args.idle,
                "idle_poll_median_ms": round(median(polls) * 1000, 3),
                "idle_poll_p99_ms": round(percentile(polls, 0.99) * 1000, 3),
            }
        )


if __name__ == "__main__":
    main()
