"""What keeping every attempt costs a finished run: ``python -m bench.attempts``.

The statement that finishes a run (to completed, or failed for every third run), one commit each,
as complete_run and fail_run send it, on SQLite (a fresh file, WAL, synchronous=NORMAL) and on
PostgreSQL (a fresh database on ``--postgres``, skipped when unreachable), with the trigger that
records the attempt (migration 0007, ``runs_attempt_ended``) and with it dropped, in alternating
rounds (median of :data:`ROUNDS`). The difference is what recording the attempt in the finishing
write costs; there is no other statement, round trip or commit for it. Runs of no schedule, so the
schedule-state trigger is skipped in both variants. About a minute on the 2-core test machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import uuid

from ._pg import default_url, fresh_database, unreachable
from ._util import scratch_dir
from .schedule_states import _pg_finish, _sqlite_finish

ROUNDS = 7
TRIGGER = "runs_attempt_ended"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=default_url(), help="a database URL on the PostgreSQL server")
    args = parser.parse_args()
    folder = scratch_dir("attempts")
    problem = await unreachable(args.postgres)
    backends = ["sqlite"] if problem is not None else ["sqlite", "postgres"]
    if problem is not None:
        print(json.dumps({"backend": "postgres", "skipped": problem}))
    for backend in backends:
        results: dict[str, list[float]] = {"with_trigger": [], "without_trigger": []}
        for _ in range(ROUNDS):  # alternate, so drifting load hits both variants alike
            for trigger in (True, False):
                if backend == "sqlite":
                    path = folder / f"{uuid.uuid4().hex[:8]}.db"
                    took = _sqlite_finish(path, trigger, False, TRIGGER)
                else:
                    async with fresh_database(args.postgres, "bench_attempts") as url:
                        took = await _pg_finish(url, trigger, False, TRIGGER)
                results["with_trigger" if trigger else "without_trigger"].append(took)
        medians = {k: round(statistics.median(v), 1) for k, v in results.items()}
        print(
            json.dumps(
                {
                    "backend": backend,
                    "figure": "finishing a run: the UPDATE to completed/failed, one commit each, us",
                    **medians,
                    "attempt_cost_us": round(medians["with_trigger"] - medians["without_trigger"], 1),
                    "rounds": ROUNDS,
                }
            )
        )


if __name__ == "__main__":
    asyncio.run(main())
