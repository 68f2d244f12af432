"""Running durably-sched as a service: log formatting, Prometheus metrics, health endpoints, retention.

``durably-sched serve`` puts these together; each module also works on its own:

* :mod:`durably_sched.ops.logging` - ``configure_logging("text" | "json", level)``
* :mod:`durably_sched.ops.metrics` - ``Metrics(durably, scheduler)``: events and store counts as metrics
* :mod:`durably_sched.ops.health` - ``Health(durably, scheduler)``: liveness (event-loop lag) and
  readiness checks, served as ``/healthz`` and ``/readyz`` by :mod:`durably_sched.web`
* :mod:`durably_sched.ops.retention` - ``Retention(...)``: purges old runs and fire records

Nothing is imported here, so that importing one of them does not import the others.
"""
