"""``serve``: the web app on uvicorn, loopback only unless asked otherwise, with the scheduler."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from monitor.config import Settings
from monitor.db import Database
from monitor.errors import MonitorError

__all__ = ["ServePlan", "check_bind", "running_scheduler", "serve"]

logger = logging.getLogger("monitor.web")


def is_loopback_host(host: str) -> bool:
    if host.strip().lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


@dataclass(frozen=True, slots=True)
class ServePlan:
    host: str
    port: int
    cert: Path | None
    key: Path | None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.cert else 'http'}://{host}:{self.port}/"


def check_bind(
    host: str, port: int, *, public: bool, cert: str | None, key: str | None
) -> ServePlan:
    """Where to listen, or :class:`MonitorError` when that is not allowed: any address but
    loopback needs ``public`` and a TLS certificate and key (the pages hold a person's cases;
    without TLS the passphrase and cookie would cross the network in clear)."""
    if (cert is None) != (key is None):
        raise MonitorError("give both --cert and --key (a TLS certificate and its private key)")
    cert_path = Path(cert).expanduser() if cert else None
    key_path = Path(key).expanduser() if key else None
    for what, path in (("certificate", cert_path), ("key", key_path)):
        if path is not None and not path.is_file():
            raise MonitorError(f"TLS {what} file not found: {path}")
    if not is_loopback_host(host):
        if not public:
            raise MonitorError(
                f"refusing to listen on {host}: only this computer (127.0.0.1) may open these "
                "pages. To serve other machines, add --public with --cert FILE --key FILE"
            )
        if cert_path is None:
            raise MonitorError(
                f"--public on {host} needs TLS: give --cert FILE --key FILE (the passphrase "
                "and the session cookie must not cross the network in clear)"
            )
    return ServePlan(host, port, cert_path, key_path)


@contextlib.contextmanager
def running_scheduler(settings: Settings, db: Database) -> Iterator[object]:
    """The same scheduler as ``run`` (scans, or with ``[queue]`` scans enqueued for the
    workers; outbox delivery, re-checks), in background threads while the web app serves;
    yields its hashing pool (None with ``[queue]``: the pages' scans then start their own)."""
    from monitor.scheduler import monitoring

    queued = None
    if settings.queue.enabled:
        from monitor.cli_queue import queued_scan_fn

        queued = queued_scan_fn(settings)
    with monitoring(settings, db, queued) as (scheduler, pool):
        scheduler.start(block=False)
        try:
            yield pool
        finally:
            scheduler.shutdown(wait=True)


def serve(
    settings: Settings,
    db: Database,
    plan: ServePlan,
    *,
    scheduler: bool = True,
    announce: Callable[[str], None] = print,
) -> None:
    import uvicorn

    from monitor.web.app import allowed_hosts_for, create_app

    with running_scheduler(settings, db) if scheduler else contextlib.nullcontext() as pool:
        app = create_app(
            settings,
            db,
            secure_cookies=plan.cert is not None,
            scheduler_running=scheduler,
            pool=pool,  # scans from the pages share the scheduler's hashing workers
            allowed_hosts=allowed_hosts_for(settings, plan.host),
        )
        config = uvicorn.Config(
            app,
            host=plan.host,
            port=plan.port,
            ssl_certfile=str(plan.cert) if plan.cert else None,
            ssl_keyfile=str(plan.key) if plan.key else None,
            log_level="warning",
            access_log=False,  # no page addresses in logs
            server_header=False,
            date_header=False,
            proxy_headers=False,
            lifespan="off",
        )
        announce(f"Open {plan.url} in a browser on this computer (Ctrl-C stops).")
        try:
            uvicorn.Server(config).run()
        finally:
            app.state.web.runner.shutdown()
