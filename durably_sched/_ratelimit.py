"""Repeated identical warnings, logged once per interval with a count of the ones left out.

During a database outage every poll, heartbeat, claim, flush and schedule fails the same way many
times a second. The first occurrence of a message is logged at once; the same message again within
``every`` seconds is only counted, and the next one logged after that says how many were left out::

    worker error during claim: database ... is locked (repeated 57 times in the last 60s)

"The same message" is the rendered text (or the ``key`` a caller gives, when the text carries a
changing number such as a retry delay). The table of recent messages is bounded.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

__all__ = ["RateLimitedLog"]

MAX_KEYS = 512


class RateLimitedLog:
    """A logger front that suppresses repeats of one message for ``every`` seconds."""

    def __init__(self, logger: logging.Logger, every: float = 60.0, *, count: bool = True) -> None:
        self.logger = logger
        self.every = every
        self.count = count
        """Append "(repeated N more times ...)" to the next line logged after some were left out."""
        self._seen: OrderedDict[str, list[float]] = OrderedDict()  # key -> [last logged, left out]

    def log(self, level: int, msg: str, *args: Any, key: str | None = None, **kwargs: Any) -> bool:
        """Log unless the same message was logged less than ``every`` seconds ago; True if logged."""
        if not self.logger.isEnabledFor(level):
            return False
        text = msg % args if args else msg
        name = f"{level}:{key if key is not None else text}"
        now = time.monotonic()
        state = self._seen.get(name)
        if state is not None and now - state[0] < self.every:
            state[1] += 1
            return False
        left_out = int(state[1]) if state is not None else 0
        suffix = ""
        if left_out and self.count:
            suffix = f" (repeated {left_out} more times in the last {self.every:g}s)"
        self.logger.log(level, "%s%s", text, suffix, **kwargs)
        self._seen[name] = [now, 0]
        self._seen.move_to_end(name)
        while len(self._seen) > MAX_KEYS:
            self._seen.popitem(last=False)
        return True

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> bool:
        return self.log(logging.WARNING, msg, *args, **kwargs)

    def error(self, msg: str, *args: Any, **kwargs: Any) -> bool:
        return self.log(logging.ERROR, msg, *args, **kwargs)

    def recovered(self, key: str) -> None:
        """Forget a message (its cause went away): the next occurrence is logged at once."""
        for level in (logging.WARNING, logging.ERROR):
            self._seen.pop(f"{level}:{key}", None)
