"""Hot reload of the schedules file, and what a failed reload leaves for operators to see.

``serve`` checks its schedules file every :data:`RELOAD_INTERVAL` and loads it again when it changed.
**A reload that fails in any way keeps the last good schedules running**: an invalid file
(ConfigError), a file that cannot be read, and anything else -- MemoryError, RecursionError, an
error while the scheduler applies the new schedules. Only cancellation passes the reload boundary
(the process is stopping). The failure is then shown where operators look:

* the store's ``config_errors`` row of this process (:mod:`..store.config_errors`), read by the
  dashboard's banner, ``GET /api/schedules`` (``config_errors``) and ``schedules list``; refreshed
  every :data:`REFRESH` while the failure lasts, so readers can leave out rows older than
  :data:`STALE_AFTER` (a process that died cannot remove its own row);
* ``scheduler.config_error`` for this process's metrics (``durably_schedules_reload_failed``).

The next good reload (or a clean stop) removes the row. Recording is best effort: a database that
is down does not stop the reload loop, which retries at the next change or refresh.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .._ratelimit import RateLimitedLog
from ..errors import ConfigError, DurablyError
from ..registry import host_identity
from ..store.config_errors import ConfigErrorRecord
from .config import SchedulesConfig, load_schedules

if TYPE_CHECKING:
    from ..ports import SchedulerFacade
    from .scheduler import Scheduler

__all__ = [
    "REFRESH",
    "RELOAD_INTERVAL",
    "STALE_AFTER",
    "SchedulesReloader",
    "config_error_fields",
    "config_errors_json",
    "config_errors_shown",
    "current_config_errors",
    "file_state",
]

log = logging.getLogger("durably_sched.serve")

RELOAD_INTERVAL = 1.0
"""How often the schedules file is checked for changes (mtime, size, inode)."""
REFRESH = timedelta(seconds=60)
"""How often a failing process confirms its config_errors row."""
STALE_AFTER = timedelta(minutes=3)
"""Readers leave out config_errors rows not confirmed for this long (their process is gone)."""

FileState = tuple[int, int, int] | None


def file_state(path: str) -> FileState:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _failure_text(exc: BaseException, path: str) -> tuple[int | None, str]:
    """(line, one-line message without the file) for any failure of a reload."""
    if isinstance(exc, ConfigError):
        return exc.line, exc.message
    if isinstance(exc, MemoryError):
        return None, "out of memory while loading the file"
    if isinstance(exc, RecursionError):
        return None, "nested too deeply to load"
    text = " ".join(str(exc).split())
    return None, f"could not apply the schedules: {type(exc).__name__}{': ' + text if text else ''}"


async def current_config_errors(durably: SchedulerFacade) -> list[ConfigErrorRecord]:
    """Failed reloads that live processes report now (rows confirmed within STALE_AFTER)."""
    return await durably.list_config_errors(checked_after=datetime.now(UTC) - STALE_AFTER)


async def config_errors_shown(durably: SchedulerFacade) -> list[ConfigErrorRecord]:
    """:func:`current_config_errors` for a page banner: none when the database cannot say."""
    try:
        return await current_config_errors(durably)
    except asyncio.CancelledError:
        raise
    except Exception:  # the page itself reports the database; the banner is not the place
        return []


def config_error_fields(
    record: ConfigErrorRecord, time: Callable[[datetime | None], str | None]
) -> dict[str, Any]:
    """A failed reload as JSON fields (``GET /api/schedules``), its times written by ``time``."""
    return {
        "path": record.path,
        "line": record.line,
        "message": record.message,
        "since": time(record.since),
        "checked_at": time(record.checked_at),
        "reporter": record.reporter,
        "host": record.host,
        "pid": record.pid,
    }


async def config_errors_json(
    durably: SchedulerFacade, time: Callable[[datetime | None], str | None]
) -> list[dict[str, Any]]:
    """:func:`current_config_errors` as JSON (``config_errors`` of ``GET /api/schedules``)."""
    return [config_error_fields(record, time) for record in await current_config_errors(durably)]


class SchedulesReloader:
    """Reloads ``path`` into ``scheduler`` when it changes; see the module notes."""

    def __init__(
        self,
        durably: SchedulerFacade,
        scheduler: Scheduler,
        path: str,
        inputs: dict[str, Any],
        *,
        on_loaded: Callable[[SchedulesConfig], None] = lambda config: None,
    ) -> None:
        self.durably = durably
        self.scheduler = scheduler
        self.path = path
        self.inputs = inputs
        self.on_loaded = on_loaded
        self.reporter = durably.worker.worker_id
        self._reported_at: datetime | None = None
        self._apply_failed = False
        self._log = RateLimitedLog(log)

    async def run(self, seen: FileState) -> None:
        """Check the file every RELOAD_INTERVAL until cancelled."""
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            current = file_state(self.path)
            if current != seen:
                seen = current
                if not await self.reload() and self._apply_failed:
                    seen = None  # the file was fine: try to apply it again at the next check
            elif self.scheduler.config_error is not None and self._refresh_due():
                await self._record(self.scheduler.config_error)

    async def reload(self) -> bool:
        """Load the file and apply it; False (the last good schedules kept) when anything fails."""
        self._apply_failed = False
        try:
            config = await asyncio.to_thread(load_schedules, self.path, self.inputs)
            self._apply_failed = True
            await self.scheduler.reload(config)
            self._apply_failed = False
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            await self._failed(exc)
            return False
        self.on_loaded(config)
        if self.scheduler.config_error is not None:
            self.scheduler.config_error = None
            await self._best_effort(self.durably.clear_config_error(self.reporter))
        return True

    async def close(self) -> None:
        """At start (a row an earlier process of this worker id left) and at a clean stop: this
        process's row goes."""
        await self._best_effort(self.durably.clear_config_error(self.reporter))

    async def _failed(self, exc: BaseException) -> None:
        line, message = _failure_text(exc, self.path)
        kept = len(self.scheduler.config.schedules)
        where = f"{self.path}:{line}" if line is not None else self.path
        expected = isinstance(exc, DurablyError | OSError | MemoryError | RecursionError)
        self._log.error(  # an apply retried every second says so once a minute
            "schedules not reloaded (keeping the %d loaded before): %s: %s",
            kept,
            where,
            message,
            key=f"{where}: {message}",
            exc_info=not expected,  # a bug: its traceback goes to the log
        )
        now = datetime.now(UTC)
        previous = self.scheduler.config_error
        who = host_identity()
        record = ConfigErrorRecord(
            reporter=self.reporter,
            host=who.host,
            pid=who.pid,
            path=self.path,
            line=line,
            message=message,
            since=previous.since if previous is not None else now,
            checked_at=now,
        )
        self.scheduler.config_error = record
        await self._record(record)

    def _refresh_due(self) -> bool:
        return self._reported_at is None or datetime.now(UTC) - self._reported_at >= REFRESH

    async def _record(self, record: ConfigErrorRecord) -> None:
        now = datetime.now(UTC)
        fresh = ConfigErrorRecord(
            record.reporter,
            record.host,
            record.pid,
            record.path,
            record.line,
            record.message,
            record.since,
            now,
        )
        self.scheduler.config_error = fresh
        if await self._best_effort(self.durably.report_config_error(fresh)):
            self._reported_at = now

    async def _best_effort(self, write: Any) -> bool:
        try:
            await write
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not record the schedules file's state in the database: %s", exc)
            return False
        return True
