"""Benchmark 5: scheduler punctuality with the real clock (``python -m bench.punctuality``).

1,000 schedules with 6-field crons (seconds first), spread over the seconds of the period: with
``--period 60`` schedule i fires at second i % 60 of every minute (about 17 fire times a second);
with ``--period 10`` at second i % 10 of every 10 s (100 a second). One process runs a Scheduler and
a worker on one SQLite file, the way ``durably-sched serve`` does (``Scheduler(durably,
config).start()`` plus ``durably.start()``). For each run, punctuality is the time of its
``run:start`` event minus its ``scheduled_for`` label (the fire time, a whole second). Fire times in
the first ``--warmup`` seconds are left out. The job is one checkpointed no-op step.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from durably_sched import Step, create_durably, define_job
from durably_sched.schedule.config import parse_schedules
from durably_sched.schedule.scheduler import Scheduler

from ._util import emit, percentile, scratch_dir


async def noop() -> None:
    return None


async def tick(step: Step, _p: dict[str, Any]) -> dict[str, Any]:
    await step.run("noop", noop)
    return {}


JOB = define_job(name="tick", run=tick)


def schedules_yaml(count: int, period: int) -> str:
    lines = ["schedules:"]
    for i in range(count):
        second = i % period
        cron = f"{second} * * * * *" if period == 60 else f"{second}/{period} * * * * *"
        lines += [f"  p{i:04d}:", f'    cron: "{cron}"', "    job: tick"]
    return "\n".join(lines) + "\n"


def expected_fires(count: int, period: int, start: float, end: float) -> int:
    """Fire times in [start, end) over all schedules (schedule i fires when t % period == i % period)."""
    total = 0
    for second in range(int(start), int(end) + 1):
        if start <= second < end:
            slot = second % period
            total += count // period + (1 if slot < count % period else 0)
    return total


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = scratch_dir("bench-punct-")
    url = f"sqlite:///{tmp / 'punct.db'}" + (f"?synchronous={args.sync}" if args.sync else "")
    config = parse_schedules(schedules_yaml(args.schedules, args.period), path="<generated>")
    starts: list[tuple[float, float]] = []  # (fire time, run start)
    fired: list[tuple[float, float]] = []  # (fire time, fire recorded)

    async with create_durably(url, max_concurrent_runs=args.concurrency).register([JOB]) as durably:

        def on_start(event: Any) -> None:
            fire = datetime.strptime(event.labels["scheduled_for"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            starts.append((fire.timestamp(), event.timestamp))

        durably.on("run:start", on_start)
        scheduler = Scheduler(durably, config)
        scheduler.listeners.append(lambda _e, ft, _r, _l: fired.append((ft.timestamp(), time.time())))
        load_started = time.time()
        await scheduler.load()  # writes the cursors of 1,000 new schedules; start() would do it first
        scheduler.start()
        begin = time.time()
        window_start = float(int(begin + args.warmup) + 1)
        window_end = window_start + args.duration
        cpu0 = time.process_time()
        await asyncio.sleep(max(0.0, window_end - time.time()))
        cpu_used = time.process_time() - cpu0
        await scheduler.stop()
        expected = expected_fires(args.schedules, args.period, window_start, window_end)
        deadline = time.time() + 15
        while time.time() < deadline:
            if sum(1 for f, _ in starts if window_start <= f < window_end) >= expected:
                break
            await asyncio.sleep(0.05)

    lat = [(s - f) * 1000 for f, s in starts if window_start <= f < window_end]
    fire_lat = [(r - f) * 1000 for f, r in fired if window_start <= f < window_end]
    return {
        "schedules": args.schedules,
        "period_seconds": args.period,
        "window_seconds": args.duration,
        "load_seconds": round(begin - load_started, 3),
        "expected_runs": expected,
        "started_runs": len(lat),
        "fires_per_second": expected / args.duration,
        "start_ms": {"p50": percentile(lat, 0.5), "p99": percentile(lat, 0.99), "max": max(lat, default=0.0)},
        "fire_recorded_ms": {"p50": percentile(fire_lat, 0.5), "p99": percentile(fire_lat, 0.99)},
        "cpu_percent": 100 * cpu_used / args.duration,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--period", type=int, default=60, choices=[10, 60])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--sync", default=None, help="synchronous URL option (default: the store's, NORMAL)")
    parser.add_argument("--concurrency", type=int, default=4, help="worker slots (serve's default: 4)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    emit(asyncio.run(main(parse_args())))
