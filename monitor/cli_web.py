"""``serve``: the local web app (monitor/web/). Parses, checks where to listen, serves."""

from __future__ import annotations

import argparse

from monitor.config import Settings

__all__ = ["cmd_serve", "register"]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve",
        help="the web app in your browser, with the scheduler (Ctrl-C stops)",
        description="Serves this tool's pages (overview, people, scans, cases, what to do now, "
        "settings) to a browser on this computer, and runs the scheduler like `run`. The first "
        "visit asks you to choose a passphrase. It listens on 127.0.0.1 only; another address "
        "needs --public with a TLS certificate and key.",
    )
    p.add_argument("--host", help="address to listen on (default [web] host: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default [web] port: 8765)")
    p.add_argument(
        "--no-scheduler",
        action="store_true",
        help="only the pages: no scheduled scans, deliveries or re-checks",
    )
    p.add_argument(
        "--public",
        action="store_true",
        help="allow an address other than loopback (needs --cert and --key)",
    )
    p.add_argument("--cert", metavar="FILE", help="TLS certificate (PEM)")
    p.add_argument("--key", metavar="FILE", help="TLS private key (PEM)")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from monitor.cli import _db, out
    from monitor.web.serve import check_bind, serve

    host = args.host or settings.web.host
    port = args.port if args.port is not None else settings.web.port
    plan = check_bind(host, port, public=args.public, cert=args.cert, key=args.key)
    serve(
        settings,
        _db(settings),
        plan,
        scheduler=not args.no_scheduler,
        announce=lambda line: out.print(line, markup=False, soft_wrap=True),
    )
    return 0
