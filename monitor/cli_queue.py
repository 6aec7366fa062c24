"""Command line of the queue (``[queue]``, docs/scale.md): ``worker``, and the queued forms of
``scan`` (``scan NAME --queue``) and ``run`` (which enqueues due scans instead of running them).

Parses, calls :mod:`monitor.jobs`, prints; cli.py adds the parsers with :func:`register`.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from monitor.config import Settings
from monitor.errors import ConfigError, MonitorError

__all__ = ["cmd_worker", "queued_scan_fn", "register", "require_queue", "scan_queued"]

log = logging.getLogger("monitor.jobs")

NO_QUEUE = (
    "no queue is configured: add a [queue] section with broker_url = "
    '"redis://127.0.0.1:6379/0" (or an amqp:// RabbitMQ URL); see docs/scale.md'
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    w = sub.add_parser(
        "worker",
        help="run a Celery worker that takes queued scans (needs [queue] broker_url)",
        description="Takes scans from the queue configured in [queue] (docs/scale.md). A scan "
        "has two stages on their own queues: 'fetch' (searches, pages: waits on the network, "
        "so many run at once) and 'hash' (image downloads, hashing and matching: one process "
        "per core). Start workers for both on one machine, or one kind per machine. Stop with "
        "Ctrl-C (the running scans finish first; a worker killed outright has its scans taken "
        "over by another within [queue] visibility_timeout + lease).",
    )
    w.add_argument(
        "--queues",
        default="fetch,hash",
        help="comma-separated queues to take tasks from: fetch, hash (default: both)",
    )
    w.add_argument(
        "--concurrency",
        type=int,
        default=0,
        metavar="N",
        help="scans at once (default: [queue] fetch_concurrency + hash_concurrency of the "
        "queues taken)",
    )
    w.add_argument("--name", default="", help="worker name (default: monitor-<pid>@<host>)")


def _queues(text: str) -> list[str]:
    from monitor.jobs.app import QUEUES

    queues = [q.strip() for q in text.split(",") if q.strip()]
    bad = [q for q in queues if q not in QUEUES]
    if bad or not queues:
        raise ConfigError(
            f"unknown queue {', '.join(bad) or '(none)'}: use fetch, hash or fetch,hash"
        )
    return queues


def require_queue(settings: Settings) -> None:
    """A :class:`ConfigError` saying how to configure a queue, unless there is one."""
    if not settings.queue.enabled:
        raise ConfigError(NO_QUEUE)


def _app(settings: Settings) -> Any:
    require_queue(settings)
    try:
        from monitor.jobs.app import configure
    except ImportError as exc:  # celery missing
        raise ConfigError(
            f"the queue needs Celery: pip install 'exposure-monitor[queue]' ({exc})"
        ) from None
    return configure(settings)


def _install_shared_limits(settings: Settings) -> None:
    from monitor import shared_limits

    url = settings.queue.shared_limits_url
    if not url:
        log.warning("no Redis for shared politeness ([queue] limits_url): each worker paces alone")
        return
    limiter = shared_limits.SharedLimiter.from_url(url, settings.queue.key_prefix)
    try:
        limiter.check()
    except Exception as exc:
        raise ConfigError(
            f"the Redis for shared limits at {_masked(url)} does not answer: {type(exc).__name__}"
        ) from None
    shared_limits.install(limiter)


def _masked(url: str) -> str:
    """``redis://:***@host:6379/0``: a URL for messages, without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from monitor.cli import _db
    from monitor.jobs.stages import worker_state

    queues = _queues(args.queues)
    app = _app(settings)
    q = settings.queue
    concurrency = args.concurrency or (
        (q.fetch_concurrency if "fetch" in queues else 0)
        + (q.hash_concurrency if "hash" in queues else 0)
    )
    if concurrency < 1:
        raise ConfigError("--concurrency must be 1 or more")
    _install_shared_limits(settings)
    name = args.name or f"monitor-{os.getpid()}@{socket.gethostname()}"
    db = _db(settings)
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    from monitor.jobs.app import queue_name

    argv = [
        "worker",
        f"--queues={','.join(queue_name(q) for q in queues)}",
        "--pool=threads",  # a scan is asyncio + a hashing process pool: threads suffice
        f"--concurrency={concurrency}",
        f"--hostname={name}",
        f"--loglevel={level if level in ('DEBUG', 'INFO') else 'WARNING'}",
        "--without-gossip",
        "--without-mingle",
    ]
    with worker_state(settings, db, q.hash_processes):
        app.worker_main(argv=argv)
    return 0


def scan_queued(
    settings: Settings, subject_id: int, name: str, *, timeout: float | None = None
) -> Any:
    """Queue a scan of the subject and wait for it: its :class:`ScanSummary`."""
    _app(settings)
    from monitor.jobs.stages import enqueue_scan, summary_from, wait_for

    data = wait_for(enqueue_scan(subject_id), timeout=timeout)
    if "erased" in data:
        raise MonitorError("this person was removed while the scan waited in the queue")
    if "already" in data:
        raise MonitorError(
            f"this person was scanned at {data['already']} while the job waited in the queue; "
            "see `matches`"
        )
    summary = summary_from(data)
    summary.subject = name  # names do not go through the broker
    return summary


def queued_scan_fn(settings: Settings) -> Any:
    """For the scheduler (``run``, ``serve``): a ``scan_fn(subject_id)`` that enqueues the scan
    and returns at once (the scheduler then sets the person's next scan time)."""
    _app(settings)
    from monitor.jobs.stages import enqueue_scan

    def scan(subject_id: int) -> str:
        return enqueue_scan(subject_id)

    return scan
