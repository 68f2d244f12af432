"""The read side: a run's stream as the database records it, and who reads it.

* ``reader``: the three sources of a run's stream (transitions, steps, logs) in order, as events;
* ``feed``: one poller per process behind ``subscribe()``, ``subscribe_runs()``, the web app's
  server-sent events and the CLI's ``--wait`` / ``runs watch``;
* ``waiters``: ``trigger_and_wait`` / ``wait_for_run``, in process without a round trip, across
  processes through the feed.
"""

from .feed import FeedDroppedEvent, RunFeed, RunListEvent, RunListSubscription, RunSubscription
from .reader import RunReleaseEvent, RunWokenEvent, StoredLogWriteEvent
from .waiters import Waiters, follow_run_updates

__all__ = [
    "FeedDroppedEvent",
    "RunFeed",
    "RunListEvent",
    "RunListSubscription",
    "RunReleaseEvent",
    "RunSubscription",
    "RunWokenEvent",
    "StoredLogWriteEvent",
    "Waiters",
    "follow_run_updates",
]
