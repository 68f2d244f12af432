"""`serve` on PostgreSQL keeps working when the database drops its connections."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from durably_sched import create_durably

from .chaos_jobs import chain_job, tick_job
from .serve_procs import Serve

pytestmark = pytest.mark.system


async def _terminate_backends(url: str) -> int:
    parts = urlsplit(url)
    dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    conn = await asyncpg.connect(dsn)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return int(killed)
    finally:
        await conn.close()


async def _round_trip(url: str, steps: int) -> str:
    async with create_durably(url).register([chain_job, tick_job]) as durably:
        await durably.stop()  # this process only triggers; `serve` executes
        run = await durably.jobs.chain.trigger({"steps": steps, "step_seconds": 0.01})
        record = await durably.wait_for_run(run.id, timeout=60)
        return record.status


def test_serve_survives_terminated_connections(postgres_schema_url: str, tmp_path: Path) -> None:
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text("schedules: {}\n")
    serve = Serve(
        postgres_schema_url,
        schedules,
        tmp_path,
        "--polling-interval",
        "0.2",
        env={"CHAOS_EFFECTS": str(tmp_path / "fx")},
    ).start()
    try:
        assert asyncio.run(_round_trip(postgres_schema_url, 2)) == "completed"
        for _ in range(2):
            # Every connection of serve (pool and LISTEN) is cut; the next run must still complete.
            assert asyncio.run(_terminate_backends(postgres_schema_url)) >= 1
            assert asyncio.run(_round_trip(postgres_schema_url, 3)) == "completed"
    finally:
        code = serve.stop()
    assert code == 0, serve.output()[-3000:]
