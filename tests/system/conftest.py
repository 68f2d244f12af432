"""Fixtures of the system tests (real `durably-sched` processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .serve_procs import Serve


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The test runs twice: on a SQLite file in its tmp dir, and on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'serve.db'}"
        return
    yield request.getfixturevalue("postgres_schema_url")


@pytest.fixture
def serves(postgres_schema_url: str, tmp_path: Path) -> Iterator[list[Serve]]:
    """The serve processes a PostgreSQL system test starts; any still alive are killed at the end."""
    made: list[Serve] = []
    yield made
    for serve in made:
        if serve.alive():
            serve.kill9()
