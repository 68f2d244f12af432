"""Storage backends behind one contract; ``open_store`` picks one from the database URL."""

from __future__ import annotations

import os

from ..errors import StoreError
from .base import Store

DEFAULT_DATABASE_URL = "sqlite:///durably.db"


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else $DURABLY_DATABASE_URL, else ``sqlite:///durably.db``."""
    return url or os.environ.get("DURABLY_DATABASE_URL") or DEFAULT_DATABASE_URL


def open_store(url: str) -> Store:
    """A store for the URL (not yet connected)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        from .sqlite import SqliteStore

        return SqliteStore(url)
    if scheme in ("postgres", "postgresql"):
        from .postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError(
        f"unsupported database URL {url!r}: use sqlite:///path.db or postgresql://user@host:5432/db"
    )


__all__ = ["DEFAULT_DATABASE_URL", "Store", "database_url", "open_store"]
