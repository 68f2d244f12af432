"""Benchmark 9: the web layer (``python -m bench.web``, or ``python -m bench.run --only web``).

**9a. Live streams under load.** One process like ``serve --http``: a worker (50 slots) and the web
app (uvicorn) on one event loop, a SQLite file (WAL, synchronous=NORMAL). 50 runs of ``--steps``
checkpointed steps, each followed by ``step.progress`` (the pattern that makes live streams busy),
are created while the worker is stopped; then the worker starts and the time until all 50 complete
gives steps/s. With clients: another process holds 100 server-sent event streams open first (50 on
``/api/runs/{id}/events``, one per run, 50 on ``/api/runs/events``) and reads every event. Without
and with clients alternate, repetition by repetition. Target: steps/s drop at most 10 %. Also
reported, from each repetition's pair: the drop within the pair, and the server CPU the streams
add per step (µs, and as a share of the CPU without them), medians over the repetitions; and how long
after the last run finished the client had its stream's last event (the price in freshness of any
pacing of the streams: record 53 of docs/design.md). Each round also reports its kernel CPU (a write
to a client on this machine runs loopback TCP's receive path in the server's system call) and the
time Python's cyclic garbage collector took, so that neither is mistaken for the streams' own code.
``--streams-from`` says where the streams are served: ``worker`` as above (``sse`` in the result),
``dashboard`` by a dashboard-only ``serve --no-scheduler --no-worker --http`` on the same file,
started before each round of both sides, the worker here serving no HTTP (``sse_dashboard``; it
adds that serve's CPU per delivered step). The target is judged on the second, the configuration
docs/dashboard.md gives for many viewers (record 55 of docs/design.md); the first is reported beside it.

**9b. Run lists at 10^6 runs.** A SQLite file holding ``--history`` runs (five jobs, all statuses,
half with a schedule label; the schema's own tables and indexes, written with executemany), then
``GET /api/runs`` through the ASGI app in process (httpx's ASGI transport: the app, the store and
the database, without network): the first page (50 runs and the capped total), a page filtered by
job and status, a label-filtered page and the next page through a cursor. Target: p99 at most 50 ms.

**9c. What one delivered step costs a stream** (``--part events``), in process, on the 50 runs of
9a after they completed: reading each run's next 40 steps (as a feed tick does), merging the
sources, building the events and writing their frames, in µs per delivered step, the minimum over
5 passes. No target of its own: the part of 9a's cost that a change to the stream's code moves,
measured without 9a's dependence on how fast the machine happens to be.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import sqlite3
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ._util import ROOT, emit, median, percentile, proc_cpu_seconds, scratch_dir

RUNS = 50
JOBS = ("reports", "images", "sync", "billing", "cleanup")
STATUSES = ("completed", "completed", "completed", "completed", "failed", "cancelled")


# -- 9a: streams under load ------------------------------------------------------------------------------
def _job(steps: int, step_ms: float) -> Any:
    from durably_sched import Step, define_job

    async def work(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
        for i in range(steps):

            async def value(i: int = i) -> int:  # async: measures the store, not thread hops
                if step_ms:
                    await asyncio.sleep(step_ms / 1000)  # a step that waits on I/O
                return i

            await step.run(f"s{i}", value)
            await step.progress(i + 1, steps)
        return {"steps": steps}

    return define_job(name="bench-web", run=work)


async def _pending_runs(prefix: str, steps: int, step_ms: float) -> tuple[Any, list[Any]]:
    """A Durably on a new SQLite file, its worker not started, and the :data:`RUNS` runs of
    ``steps`` steps each it holds pending (9a and 9c)."""
    from durably_sched import Durably
    from durably_sched.store import open_store

    path = scratch_dir(prefix) / "bench.db"
    durably = Durably(open_store(f"sqlite:///{path}"), max_concurrent_runs=RUNS, polling_interval=0.05)
    durably.register([_job(steps, step_ms)])
    await durably.migrate()
    await durably.start(worker=False)
    return durably, [await durably.trigger("bench-web", {}) for _ in range(RUNS)]


class _CollectorTime:
    """Python's cyclic garbage collector while it counts: full collections and seconds in all."""

    def __init__(self) -> None:
        self.full = 0
        self.seconds = 0.0
        self._began = 0.0
        gc.callbacks.append(self._event)

    def _event(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._began
        self.full += info["generation"] == 2

    def stop(self) -> None:
        gc.callbacks.remove(self._event)


async def _load_round(
    steps: int, clients: int, step_ms: float = 0.0, dashboard: bool = False
) -> dict[str, Any]:
    """One round of 9a. ``dashboard``: the streams come from a dashboard-only serve on the same
    file (``serve --no-scheduler --no-worker --http``), not from the worker's process."""
    durably, runs = await _pending_runs("durably-bench-web-", steps, step_ms)
    web = await (_DashboardServe.start(durably) if dashboard else _InProcessWeb.start(durably))
    reader: asyncio.subprocess.Process | None = None
    try:
        if clients:
            # The clients stand for browsers on other machines: niced, so that on a small machine
            # reading 100 streams does not take the CPU the server under test needs.
            command = [sys.executable, "-m", "bench.web", "--clients", str(clients), "--port", str(web.port)]
            reader = await asyncio.create_subprocess_exec(
                "nice", "-n", "19", *command,
                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while await web.subscribers() < clients:
                if time.monotonic() > deadline or reader.returncode is not None:
                    raise RuntimeError(f"only {await web.subscribers()} of {clients} streams connected")
                await asyncio.sleep(0.05)
        collections = _CollectorTime()
        try:
            cpu0, sys0, web0 = time.process_time(), os.times().system, web.cpu_seconds()
            t0 = time.perf_counter()
            durably.worker.start()
            for run in runs:
                await durably.wait_for_run(run.id, timeout=600)
            elapsed = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            kernel = os.times().system - sys0
            web_cpu = web.cpu_seconds() - web0
        finally:
            collections.stop()
        finished_at = time.time()
        received = None
        if reader is not None:
            out, _ = await asyncio.wait_for(reader.communicate(), 120)
            received = json.loads(out.decode().strip().splitlines()[-1])
        return {
            "clients": clients,
            "streams_from": "dashboard serve" if dashboard else "worker process",
            # How long after the last run finished the client had its stream's last event.
            "stream_lag_s": None if received is None else received.pop("ended_at") - finished_at,
            "steps": RUNS * steps,
            "seconds": elapsed,
            "steps_per_s": RUNS * steps / elapsed,
            "server_cpu_seconds": cpu,
            "server_kernel_seconds": kernel,
            # The dashboard serve's own CPU (user + system), when the streams come from it.
            "dashboard_cpu_seconds": web_cpu if dashboard else None,
            "feed_polls": durably.feed.polls,
            "gc_full": collections.full,
            "gc_seconds": collections.seconds,
            "received": received,
        }
    finally:
        if reader is not None and reader.returncode is None:
            reader.kill()
            await reader.wait()
        await web.close()
        await durably.close()


class _InProcessWeb:
    """The web app on the worker's own loop, as ``serve --http`` runs it."""

    def __init__(self, durably: Any, server: Any) -> None:
        self.durably = durably
        self.server = server
        self.port: int = server.port

    @classmethod
    async def start(cls, durably: Any) -> _InProcessWeb:
        from durably_sched.web import create_app
        from durably_sched.web.server import start_server

        return cls(durably, await start_server(create_app(durably, stream_seconds=3600), "127.0.0.1", 0))

    async def subscribers(self) -> int:
        return int(self.durably.feed.subscribers)

    def cpu_seconds(self) -> float:
        return 0.0  # counted in the worker process's own CPU

    async def close(self) -> None:
        await self.server.close()


class _DashboardServe:
    """``durably-sched serve --no-scheduler --no-worker --http`` on the bench's database file."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    @classmethod
    async def start(cls, durably: Any) -> _DashboardServe:
        folder = scratch_dir("durably-bench-dashboard-")
        log = folder / "serve.log"
        (folder / "nojobs.py").write_text("")
        command = [
            sys.executable, "-m", "durably_sched.cli", "--database", durably.store.url, "--jobs", "nojobs",
            "serve", "--no-scheduler", "--no-worker", "--http", "127.0.0.1:0", "--retention", "off",
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *command, cwd=folder, stdout=out, stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}"},
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            found = re.search(r"on http://127\.0\.0\.1:(\d+)", log.read_text())
            if found and "serve started" in log.read_text():
                return cls(proc, int(found.group(1)))
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard serve did not start:\n{log.read_text()[-2000:]}")
            await asyncio.sleep(0.05)

    async def subscribers(self) -> int:
        import httpx

        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{self.port}/metrics")).text
        found = re.search(r"^durably_stream_subscribers (\S+)$", text, re.M)
        return int(float(found.group(1))) if found else 0

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await asyncio.wait_for(self.proc.wait(), 30)


async def _clients(port: int, count: int) -> None:
    """The client side of 9a: ``count`` streams, read until the watched runs end."""
    import httpx

    base = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(
        base_url=base, timeout=None, limits=httpx.Limits(max_connections=count + 5)
    ) as http:
        pending = (await http.get("/api/runs", params={"status": "pending", "limit": str(RUNS)})).json()[
            "runs"
        ]
        ids = [r["id"] for r in pending]
        counts: dict[str, float] = {"run_events": 0, "list_events": 0, "runs_ended": 0}
        done = asyncio.Event()

        async def watch(path: str, kind: str) -> None:
            async with http.stream("GET", path) as response:
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        counts[kind] += 1
                        if kind == "list_events" and done.is_set():
                            return
            if kind == "run_events":
                counts["runs_ended"] += 1
                if counts["runs_ended"] == per_run:
                    counts["ended_at"] = time.time()
                    done.set()

        per_run = count // 2
        tasks = [
            asyncio.create_task(watch(f"/api/runs/{ids[i % len(ids)]}/events", "run_events"))
            for i in range(per_run)
        ]
        tasks += [
            asyncio.create_task(watch("/api/runs/events", "list_events")) for _ in range(count - per_run)
        ]
        await done.wait()
        await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(counts), flush=True)


# -- 9c: what one delivered step costs a stream, in process ---------------------------------------------
async def _event_costs(steps: int, chunk: int, repeats: int) -> dict[str, Any]:
    """Per delivered step: the store read of each run's next ``chunk`` steps (as a feed tick reads
    them), merging the sources, building the events and writing each event's frame. The minimum
    over ``repeats`` passes: the work is the same each pass, so the minimum is the least disturbed
    by the rest of a shared machine (9a's steps/s is not; see its figures)."""
    from durably_sched.events import run_scope
    from durably_sched.store.run_events import StreamPosition
    from durably_sched.stream.feed import NO_LOGS
    from durably_sched.stream.reader import build_events, merge
    from durably_sched.web.api import _render_run_event

    durably, runs = await _pending_runs("durably-bench-events-", steps, 0.0)
    try:
        durably.worker.start()
        for run in runs:
            await durably.wait_for_run(run.id, timeout=600)
        store = durably.store
        ids = [run.id for run in runs]
        records = await store.get_runs_by_id(ids)
        best: dict[str, float] = {}
        delivered = 0
        for _ in range(repeats):
            took = {"read": 0.0, "merge": 0.0, "build": 0.0, "frame": 0.0}
            delivered = 0
            for start in range(0, steps, chunk):
                t0 = time.perf_counter()
                # Past every transition and log line: a busy run's tick finds only new steps.
                batches = await store.get_run_streams(
                    {i: StreamPosition(NO_LOGS, start, NO_LOGS) for i in ids}, chunk
                )
                t1 = time.perf_counter()
                merged = [(run_id, merge(batch)) for run_id, batch in batches.items()]
                t2 = time.perf_counter()
                events = []
                for run_id, rows in merged:
                    record = records[run_id]
                    events += build_events(rows, record, record.progress, run_scope(record))
                t3 = time.perf_counter()
                frames = [_render_run_event(event) for event in events]
                t4 = time.perf_counter()
                delivered += len(frames)
                for name, seconds in zip(took, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    took[name] += seconds
            for name, seconds in took.items():
                best[name] = min(best.get(name, seconds), seconds)
        per_step = {f"{name}_us": 1e6 * seconds / delivered for name, seconds in best.items()}
        return {
            "runs": RUNS,
            "steps_per_run": steps,
            "chunk": chunk,
            "repeats": repeats,
            **per_step,
            "total_us": sum(per_step.values()),
        }
    finally:
        await durably.close()


# -- 9b: run lists at 10^6 runs ---------------------------------------------------------------------------
def _fill(path: Path, count: int) -> float:
    t0 = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    base = int(time.time() * 1000) - 10 * count
    batch = 50_000
    for start in range(0, count, batch):
        rows = []
        labels = []
        for i in range(start, min(count, start + batch)):
            status = STATUSES[i % len(STATUSES)]
            schedule = f"nightly-{i % 40}" if i % 2 else None
            t = base + i * 10
            rows.append(
                (
                    i + 1, str(uuid.UUID(int=i + 1)), JOBS[i % len(JOBS)], status,
                    json.dumps({"schedule": schedule}) if schedule else "{}", schedule,
                    t, t + 1, t + 5, t + 5,
                )
            )  # fmt: skip
            if schedule:
                labels.append(("schedule", schedule, i + 1))
        conn.executemany(
            "INSERT INTO runs (seq, id, job_name, status, input, labels, schedule_name, generation, "
            "worker_id, step_count, attempt, created_at, started_at, completed_at, updated_at) "
            "VALUES (?, ?, ?, ?, '{}', ?, ?, 1, 'w', 1, 1, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany("INSERT INTO run_labels (key, value, seq) VALUES (?, ?, ?)", labels)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()
    return time.perf_counter() - t0


async def _list_pages(history: int, repeats: int) -> dict[str, Any]:
    import httpx

    from durably_sched import Durably
    from durably_sched.store import open_store
    from durably_sched.web import create_app

    folder = scratch_dir("durably-bench-list-")
    path = folder / "history.db"
    durably = Durably(open_store(f"sqlite:///{path}"))
    await durably.migrate()
    await durably.close()
    fill_seconds = _fill(path, history)
    durably = Durably(open_store(f"sqlite:///{path}"))
    await durably.start(worker=False)
    app = create_app(durably)
    pages = {
        "first_page": "/api/runs?limit=50",
        "job_and_status": "/api/runs?limit=50&job=billing&job=images&status=failed&status=cancelled",
        "label": "/api/runs?limit=50&label.schedule=nightly-7",
        "next_page": None,
    }
    out: dict[str, Any] = {"history": history, "fill_seconds": fill_seconds}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost"
        ) as http:
            first = (await http.get("/api/runs?limit=50")).json()
            pages["next_page"] = f"/api/runs?limit=50&cursor={first['next']}"
            for name, url in pages.items():
                assert url is not None
                samples = []
                body: dict[str, Any] = {}
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    response = await http.get(url)
                    samples.append((time.perf_counter() - t0) * 1000)
                    body = response.json()
                    assert response.status_code == 200, body
                out[name] = {
                    "url": url,
                    "p50_ms": median(samples),
                    "p99_ms": percentile(samples, 0.99),
                    "runs": len(body["runs"]),
                    "total": body["total"],
                    "total_capped": body["total_capped"],
                }
    finally:
        await durably.close()
    return out


def _load_figures(steps: int, reps: int, step_ms: float, dashboard: bool) -> dict[str, Any]:
    """9a for one step kind: ``reps`` rounds without and with clients, alternating, and the figures."""
    rounds: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    for rep in range(reps):
        for side in ("without", "with") if rep % 2 == 0 else ("with", "without"):
            clients = 100 if side == "with" else 0
            rounds[side].append(asyncio.run(_load_round(steps, clients, step_ms, dashboard)))
    without = median([r["steps_per_s"] for r in rounds["without"]])
    with_clients = median([r["steps_per_s"] for r in rounds["with"]])
    # Each repetition's pair, run seconds apart: on a machine whose speed drifts, what the streams
    # add to the server's CPU per step (and its share of the pair's CPU without them) varies less
    # than the steps/s of rounds far apart.
    pairs = list(zip(rounds["without"], rounds["with"], strict=True))
    added = [(w["server_cpu_seconds"] - o["server_cpu_seconds"]) / w["steps"] for o, w in pairs]
    shares = [w["server_cpu_seconds"] / o["server_cpu_seconds"] - 1 for o, w in pairs]
    figures: dict[str, Any] = {
        "runs": RUNS,
        "steps_per_run": steps,
        "step_ms": step_ms,
        "clients": 100,
        "streams_from": "dashboard serve" if dashboard else "worker process",
        "steps_per_s_without": without,
        "steps_per_s_with": with_clients,
        "drop_percent": 100 * (1 - with_clients / without),
        "pair_drop_percent": median([100 * (1 - w["steps_per_s"] / o["steps_per_s"]) for o, w in pairs]),
        # The worker process's CPU: with the streams in a dashboard serve, what they cost it.
        "cpu_added_us_per_step": median([1e6 * a for a in added]),
        "cpu_added_percent": median([100 * x for x in shares]),
        # Of it, the kernel's: a write to a client on this machine runs loopback TCP's receive path
        # in the writer's system call.
        "kernel_added_us_per_step": median(
            [1e6 * (w["server_kernel_seconds"] - o["server_kernel_seconds"]) / w["steps"] for o, w in pairs]
        ),
        "stream_lag_s_median": median([w["stream_lag_s"] for w in rounds["with"]]),
        # Python's cyclic collector, seconds per round (record 54 of docs/design.md).
        "gc_seconds_without": median([r["gc_seconds"] for r in rounds["without"]]),
        "gc_seconds_with": median([r["gc_seconds"] for r in rounds["with"]]),
        "rounds": rounds,
    }
    if dashboard:  # what the streams cost the dashboard serve, per step
        figures["dashboard_cpu_us_per_step"] = median(
            [1e6 * w["dashboard_cpu_seconds"] / w["steps"] for w in rounds["with"]]
        )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=400, help="steps per run in 9a (50 runs)")
    parser.add_argument(
        "--reps", type=int, default=3, help="repetitions of 9a, each without and with clients"
    )
    parser.add_argument(
        "--step-ms",
        default="0,5",
        help="9a step kinds, comma-separated: 0 = no-op steps (CPU-bound, the worst case for streams), "
        "N = steps that wait N ms (I/O-bound)",
    )
    parser.add_argument("--history", type=int, default=1_000_000, help="runs in the table for 9b")
    parser.add_argument("--repeats", type=int, default=200, help="requests per page in 9b")
    parser.add_argument("--part", choices=("all", "load", "lists", "events"), default="all")
    parser.add_argument(
        "--streams-from",
        default="worker,dashboard",
        help="9a: where the streams are served, comma-separated: worker = the worker's own process "
        "(serve --http), dashboard = a dashboard-only serve on the same database",
    )
    parser.add_argument("--clients", type=int, help=argparse.SUPPRESS)  # the client process of 9a
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.clients is not None:
        asyncio.run(_clients(args.port, args.clients))
        return 0
    result: dict[str, Any] = {}
    if args.part in ("all", "load"):
        for where in args.streams_from.split(","):
            key = {"worker": "sse", "dashboard": "sse_dashboard"}[where]
            result[key] = {
                f"step_ms_{step_ms:g}": _load_figures(args.steps, args.reps, step_ms, where == "dashboard")
                for step_ms in (float(x) for x in args.step_ms.split(","))
            }
    if args.part in ("all", "events"):
        result["events"] = asyncio.run(_event_costs(args.steps, 40, 5))
    if args.part in ("all", "lists"):
        result["lists"] = asyncio.run(_list_pages(args.history, args.repeats))
    emit(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
