"""The scheduler's view of pauses: one read per tick of the paused and failing schedules, and the
automatic pause of a schedule with ``pause_after_failures`` (the rules are in ``pausing.py``)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from ..events import ScheduleAutoPauseEvent
from ..store.base import FireOutcome, ScheduleState
from .config import ScheduleEntry
from .firing import ScheduleClock, pause_text, plan_fire_times
from .pausing import AUTO_PAUSE_BY

if TYPE_CHECKING:
    from ..ports import SchedulerFacade

log = logging.getLogger("durably_sched.scheduler")


class PauseWatch:
    """Mixed into the Scheduler: ``_paused`` is what the last tick read."""

    durably: SchedulerFacade
    _states: dict[str, ScheduleClock]
    _paused: dict[str, ScheduleState]

    async def _read_pauses(self) -> None:
        """One read per tick: what changed among paused schedules, and automatic pauses due."""
        durably = self.durably
        found = await durably.schedule_states_needing_attention()
        paused = {name: state for name, state in found.items() if state.paused}
        for name in paused.keys() - self._paused.keys():
            if name in self._states:
                log.info("schedule %s paused (%s)", name, pause_text(paused[name]), extra={"schedule": name})
        # Resumed since the last tick, or resumed and paused again (another pause began): either way
        # a resume moved the cursor.
        resumed = [
            name
            for name, before in self._paused.items()
            if name in self._states and (name not in paused or paused[name].paused_at != before.paused_at)
        ]
        self._paused = paused
        if resumed:
            # The resume moved each cursor past the paused span: never fire that span from here.
            cursors = await durably.get_cursors()
            for name in resumed:
                state = self._states[name]
                cursor = cursors.get(name)
                if cursor is not None and cursor > state.cursor:
                    state.cursor = cursor
                    state.moved()
                if name in paused:
                    text = pause_text(paused[name])
                    log.info(
                        "schedule %s resumed and paused again (%s)", name, text, extra={"schedule": name}
                    )
                else:
                    log.info(
                        "schedule %s resumed: it fires again from its next fire time",
                        name,
                        extra={"schedule": name},
                    )
        for name, row in found.items():
            entry = self._states[name].entry if name in self._states else None
            limit = entry.pause_after_failures if entry is not None else None
            if entry is None or limit is None or row.paused or row.failures_since_resume < limit:
                continue
            await self._auto_pause(entry, row, limit)

    async def _auto_pause(self, entry: ScheduleEntry, state: ScheduleState, limit: int) -> None:
        durably = self.durably
        failures = state.failures_since_resume
        reason = f"{failures} consecutive failed runs"
        if state.last_failed_run_id is not None:
            last = await durably.find_run(state.last_failed_run_id)
            error = (last.error or "").splitlines()[0][:200] if last is not None and last.error else ""
            reason += f"; the last, run {state.last_failed_run_id}, failed" + (f": {error}" if error else "")
        change = await durably.auto_pause_schedule(
            entry.name, reason=reason, by=AUTO_PAUSE_BY, min_failures=limit
        )
        if change.state.paused:
            self._paused[entry.name] = change.state
        if not change.changed:
            return  # another scheduler paused it first, or a run completed meanwhile
        log.warning(
            "schedule %s paused automatically (pause_after_failures: %d): %s; "
            "resume it with `durably-sched schedules resume %s`",
            entry.name,
            limit,
            reason,
            entry.name,
            extra={"schedule": entry.name, "job": entry.job},
        )
        events = self.durably.events
        if events.wants("schedule:auto-pause"):
            events.emit(
                ScheduleAutoPauseEvent(
                    schedule=entry.name,
                    by=AUTO_PAUSE_BY,
                    reason=reason,
                    failures=failures,
                    last_failed_run_id=state.last_failed_run_id,
                )
            )

    def _plan_with_pause(
        self, entry: ScheduleEntry, due: list[datetime], now: datetime, window_start: datetime
    ) -> list[tuple[datetime, FireOutcome | None]]:
        """The catch-up plan, with fire times at or after a pause in force recorded ``paused``."""
        pause = self._paused.get(entry.name)
        if pause is None or pause.paused_at is None or not entry.enabled:
            return plan_fire_times(entry, due, now, window_start)
        began = pause.paused_at
        before = [t for t in due if t < began]
        return [
            *plan_fire_times(entry, before, now, window_start),
            *((t, "paused") for t in due if t >= began),
        ]

    def paused(self, name: str) -> ScheduleState | None:
        """The pause in force for a schedule, as this scheduler's last tick read it."""
        return self._paused.get(name)
