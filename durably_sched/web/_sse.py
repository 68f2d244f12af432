"""Server-sent event streams: frames, the frames shared by the streams of one feed, the stream loop.

The run feed (``feed.py``) hands the same event objects to every run-list subscriber, so such a
frame is written once however many clients watch (:class:`SharedFrames`), and each stream sends
everything it has ready in one write per poll of the feed (:func:`stream`). Benchmark 9a (100
streams on a busy worker) measures what streams cost the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from starlette.responses import StreamingResponse

from . import _json
from ._context import WebContext

__all__ = ["HEARTBEAT_SECONDS", "SharedFrames", "sse", "sse_frame", "stream", "stream_response"]

HEARTBEAT_SECONDS = 15.0
T = TypeVar("T")


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    """One server-sent event. Its data is compact JSON, which never holds a raw CR or LF (JSON
    escapes them in strings), so it is always one ``data:`` line; other characters that Python
    counts as line breaks (U+2028, NEL) are plain characters to SSE and stay inside the line.
    The encoders are built once: making one per event was most of an event's cost."""
    return sse_frame(event, _json.value_json(data), event_id)


def sse_frame(event: str, text: str, event_id: int | None = None) -> str:
    """One server-sent event whose data is ``text``, JSON already written (see :func:`sse`)."""
    if event_id is None:
        return f"event: {event}\ndata: {text}\n\n"
    return f"event: {event}\nid: {event_id}\ndata: {text}\n\n"


class SharedFrames(Generic[T]):
    """``render(event)``, remembered by the event's identity for the other streams that get the same
    object. An entry holds its event (so the id stays its own); all are dropped every ``window``
    seconds (the streams of one poll render within it), so delivered events are not kept alive."""

    def __init__(self, render: Callable[[T], str], *, window: float = 1.0, limit: int = 50_000) -> None:
        self._render = render
        self._window = window
        self._limit = limit
        self._frames: dict[int, tuple[T, str]] = {}
        self._since = time.monotonic()

    def __call__(self, event: T) -> str:
        known = self._frames.get(id(event))
        if known is not None and known[0] is event:
            return known[1]
        now = time.monotonic()
        if now - self._since > self._window or len(self._frames) >= self._limit:
            self._frames.clear()
            self._since = now
        frame = self._render(event)
        self._frames[id(event)] = (event, frame)
        return frame


async def stream(
    ctx: WebContext, source: AsyncIterator[Any], first: list[str], render: Callable[[Any], str | None]
) -> AsyncIterator[str]:
    """Frames: ``first``, then one per item of ``source`` (``render`` may skip one), heartbeats;
    ends with the source, when the app closes, or after ``ctx.stream_seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.stream_seconds
    end = getattr(source, "_end", None)
    if end is not None:
        ctx.streams.add(end)  # close_streams() ends the source, which ends this loop
    try:
        yield "retry: 1000\n\n"
        for frame in first:
            yield frame
        while not ctx.closing.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(min(HEARTBEAT_SECONDS, remaining)):
                    item = await source.__anext__()
            except TimeoutError:
                yield ": ping\n\n"
                continue
            except StopAsyncIteration:
                break
            # Everything else already queued goes out in the same write: one send per poll of the
            # feed, however many events it found.
            items = [item, *getattr(source, "ready_now", list)()]
            frames = [f for f in map(render, items) if f is not None]
            if frames:
                yield "".join(frames)
    finally:
        if end is not None:
            ctx.streams.discard(end)
        close = getattr(source, "close", None)
        if close is not None:
            await close()


def stream_response(frames: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
