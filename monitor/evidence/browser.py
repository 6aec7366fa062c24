"""Which Chromium the screenshot browser runs, and as whom.

* :func:`chromium_path`: ``$MONITOR_CHROMIUM`` if set; else, for captures without JavaScript
  (the default), Debian's headless shell ``/usr/bin/chromium-headless-shell`` (package
  ``chromium-headless-shell``: Chromium's old headless mode, without the browser's UI layer;
  a capture command measured 0.5 s shorter with it); else Debian's ``/usr/bin/chromium``; else
  the Chromium that ``playwright install chromium`` downloaded (the usual way on macOS and
  Windows), if it is there. With JavaScript on, never the headless shell: it has no popup
  blocker and ignores ``--webrtc-ip-handling-policy`` (both measured: a page's script opened
  windows and sent STUN packets to a loopback UDP port), two of the guards scripts need; pages
  without scripts can do neither. :func:`is_headless_shell` tells one.
* Chromium's sandbox needs a user other than root: as root it refuses to start sandboxed, and
  the screenshot browser opens pages chosen by adversaries, so it never runs without its
  sandbox (``--no-sandbox`` is never passed; Playwright is told ``chromium_sandbox=True``).
  When this process runs as root, :class:`BrowserUser` writes a small wrapper script that
  Playwright starts instead of Chromium: it hands Playwright's fresh, empty profile folder
  (``--user-data-dir``) to the unprivileged user, then ``exec``\\ s Chromium as that user with
  ``setpriv`` (util-linux): real, effective and saved uid and gid changed, supplementary
  groups cleared, no inheritable capabilities, ``no_new_privs`` set. The file descriptors
  Playwright talks to Chromium through (``--remote-debugging-pipe``) are inherited unchanged.
  Chromium then builds its usual user-namespace + seccomp-bpf sandbox as that user.

  The user: ``$MONITOR_BROWSER_USER`` if set; else ``exposure-browser`` if it exists
  (``.ci/run`` creates it: ``useradd --system --no-create-home --shell /usr/sbin/nologin
  exposure-browser``); else ``nobody``. A user with uid 0 is refused.
  When not root, nothing of this happens: Chromium runs as the current user, sandboxed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from monitor.evidence.errors import ScreenshotError

try:
    import pwd
except ImportError:  # pragma: no cover - Windows: never root, no users to switch to
    pwd = None  # type: ignore[assignment]

__all__ = [
    "BROWSER_USER",
    "DEFAULT_CHROMIUM",
    "BrowserUser",
    "browser_user",
    "chromium_path",
    "is_headless_shell",
    "playwright_chromium",
]

DEFAULT_CHROMIUM = "/usr/bin/chromium"
DEFAULT_HEADLESS_SHELL = "/usr/bin/chromium-headless-shell"  # Debian: chromium-headless-shell
BROWSER_USER = "exposure-browser"  # the dedicated user; `nobody` when it does not exist
FALLBACK_USER = "nobody"


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


@functools.lru_cache(maxsize=1)
def playwright_chromium() -> str | None:
    """The Chromium of ``playwright install chromium``, if that file exists (else None).

    Asks Playwright (its driver starts for a moment, in a thread of its own so that this works
    inside a running event loop too); the answer is cached for the process.
    """
    found: list[str] = []

    def ask() -> None:
        with contextlib.suppress(Exception):  # Playwright missing or broken: no browser
            from playwright.sync_api import sync_playwright

            with sync_playwright() as p:
                found.append(p.chromium.executable_path)

    thread = threading.Thread(target=ask, name="playwright-chromium-path", daemon=True)
    thread.start()
    thread.join(30)
    return found[0] if found and _executable(found[0]) else None


def chromium_path(*, scripts: bool = True) -> str | None:
    """The Chromium to use: ``$MONITOR_CHROMIUM`` (None if that is not an executable file);
    else, unless ``scripts`` (pages' JavaScript will run), ``/usr/bin/chromium-headless-shell``;
    else ``/usr/bin/chromium``; else Playwright's own Chromium; None if there is none."""
    configured = os.environ.get("MONITOR_CHROMIUM")
    if configured:
        return configured if _executable(configured) else None
    if not scripts and _executable(DEFAULT_HEADLESS_SHELL):
        return DEFAULT_HEADLESS_SHELL
    if _executable(DEFAULT_CHROMIUM):
        return DEFAULT_CHROMIUM
    return playwright_chromium()


def is_headless_shell(executable: str) -> bool:
    """Whether ``executable`` is Chromium's headless shell (Debian's ``chromium-headless-shell``,
    Playwright's ``headless_shell``), by its name: not to be used with JavaScript on."""
    name = os.path.basename(os.path.realpath(executable)).lower().replace("_", "-")
    return "headless-shell" in name


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True, slots=True)
class BrowserUser:
    """The unprivileged user the browser runs as when we are root."""

    name: str
    uid: int
    gid: int


