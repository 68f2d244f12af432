"""Benchmark 10: failures (``python -m bench.failures ...``, also ``python -m bench.run --only failures``).

9. **Takeover**: the time from kill -9 of a ``durably-sched serve`` in the middle of a run to the
   next step of that run starting in a ``serve`` restarted at once on the same host, with serve's
   defaults (stale threshold 30 s, heartbeat 5 s, polling 1 s). The restarted serve finds the dead
   worker in the registry, sees that its process is gone and resumes its run at once instead of
   waiting for the lease to expire; the figure includes the new process's start (imports, migrate,
   the first claim). Target: ≤ 2 s (the release before it waited for the lease: ≈ 30 s).
   ``--durably-root DIR`` runs the serves from another checkout (e.g. the previous release) to
   measure the same thing there.
9b. **Retries configured**: checkpointed no-op steps/s in one run, and one-step runs/s (50
   triggered and awaited at once), with a job that has a retry policy and one that has none,
   alternating in one process, on SQLite (WAL, NORMAL) and PostgreSQL. A retry policy costs nothing
   on the success path: it is read only when an attempt fails.

Prints one result line (see bench/_util.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from durably_sched import Retry, Step, create_durably, define_job

from ._pg import default_url, fresh_database, unreachable
from ._util import ROOT, emit, scratch_dir

JOBS_MODULE = "failbench_jobs"
CLI = (sys.executable, "-m", "durably_sched.cli")
JOBS_SOURCE = '''
"""Jobs for bench/failures.py: each step appends "<pid> <run id> <index> <time>" to $FAILBENCH_EFFECTS."""
import os
import time

from durably_sched import Step, define_job


def _record(run_id, index):
    with open(os.environ["FAILBENCH_EFFECTS"], "a") as fh:
        fh.write(f"{os.getpid()} {run_id} {index} {time.time():.6f}\\n")


async def chain(step: Step, payload: dict) -> dict:
    for i in range(int(payload["steps"])):
        def work(i=i):
            _record(step.run_id, i)
            time.sleep(float(payload["step_seconds"]))
            return i
        await step.run(f"step-{i}", work)
    return {}


chain_job = define_job(name="chain", run=chain)
'''


# -- 9. takeover -----------------------------------------------------------------------------------


class _Serve:
    def __init__(self, url: str, workdir: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        schedules = str(workdir / "schedules.yaml")
        self.proc = subprocess.Popen(
            [
                *CLI,
                "--database",
                url,
                "--jobs",
                JOBS_MODULE,
                "--schedules",
                schedules,
                "serve",
                "--retention",
                "off",
            ],
            cwd=workdir,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool:
        return "serve started" in self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.005)


def _steps(effects: Path, run_id: str) -> list[tuple[int, int, float]]:
    out = []
    if effects.exists():
        for line in effects.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[1] == run_id:
                out.append((int(parts[0]), int(parts[2]), float(parts[3])))
    return out


def _ran(effects: Path, run_id: str, pid: int, index: int) -> bool:
    return any(p == pid and i >= index for p, i, _ in _steps(effects, run_id))


def _first_step_at(effects: Path, run_id: str, pid: int) -> float | None:
    return next((t for p, _, t in _steps(effects, run_id) if p == pid), None)


def _started_at(log: Path) -> float | None:
    """When a serve logged "serve started" (its lines begin with an ISO time), as a Unix time."""
    for line in log.read_text(errors="replace").splitlines():
        if "serve started" in line:
            try:
                return datetime.fromisoformat(line.split()[0]).timestamp()
            except ValueError:
                return None
    return None


def _trigger(url: str, work: Path, env: dict[str, str]) -> str:
    """A 40-step run, made by the CLI of the code under test (its schema, its job module)."""
    payload = json.dumps({"steps": 40, "step_seconds": 0.1})
    done = subprocess.run(
        [*CLI, "--database", url, "--jobs", JOBS_MODULE, "trigger", "chain", "--json", "--input", payload],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"trigger failed: {done.stderr.strip()}")
    run_id: str = json.loads(done.stdout)["id"]
    return run_id


def measure_takeover(url: str, rounds: int, durably_root: Path, work: Path) -> dict[str, Any]:
    """kill -9 mid-run, restart at once; seconds until the run's next step starts, per round."""
    (work / f"{JOBS_MODULE}.py").write_text(JOBS_SOURCE)
    (work / "schedules.yaml").write_text("schedules: {}\n")
    effects = work / "effects.log"
    env = {
        **os.environ,
        "PYTHONPATH": f"{durably_root}{os.pathsep}{work}",
        "FAILBENCH_EFFECTS": str(effects),
    }
    samples: list[float] = []
    startups: list[float] = []
    current = _Serve(url, work, env, work / "serve-0.log")
    try:
        _wait(current.ready, 120, "the first serve started")
        for n in range(rounds):
            run_id = _trigger(url, work, env)
            pid = current.proc.pid
            _wait(lambda r=run_id, w=pid: _ran(effects, r, w, 2), 120, "steps ran")
            current.proc.send_signal(signal.SIGKILL)
            killed = time.time()
            current.proc.wait(10)
            restarted = _Serve(url, work, env, work / f"serve-{n + 1}.log")
            current = restarted
            new_pid = restarted.proc.pid
            first = _wait(
                lambda r=run_id, w=new_pid: _first_step_at(effects, r, w),
                180,
                "the run resumed in the restarted serve",
            )
            samples.append(first - killed)
            _wait(restarted.ready, 60, "the restarted serve logged its start")
            started = _started_at(restarted.log)
            if started is not None:
                startups.append(started - killed)
    finally:
        current.stop()
    return {
        "rounds": rounds,
        "seconds": samples,
        "median_s": statistics.median(samples),
        "max_s": max(samples),
        "startup_median_s": statistics.median(startups) if startups else None,
        "durably_root": str(durably_root),
    }


