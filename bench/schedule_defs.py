"""Benchmark 13: schedules as data on PostgreSQL (``python -m bench.schedule_defs``).

**13a. Creates over HTTP.** ``--creates`` schedules (default 1,000) made with ``POST /api/schedules``
through the ASGI app in process (httpx's ASGI transport: the app, the facade and the database,
without network), ``--clients`` requests in flight at once. Target: all of them within 5 s.

**13b. Lists at 10,000 API schedules.** The database is filled up to ``--schedules`` API schedules
(through the library), then ``GET /api/schedules?limit=50``, a page filtered by job, one by label,
a search by name and a next page by cursor, ``--requests`` of each, alternated. Target: p99 of each
at most 50 ms.

**13c. A change seen by 3 serves.** Three real ``durably-sched serve --no-worker`` processes on the
same database (JSON logs); ``--changes`` updates of one schedule's cron through the library, one a
second; for each change and serve, the time from the change's commit (its version's ``at``, by the
database's clock) to the serve's log line that applied it. Target: p99 at most 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from ._pg import default_url, fresh_database, unreachable
from ._util import ROOT, emit, median, percentile, scratch_dir

JOBS = ("report", "sync", "billing", "images", "cleanup")


def _jobs() -> list[Any]:
    from durably_sched import Step, define_job

    async def work(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    return [define_job(name=name, run=work) for name in JOBS]


def _body(i: int) -> dict[str, Any]:
    return {
        "name": f"cust-{i:05d}", "cron": f"{i % 60} {i % 24} * * *", "job": JOBS[i % len(JOBS)],
        "input": {"customer": i}, "labels": {"tier": "gold" if i % 10 == 0 else "free"}, "note": "bench",
    }  # fmt: skip


async def _creates_and_lists(url: str, args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from durably_sched import create_durably
    from durably_sched.web import create_app

    durably = create_durably(url).register(_jobs())
    await durably.migrate()
    await durably.start(worker=False)
    app = create_app(durably)
    transport = httpx.ASGITransport(app=app)
    headers = {"X-Durably-CSRF": "1"}
    out: dict[str, Any] = {}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=headers
        ) as http:
            gate = asyncio.Semaphore(args.clients)

            async def post(i: int) -> None:
                async with gate:
                    response = await http.post("/api/schedules", json=_body(i))
                    assert response.status_code == 201, response.text

            started = time.perf_counter()
            await asyncio.gather(*(post(i) for i in range(args.creates)))
            out["creates"] = args.creates
            out["creates_seconds"] = time.perf_counter() - started
            fill = asyncio.Semaphore(16)

            async def create(i: int) -> None:
                async with fill:
                    body = _body(i)
                    await durably.schedules.create(body.pop("name"), **body)

            started = time.perf_counter()
            await asyncio.gather(*(create(i) for i in range(args.creates, args.schedules)))
            out["fill_seconds"] = time.perf_counter() - started
            first = (await http.get("/api/schedules", params={"limit": "50"})).json()
            queries = {
                "first page": {"limit": "50"},
                "by job": {"limit": "50", "job": "billing"},
                "by label": {"limit": "50", "label": "tier:gold"},
                "search": {"limit": "50", "q": "cust-012"},
                "next page": {"limit": "50", "cursor": first["next_cursor"]},
            }
            timings: dict[str, list[float]] = {k: [] for k in queries}
            for _ in range(args.requests):
                for what, params in queries.items():
                    t0 = time.perf_counter()
                    response = await http.get("/api/schedules", params=params)
                    timings[what].append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200 and response.json()["schedules"], (what, response.text)
            out["list_ms"] = {
                k: {"p50": median(v), "p99": percentile(v, 0.99), "max": max(v)} for k, v in timings.items()
            }
    finally:
        await durably.close()
    return out


def _serve(url: str, work: Path, n: int) -> tuple[subprocess.Popen[bytes], Path]:
    log = work / f"serve-{n}.log"
    (work / "bench_jobs.py").write_text(
        "from durably_sched import define_job\n\nasync def work(step, payload):\n    return payload\n\n"
        + "".join(f"job_{i} = define_job(name={name!r}, run=work)\n" for i, name in enumerate(JOBS))
    )
    (work / "schedules.yaml").write_text("schedules: {}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "durably_sched.cli", "--database", url, "--jobs", "bench_jobs", "--schedules",
         str(work / "schedules.yaml"), "serve", "--no-worker", "--log-format", "json"],
        cwd=work, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": f"{work}{os.pathsep}{ROOT}"},
    )  # fmt: skip
    return proc, log


def _applied(log: Path, name: str) -> dict[int, datetime]:
    """{version: when this serve logged that it applied it}."""
    seen: dict[int, datetime] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        message = str(record.get("message", ""))
        if record.get("schedule") == name and " changed (version " in message:
            version = int(message.split("(version ")[1].split(",")[0])
            seen[version] = datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00"))
    return seen


async def _propagation(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from durably_sched import create_durably

    work = scratch_dir("bench-schedules-")
    durably = create_durably(url).register(_jobs())
    await durably.migrate()
    await durably.start(worker=False)
    serves = [_serve(url, work, n) for n in range(3)]
    try:
        await durably.schedules.create("watched", cron="0 0 1 1 *", job="report")
        deadline = time.monotonic() + 60
        while sum("scheduler ready" in log.read_text(errors="replace") for _, log in serves) < 3:
            assert time.monotonic() < deadline, "the serves did not start"
            await asyncio.sleep(0.2)
        committed: dict[int, datetime] = {}
        for i in range(args.changes):
            await durably.schedules.update(
                "watched", cron=f"{i % 60} 0 1 1 *" if i % 2 else f"{i % 60} 1 1 1 *"
            )
            versions = await durably.schedules.versions("watched")
            committed[versions[-1].version] = versions[-1].at
            await asyncio.sleep(1.0)
        await asyncio.sleep(2.0)
        delays: list[float] = []
        missing = 0
        for _, log in serves:
            applied = _applied(log, "watched")
            for version, at in committed.items():
                if version in applied:
                    delays.append((applied[version] - at).total_seconds())
                else:
                    missing += 1
    finally:
        for proc, _ in serves:
            proc.terminate()
        for proc, _ in serves:
            proc.wait(30)
        await durably.close()
    return {
        "changes": args.changes, "serves": 3, "missing": missing, "seen_s_p50": median(delays),
        "seen_s_p99": percentile(delays, 0.99), "seen_s_max": max(delays) if delays else None,
    }  # fmt: skip


async def main(args: argparse.Namespace) -> dict[str, Any]:
    problem = await unreachable(args.postgres)
    if problem is not None:
        return {"skipped": problem}
    result: dict[str, Any] = {}
    async with fresh_database(args.postgres, "bench_sched") as url:
        result.update(await _creates_and_lists(url, args))
    async with fresh_database(args.postgres, "bench_sched") as url:
        result.update(await _propagation(url, args))
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--postgres", default=default_url())
    p.add_argument("--creates", type=int, default=1000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--schedules", type=int, default=10_000)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--changes", type=int, default=20)
    return p


if __name__ == "__main__":
    emit(asyncio.run(main(parser().parse_args())))
