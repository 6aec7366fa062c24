"""The Celery application of the workers, configured from ``[queue]``.

Tasks are acknowledged late (after they return) and given back when their worker is lost, a
worker takes one task at a time per slot, and only JSON goes through the broker: person ids,
job ids, URLs and counts, never image bytes (promise 2: Redis and RabbitMQ may write their queues
to disk). A task whose worker died unannounced goes to another worker after
``[queue] visibility_timeout`` (Redis; RabbitMQ at once when the connection drops).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from monitor.config import Settings

__all__ = [
    "FETCH_QUEUE",
    "HASH_QUEUE",
    "QUEUES",
    "app",
    "configure",
    "queue_name",
    "result_backend_for",
]

FETCH_QUEUE = "fetch"  # search, pages, image links: waits on the network (many per worker)
HASH_QUEUE = "hash"  # image downloads, decoding, hashing, matching: uses the CPU (per core)
QUEUES = (FETCH_QUEUE, HASH_QUEUE)

app = Celery("monitor", include=["monitor.jobs.stages"])
_prefix = ""  # [queue] key_prefix, set by configure()


def queue_name(stage: str) -> str:
    """The broker's name of a stage's queue: ``[queue] key_prefix`` + ``fetch`` or ``hash``
    (so that installs sharing a Redis or a RabbitMQ vhost do not take each other's jobs)."""
    return _prefix + stage


def result_backend_for(settings: Settings) -> str:
    """Where job results wait: ``[queue] result_backend``, else the broker when it is Redis,
    else the monitor's own database (Celery's SQLAlchemy backend: works with RabbitMQ, whose
    ``rpc://`` would only answer the process that sent the task)."""
    q = settings.queue
    if q.result_backend:
        return q.result_backend
    if q.broker_url.startswith(("redis:", "rediss:")):
        return q.broker_url
    return "db+" + settings.database_url


def configure(settings: Settings) -> Celery:
    """Point :data:`app` at ``[queue] broker_url``; returns it."""
    global _prefix
    q = settings.queue
    _prefix = q.key_prefix
    # Configured again (another configuration in the same process: tests, `serve`): drop the
    # broker connections and result backend made for the previous one.
    app._pool = None
    app._backend_cache = None
    app._local.__dict__.pop("backend", None)
    if "amqp" in app.__dict__:
        app.amqp._producer_pool = None
    visibility = max(int(q.visibility_timeout.total_seconds()), 1)
    transport: dict[str, Any] = {
        "visibility_timeout": visibility,
        # look for tasks of dead workers every tenth of the timeout (not every 100 s)
        "unacked_restore_interval": max(visibility // 10, 1),
        "unacked_restore_throttle": 1,
    }
    if q.key_prefix:
        transport["global_keyprefix"] = q.key_prefix
    app.conf.update(
        broker_url=q.broker_url,
        result_backend=result_backend_for(settings),
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": visibility},
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_default_queue=queue_name(FETCH_QUEUE),
        task_routes={
            "monitor.scan.fetch": {"queue": queue_name(FETCH_QUEUE)},
            "monitor.scan.hash": {"queue": queue_name(HASH_QUEUE)},
        },
        task_track_started=True,
        result_expires=86400,  # summaries (counts, no name) for `scan --queue`
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app
