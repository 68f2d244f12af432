"""Cooperative cancellation for steps: a token that tells a running step to stop.

A sync step runs on a thread, and a thread cannot be stopped from outside; an async step can be
cancelled, but only at an ``await``. So a long step is told instead, and stops itself: the token is
set when the run is cancelled, its lease is lost (another worker has it now), its timeout (or the
step's) passes, or the worker stops and the stop's grace has run out. A step function that takes
one argument gets its step's token::

    def export(token: CancelToken) -> int:
        for n, row in enumerate(rows):
            token.raise_if_cancelled()      # or: if token.cancelled: ...
            write(row)
        return n

    await step.run("export", export)

``token.wait(seconds)`` sleeps until the token is set or the time is up (True if set): a polling
loop's sleep that wakes at once when the step must stop. ``step.cancelled`` and
``step.check_cancelled()`` read the run's token from anywhere in the job.

A step that stops this way (``StepCancelled``) ends without a result: nothing is checkpointed, a
``step:cancel`` event says why, and the run ends as its reason says (cancelled; given up after a
lost lease; failed by its timeout, which the retry policy treats like any failure; released for
another worker at a stop). A step that ignores its token is not interrupted: an async one is
cancelled at its next ``await`` where a timeout or a stop requires it; a sync one runs on, and its
late result is discarded.

Tokens are thread-safe: they are set on the event loop thread and read on step threads.
"""

from __future__ import annotations

import _thread
import threading
from typing import Literal

from .errors import StepCancelled

__all__ = ["CANCEL_REASONS", "CancelReason", "CancelToken"]

CancelReason = Literal["cancelled", "lease-lost", "timeout", "stopping"]
CANCEL_REASONS: tuple[CancelReason, ...] = ("cancelled", "lease-lost", "timeout", "stopping")


class CancelToken:
    """Set once, with a reason; a child token is set with its parent (and may be set alone).

    Cheap to make (one is made per run): the ``threading.Event`` a waiting thread sleeps on is
    only created by the first ``wait``.
    """

    __slots__ = ("_cancelled", "_children", "_event", "_lock", "_reason")

    def __init__(self, parent: CancelToken | None = None) -> None:
        self._cancelled = False
        self._reason: CancelReason | None = None
        self._children: list[CancelToken] | None = None
        self._event: threading.Event | None = None
        self._lock = _thread.allocate_lock()
        if parent is not None:
            parent._adopt(self)

    @property
    def cancelled(self) -> bool:
        """True once the step should stop."""
        return self._cancelled

    @property
    def reason(self) -> CancelReason | None:
        """Why: ``cancelled``, ``lease-lost``, ``timeout`` or ``stopping`` (None while not set)."""
        return self._reason

    def wait(self, timeout: float | None = None) -> bool:
        """Block (on a step thread) until the token is set or ``timeout`` seconds pass."""
        with self._lock:
            if self._cancelled:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)

    def raise_if_cancelled(self) -> None:
        """Raise :class:`~durably_sched.errors.StepCancelled` if the token is set."""
        if self._cancelled:
            raise StepCancelled(self._reason or "cancelled")

    def cancel(self, reason: CancelReason) -> None:
        """Set the token (and its children). The first reason given stays."""
        with self._lock:
            if self._cancelled:
                return
            self._reason = reason
            self._cancelled = True
            event = self._event
            children, self._children = self._children, None
        if event is not None:
            event.set()
        for child in children or ():
            child.cancel(reason)

    def _adopt(self, child: CancelToken) -> None:
        with self._lock:
            if not self._cancelled:
                if self._children is None:
                    self._children = []
                self._children.append(child)
                return
            reason = self._reason
        child.cancel(reason or "cancelled")

    def _forget(self, child: CancelToken) -> None:
        with self._lock:
            if self._children and child in self._children:
                self._children.remove(child)

    def __repr__(self) -> str:
        return f"CancelToken({'set: ' + str(self._reason) if self.cancelled else 'not set'})"
