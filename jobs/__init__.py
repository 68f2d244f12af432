"""Example jobs for durably-sched. `durably-sched serve` imports this package (``--jobs jobs``, the
default) and every module in it, and registers each job made by ``define_job`` that it finds.

The jobs work on local files only, under ``$DURABLY_EXAMPLE_DATA`` (default ``./example-data``):

* ``process-image`` (images.py): download -> resize -> upload, on generated PPM images.
* ``nightly-report`` (reports.py): counts lines and bytes of the files there and writes a report.
* ``many-steps`` (batch.py): N small steps with progress after each.
"""
