"""Benchmark 7: an idle ``serve`` process with 1,000 daily schedules: RSS and CPU.

``python -m bench.idle [--warmup 10] [--window 60]``

Starts ``python -m durably_sched.cli --database ... --jobs <file> --schedules <file> serve`` when the
CLI has a ``serve`` command, and otherwise bench/serve_equiv.py (a Scheduler plus a worker in one
process, which is what ``serve`` runs) and says which one it measured. The daily fire times are
placed hours away from now, so nothing fires during the measurement. After the process has
written all 1,000 schedule cursors and a warm-up, CPU is read from /proc/<pid>/stat (utime + stime)
over the window and RSS from /proc/<pid>/status.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._util import ROOT, emit, proc_cpu_seconds, proc_rss_mb, scratch_dir

JOBS_PY = '''"""Jobs for the idle benchmark."""
from durably_sched import Step, define_job


async def _noop():
    return None


async def _report(step: Step, payload: dict) -> dict:
    await step.run("noop", _noop)
    return {}


report = define_job(name="report", run=_report)
'''


def daily_schedules(count: int, now: datetime) -> str:
    """``count`` daily schedules, one per minute starting two hours from now (none fire soon)."""
    lines = ["schedules:"]
    first = now.hour * 60 + now.minute + 120
    for i in range(count):
        minute_of_day = (first + i) % (24 * 60)
        lines += [
            f"  daily-{i:04d}:",
            f'    cron: "{minute_of_day % 60} {minute_of_day // 60} * * *"',
            "    job: report",
        ]
    return "\n".join(lines) + "\n"


def cli_has_serve() -> bool:
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "durably_sched.cli", "serve", "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def cursors_written(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(conn.execute("SELECT count(*) FROM schedule_cursors").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = scratch_dir("bench-idle-")
    db = tmp / "serve.db"
    jobs = tmp / "idle_jobs.py"
    schedules = tmp / "schedules.yaml"
    jobs.write_text(JOBS_PY)
    schedules.write_text(daily_schedules(args.schedules, datetime.now(UTC)))
    url = f"sqlite:///{db}"
    use_cli = args.mode == "cli" or (args.mode == "auto" and cli_has_serve())
    if use_cli:
        cmd = [
            sys.executable,
            "-m",
            "durably_sched.cli",
            "--database",
            url,
            "--jobs",
            str(jobs),
            "--schedules",
            str(schedules),
            "serve",
        ]
        what = "durably-sched serve (CLI subprocess)"
    else:
        cmd = [
            sys.executable,
            "-m",
            "bench.serve_equiv",
            "--database",
            url,
            "--jobs",
            str(jobs),
            "--schedules",
            str(schedules),
        ]
        what = "bench/serve_equiv.py: Scheduler + worker in a subprocess (the CLI had no serve command)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    spawned = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while cursors_written(db) < args.schedules:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{what} exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
                )  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                raise RuntimeError("the serve process did not write its schedule cursors within 120 s")
            time.sleep(0.2)
        ready_after = time.monotonic()
        time.sleep(args.warmup)
        cpu0, t0 = proc_cpu_seconds(proc.pid), time.monotonic()
        rss_samples = []
        while time.monotonic() - t0 < args.window:
            time.sleep(1.0)
            rss_samples.append(proc_rss_mb(proc.pid))
        cpu1, t1 = proc_cpu_seconds(proc.pid), time.monotonic()
        hwm = next(
            (
                int(line.split()[1]) / 1024
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                if line.startswith("VmHWM:")
            ),
            float("nan"),
        )
        runs = sqlite3.connect(db).execute("SELECT count(*) FROM runs").fetchone()[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {
        "measured": what,
        "command": " ".join(cmd).replace(str(tmp), "<tmp>"),
        "schedules": args.schedules,
        "warmup_seconds": args.warmup,
        "window_seconds": round(t1 - t0, 1),
        "cpu_percent": 100 * (cpu1 - cpu0) / (t1 - t0),
        "rss_mb": rss_samples[-1],
        "rss_mb_max": max(rss_samples),
        "rss_peak_mb": hwm,
        "runs_during_measurement": runs,
        "ready_seconds": round(ready_after - spawned, 1),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--mode", choices=["auto", "cli", "equivalent"], default="auto")
    return parser.parse_args(argv)


if __name__ == "__main__":
    emit(main(parse_args()))
