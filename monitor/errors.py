"""Exceptions raised by the library. Each carries a message meant for a person to read."""

from __future__ import annotations


class MonitorError(Exception):
    """Base class for every error the library raises on purpose."""


class ConfigError(MonitorError):
    """The configuration file or an environment variable is wrong."""


class NotAnImageError(MonitorError):
    """Bytes that were expected to be an image could not be decoded as one."""


class SubjectNotFound(MonitorError):
    """No subject has that name."""


class SearchBackendError(MonitorError):
    """A search backend failed to answer a query usefully."""


class FetchError(MonitorError):
    """A URL could not be fetched (refused, too large, timed out, bad status...)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class BlockedAddressError(FetchError):
    """The URL resolves to an address the fetcher is not allowed to reach."""


class RobotsDisallowed(FetchError):
    """robots.txt of the site disallows our user agent from fetching the URL."""
