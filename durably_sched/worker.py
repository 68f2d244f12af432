"""The worker's compatibility name: ``Durably.worker`` is an execution.producer.Producer (the claim
loop and its slots, with the lease service and the executor it drives; see durably_sched.execution)."""

from __future__ import annotations

from .execution.producer import Producer as Worker
from .execution.producer import make_worker_id

__all__ = ["Worker", "make_worker_id"]
