"""Durable waits on the facade: events sent to waiting runs, child runs started by ``step.run_job``
and the cascade of a cancel from a parent to its children."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._bounds import check_key
from ..codec import encode_json_value
from ..errors import InvalidArgumentError, InvalidStateError, StepError
from ..store.base import RunRecord
from .actions import RunActions

CANCELLABLE = ("pending", "running", "waiting")


class WaitActions(RunActions):
    """``send_event``, ``list_children``; ``cancel`` that cancels the run's children too."""

    async def send_event(self, key: str, data: Any = None) -> int:
        """Send the event ``key`` with ``data`` (JSON-able) to the runs waiting for it
        (``step.wait_for_event``), in one transaction; returns how many runs it woke.

        The event is kept: a run created before it was sent that reaches its wait for ``key``
        later receives it too. Each run receives an event once (see docs/waiting.md)."""
        if not isinstance(key, str) or not key.strip() or any(ch.isspace() and ch != " " for ch in key):
            raise InvalidArgumentError(
                f"event key {key!r}: expected non-empty text on one line (such as approve:2026-12-06)"
            )
        if any(not ch.isprintable() for ch in key):
            raise InvalidArgumentError(f"event key {key!r}: control characters are not allowed")
        check_key(self.limits, "event key", key)
        try:
            text, value = encode_json_value(data)
        except StepError as exc:
            raise InvalidArgumentError(f"event data {exc}") from None
        size, limit = len(text.encode()), self.limits.step_value
        if size > limit:
            raise InvalidArgumentError(f"event data is {size} bytes, over limits.step_value ({limit})")
        woken = await self.store.send_event(key, value)
        if woken:
            self.worker.wake()
        return woken

    async def list_children(self, run_id: str) -> list[RunRecord]:
        """The runs this run started with ``step.run_job``, oldest first."""
        return await self.store.list_children(run_id)

    async def count_waiting(self) -> dict[tuple[str, str], int]:
        """{(job, wait kind): runs waiting}, for metrics."""
        return await self.store.count_waiting()

    async def cancel(self, run_id: str) -> RunRecord:
        """Pending or waiting: cancelled at once; running: finishes at most its current step, never
        completes. Its child runs (``step.run_job``) that have not finished are cancelled too, and
        theirs in turn."""
        record = await super().cancel(run_id)
        await self._cancel_children(run_id)
        return record

    async def _cancel_children(self, run_id: str) -> None:
        for child in await self.store.list_children(run_id):
            if child.status in CANCELLABLE:
                try:
                    await RunActions.cancel(self, child.id)
                except InvalidStateError:
                    pass  # it finished meanwhile
            await self._cancel_children(child.id)

    async def _start_child(
        self, job_name: str, input: Any, key: str, options: Mapping[str, Any]
    ) -> RunRecord:
        """``step.run_job``'s child: a trigger with the key derived from the parent and the step."""
        run = await self.trigger(job_name, input, idempotency_key=key, **options)
        return run.record
