"""Errors raised while capturing or bundling evidence; every message is for a person to read."""

from __future__ import annotations

from monitor.errors import MonitorError

__all__ = ["EvidenceError", "MinorSafetyRefusal", "ScreenshotError"]


class EvidenceError(MonitorError):
    """Evidence could not be captured, stored or bundled."""


class ScreenshotError(EvidenceError):
    """The browser could not start, load the page or take the screenshot in time."""


class MinorSafetyRefusal(EvidenceError):
    """A capture was refused because the person in the image may be a minor.

    Police advice: never keep or send copies of images that may show a child. Report the page
    to the police or to a hotline (in the UK the Internet Watch Foundation) instead.
    """