# -- 9b. retries configured ------------------------------------------------------------------------


async def _noop() -> None:
    return None


async def _many(step: Step, p: dict[str, Any]) -> dict[str, Any]:
    for i in range(p["n"]):
        await step.run(f"s{i}", _noop)
    return {}


PLAIN = define_job(name="plain", run=_many)
RETRIED = define_job(
    name="retried", run=_many, retry=Retry(max_attempts=5, backoff="1s", max_backoff="1m"), timeout="1h"
)


async def measure_retries(url: str, steps: int, runs: int, reps: int) -> dict[str, Any]:
    out: dict[str, dict[str, list[float]]] = {
        name: {"steps_per_s": [], "runs_per_s": []} for name in ("plain", "retried")
    }
    async with create_durably(url, max_concurrent_runs=64).register([PLAIN, RETRIED]) as durably:
        for job in ("plain", "retried"):
            await durably.job(job).trigger_and_wait({"n": 100})  # warm-up
        for rep in range(reps):
            order = ("plain", "retried") if rep % 2 == 0 else ("retried", "plain")
            for name in order:
                handle = durably.job(name)
                t0 = time.perf_counter()
                await handle.trigger_and_wait({"n": steps})
                out[name]["steps_per_s"].append(steps / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                await asyncio.gather(*(handle.trigger_and_wait({"n": 1}) for _ in range(runs)))
                out[name]["runs_per_s"].append(runs / (time.perf_counter() - t0))
    summary: dict[str, Any] = {"reps": reps, "steps": steps, "runs": runs, "raw": out}
    for name, figures in out.items():
        summary[name] = {key: statistics.median(values) for key, values in figures.items()}
    summary["steps_ratio"] = summary["retried"]["steps_per_s"] / summary["plain"]["steps_per_s"]
    summary["runs_ratio"] = summary["retried"]["runs_per_s"] / summary["plain"]["runs_per_s"]
    return summary


# -- the program -----------------------------------------------------------------------------------


async def _on_postgres(base: str, what: Any) -> Any:
    async with fresh_database(base, "bench_failures") as url:
        return await what(url)


def main(args: argparse.Namespace) -> dict[str, Any]:
    which = {w.strip() for w in args.only.split(",") if w.strip()}
    out: dict[str, Any] = {}
    postgres = None if args.no_postgres else args.postgres
    skipped = asyncio.run(unreachable(postgres)) if postgres else "not asked for (--no-postgres)"
    if skipped:
        out["postgres_skipped"] = skipped
    backends = ["sqlite"] + (["postgres"] if not skipped else [])
    root = Path(args.durably_root).resolve()
    if "takeover" in which:
        out["takeover"] = {}
        for backend in backends:
            work = scratch_dir(f"bench-takeover-{backend}-")
            if backend == "sqlite":
                url = f"sqlite:///{work / 'takeover.db'}"
                out["takeover"][backend] = measure_takeover(url, args.rounds, root, work)
            else:
                assert postgres is not None

                async def run(url: str, work: Path = work) -> dict[str, Any]:
                    return await asyncio.to_thread(measure_takeover, url, args.rounds, root, work)

                out["takeover"][backend] = asyncio.run(_on_postgres(postgres, run))
    if "retries" in which:
        out["retries"] = {}
        for backend in backends:
            if backend == "sqlite":
                tmp = scratch_dir("bench-retries-")
                url = f"sqlite:///{tmp / 'retries.db'}?synchronous=normal"
                out["retries"][backend] = asyncio.run(measure_retries(url, args.steps, args.runs, args.reps))
            else:
                assert postgres is not None

                async def run_retries(url: str) -> dict[str, Any]:
                    return await measure_retries(url, args.steps, args.runs, args.reps)

                out["retries"][backend] = asyncio.run(_on_postgres(postgres, run_retries))
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="takeover,retries", help="takeover, retries (comma-separated)")
    parser.add_argument("--rounds", type=int, default=5, help="kill -9 and restart rounds per backend")
    parser.add_argument("--steps", type=int, default=3000, help="steps of the one-run measurement")
    parser.add_argument("--runs", type=int, default=500, help="one-step runs per runs/s measurement")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of each retries figure")
    parser.add_argument("--postgres", metavar="URL", default=default_url(), help="PostgreSQL server to use")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--durably-root",
        default=str(ROOT),
        metavar="DIR",
        help="where the serves of the takeover benchmark import durably_sched from (default: this checkout)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    emit(main(parse_args()))
