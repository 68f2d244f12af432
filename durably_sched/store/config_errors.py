"""A schedules file that failed to reload, as the store keeps it for every process to read.

``serve`` reloads its schedules file when it changes; a file that fails keeps the last good
schedules running, and the failure is recorded here (one row per serve process, by its worker id)
so that the dashboard, ``GET /api/schedules`` and ``schedules list`` -- in any process -- can say
so. The row is removed when a reload succeeds and when the process stops cleanly; a process that
dies leaves its row behind, so readers ignore rows not refreshed for a while (``checked_after``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime

__all__ = ["ConfigErrorRecord", "ConfigErrorStore"]


@dataclass(frozen=True, slots=True)
class ConfigErrorRecord:
    """A failed reload: who (``reporter``, the serve's worker id, on ``host`` as ``pid``), which
    file, where in it and what (the first problem), since when and when last confirmed."""

    reporter: str
    host: str
    pid: int
    path: str
    line: int | None
    message: str
    since: datetime
    checked_at: datetime

    def values(self) -> tuple[str, str, int, str, int | None, str, datetime, datetime]:
        """The fields in column order (reporter, host, pid, path, line, message, since, checked_at)."""
        return (
            self.reporter,
            self.host,
            self.pid,
            self.path,
            self.line,
            self.message,
            self.since,
            self.checked_at,
        )

    @property
    def location(self) -> str:
        """``path:line`` (or the path alone when the line is not known)."""
        return f"{self.path}:{self.line}" if self.line is not None else self.path


class ConfigErrorStore(abc.ABC):
    """The part of the store contract for failed reloads (see the module notes)."""

    @abc.abstractmethod
    async def report_config_error(self, record: ConfigErrorRecord) -> None:
        """Insert or replace the row of ``record.reporter``."""

    @abc.abstractmethod
    async def clear_config_error(self, reporter: str) -> None:
        """Remove the row of ``reporter`` (its reload succeeded, or it stopped); no row is fine."""

    @abc.abstractmethod
    async def list_config_errors(self, *, checked_after: datetime | None = None) -> list[ConfigErrorRecord]:
        """The rows, oldest ``since`` first; with ``checked_after``, only rows confirmed since then."""
