"""What every part of the facade shares: its state, and registered jobs by name."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from ..errors import RunNotFoundError, UnknownJobError
from ..events import EventEmitter
from ..execution.producer import Producer
from ..jobs import JobDefinition
from ..limits import Limits
from ..store.base import RunRecord, Store
from ..stream.feed import RunFeed
from ..stream.waiters import Waiters


class FacadeBase:
    """The facade's state (set by ``Durably.__init__``) and its jobs; the other parts build on it."""

    store: Store
    events: EventEmitter
    worker: Producer
    waiters: Waiters
    limits: Limits
    labels_model: type[BaseModel] | None
    _by_name: dict[str, JobDefinition[Any, Any]]
    _feed: RunFeed | None

    @property
    def feed(self) -> RunFeed:
        """The shared reader of run streams behind :meth:`subscribe`, :meth:`subscribe_runs` and
        the waiters (one per instance, made on first use)."""
        if self._feed is None:
            self._feed = RunFeed(self.store)
        return self._feed

    # -- registration ------------------------------------------------------------------------
    @property
    def job_names(self) -> list[str]:
        return list(self._by_name)

    def job_by_name(self, name: str) -> JobDefinition[Any, Any]:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise UnknownJobError(f"unknown job '{name}' (registered: {known})") from None

    async def get_run(self, run_id: str) -> RunRecord:
        record = await self.store.get_run(run_id)
        if record is None:
            raise RunNotFoundError(f"no run with id '{run_id}'")
        return record
