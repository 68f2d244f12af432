"""PostgreSQL store: which asyncpg errors are worth retrying, and how to name an error in one line.

Kept apart from the store so that the retry loop's policy can be read (and tested) on its own.
"""

from __future__ import annotations

import asyncpg

__all__ = ["describe", "is_connection_error", "is_transient"]


def is_connection_error(exc: BaseException) -> bool:
    """The connection is gone or unusable: retry on another one."""
    if isinstance(
        exc,
        (
            asyncpg.PostgresConnectionError,  # class 08, incl. "connection was closed in the middle"
            asyncpg.CannotConnectNowError,  # 57P03: starting up / shutting down
            asyncpg.AdminShutdownError,  # 57P01: pg_terminate_backend, fast shutdown
            asyncpg.CrashShutdownError,  # 57P02
            asyncpg.TooManyConnectionsError,  # 53300
            # A FATAL message that arrived while the connection sat idle in the pool (the server
            # terminated it) leaves asyncpg's protocol in a state where the next query fails with
            # "cannot switch to state ...", before anything is sent.
            asyncpg.InternalClientError,
            ConnectionError,
            OSError,
        ),
    ):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        # "connection is closed", or a proxy the pool detached because its connection died.
        text = str(exc)
        return "connection" in text and ("closed" in text or "released back to the pool" in text)
    return False


def is_transient(exc: BaseException) -> bool:
    """Worth running again: a lost connection, or a transaction the server rolled back."""
    return is_connection_error(exc) or isinstance(
        exc, (asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
    )


def describe(exc: BaseException) -> str:
    """``ExceptionType: first line of its message`` (a refused connection says just that)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
