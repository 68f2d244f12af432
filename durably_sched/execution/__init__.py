"""Execution: what runs a claimed run, what claims it, and what keeps the process's leases.

* ``executor``: :func:`~.executor.execute` one attempt of a run to its
  :data:`~.outcome.Outcome` (decided in one place, ``outcome.decide``), and
  :func:`~.executor.finish`, which makes every terminal write;
* ``deadline``: the one deadline for run and step timeouts;
* ``producer``: :class:`~.producer.Producer` owns the slots and the claim loop (until stopped, or
  until idle for ``process_until_idle``), and hands off runs created already claimed;
* ``leases``: lease renewal with the worker registry and early takeover, a service;
* ``service``: the small supervised service base (leases, retention, the orphan watch, the
  PostgreSQL store's LISTEN connection).

This package's ``__init__`` imports nothing, so ``step.py`` can use the deadline without a cycle.
"""
