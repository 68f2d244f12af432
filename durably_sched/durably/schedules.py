"""Schedules at run time: which are in use, and pausing and resuming them in every process."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from ..errors import InvalidArgumentError, ScheduleNotFoundError
from ..events import SchedulePauseEvent, ScheduleResumeEvent
from ..store.base import FireResult, ScheduleState, StateChange
from ..store.schedule_defs import DefChange, ScheduleDef, SyncEntry, SyncResult
from .triggers import Triggers

if TYPE_CHECKING:
    from ..schedule.config import ScheduleEntry, SchedulesConfig
    from ..schedule.pausing import ResumeResult
    from ..schedule.scheduler import Clock
    from .schedule_manager import ScheduleManager
log = logging.getLogger("durably_sched")


class SchedulePausing(Triggers):
    """The schedules in use, and pausing and resuming them in every process."""

    _schedules: SchedulesConfig | None
    schedule_clock: Clock | None

    # -- schedules at run time ---------------------------------------------------------------------
    @property
    def schedules_config(self) -> SchedulesConfig | None:
        """The schedules file in use (see :meth:`use_schedules`), or None. (This was
        ``durably.schedules`` before schedules became data; that is now the :class:`ScheduleManager`.)"""
        return self._schedules

    @property
    def schedules(self) -> ScheduleManager:
        """Schedules as data: create, update, delete, list, versions, rollback."""
        from .schedule_manager import ScheduleManager

        manager: ScheduleManager | None = self.__dict__.get("_schedule_manager")
        if manager is None:
            manager = self.__dict__["_schedule_manager"] = ScheduleManager(self)
        return manager

    async def sync_schedules(
        self, entries: Sequence[SyncEntry], *, by: str | None, at: datetime | None = None
    ) -> SyncResult:
        """Make the database's YAML schedules those of a schedules file (the scheduler's load)."""
        return await self.store.sync_schedules(entries, by=by, at=at)

    def on_schedules_changed(self, callback: Callable[[], None], *, add: bool = True) -> None:
        """Add (or remove) a callback for a change of a schedule in another process (PostgreSQL)."""
        self.store.on_schedules_changed(callback, add=add)

    async def schedule_seq(self) -> int:
        """The newest change of any schedule (cheap: schedulers poll it)."""
        return await self.store.schedule_seq()

    async def schedule_defs_since(self, seq: int) -> list[ScheduleDef]:
        """The schedules changed after ``seq`` (deleted ones too)."""
        return await self.store.schedule_defs_since(seq)

    def use_schedules(self, config: SchedulesConfig | None) -> None:
        """Tell this instance which schedules are in use (a :class:`Scheduler` does so itself).

        With them, :meth:`pause_schedule` refuses names that are not defined, and
        :meth:`resume_schedule` can catch up (it needs each schedule's cron and catch-up policy).
        """
        self._schedules = config

    def _defined(self, name: str) -> ScheduleEntry | None:
        from ..schedule.cron import SCHEDULE_NAME_PATTERN

        if not isinstance(name, str) or not re.fullmatch(SCHEDULE_NAME_PATTERN, name, re.ASCII):
            raise ScheduleNotFoundError(f"unknown schedule {name!r}: not a schedule name")
        return None if self._schedules is None else self._schedules.schedules.get(name)

    async def _definition(self, name: str) -> ScheduleEntry | None:
        """The schedule's definition: the file's in use, else the database's newest (API schedules)."""
        entry = self._defined(name)
        if entry is not None:
            return entry
        row = await self.store.get_schedule_def(name)
        if row is None or row.deleted:
            return None
        from ..schedule.config import entry_of

        return entry_of(row.name, row.definition, row.line)

    async def _version(
        self, name: str, op: Literal["pause", "resume"], by: str, note: str | None, said: str
    ) -> None:
        """A pause or resume is a version of a schedule defined in the database (if it is); logged
        with ``said`` after the actor."""
        try:
            await self.store.save_schedule(DefChange(name, op, "api", by=by, note=note))
        except ScheduleNotFoundError:
            pass  # a schedule only the file knows (not synced yet) or a name never defined
        done = "paused" if op == "pause" else "resumed"
        log.info("schedule %s %s by %s%s", name, done, by, said, extra={"schedule": name})

    def _unknown(self, name: str) -> ScheduleNotFoundError:
        config = self._schedules
        known = ", ".join(sorted(config.schedules)) if config is not None else ""
        where = f" in {config.path}" if config is not None else ""
        return ScheduleNotFoundError(
            f"unknown schedule '{name}': not defined{where} (defined: {known or 'none'})"
        )

    async def get_schedule_states(self) -> dict[str, ScheduleState]:
        """The run-time state of every schedule the database knows (paused, failure counts)."""
        return await self.store.get_schedule_states()

    async def get_schedule_states_of(self, names: Sequence[str]) -> dict[str, ScheduleState]:
        """The states of these schedules (a page of a list)."""
        return await self.store.get_schedule_states_of(names)

    async def get_schedule_state(self, name: str) -> ScheduleState | None:
        """One schedule's state; None if it was never paused and no run of it finished."""
        return await self.store.get_schedule_state(name)

    async def pause_schedule(
        self, name: str, *, reason: str | None = None, by: str | None = None
    ) -> StateChange:
        """Pause a schedule in every process: its fire times are recorded ``paused`` from the next tick.

        ``by`` defaults to ``user@host`` of this process. Pausing a paused schedule changes nothing
        (``changed`` is False and the state shows the pause in force). With schedules in use
        (:meth:`use_schedules`) a name that is not defined raises :class:`ScheduleNotFoundError`.
        """
        from ..schedule.pausing import check_actor, check_reason

        if await self._definition(name) is None and self._schedules is not None:
            raise self._unknown(name)
        text, actor = check_reason(reason), check_actor(by)
        clock = self.schedule_clock
        change = await self.store.pause_schedule(
            name, reason=text, by=actor, at=clock.now() if clock is not None else None
        )
        if change.changed:
            await self._version(name, "pause", actor, text, f": {text}" if text else "")
            if self.events.wants("schedule:pause"):
                self.events.emit(SchedulePauseEvent(schedule=name, by=actor, reason=text))
        return change

    async def resume_schedule(
        self, name: str, *, catchup: bool = False, by: str | None = None
    ) -> ResumeResult:
        """Resume a paused schedule: it fires again from its next fire time.

        Nothing of the paused span is caught up unless ``catchup`` is True: then the schedule's
        catch-up policy and window apply to the fire times from the pause to the resume (the current
        pause, or the last one if the schedule is no longer paused, so a catch-up interrupted by a
        crash can be asked for again without doubling anything). Catching up needs the schedule's
        definition (:meth:`use_schedules`) and its job registered here.
        """
        from ..schedule.pausing import ResumeResult, catchup_fire_times, check_actor
        from ..schedule.scheduler import make_fire

        entry = await self._definition(name)
        actor = check_actor(by)
        if catchup and entry is None:
            if self._schedules is None:
                raise InvalidArgumentError(
                    "resume_schedule(catchup=True) needs the schedules in use: call use_schedules(config)"
                )
            raise self._unknown(name)
        if catchup and entry is not None:
            self.job_by_name(entry.job)  # before resuming: a catch-up that cannot run is refused whole
        if (
            entry is None
            and self._schedules is not None
            and await self.store.get_schedule_state(name) is None
        ):
            raise self._unknown(name)  # not defined, and never paused: nothing to write
        clock = self.schedule_clock
        change = await self.store.resume_schedule(
            name, by=actor, at=clock.now() if clock is not None else None
        )
        if change is None:
            return ResumeResult(state=None, changed=False)
        state = change.state
        caught: list[tuple[datetime, FireResult]] = []
        if catchup and entry is not None and not state.paused and state.paused_at and state.resumed_at:
            now = clock.now() if clock is not None else datetime.now(UTC)
            times = catchup_fire_times(entry, state.paused_at, state.resumed_at, now)
            for start in range(0, len(times), 200):
                batch = times[start : start + 200]
                results = await asyncio.gather(
                    *(
                        self.fire(make_fire(entry, t, advance_cursor=False, replace_paused=True))
                        for t in batch
                    )
                )
                caught.extend(zip(batch, results, strict=True))
        if change.changed:
            caught_up = sum(r.outcome == "triggered" for _, r in caught)
            said = f"; {caught_up} paused fire times caught up" if catchup else ""
            await self._version(name, "resume", actor, None, said)
        if (change.changed or caught) and self.events.wants("schedule:resume"):
            since = state.paused_at.timestamp() if state.paused_at else None
            self.events.emit(
                ScheduleResumeEvent(
                    schedule=name,
                    by=actor,
                    paused_since=since,
                    caught_up=sum(r.outcome == "triggered" for _, r in caught),
                )
            )
        return ResumeResult(state=state, changed=change.changed, caught_up=caught)
