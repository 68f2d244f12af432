"""A worker process for bench/postgres.py: ``python -m bench.pg_worker --database URL``.

Registers the benchmark job, starts the worker, prints READY, runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from durably_sched import Step, create_durably, define_job


async def noop() -> None:
    return None


async def one_step(step: Step, _p: dict[str, Any]) -> dict[str, Any]:
    await step.run("noop", noop)
    return {}


JOB = define_job(name="one-step", run=one_step)


async def main(args: argparse.Namespace) -> None:
    durably = create_durably(
        args.database, max_concurrent_runs=args.concurrency, polling_interval=args.polling_interval
    ).register([JOB])
    await durably.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    await stop.wait()
    await durably.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database", required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--polling-interval", type=float, default=1.0)
    asyncio.run(main(parser.parse_args()))
