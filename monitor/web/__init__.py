"""The local web app (``run_monitor.py serve``): see docs/web.md and :mod:`monitor.web.app`."""

from monitor.web.app import create_app

__all__ = ["create_app"]
