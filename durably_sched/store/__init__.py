"""Storage backends behind one contract; ``open_store`` picks one from the database URL."""

from __future__ import annotations

import os

from ..errors import StoreError
from .base import Store

DEFAULT_DATABASE_URL = "sqlite:///durably.db"


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else $DURABLY_DATABASE_URL, else ``sqlite:///durably.db``."""
    return url or os.environ.get("DURABLY_DATABASE_URL") or DEFAULT_DATABASE_URL


def open_store(url: str, *, worker_concurrency: int = 1) -> Store:
    """A store for the URL (not yet connected).

    ``worker_concurrency`` sizes the PostgreSQL pool (one connection per running run plus room for
    claims, heartbeats and waiters) unless the URL sets ``pool_max``.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from .sqlite import SqliteStore

        return SqliteStore(url)
    if scheme in ("postgres", "postgresql"):
        from .postgres import PostgresStore

        if "pool_max=" in url:
            return PostgresStore(url)
        return PostgresStore(url, max_size=max(10, worker_concurrency + 4))
    raise StoreError(
        f"unsupported database URL {url!r}: use sqlite:///path.db or postgresql://user@host:5432/db"
    )


__all__ = ["DEFAULT_DATABASE_URL", "Store", "database_url", "open_store"]
