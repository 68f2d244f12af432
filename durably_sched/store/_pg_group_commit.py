"""Group commit on PostgreSQL: concurrent runs' checkpoints (and completions) share commits.

A checkpoint is one statement and so one commit; a commit waits for a WAL flush, which caps one
connection at the server's one-row commit rate. Checkpoints of runs executing at the same time
therefore go to the server together, as the SQLite writer's group commit does (completions of
runs likewise, in a batcher of their own -- the schedule's state that a scheduled run's completion
updates, by trigger, rides in the same statement):

* a checkpoint that finds no checkpoint in flight is sent at once, alone (one run alone pays no
  wait and no extra hop);
* checkpoints that arrive while one is in flight wait; when it answers, all of those waiting are
  sent as ONE statement (CHECKPOINT_BATCH), one commit, and so on while more arrive.

What does not change: each checkpoint is fenced on its own run's generation inside the statement,
so a run that lost its lease gets "lost" alone and the others are written; a checkpoint is atomic
(its step row, its run's step counter and its logs, or nothing). A batch that the server refuses
as a whole (a value it cannot take, say) is not the others' fault: each of its checkpoints is then
sent again on its own, so the error reaches only the run that caused it. A lost database is
retried by the store's ``_run`` for the whole batch (with the replay rule of a checkpoint), and if
it does not come back every checkpoint of the batch fails with it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from ..errors import DatabaseUnavailableError, StoreError
from .records import WriteResult

__all__ = ["BATCH_MAX", "GroupCommit"]

BATCH_MAX = 256
"""Writes per statement at most (a larger queue is sent in several statements in a row)."""

W = TypeVar("W")


class GroupCommit(Generic[W]):
    """Sends writes (checkpoints, completions) one at a time, or as a batch when several are
    waiting (see the module).

    ``send_one(w)`` makes one write; ``send_batch(ws)`` makes several in one statement and answers
    each, in order."""

    def __init__(
        self,
        send_one: Callable[[W], Awaitable[WriteResult]],
        send_batch: Callable[[list[W]], Awaitable[list[WriteResult]]],
    ) -> None:
        self._send_one = send_one
        self._send_batch = send_batch
        self._waiting: list[tuple[W, asyncio.Future[WriteResult]]] = []
        self._busy = False
        self._drain: asyncio.Task[None] | None = None
        self.batches = 0
        """Statements of more than one write made so far (for tests and benchmarks)."""
        self.refused = 0
        """Batches refused as a whole and sent again checkpoint by checkpoint."""

    async def write(self, item: W) -> WriteResult:
        if self._busy:
            future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
            self._waiting.append((item, future))
            return await future
        self._busy = True
        try:
            return await self._send_one(item)
        finally:
            self._next()

    def _next(self) -> None:
        """The one in flight answered: send what waits, or be idle."""
        if self._waiting:
            self._drain = asyncio.get_running_loop().create_task(self._send_waiting())
        else:
            self._busy = False

    async def _send_waiting(self) -> None:
        try:
            while self._waiting:
                batch = [w for w in self._waiting[:BATCH_MAX] if not w[1].done()]
                del self._waiting[:BATCH_MAX]
                if batch:
                    await self._send(batch)
        finally:
            self._busy = False
            self._drain = None
            if self._waiting:  # cancelled (the store closing): nobody will send these
                for _, future in self._waiting:
                    if not future.done():
                        future.set_exception(StoreError("store closed"))
                self._waiting.clear()

    async def _send(self, batch: list[tuple[W, asyncio.Future[WriteResult]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await (self._send_batch(items) if len(items) > 1 else self._one(items[0]))
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreError("store closed"))
            raise
        except DatabaseUnavailableError as exc:  # the database is gone: for every one of them
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0][1].done():
                    batch[0][1].set_exception(exc)
                return
            # Refused as a whole: each on its own, so an error reaches only its own run.
            self.refused += 1
            await asyncio.gather(*(self._alone(item, future) for item, future in batch))
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        if len(items) > 1:
            self.batches += 1

    async def _one(self, item: W) -> list[WriteResult]:
        return [await self._send_one(item)]

    async def _alone(self, item: W, future: asyncio.Future[WriteResult]) -> None:
        try:
            result = await self._send_one(item)
        except Exception as exc:
            if not future.done():
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)
