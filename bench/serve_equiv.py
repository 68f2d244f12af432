"""An in-process equivalent of ``durably-sched serve`` (used by bench/idle.py when the CLI has no
``serve`` command): a Scheduler and a worker on one database, default settings, until SIGTERM.

``python -m bench.serve_equiv --database URL --jobs FILE.py --schedules FILE.yaml``
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import signal
from pathlib import Path
from typing import Any

from durably_sched import JobDefinition, create_durably
from durably_sched.schedule.config import load_schedules
from durably_sched.schedule.scheduler import Scheduler


def load_jobs(path: str) -> list[JobDefinition[Any, Any]]:
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [value for value in vars(module).values() if isinstance(value, JobDefinition)]


async def main(args: argparse.Namespace) -> None:
    jobs = load_jobs(args.jobs)
    config = load_schedules(args.schedules, job_inputs={job.name: job.input for job in jobs})
    durably = create_durably(args.database).register(jobs)
    await durably.migrate()
    scheduler = Scheduler(durably, config)
    scheduler.start()
    await durably.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await scheduler.stop()
    await durably.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", required=True)
    parser.add_argument("--jobs", required=True)
    parser.add_argument("--schedules", required=True)
    asyncio.run(main(parser.parse_args()))
