"""Group commit of checkpoints on PostgreSQL: concurrent runs' steps share commits.

A checkpoint is one statement and so one commit; a commit waits for a WAL flush, which caps one
connection at the server's one-row commit rate. Checkpoints of runs executing at the same time
therefore go to the server together, as the SQLite writer's group commit does:

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

from ..errors import DatabaseUnavailableError, StoreError
from .records import Checkpoint, WriteResult

__all__ = ["BATCH_MAX", "CheckpointBatcher"]

BATCH_MAX = 256
"""Checkpoints per statement at most (a larger queue is sent in several statements in a row)."""

Send = Callable[[list[Checkpoint]], Awaitable[list[WriteResult]]]
SendOne = Callable[[Checkpoint], Awaitable[WriteResult]]
_Waiting = tuple[Checkpoint, "asyncio.Future[WriteResult]"]


class CheckpointBatcher:
    """Sends checkpoints one at a time, or as a batch when several are waiting (see the module).

    ``send_one(cp)`` writes one checkpoint; ``send_batch(cps)`` writes several in one statement
    and answers each, in order."""

    def __init__(self, send_one: SendOne, send_batch: Send) -> None:
        self._send_one = send_one
        self._send_batch = send_batch
        self._waiting: list[_Waiting] = []
        self._busy = False
        self._drain: asyncio.Task[None] | None = None
        self.batches = 0
        """Statements of more than one checkpoint written so far (for tests and benchmarks)."""
        self.refused = 0
        """Batches refused as a whole and sent again checkpoint by checkpoint."""

    async def checkpoint(self, cp: Checkpoint) -> WriteResult:
        if self._busy:
            future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
            self._waiting.append((cp, future))
            return await future
        self._busy = True
        try:
            return await self._send_one(cp)
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

    async def _send(self, batch: list[_Waiting]) -> None:
        cps = [cp for cp, _ in batch]
        try:
            results = await (self._send_batch(cps) if len(cps) > 1 else self._one(cps[0]))
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
            await asyncio.gather(*(self._alone(cp, future) for cp, future in batch))
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        if len(cps) > 1:
            self.batches += 1

    async def _one(self, cp: Checkpoint) -> list[WriteResult]:
        return [await self._send_one(cp)]

    async def _alone(self, cp: Checkpoint, future: asyncio.Future[WriteResult]) -> None:
        try:
            result = await self._send_one(cp)
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
