"""One-shot mode and coalescing: what a cron-style invocation and a coalescing trigger cost.

``python -m bench.once [--postgres URL] [--runs 1000] [--triggers 400] [--repeat 5]``

1. **Invocation overhead**: wall time of ``durably-sched serve --once`` from process start to exit
   on an empty queue with 50 schedules (import, migrate check, one scheduler tick, one claim, the
   report), median of ``--repeat``. This is what a CronJob or timer pays per invocation.
2. **One-shot throughput**: ``--runs`` one-step runs executed by ``process_until_idle()`` against
   the same runs executed by the worker's claim loop (``start()``, then wait for all), both at
   ``max_concurrent_runs=4``, alternating, median of ``--repeat``: the one-shot loop uses the same
   claims, so the two should be close (``process_until_idle`` also reads every run's final record).
3. **Trigger latency** (p50, p99 over ``--triggers``): a plain trigger with a concurrency key; a
   coalescing trigger that creates a run (a fresh key each time: on PostgreSQL the advisory lock,
   the look-up and the insert in one transaction); a coalescing trigger that joins the pending
   run of its key (no insert).

SQLite always (WAL, synchronous=NORMAL, a file in a scratch directory); PostgreSQL when ``--postgres``
(default ``$BENCH_POSTGRES_URL``) reaches a server: a fresh schema per measurement, dropped after.
Prints a table; each figure is also emitted as one JSON result line (``BENCH_RESULT``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from durably_sched import Step, create_durably, define_job

from ._util import ROOT, emit, percentile, scratch_dir

JOBS_PY = """
from durably_sched import Step, define_job


async def _one(step: Step, payload: dict) -> dict:
    await step.run("one", lambda: None)
    return {}


one = define_job(name="one", run=_one)
"""


async def _one(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    await step.run("one", _noop)
    return {}


async def _noop() -> None:
    return None


ONE = define_job(name="one", run=_one)


def _schedules(count: int) -> str:
    lines = ["schedules:"]
    for i in range(count):
        lines += [f"  s{i}:", f'    cron: "{i % 60} 3 * * *"', "    job: one"]
    return "\n".join(lines) + "\n"


def invocation_seconds(url: str, workdir: Path, repeat: int) -> list[float]:
    (workdir / "benchjobs.py").write_text(JOBS_PY)
    (workdir / "schedules.yaml").write_text(_schedules(50))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLY_")}
    env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{workdir}"
    argv = [sys.executable, "-m", "durably_sched.cli", "--database", url, "--jobs", "benchjobs"]
    subprocess.run([*argv, "migrate"], cwd=workdir, env=env, check=True, capture_output=True)
    subprocess.run([*argv, "serve", "--once"], cwd=workdir, env=env, check=True, capture_output=True)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([*argv, "serve", "--once"], cwd=workdir, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


async def throughput(url: str, runs: int, one_shot: bool) -> float:
    durably = create_durably(url, max_concurrent_runs=4, polling_interval=0.05).register([ONE])
    await durably.migrate()
    await durably.start(worker=False)
    try:
        await durably.jobs.one.batch_trigger([{} for _ in range(runs)])
        started = time.perf_counter()
        if one_shot:
            done = await durably.process_until_idle()
            assert len(done) == runs and all(r.status == "completed" for r in done)
        else:
            all_done = asyncio.Event()
            completed = 0

            def count(event: Any) -> None:
                nonlocal completed
                completed += 1
                if completed == runs:
                    all_done.set()

            durably.on("run:complete", count)
            durably.worker.start()
            await all_done.wait()
        return runs / (time.perf_counter() - started)
    finally:
        await durably.close()


async def trigger_latencies(url: str, count: int) -> dict[str, list[float]]:
    durably = create_durably(url).register([ONE])
    await durably.migrate()
    await durably.start(worker=False)
    out: dict[str, list[float]] = {"plain": [], "coalesce-create": [], "coalesce-join": []}
    try:
        handle = durably.jobs.one
        for i in range(count):
            for kind in out:
                key = "joined" if kind == "coalesce-join" else f"{kind}-{i}"
                coalesce = None if kind == "plain" else "skip"
                started = time.perf_counter()
                run = await handle.trigger({}, concurrency_key=key, coalesce=coalesce)  # type: ignore[arg-type]
                out[kind].append(time.perf_counter() - started)
                expected = "coalesced" if kind == "coalesce-join" and i > 0 else "created"
                assert run.disposition == expected, (kind, run.disposition)
    finally:
        await durably.close()
    return out


def _postgres_url(base: str | None) -> str | None:
    if not base:
        return None
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(base, timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        print(f"PostgreSQL at {base} not usable ({exc}); SQLite only", file=sys.stderr)
        return None
    return base


def _fresh(backend: str, base: str, scratch: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{scratch / f'{uuid.uuid4().hex[:8]}.db'}"
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}schema=bench_once_{uuid.uuid4().hex[:8]}"


def _drop(url: str) -> None:
    if not url.startswith("postgres"):
        return
    import asyncpg

    base, _, schema = url.rpartition("schema=")

    async def drop() -> None:
        conn = await asyncpg.connect(base.rstrip("?&"), timeout=5)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES_URL"))
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--triggers", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    scratch = scratch_dir("bench-once-")
    backends = ["sqlite"] + (["postgres"] if _postgres_url(args.postgres) else [])
    rows: list[tuple[str, str, str]] = []
    for backend in backends:
        url = _fresh(backend, args.postgres or "", scratch)
        try:
            work = scratch / f"once-{backend}"
            work.mkdir()
            times = invocation_seconds(url, work, args.repeat)
            emit({"bench": "once", "backend": backend, "metric": "serve_once_idle_s", "values": times})
            rows.append(
                (
                    backend,
                    "serve --once, empty queue (process start to exit)",
                    f"{statistics.median(times):.2f} s",
                )
            )
        finally:
            _drop(url)
        rates: dict[str, list[float]] = {"process_until_idle": [], "claim loop": []}
        for _ in range(args.repeat):  # alternating, so that drifting machine load hits both alike
            for label in rates:
                url = _fresh(backend, args.postgres or "", scratch)
                try:
                    rates[label].append(asyncio.run(throughput(url, args.runs, label != "claim loop")))
                finally:
                    _drop(url)
        for label, values in rates.items():
            emit({"bench": "once", "backend": backend, "metric": f"{label} runs/s", "values": values})
            median_rate = statistics.median(values)
            rows.append((backend, f"{args.runs} one-step runs, {label}", f"{median_rate:,.0f} runs/s"))
        url = _fresh(backend, args.postgres or "", scratch)
        try:
            latencies = asyncio.run(trigger_latencies(url, args.triggers))
        finally:
            _drop(url)
        for kind, values in latencies.items():
            emit({"bench": "once", "backend": backend, "metric": f"trigger {kind} s", "values": values})
            p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
            rows.append((backend, f"trigger, {kind}", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"))
    width = max(len(r[1]) for r in rows)
    for backend, what, value in rows:
        print(f"{backend:9} {what:{width}}  {value}")


if __name__ == "__main__":
    main()
