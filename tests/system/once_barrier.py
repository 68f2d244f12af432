"""Run the durably-sched CLI with a barrier after the scheduler has read its cursors.

``python once_barrier.py BARRIER_DIR <cli args...>``: once ``Scheduler.load`` has read the cursors,
the process writes ``BARRIER_DIR/ready-<pid>`` and waits for ``BARRIER_DIR/go``. A test starts
several ``serve --once`` processes this way and lets them go together, so that every one of them
works out the same due fire times from the same cursors and they really race to fire each one --
without the barrier the first process to start usually fires everything before the others have
even read the cursors, and the others then see nothing due.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from durably_sched.schedule import scheduler


def main() -> None:
    barrier = Path(sys.argv[1])
    original = scheduler.Scheduler.load

    async def load_then_wait(self: scheduler.Scheduler) -> None:
        await original(self)
        (barrier / f"ready-{os.getpid()}").touch()
        while not (barrier / "go").exists():  # noqa: ASYNC110 - set by another process
            await asyncio.sleep(0.01)

    scheduler.Scheduler.load = load_then_wait  # type: ignore[method-assign]
    from durably_sched.cli import main as cli

    sys.argv = ["durably-sched", *sys.argv[2:]]
    cli()


if __name__ == "__main__":
    main()
