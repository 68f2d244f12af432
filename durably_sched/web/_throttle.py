"""Throttling of failed logins, per client address (see ``auth.py``).

The first :data:`FREE_FAILURES` failures of an address cost nothing (a typo, a stale token); after
that each attempt must wait a delay that doubles with every failure, from 1 s up to
:data:`MAX_DELAY`. While the delay runs, attempts are answered 429 without the token being
checked, so guessing goes no faster than the delays allow. A success does not clear the count
(an attacker sharing the address, e.g. loopback, with a legitimate client would otherwise get
fresh free attempts after each of its requests); an address is forgotten :data:`FORGET_SECONDS`
after its last failure. The counts live in this process's memory (a restart forgets them),
bounded to :data:`MAX_CLIENTS` addresses, the longest quiet ones dropped first.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FREE_FAILURES", "MAX_DELAY", "LoginThrottle"]

FREE_FAILURES = 5
MAX_DELAY = 60.0
MAX_CLIENTS = 10_000
FORGET_SECONDS = 3600.0
"""An address whose last failure is this old starts afresh."""


@dataclass
class _Record:
    failures: int
    last: float
    allowed_at: float


class LoginThrottle:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def wait(self, client: str) -> float:
        """Seconds ``client`` must wait before its next attempt is checked (0: go ahead)."""
        record = self._records.get(client)
        if record is None:
            return 0.0
        now = self.clock()
        if now - record.last > FORGET_SECONDS:
            del self._records[client]
            return 0.0
        return max(0.0, record.allowed_at - now)

    def failed(self, client: str) -> None:
        now = self.clock()
        record = self._records.pop(client, None)
        if record is None or now - record.last > FORGET_SECONDS:
            record = _Record(0, now, now)
        record.failures += 1
        record.last = now
        extra = record.failures - FREE_FAILURES
        record.allowed_at = now + (min(2.0 ** (extra - 1), MAX_DELAY) if extra > 0 else 0.0)
        self._records[client] = record  # most recent last
        while len(self._records) > MAX_CLIENTS:
            self._records.popitem(last=False)
