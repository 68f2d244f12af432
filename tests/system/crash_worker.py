"""A worker process for crash tests: runs jobs whose side effects are appended to a file.

Usage: python crash_worker.py DATABASE_URL EFFECTS_FILE
Each step of the ``chain`` job appends ``<run_id> <step> start`` before its work and
``<run_id> <step> done`` after it, so a test can tell which steps ran and how often.
With ``CRASH_WORKER_TRIGGER=N`` the worker, once ready, also calls ``trigger_and_wait`` for a chain
of N steps itself (its own worker has a free slot: the run is created already claimed by it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from typing import Any

from durably_sched import Step, create_durably, define_job

EFFECTS = sys.argv[2] if len(sys.argv) > 2 else "effects.log"


def record(line: str) -> None:
    with open(EFFECTS, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()
        os.fsync(fh.fileno())


async def chain(step: Step, payload: dict[str, Any]) -> dict[str, Any]:
    total = 0
    for i in range(payload["steps"]):

        def work(i: int = i) -> int:
            record(f"{step.run_id} {i} start")
            time.sleep(payload.get("step_seconds", 0.3))
            record(f"{step.run_id} {i} done")
            return i

        total += await step.run(f"step-{i}", work)
        await step.progress(i + 1, payload["steps"])
    return {"total": total}


chain_job = define_job(name="chain", run=chain)


async def main() -> None:
    stale = float(os.environ.get("CRASH_WORKER_STALE", "1.0"))
    durably = create_durably(
        sys.argv[1],
        polling_interval=0.05,
        heartbeat_interval=stale / 5,
        stale_threshold=stale,
        max_concurrent_runs=4,
    ).register([chain_job])
    await durably.init()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    steps = int(os.environ.get("CRASH_WORKER_TRIGGER", "0"))
    try:
        if steps:
            await durably.jobs.chain.trigger_and_wait({"steps": steps, "step_seconds": 0.3})
        await stop.wait()
    finally:
        await durably.close()


if __name__ == "__main__":
    asyncio.run(main())
