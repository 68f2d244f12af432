"""The PostgreSQL server's physical reference (``python -m bench.pg_commit``).

What one connection can do at best on this server, with nothing of either library in the way:

* **one-row commits/s**: sequential ``INSERT`` of one row, each its own transaction (autocommit,
  so one round trip and one WAL flush per commit with ``synchronous_commit=on``), on one asyncpg
  connection, with a prepared statement. A durable checkpoint needs at least one such commit, so
  this bounds checkpointed steps/s in one run.
* **round trips/s**: sequential ``SELECT 1`` on the same connection (no commit, no WAL): the cost
  of a round trip alone, the other part of every store operation.

Runs in a database created for it on the server of ``--postgres`` (dropped afterwards), like both
libraries' PostgreSQL measurements. Prints one result line (see bench/_util.py).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from ._pg import default_url, fresh_database, one_row_insert, server_settings, unreachable
from ._util import emit


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg

    why = await unreachable(args.postgres)
    if why is not None:
        return {"skipped": why}
    async with fresh_database(args.postgres, "bench_commit") as url:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            settings = await server_settings(conn)
            insert = await one_row_insert(conn)
            select = await conn.prepare("SELECT 1")
            for i in range(200):  # warm-up: the table's first pages, the plan
                await insert.fetchval(f"warm-{i}")
                await select.fetchval()

            t0 = time.perf_counter()
            for i in range(args.commits):
                await insert.fetchval(f"row-{i}")
            commit_seconds = time.perf_counter() - t0

            t0 = time.perf_counter()
            for _ in range(args.round_trips):
                await select.fetchval()
            trip_seconds = time.perf_counter() - t0
            rows = await conn.fetchval("SELECT count(*) FROM t")
        finally:
            await conn.close()
    return {
        "commits": {"count": args.commits, "seconds": commit_seconds, "rate": args.commits / commit_seconds},
        "round_trips": {
            "count": args.round_trips,
            "seconds": trip_seconds,
            "rate": args.round_trips / trip_seconds,
            "us_each": 1e6 * trip_seconds / args.round_trips,
        },
        "rows_committed": rows,
        "server": settings,
        "synchronous_commit": settings["synchronous_commit"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--postgres", metavar="URL", default=default_url(), help="a database on the server")
    parser.add_argument("--commits", type=int, default=5000)
    parser.add_argument("--round-trips", type=int, default=5000)
    return parser.parse_args(argv)


if __name__ == "__main__":
    emit(asyncio.run(measure(parse_args())))
