"""Scans as jobs on Celery workers (``[queue]``, docs/scale.md).

- :mod:`monitor.jobs.app`: the Celery application, configured from ``[queue]``;
- :mod:`monitor.jobs.stages`: the two stages of a scan, ``fetch`` and ``hash``, on their own
  queues, and :func:`~monitor.jobs.stages.enqueue_scan` / :func:`~monitor.jobs.stages.wait_for`
  for the scheduler and ``scan --queue``.
"""
