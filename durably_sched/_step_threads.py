"""Threads for sync step functions, with a cheaper hand-off than ``asyncio.to_thread``.

``step.run(name, fn)`` with a plain ``def`` must not run ``fn`` on the event loop thread: a slow
function would stall every other run, the heartbeats and the scheduler. ``asyncio.to_thread`` keeps
that promise but costs ~100 µs a call on a small machine: a ``concurrent.futures`` work item, a
queue, a future chained to an asyncio future, and a write to the loop's self-pipe that wakes
``epoll`` before the awaiting task can go on. A run of cheap sync steps spent more time on that hop
than on its checkpoints.

This module keeps the promise with less:

* **Parked threads.** Each step thread waits on its own raw lock (``_thread.allocate_lock``, the
  cheapest wake-up CPython has); a call takes an idle thread, stores the function and releases the
  lock. No work queue, no ``concurrent.futures.Future``. Idle threads are reused last-in first-out,
  so the steps of one run keep landing on the same warm thread.
* **A short synchronous wait.** The loop thread then waits on the thread's "done" lock for at most
  ``wait`` seconds (:data:`SYNC_WAIT`, 0.2 ms, or 0). A cheap function finishes within it and its
  result is picked up without any self-pipe write or trip through the event loop. The wait is
  bounded and releases the GIL while blocked; :class:`SyncSteps` skips it for a run whose last
  function was not quick, so a slow function costs the loop at most one short wait and then goes
  the ordinary way: the loop thread awaits a future that the step thread resolves with
  ``call_soon_threadsafe``.

Invariants:

* ``fn`` always runs on a step thread, never on the loop thread, in a copy of the caller's
  context (``contextvars.copy_context()``, as ``asyncio.to_thread`` does): it sees the caller's
  context variables; what it sets stays in the copy.
* A call whose awaiting task is cancelled returns at once (``CancelledError``); its thread goes
  on until ``fn`` returns, drops the result and only then becomes idle again. A thread is only
  ever reused after its previous function has returned.
* Step threads are daemon threads named ``durably-step-N``: an interpreter exit does not wait for
  a function that outlived its run (the run was released or lost, so another worker resumes it
  from its last checkpoint). :func:`busy_threads` lists the threads that are inside a function,
  which is how ``serve`` reports lingering steps at exit.
* At most :data:`MAX_THREADS` functions run at once per process; further calls wait (without
  blocking the loop) for a thread to become idle, in call order. Idle threads exit after
  :data:`IDLE_TIMEOUT` seconds.

One pool serves every event loop of the process; its bookkeeping is guarded by one lock, and each
call carries the loop that waits for it. A forked child starts with an empty pool.
"""

from __future__ import annotations

import _thread
import asyncio
import contextvars
import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
Outcome = tuple[Any, BaseException | None, float]  # result, exception raised, seconds fn ran

SYNC_WAIT = 0.0002
"""Seconds the loop thread may block waiting for a sync step before awaiting it asynchronously."""
MAX_THREADS = 64
"""Sync step functions running at the same time, per process."""
IDLE_TIMEOUT = 30.0
"""An idle step thread exits after this many seconds."""

_names = itertools.count(1)


