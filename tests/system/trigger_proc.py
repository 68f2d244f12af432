"""Trigger N runs of the ``chain`` job from a separate process, one trigger call each.

Usage: python trigger_proc.py DATABASE_URL COUNT PREFIX
Prints ``ok <count>`` on success; any exception (e.g. "database is locked") exits non-zero.
"""

from __future__ import annotations

import asyncio
import sys

from crash_worker import chain_job  # type: ignore[import-not-found]

from durably_sched import create_durably


async def main(url: str, count: int, prefix: str) -> None:
    durably = create_durably(url).register([chain_job])
    await durably.migrate()
    try:
        made = 0
        for i in range(count):
            run = await durably.jobs.chain.trigger(
                {"steps": 1, "step_seconds": 0}, idempotency_key=f"{prefix}-{i}"
            )
            made += run.disposition == "created"
        # Triggering the same keys again must not create anything.
        for i in range(0, count, 10):
            again = await durably.jobs.chain.trigger({"steps": 1}, idempotency_key=f"{prefix}-{i}")
            assert again.disposition == "idempotent", again
        print(f"ok {made}", flush=True)
    finally:
        await durably.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
