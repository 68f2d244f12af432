"""Bridges from other schedulers to durably-sched (each an optional extra).

* :mod:`durably_sched.integrations.apscheduler`: APScheduler 3 fires durable runs
  (``pip install 'durably-sched[apscheduler]'``).
"""
