"""The facade's reads and small writes for the scheduler, the web layer and the CLI.

``Durably`` mixes this in so that ``schedule/`` and ``web/`` ask the facade, never ``durably.store``
(data flows one way: the scheduler and the web layer -> the facade -> the store). Each method is the
store operation of the same meaning; what they need of the facade is written down as Protocols in
:mod:`durably_sched.ports`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from .store import base
from .store.config_errors import ConfigErrorRecord


class FacadeReads:
    """base.Store operations the facade offers as they are (``store`` is the facade's store)."""

    store: base.Store

    # -- runs ------------------------------------------------------------------------------
    async def find_run(self, run_id: str) -> base.RunRecord | None:
        """The run with this exact id, or None (``get_run`` raises instead)."""
        return await self.store.get_run(run_id)

    async def list_runs_page(self, query: base.RunQuery) -> base.RunPage:
        """One page of runs matching ``query``, newest first."""
        return await self.store.list_runs_page(query)

    async def count_runs(self, query: base.RunQuery) -> tuple[int, bool]:
        """How many runs match ``query``, and whether the count stopped at its cap."""
        return await self.store.count_runs(query)

    async def get_runs_by_id(self, run_ids: Sequence[str]) -> dict[str, base.RunRecord]:
        """The runs with these ids that still exist, by id."""
        return await self.store.get_runs_by_id(run_ids)

    async def get_run_statuses(self, run_ids: Sequence[str]) -> dict[str, base.RunStatus]:
        """The status of each of these runs that still exists, by id."""
        return await self.store.get_run_statuses(run_ids)

    async def count_runs_by_status(self) -> dict[tuple[str, str], int]:
        """Runs counted by (job, status)."""
        return await self.store.count_runs_by_status()

    # -- schedules -------------------------------------------------------------------------
    async def get_cursors(self) -> dict[str, datetime]:
        """Every schedule's cursor: the last fire time it has handled."""
        return await self.store.get_cursors()

    async def advance_cursor(self, schedule: str, to: datetime) -> datetime:
        """Move a schedule's cursor to ``to`` (never back); the cursor it has afterwards."""
        return await self.store.advance_cursor(schedule, to)

    async def advance_cursors(self, cursors: Mapping[str, datetime]) -> None:
        """Move many schedules' cursors forward (never back), in one transaction."""
        await self.store.advance_cursors(cursors)

    async def schedule_states_needing_attention(self) -> dict[str, base.ScheduleState]:
        """The states of the schedules that are paused or have failures since their last resume."""
        return await self.store.get_schedule_states(attention_only=True)

    async def auto_pause_schedule(
        self, schedule: str, *, reason: str, by: str, min_failures: int
    ) -> base.StateChange:
        """Pause a schedule after failures, unless it is paused or a run completed meanwhile."""
        return await self.store.pause_schedule(
            schedule, reason=reason, by=by, auto=True, min_failures=min_failures
        )

    async def list_fire_records(
        self, schedule: str, limit: int = 50, before: datetime | None = None
    ) -> list[base.FireRecord]:
        """A schedule's fire records, newest first, older than ``before`` if given."""
        return await self.store.list_fire_records(schedule, limit=limit, before=before)

    async def last_fire_records(self, schedules: Sequence[str] | None = None) -> dict[str, base.FireRecord]:
        """Each schedule's latest fire record (with ``schedules``: of these only)."""
        return await self.store.last_fire_records(schedules)

    async def schedule_activity(
        self, until: datetime, bucket: timedelta, buckets: int
    ) -> dict[str, base.ScheduleActivity]:
        """Each schedule's runs and failed runs per time bucket, ending at ``until``."""
        return await self.store.schedule_activity(until, bucket, buckets)

    async def last_run_times(self) -> dict[str, datetime]:
        """Each schedule's latest run creation time."""
        return await self.store.last_run_times()

    # -- configuration errors --------------------------------------------------------------
    async def list_config_errors(self, *, checked_after: datetime | None = None) -> list[ConfigErrorRecord]:
        """The configuration errors processes reported (checked after ``checked_after``)."""
        return await self.store.list_config_errors(checked_after=checked_after)

    async def report_config_error(self, record: ConfigErrorRecord) -> None:
        """Record (or refresh) this process's configuration error."""
        await self.store.report_config_error(record)

    async def clear_config_error(self, reporter: str) -> None:
        """Forget a process's configuration error."""
        await self.store.clear_config_error(reporter)

    # -- web sessions ----------------------------------------------------------------------
    async def create_web_session(self, session_id: str, role: str, lifetime: float) -> None:
        """Record a dashboard session valid for ``lifetime`` seconds."""
        await self.store.create_web_session(session_id, role, lifetime)

    async def web_session_role(self, session_id: str) -> str | None:
        """The role of a recorded, unexpired session; None for any other id."""
        return await self.store.web_session_role(session_id)

    async def delete_web_session(self, session_id: str) -> bool:
        """End a session (logout); False when there was none."""
        return await self.store.delete_web_session(session_id)

    # -- health ----------------------------------------------------------------------------
    async def ping(self) -> None:
        """A cheap round trip to the database; raises StoreError when it is unreachable."""
        await self.store.ping()

    async def check_schema(self) -> None:
        """Raise SchemaVersionError unless the database's schema is this version's."""
        await self.store.check_schema()
