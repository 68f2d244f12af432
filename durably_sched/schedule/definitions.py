"""The scheduler fires the database's definitions: the newest version of every schedule, of both
sources (schedules as data, ``store/schedule_defs.py``).

**Sync.** When a scheduler loads or reloads its schedules file, it first syncs the file's entries
into the database (one transaction; each entry that changed is a version with this scheduler as
``by``; YAML schedules no longer in the file are deleted). An entry whose name is an API
schedule's is refused like any other error of the file (``file:line``; the reload changes
nothing and the API schedule is left alone). Then it reads every definition: the schedules it
fires are the database's, so serves holding different versions of the file (a rolling deploy)
all fire the newest version, whichever synced last.

**Changes.** While it waits for the next fire time, a scheduler asks the database for the newest
change (``schedule_seq``, one indexed read) every :data:`CHANGE_POLL` seconds, and on PostgreSQL
also wakes at once on the change's notification; a change read applies at once: a new schedule
fires from its next fire time, a deleted one fires nothing more, a changed one fires its new
definition. A new cron or zone fires from the change on: the store moves the cursor up to the
change in the change's own transaction, so every scheduler agrees and no fire time of the old
expression is caught up. Fire-time keys hold the name and the time only, so deleting and
re-creating a name cannot double a run.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from ..errors import ConfigError, InputValidationError, InvalidArgumentError, UnknownJobError
from ..store.base import NewRun
from ..store.schedule_defs import ScheduleDef, SyncEntry
from .config import ScheduleEntry, SchedulesConfig, entry_definition, entry_of
from .firing import ScheduleClock, whole_second
from .ownership import DatabaseClock

if TYPE_CHECKING:
    from ..clock import Clock
    from ..ports import SchedulerFacade

log = logging.getLogger("durably_sched.scheduler")
SYNC_LOG_LINES = 20
"""A sync that makes more versions than this logs one line for all of them."""

CHANGE_POLL = 0.5
"""Seconds between two reads of the newest schedule change while the scheduler waits."""


def _canonical(definition: dict[str, object]) -> str:
    return json.dumps(definition, sort_keys=True, separators=(",", ":"))


class DefinitionWatch:
    """Mixed into the Scheduler: sync the file, read the definitions, apply changes."""

    durably: SchedulerFacade
    clock: Clock
    _states: dict[str, ScheduleClock]
    _seq: int = 0
    _synced: SchedulesConfig | None = None  # the configuration last synced (load() syncs others)
    _versions: dict[str, int]  # each schedule's version when the definitions were read
    _own: dict[str, tuple[str, ScheduleEntry]]  # the file's entries: (definition as stored, entry)

    def _template(self, entry: ScheduleEntry) -> NewRun | None:
        raise NotImplementedError  # pragma: no cover - the Scheduler's

    def sync_by(self) -> str:
        raise NotImplementedError  # pragma: no cover - the Scheduler's

    async def sync(self, config: SchedulesConfig) -> None:
        """Sync the file's entries into the database; ConfigError (file:line) for an entry the
        database refuses (its name is an API schedule's), and then nothing is written."""
        own = {name: (_canonical(entry_definition(e)), e) for name, e in config.schedules.items()}
        entries = [
            SyncEntry(name, json.loads(text), config.path, entry.line) for name, (text, entry) in own.items()
        ]
        # Shared (serves): the sync's time is the database's, by which fire times fall due, even
        # before this scheduler measured its host's offset; else this scheduler's clock (tests).
        at = None if isinstance(self.clock, DatabaseClock) else self.clock.now()
        result = await self.durably.sync_schedules(entries, by=self.sync_by(), at=at)
        if result.refused:
            name, why = next(iter(result.refused.items()))
            raise ConfigError(f"schedule '{name}': {why}", path=config.path, line=config.schedules[name].line)
        self._own = own
        self._synced = config
        if len(result.versions) > SYNC_LOG_LINES:  # a first start with 10,000 schedules: one line
            names = ", ".join(v.name for v in result.versions[:SYNC_LOG_LINES])
            count = len(result.versions)
            log.info("%d schedules synced from %s as new versions (%s, ...)", count, config.path, names)
            return
        for version in result.versions:
            log.info(
                "version %d (%s) synced from %s by %s",
                version.version, version.what_changed, config.path, version.by,
                extra={"schedule": version.name},
            )  # fmt: skip

    async def definitions(self) -> dict[str, ScheduleEntry]:
        """Every live schedule of the database (the newest version of each)."""
        rows = await self.durably.schedule_defs_since(0)
        self._seq = max((row.seq for row in rows), default=0)
        self._versions = {row.name: row.version for row in rows}
        return {row.name: self._entry(row) for row in rows if not row.deleted}

    def _entry(self, row: ScheduleDef) -> ScheduleEntry:
        own = self._own.get(row.name)
        if own is not None and row.source == "yaml" and own[0] == _canonical(row.definition):
            return own[1]  # this very entry (checked with the file, its line known)
        return entry_of(row.name, row.definition, row.line)

    async def apply_changes(self) -> bool:
        """Apply the schedules changed since the last read; whether any did."""
        if await self.durably.schedule_seq() <= self._seq:
            return False
        rows = await self.durably.schedule_defs_since(self._seq)
        if not rows:
            return False
        cursors = await self.durably.get_cursors()
        now = whole_second(self.clock.now())
        for row in rows:
            self._seq = max(self._seq, row.seq)
            self._apply(row, cursors.get(row.name, now))
        return True

    def _apply(self, row: ScheduleDef, stored: datetime) -> None:
        old = self._states.pop(row.name, None)
        if row.deleted:
            if old is not None:
                log.info("schedule %s deleted (version %d): it fires no more", row.name, row.version,
                         extra={"schedule": row.name})  # fmt: skip
            return
        entry = self._entry(row)
        cursor = max(stored, old.cursor) if old is not None else stored
        try:
            template = self._template(entry)
        except (UnknownJobError, InvalidArgumentError, InputValidationError):
            template = None  # each fire time is checked, and fails on its own (see Scheduler._fires)
        self._states[row.name] = ScheduleClock(
            entry=entry, cursor=cursor, template=template, version=row.version
        )
        log.info(
            "schedule %s %s (version %d, %s source): it fires by cron '%s' (%s) from %s",
            row.name, "changed" if old is not None else "added", row.version, row.source,
            entry.cron.expression, entry.timezone.key, cursor.strftime("%Y-%m-%dT%H:%M:%SZ"),
            extra={"schedule": row.name},
        )  # fmt: skip


__all__ = ["CHANGE_POLL", "DefinitionWatch"]