class _StepThread:
    """One daemon thread that runs one function at a time, handed over through raw locks."""

    __slots__ = (
        "_context",
        "_done",
        "_elapsed",
        "_error",
        "_finished",
        "_fn",
        "_future",
        "_go",
        "_loop",
        "_mutex",
        "_pool",
        "_result",
        "running",
        "thread",
    )

    def __init__(self, pool: StepThreadPool) -> None:
        self._pool = pool
        self._go = _thread.allocate_lock()  # released by the caller: a function is ready
        self._go.acquire()
        self._done = _thread.allocate_lock()  # released by the thread: done, caller waits in sync
        self._done.acquire()
        self._mutex = _thread.allocate_lock()  # guards _finished and _future
        self._fn: Callable[[], Any] | None = None
        self._context: contextvars.Context | None = None
        self._result: Any = None
        self._error: BaseException | None = None
        self._elapsed = 0.0
        self._finished = False
        self._future: asyncio.Future[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.running = False
        self.thread = threading.Thread(target=self._serve, name=f"durably-step-{next(_names)}", daemon=True)
        self.thread.start()

    # -- on the step thread ----------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            if not self._go.acquire(True, IDLE_TIMEOUT):
                if self._pool._retire(self):
                    return
                self._go.acquire()  # a caller took this thread just as it timed out
            fn, context = self._fn, self._context
            assert fn is not None and context is not None
            self.running = True
            started = time.perf_counter()
            try:
                result, error = context.run(fn), None
            except BaseException as exc:  # handed to the caller, which re-raises it
                result, error = None, exc
            elapsed = time.perf_counter() - started
            self.running = False
            del fn, context
            with self._mutex:
                self._result, self._error, self._elapsed = result, error, elapsed
                del result, error
                self._finished = True
                future, loop = self._future, self._loop
                if future is None:  # the caller is waiting on _done, or will find _finished
                    self._done.release()
                    continue
            assert loop is not None
            try:
                loop.call_soon_threadsafe(self._deliver, future)
            except RuntimeError:  # the loop is closed: nobody waits for this result any more
                self._take()
            del future, loop

    # -- on the caller's loop thread -----------------------------------------------------------
    def _take(self) -> Outcome:
        """The outcome of the finished call; the thread becomes idle."""
        outcome = (self._result, self._error, self._elapsed)
        self._fn = self._context = self._result = self._error = None
        self._future = self._loop = None
        self._pool._release(self)
        return outcome

    def _deliver(self, future: asyncio.Future[Outcome]) -> None:
        outcome = self._take()
        if not future.done():  # else the awaiting task was cancelled
            future.set_result(outcome)

    async def call(self, fn: Callable[[], Any], wait: float) -> Outcome:
        loop = asyncio.get_running_loop()
        self._fn, self._context, self._loop = fn, contextvars.copy_context(), loop
        self._finished, self._future = False, None
        self._go.release()
        if wait > 0 and self._done.acquire(True, wait):
            return self._take()
        with self._mutex:
            if self._finished:
                self._done.acquire()  # released under the mutex: free at once
                return self._take()
            future: asyncio.Future[Outcome] = loop.create_future()
            self._future = future
        return await future


def _unwrap(outcome: Outcome) -> Any:
    result, error, _ = outcome
    if error is not None:
        try:
            raise error
        finally:
            del error, outcome  # no reference cycle through the traceback
    return result


class StepThreadPool:
    """The process's step threads: idle ones parked, new ones started on demand up to a limit."""

    def __init__(self, max_threads: int = MAX_THREADS) -> None:
        self.max_threads = max_threads
        self._lock = _thread.allocate_lock()
        self._idle: list[_StepThread] = []  # most recently used last: its stack is warm
        self._all: set[_StepThread] = set()
        self._waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[_StepThread]]] = deque()

    async def run(self, fn: Callable[[], T], wait: float = SYNC_WAIT) -> T:
        """Run ``fn()`` on a step thread and return its result (or raise its exception).

        The loop thread blocks for at most ``wait`` seconds; past that it awaits the result.
        """
        value: T = _unwrap(await self.call(fn, wait))
        return value

    async def call(self, fn: Callable[[], Any], wait: float) -> Outcome:
        """Like :meth:`run`, returning (result, exception or None, seconds ``fn`` ran)."""
        thread = self._acquire()
        if thread is None:
            thread = await self._wait_for_thread()
        return await thread.call(fn, wait)

    def busy_threads(self) -> list[threading.Thread]:
        """The threads that are inside a step function right now."""
        with self._lock:
            return [t.thread for t in self._all if t.running and t.thread.is_alive()]

    @property
    def size(self) -> int:
        with self._lock:
            return len(self._all)

    def _acquire(self) -> _StepThread | None:
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if len(self._all) >= self.max_threads:
                return None
            thread = _StepThread(self)
            self._all.add(thread)
            return thread

    async def _wait_for_thread(self) -> _StepThread:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_StepThread] = loop.create_future()
        with self._lock:
            if self._idle:  # freed since _acquire looked
                return self._idle.pop()
            self._waiters.append((loop, future))
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release(future.result())  # handed over just as we were cancelled
            raise

    def _release(self, thread: _StepThread) -> None:
        """``thread`` finished its call: give it to the oldest waiter, or park it."""
        with self._lock:
            while self._waiters:
                loop, future = self._waiters.popleft()
                if future.done():
                    continue
                try:
                    loop.call_soon_threadsafe(_hand_over, self, future, thread)
                except RuntimeError:  # that loop is closed
                    continue
                return
            self._idle.append(thread)

    def _forget_threads(self) -> None:
        """In a forked child: the parent's threads do not exist here; start afresh."""
        self._lock = _thread.allocate_lock()
        self._idle, self._all, self._waiters = [], set(), deque()

    def _retire(self, thread: _StepThread) -> bool:
        """Called by an idle thread that timed out: True if it may exit (nobody took it)."""
        with self._lock:
            if thread in self._idle:
                self._idle.remove(thread)
                self._all.discard(thread)
                return True
            return False


def _hand_over(pool: StepThreadPool, future: asyncio.Future[_StepThread], thread: _StepThread) -> None:
    if future.done():  # the waiter was cancelled meanwhile
        pool._release(thread)
    else:
        future.set_result(thread)


POOL = StepThreadPool()
os.register_at_fork(after_in_child=POOL._forget_threads)


class SyncSteps:
    """Runs the sync step functions of one run on :data:`POOL`, remembering whether they are quick.

    The loop thread waits in sync (up to :data:`SYNC_WAIT`) only while this run's functions take
    less than half of it on their thread; one that took longer turns the wait off until one is
    quick again. A slow function therefore costs the loop at most one short wait in a row, and
    the decision does not depend on how loaded the machine is (the function's own time on its
    thread, not the hand-off, is what counts).
    """

    __slots__ = ("wait",)

    def __init__(self) -> None:
        self.wait = SYNC_WAIT

    async def run(self, fn: Callable[[], T]) -> T:
        outcome = await POOL.call(fn, self.wait)
        self.wait = SYNC_WAIT if outcome[2] <= SYNC_WAIT / 2 else 0.0
        value: T = _unwrap(outcome)
        return value


async def run_sync(fn: Callable[[], T], wait: float = SYNC_WAIT) -> T:
    """Run the sync function ``fn`` on one of the process's step threads; see the module notes."""
    return await POOL.run(fn, wait)


def busy_threads() -> list[threading.Thread]:
    """Step threads that are running a function now (e.g. one that outlived a graceful stop)."""
    return POOL.busy_threads()