def browser_user() -> BrowserUser | None:
    """Who Chromium runs as: None when this process is not root (then: ourselves)."""
    if not _is_root() or pwd is None:
        return None
    names = [os.environ["MONITOR_BROWSER_USER"]] if os.environ.get("MONITOR_BROWSER_USER") else []
    names += [BROWSER_USER, FALLBACK_USER]
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            if name == os.environ.get("MONITOR_BROWSER_USER"):
                raise ScreenshotError(
                    f"$MONITOR_BROWSER_USER names user {name!r}, which does not exist"
                ) from None
            continue
        if entry.pw_uid == 0 or entry.pw_gid == 0:
            raise ScreenshotError(
                f"user {name!r} has uid or gid 0: the screenshot browser must not run as root"
            )
        return BrowserUser(name, entry.pw_uid, entry.pw_gid)
    raise ScreenshotError(
        f"running as root, and neither user {BROWSER_USER!r} nor {FALLBACK_USER!r} exists to "
        f"run the browser sandboxed: create one (useradd --system {BROWSER_USER})"
    )


def _allows(st: os.stat_result, user: BrowserUser, bits: tuple[int, int, int]) -> bool:
    """Whether the owner, group or other ``bits`` of ``st`` that apply to ``user`` are set."""
    owner, group, other = bits
    if st.st_uid == user.uid:
        return bool(st.st_mode & owner)
    if st.st_gid == user.gid:
        return bool(st.st_mode & group)
    return bool(st.st_mode & other)


_X = (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
_R = (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)


def _usable_by(path: str, user: BrowserUser) -> bool:
    """Whether ``user`` can reach, read and run the file ``path``."""
    target = os.path.realpath(path)
    if not _searchable_by(os.path.dirname(target), user):
        return False
    try:
        st = os.stat(target)
    except OSError:
        return False
    return _allows(st, user, _X) and _allows(st, user, _R)


def _searchable_by(folder: str, user: BrowserUser) -> bool:
    """Whether ``user`` can enter ``folder`` (and every folder above it)."""
    path = Path(os.path.realpath(folder))
    try:
        for part in [*reversed(path.parents), path]:
            if not _allows(part.stat(), user, _X):
                return False
    except OSError:
        return False
    return True


_WRAPPER = """#!/bin/sh
# Written by Exposure Monitor: start Chromium as {name} (uid {uid}), not as root, so that its
# sandbox works. Playwright starts this instead of Chromium, with Chromium's arguments.
set -e
for arg in "$@"; do
    case "$arg" in
        --user-data-dir=*)
            # Playwright's new, empty profile folder (made by root): the browser's from now on
            chown -R -P -- {uid}:{gid} "${{arg#--user-data-dir=}}" ;;
    esac
done
export HOME={home} XDG_CONFIG_HOME={home}/.config XDG_CACHE_HOME={home}/.cache
exec {setpriv} --reuid={uid} --regid={gid} --clear-groups --inh-caps=-all --no-new-privs \\
    -- {chromium} "$@"
"""


class Launcher:
    """What Playwright starts: Chromium itself, or (as root) a wrapper that drops to
    :func:`browser_user`. ``close()`` removes the wrapper's folder."""

    def __init__(self, chromium: str) -> None:
        self.chromium = chromium
        self.user = browser_user()
        self._folder: Path | None = None
        self.executable = chromium if self.user is None else self._write_wrapper(self.user)

    def _write_wrapper(self, user: BrowserUser) -> str:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise ScreenshotError(
                "running as root: the browser must run as another user to be sandboxed, and "
                "setpriv (util-linux) is not installed to switch to it"
            )
        if not _usable_by(self.chromium, user):
            raise ScreenshotError(
                f"Chromium at {self.chromium} cannot be run by user {user.name} (a folder on "
                "its path is closed to other users): install Debian's chromium, or put the "
                "browser where other users can read it (e.g. $PLAYWRIGHT_BROWSERS_PATH)"
            )
        temp = tempfile.gettempdir()  # Playwright makes the profile folder there too
        if not _searchable_by(temp, user):
            raise ScreenshotError(
                f"the temporary folder {temp} is closed to user {user.name}, who runs the "
                "browser: set $TMPDIR to a folder other users can enter (such as /tmp)"
            )
        folder = Path(tempfile.mkdtemp(prefix="exposure-browser-"))
        self._folder = folder
        home = folder / "home"
        home.mkdir(mode=0o700)
        os.chown(home, user.uid, user.gid)
        os.chmod(folder, 0o711)  # the user may reach its home, not list the folder
        wrapper = folder / "chromium-as-user"
        wrapper.write_text(
            _WRAPPER.format(
                name=user.name,
                uid=user.uid,
                gid=user.gid,
                home=shlex.quote(str(home)),
                setpriv=shlex.quote(setpriv),
                chromium=shlex.quote(self.chromium),
            )
        )
        wrapper.chmod(0o700)
        return str(wrapper)

    def close(self) -> None:
        folder, self._folder = self._folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
