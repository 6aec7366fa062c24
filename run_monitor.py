#!/usr/bin/env python3
"""Entry point: ``python run_monitor.py --help``."""

if __name__ == "__main__":
    # Imported here, not above: hashing workers re-import this file as ``__mp_main__`` and should
    # not load the database, HTTP and CLI libraries they never use.
    from monitor.cli import entry

    entry()
