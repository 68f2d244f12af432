"""PostgreSQL store: which asyncpg errors are worth retrying, and how to name an error in one line.

Kept apart from the store so that the retry loop's policy can be read (and tested) on its own.
"""

from __future__ import annotations

import asyncpg

from ..errors import (
    DatabaseCorruptError,
    DatabaseLockedError,
    DatabaseReadOnlyError,
    DiskFullError,
    InvalidArgumentError,
    StoreError,
)
from ._common import NOT_UNICODE

__all__ = ["describe", "error_class", "is_connection_error", "is_transient", "statement_error"]


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


def error_class(exc: BaseException) -> type[StoreError]:
    """The StoreError subclass that names the cause of a server error an operator acts on."""
    if isinstance(exc, asyncpg.DiskFullError):  # 53100: the server's disk (or tablespace) is full
        return DiskFullError
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):  # 25006: a standby, read-only setting
        return DatabaseReadOnlyError
    if isinstance(exc, asyncpg.LockNotAvailableError):  # 55P03: the server's lock_timeout passed
        return DatabaseLockedError
    if isinstance(exc, asyncpg.DataCorruptedError | asyncpg.IndexCorruptedError):  # XX001, XX002
        return DatabaseCorruptError
    return StoreError


def statement_error(exc: BaseException, what: str, where: str) -> Exception:
    """What a statement that the server (or asyncpg) refused raises: InvalidArgumentError for a
    text argument with no UTF-8 form (the caller's input, not the database), else the StoreError
    that names the cause."""
    if isinstance(exc.__cause__, UnicodeEncodeError):
        return InvalidArgumentError(f"{what}: {NOT_UNICODE}")
    return error_class(exc)(f"{what} on {where} failed: {describe(exc)}{hint(exc)}")


def hint(exc: BaseException) -> str:
    """What to do about a server error, appended to its one line ("" when nothing specific)."""
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.InvalidSchemaNameError):
        return " (is the schema migrated? run `durably-sched migrate`)"
    if isinstance(exc, asyncpg.DiskFullError):
        return " (free space on the database server; the writes go through again)"
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return " (connected to a read-only server or with default_transaction_read_only on)"
    return ""
