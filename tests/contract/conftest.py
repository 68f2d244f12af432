"""Fixtures of the store contract suite: ``store`` is a connected, migrated store on ``backend``
(the backend fixture, parametrized over SQLite and PostgreSQL, is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from durably_sched.store.base import Store
from tests.backends import Backend


@pytest.fixture
async def store(backend: Backend) -> Store:
    return await backend.open_store()
