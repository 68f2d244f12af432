"""Every backend error leaves the store as a StoreError subclass with one clear line, the store works
again once the cause goes away, and the CLI prints that line (exit 1) instead of a traceback.

Disk full is made for real (a small tmpfs that fills up, as root) and with SQLite's size limit
(``PRAGMA max_page_count``, everywhere); a locked database by another process holding its write
lock past the busy budget; a read-only one with ``chattr +i`` (root) or permissions; a read-only
PostgreSQL session with a role whose transactions are read-only; an unreachable server on a port
nobody listens on. How ``serve`` lives through these is in tests/system/test_failures_serve.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from durably_sched import (
    DatabaseCorruptError,
    DatabaseLockedError,
    DatabaseReadOnlyError,
    DatabaseUnavailableError,
    DiskFullError,
    Step,
    StoreError,
    create_durably,
    define_job,
)
from durably_sched.cli import main
from durably_sched.store import open_store
from tests.filesystems import fill, read_only_tree, small_disk


async def noop(step: Step, payload: dict[str, Any]) -> None:
    return None


JOB = define_job(name="j", run=noop)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    return text


async def test_sqlite_size_limit_is_disk_full_and_writes_resume_when_raised(tmp_path: Path) -> None:
    durably = create_durably(f"sqlite:///{tmp_path / 'full.db'}").register([JOB])
    await durably.migrate()
    await durably.start(worker=False)
    try:
        conn = durably.store.writer.connection  # type: ignore[attr-defined]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 4}")
        with pytest.raises(DiskFullError) as raised:
            for _ in range(20):
                await durably.jobs.j.batch_trigger([{"blob": "x" * 4000}] * 10)
        assert "is full" in one_line(raised.value) and "full.db" in str(raised.value)
        # Writes queued together fail alone or together, never half-way, never as sqlite3 errors.
        results = await asyncio.gather(
            *(durably.jobs.j.trigger({"blob": "y" * 4000}) for _ in range(30)), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert failures and all(isinstance(r, DiskFullError) for r in failures)
        stored = {r.id for r in await durably.get_runs(limit=10_000)}
        assert {r.id for r in results if not isinstance(r, BaseException)} <= stored
        conn.execute("PRAGMA max_page_count = 1073741823")
        run = await durably.jobs.j.trigger({"after": True})
        assert (await durably.get_run(run.id)).status == "pending"
    finally:
        await durably.close()


async def test_a_full_disk_is_disk_full_and_freeing_space_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "3m") as disk:
        durably = create_durably(f"sqlite:///{disk / 'd.db'}").register([JOB])
        await durably.migrate()
        await durably.start(worker=False)
        try:
            filler = fill(disk)
            with pytest.raises(DiskFullError) as raised:
                for _ in range(200):
                    await durably.jobs.j.batch_trigger([{"blob": "z" * 8000}] * 10)
            assert "is full" in one_line(raised.value)
            filler.unlink()
            run = await durably.jobs.j.trigger({"after": True})
            assert (await durably.get_run(run.id)).status == "pending"
        finally:
            await durably.close()


async def test_a_lock_held_past_the_busy_budget_is_database_locked(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    durably = create_durably(f"sqlite:///{path}?busy_timeout=0.5").register([JOB])
    await durably.migrate()
    await durably.start(worker=False)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process's long write transaction
        with pytest.raises(DatabaseLockedError) as raised:
            await durably.jobs.j.trigger({})
        line = one_line(raised.value)
        assert "stayed locked" in line and "0.5s" in line and "another process holds its write lock" in line
        holder.execute("ROLLBACK")
        run = await durably.jobs.j.trigger({})
        assert (await durably.get_run(run.id)).status == "pending"
    finally:
        holder.close()
        await durably.close()


async def test_a_read_only_database_is_read_only_for_writes_and_readable(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    url = f"sqlite:///{folder / 'ro.db'}"
    durably = create_durably(url).register([JOB])
    await durably.migrate()
    await durably.jobs.j.trigger({})
    await durably.close()  # nobody has the file open now (its -wal and -shm are gone)
    with read_only_tree(folder):
        durably = create_durably(url).register([JOB])
        try:
            with pytest.raises(DatabaseReadOnlyError) as raised:
                await durably.start(worker=False)
                await durably.jobs.j.trigger({})
            assert "not writable" in one_line(raised.value)
        finally:
            await durably.close()
        reader = open_store(url, read_only=True)
        await reader.connect()
        try:
            assert len(await reader.pending_counts()) == 1  # looking still works
        finally:
            await reader.close()


async def test_a_corrupt_file_is_database_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"this is not a database " * 500)
    store = open_store(f"sqlite:///{path}")
    with pytest.raises(DatabaseCorruptError) as raised:
        await store.connect()
    assert "not a SQLite database or is corrupt" in one_line(raised.value)


def test_the_cli_prints_a_full_disk_as_one_line(tmp_path: Path) -> None:
    """A real full disk under `trigger` and `runs retry`: one line, exit 1, no traceback."""
    with small_disk(tmp_path / "disk", "3m") as disk:
        url = f"sqlite:///{disk / 'cli.db'}"
        jobs = tmp_path / "clijobs_full"
        jobs.mkdir()
        (jobs / "__init__.py").write_text(
            "from durably_sched import define_job\n"
            "async def j(step, payload):\n    return None\n"
            "j_job = define_job(name='j', run=j)\n"
        )
        env_path = str(tmp_path)
        cli = [sys.executable, "-m", "durably_sched.cli", "--database", url, "--jobs", "clijobs_full"]
        run = subprocess.run([*cli, "migrate"], cwd=env_path, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        fill(disk)
        big = tmp_path / "big.json"
        big.write_text('{"blob": "' + "x" * 200_000 + '"}')
        trigger = [*cli, "trigger", "j", "--input-file", str(big)]
        results = [subprocess.run(trigger, cwd=env_path, capture_output=True, text=True) for _ in range(3)]
        failed = [r for r in results if r.returncode != 0]
        assert failed, "the disk never filled"
        for result in failed:
            assert result.returncode == 1
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
            assert "is full" in lines[0] and "Traceback" not in result.stderr


async def test_postgres_read_only_sessions_are_read_only(postgres_url: str) -> None:
    import asyncpg

    role = f"ro_{uuid.uuid4().hex[:8]}"
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        writer = create_durably(f"{postgres_url}?schema={schema}").register([JOB])
        await writer.migrate()
        await writer.close()
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        await admin.execute(f'GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        await admin.execute(f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
        url = postgres_url.replace("postgres@", f"{role}@", 1) + f"?schema={schema}"
        durably = create_durably(url).register([JOB])
        try:
            await durably.start(worker=False)
            with pytest.raises(DatabaseReadOnlyError) as raised:
                await durably.jobs.j.trigger({})
            assert "read-only" in one_line(raised.value)
            assert await durably.get_runs() == []  # reads work
        finally:
            await durably.close()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.execute(f'DROP OWNED BY "{role}"')
        await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


async def test_an_unreachable_server_is_database_unavailable() -> None:
    store = open_store("postgresql://postgres@127.0.0.1:1/nothing")
    with pytest.raises(DatabaseUnavailableError) as raised:
        await store.connect()
    assert "connection refused" in one_line(raised.value)
    assert isinstance(raised.value, StoreError)


def test_the_cli_maps_every_store_error_to_exit_1() -> None:
    from durably_sched.cli._base import EXIT_FAILURE, exit_code_for

    for kind in (DiskFullError, DatabaseReadOnlyError, DatabaseLockedError, DatabaseCorruptError):
        assert exit_code_for(kind("x")) == EXIT_FAILURE
    assert main is not None
