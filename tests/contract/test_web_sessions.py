"""The store contract for dashboard sessions, on every backend.

What the dashboard relies on: a session recorded by one serve process is valid in every process on
the same database, and logging out (deleting it) ends it everywhere at once; a session past its
lifetime is not valid, and expired sessions do not pile up (creating one prunes them).
"""

from __future__ import annotations

from durably_sched.store.base import Store
from tests.backends import Backend
from tests.helpers import until


async def test_a_session_is_valid_in_every_store_until_it_is_deleted(store: Store, backend: Backend) -> None:
    other = await backend.open_store(store.url, migrate=False)  # a second serve on the same database
    assert await store.web_session_role("s-admin") is None
    await store.create_web_session("s-admin", "admin", 3600)
    await store.create_web_session("s-read", "read", 3600)
    assert await store.web_session_role("s-admin") == "admin"
    assert await other.web_session_role("s-admin") == "admin"
    assert await other.web_session_role("s-read") == "read"
    assert await other.web_session_role("s-unknown") is None
    assert await other.delete_web_session("s-admin") is True  # logout in the other process
    assert await store.web_session_role("s-admin") is None
    assert await store.delete_web_session("s-admin") is False
    assert await store.web_session_role("s-read") == "read"  # other sessions are untouched


async def test_expired_sessions_are_invalid_and_pruned(store: Store) -> None:
    await store.create_web_session("short", "admin", 0.2)
    assert await store.web_session_role("short") == "admin"
    await until(lambda: _gone(store, "short"), timeout=10, what="the short session expired")
    await store.create_web_session("long", "admin", 3600)  # prunes the expired one
    assert await store.purge_web_sessions() == 0
    await store.create_web_session("short-2", "read", 0.2)
    await until(lambda: _gone(store, "short-2"), timeout=10, what="the second short session expired")
    assert await store.purge_web_sessions() == 1
    assert await store.web_session_role("long") == "admin"


async def _gone(store: Store, session_id: str) -> bool:
    return await store.web_session_role(session_id) is None
