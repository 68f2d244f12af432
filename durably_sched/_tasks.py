"""Background-task helpers shared by the store, the scheduler, the run feed, the waiters and serve."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

__all__ = ["report_while_slow", "stop_task", "where_waiting"]


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task (if any) and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def where_waiting(task: asyncio.Task[Any]) -> str:
    """``name: function (file:line)`` of the innermost coroutine ``task`` is suspended in outside
    asyncio itself (what it waits for, through every ``await`` of its chain), and the innermost
    one of all when that is asyncio's (``-> wait (locks.py:213)``)."""
    frames = []
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None)
        if frame is not None:
            frames.append(frame)
        coro = getattr(coro, "cr_await", None)
    if not frames:
        return task.get_name()
    ours = [f for f in frames if "/asyncio/" not in f.f_code.co_filename]
    shown = ours[-1] if ours else frames[-1]
    text = f"{task.get_name()}: {_place(shown)}"
    return text if shown is frames[-1] else f"{text} -> {_place(frames[-1])}"


def _place(frame: Any) -> str:
    code = frame.f_code
    return f"{code.co_name} ({code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno})"


async def report_while_slow(what: Callable[[], str], after: float, report: Callable[[str], None]) -> None:
    """Every ``after`` seconds until cancelled, ``report`` what is still being waited for (``what()``)
    and where each other pending task of the loop is suspended; for a stop that hangs."""
    while True:
        await asyncio.sleep(after)
        me = asyncio.current_task()
        pending = sorted(where_waiting(t) for t in asyncio.all_tasks() if t is not me and not t.done())
        shown = "; ".join(pending[:12]) + (f"; and {len(pending) - 12} more" if len(pending) > 12 else "")
        report(f"{what()}; {len(pending)} task{'' if len(pending) == 1 else 's'} pending: {shown}")
