"""Storage backends behind one contract; ``open_store`` picks one from the database URL."""

from __future__ import annotations

import os
from urllib.parse import parse_qsl, urlsplit

from ..errors import DatabaseUrlError
from .base import Store

DEFAULT_DATABASE_URL = "sqlite:///durably.db"


def database_url(url: str | None = None) -> str:
    """The URL to use: the argument, else $DURABLY_DATABASE_URL, else ``sqlite:///durably.db``."""
    return url or os.environ.get("DURABLY_DATABASE_URL") or DEFAULT_DATABASE_URL


def open_store(url: str, *, worker_concurrency: int = 1, read_only: bool = False) -> Store:
    """A store for the URL (not yet connected). Raises StoreError naming what is wrong with the URL.

    ``worker_concurrency`` sizes the PostgreSQL pool (one connection per running run plus room for
    claims, heartbeats and waiters) unless the URL sets ``pool_max``. ``read_only``: a SQLite file is
    opened read-only (it must exist and is never changed); for PostgreSQL it changes nothing.
    """
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise DatabaseUrlError(f"invalid database URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        from .sqlite import SqliteStore

        return SqliteStore(url, read_only=read_only)
    if scheme in ("postgres", "postgresql"):
        from .postgres import PostgresStore

        options = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
        if "pool_max" in options:
            return PostgresStore(url)
        return PostgresStore(url, max_size=max(10, worker_concurrency + 4))
    shown = url.replace(parts.password, "***") if parts.password else url
    raise DatabaseUrlError(
        f"unsupported database URL {shown!r}: use sqlite:///path.db or postgresql://user@host:5432/db"
    )


__all__ = ["DEFAULT_DATABASE_URL", "Store", "database_url", "open_store"]
