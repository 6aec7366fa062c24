"""Which Chromium the screenshot browser runs, and as whom (no browser is started here)."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import sys
import tempfile
import types
from pathlib import Path

import pytest

from monitor.evidence import ScreenshotError, Screenshotter, browser
from monitor.evidence.browser import (
    BrowserUser,
    Launcher,
    browser_user,
    chromium_path,
    is_headless_shell,
)

ASK_PLAYWRIGHT = browser.playwright_chromium  # cached: cleared around each test


def executable(path: Path) -> str:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def no_chromium(monkeypatch, tmp_path):
    """Neither $MONITOR_CHROMIUM nor /usr/bin/chromium nor the headless shell; Playwright not
    asked (yet)."""
    monkeypatch.delenv("MONITOR_CHROMIUM", raising=False)
    monkeypatch.setattr(browser, "DEFAULT_CHROMIUM", str(tmp_path / "absent" / "chromium"))
    monkeypatch.setattr(
        browser, "DEFAULT_HEADLESS_SHELL", str(tmp_path / "absent" / "chromium-headless-shell")
    )
    ASK_PLAYWRIGHT.cache_clear()
    yield
    ASK_PLAYWRIGHT.cache_clear()


def test_monitor_chromium_wins_and_must_exist(no_chromium, monkeypatch, tmp_path):
    mine = executable(tmp_path / "my-chromium")
    monkeypatch.setattr(browser, "DEFAULT_CHROMIUM", executable(tmp_path / "debian-chromium"))
    monkeypatch.setattr(browser, "playwright_chromium", lambda: "/never/asked")
    monkeypatch.setenv("MONITOR_CHROMIUM", mine)
    assert chromium_path() == mine
    monkeypatch.setenv("MONITOR_CHROMIUM", str(tmp_path / "missing"))
    assert chromium_path() is None  # a wrong setting is not silently replaced


def test_debian_chromium_before_playwrights(no_chromium, monkeypatch, tmp_path):
    debian = executable(tmp_path / "debian-chromium")
    monkeypatch.setattr(browser, "DEFAULT_CHROMIUM", debian)
    monkeypatch.setattr(browser, "playwright_chromium", lambda: "/never/asked")
    assert chromium_path() == debian


def test_headless_shell_only_for_pages_without_scripts(no_chromium, monkeypatch, tmp_path):
    """Debian's headless shell (lighter: no browser UI layer) takes captures without JavaScript;
    with scripts on the full Chromium does (the shell has no popup blocker and ignores the
    WebRTC policy), and without the full one, Playwright's, never the shell."""
    debian = executable(tmp_path / "chromium")
    shell = executable(tmp_path / "chromium-headless-shell")
    monkeypatch.setattr(browser, "DEFAULT_CHROMIUM", debian)
    monkeypatch.setattr(browser, "DEFAULT_HEADLESS_SHELL", shell)
    monkeypatch.setattr(browser, "playwright_chromium", lambda: None)
    assert chromium_path(scripts=False) == shell
    assert chromium_path(scripts=True) == debian
    assert chromium_path() == debian  # scripts assumed unless said otherwise
    monkeypatch.setattr(browser, "DEFAULT_CHROMIUM", str(tmp_path / "absent" / "chromium"))
    assert chromium_path(scripts=True) is None
    assert chromium_path(scripts=False) == shell


def test_is_headless_shell_by_name(tmp_path):
    assert is_headless_shell("/usr/bin/chromium-headless-shell")
    assert is_headless_shell(
        "/ms-playwright/chromium_headless_shell-1200/chrome-linux/headless_shell"
    )
    assert not is_headless_shell("/usr/bin/chromium")
    link = tmp_path / "browser"
    link.symlink_to(executable(tmp_path / "chromium-headless-shell"))
    assert is_headless_shell(str(link))  # the file it names counts


async def test_scripts_on_refuse_the_headless_shell(monkeypatch, tmp_path):
    """A headless shell named in $MONITOR_CHROMIUM is refused before it starts when pages'
    scripts would run, with a reason."""
    from monitor.evidence import ScreenshotError, Screenshotter

    monkeypatch.setenv("MONITOR_CHROMIUM", executable(tmp_path / "chromium-headless-shell"))
    with pytest.raises(ScreenshotError, match="headless shell.*full Chromium"):
        async with Screenshotter(javascript=True):
            pass


def test_playwrights_chromium_when_debians_is_absent(no_chromium, monkeypatch, tmp_path):
    bundled = executable(tmp_path / "chrome")
    monkeypatch.setattr(browser, "playwright_chromium", lambda: bundled)
    assert chromium_path() == bundled
    monkeypatch.setattr(browser, "playwright_chromium", lambda: None)
    assert chromium_path() is None


def fake_playwright(monkeypatch, executable_path: str) -> None:
    """A stand-in for playwright.sync_api whose chromium lives at ``executable_path``."""

    class Manager:
        def __enter__(self):  # noqa: ANN204
            return types.SimpleNamespace(
                chromium=types.SimpleNamespace(executable_path=executable_path)
            )

        def __exit__(self, *exc: object) -> None:
            return None

    module = types.ModuleType("playwright.sync_api")
    module.sync_playwright = Manager  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "playwright.sync_api", module)


def test_playwright_chromium_is_used_only_if_installed(no_chromium, monkeypatch, tmp_path):
    (tmp_path / "chrome-linux").mkdir()
    bundled = executable(tmp_path / "chrome-linux" / "chrome")
    fake_playwright(monkeypatch, bundled)
    assert browser.playwright_chromium() == bundled
    assert chromium_path() == bundled

    ASK_PLAYWRIGHT.cache_clear()
    fake_playwright(monkeypatch, str(tmp_path / "not-downloaded" / "chrome"))
    assert browser.playwright_chromium() is None
    assert chromium_path() is None


async def test_playwright_chromium_can_be_asked_inside_an_event_loop(no_chromium, monkeypatch):
    """The sync API refuses to run in an event loop's thread; the question is asked in another."""
    fake_playwright(monkeypatch, sys.executable)  # any executable file
    assert chromium_path() == sys.executable


# --- as whom -----------------------------------------------------------------------------------


def passwd(**users: tuple[int, int]):  # noqa: ANN201
    def getpwnam(name: str) -> pwd.struct_passwd:
        if name not in users:
            raise KeyError(name)
        uid, gid = users[name]
        return pwd.struct_passwd((name, "x", uid, gid, "", "/nonexistent", "/usr/sbin/nologin"))

    return getpwnam


def test_not_root_runs_chromium_itself(monkeypatch, tmp_path):
    monkeypatch.setattr(browser, "_is_root", lambda: False)
    assert browser_user() is None
    chromium = executable(tmp_path / "chromium")
    launcher = Launcher(chromium)
    assert launcher.executable == chromium and launcher.user is None
    launcher.close()


def test_root_prefers_the_dedicated_user_then_nobody(monkeypatch):
    monkeypatch.setattr(browser, "_is_root", lambda: True)
    monkeypatch.delenv("MONITOR_BROWSER_USER", raising=False)
    monkeypatch.setattr(
        browser.pwd,
        "getpwnam",
        passwd(**{"exposure-browser": (990, 990), "nobody": (65534, 65534)}),
    )
    assert browser_user() == BrowserUser("exposure-browser", 990, 990)
    monkeypatch.setattr(browser.pwd, "getpwnam", passwd(nobody=(65534, 65534)))
    assert browser_user() == BrowserUser("nobody", 65534, 65534)
    monkeypatch.setenv("MONITOR_BROWSER_USER", "shooter")
    monkeypatch.setattr(browser.pwd, "getpwnam", passwd(shooter=(1234, 1234), nobody=(1, 1)))
    assert browser_user() == BrowserUser("shooter", 1234, 1234)


def test_root_refuses_a_missing_or_root_user(monkeypatch):
    monkeypatch.setattr(browser, "_is_root", lambda: True)
    monkeypatch.setenv("MONITOR_BROWSER_USER", "ghost")
    monkeypatch.setattr(browser.pwd, "getpwnam", passwd(nobody=(65534, 65534)))
    with pytest.raises(ScreenshotError, match="ghost"):
        browser_user()
    monkeypatch.setenv("MONITOR_BROWSER_USER", "toor")
    monkeypatch.setattr(browser.pwd, "getpwnam", passwd(toor=(0, 0)))
    with pytest.raises(ScreenshotError, match="must not run as root"):
        browser_user()
    monkeypatch.delenv("MONITOR_BROWSER_USER")
    monkeypatch.setattr(browser.pwd, "getpwnam", passwd())
    with pytest.raises(ScreenshotError, match="useradd"):
        browser_user()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_as_root_the_wrapper_drops_to_the_user(monkeypatch, tmp_path):
    """The wrapper Playwright starts hands the profile to the user and execs Chromium as that
    user with setpriv; the user's home is theirs; everything is removed on close."""
    if browser.shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    monkeypatch.delenv("MONITOR_BROWSER_USER", raising=False)
    monkeypatch.setattr(browser.pwd, "getpwnam", passwd(nobody=(65534, 65534)))
    chromium = executable(Path("/tmp") / f"fake-chromium-{os.getpid()}")
    try:
        launcher = Launcher(chromium)
        wrapper = Path(launcher.executable)
        text = wrapper.read_text()
        assert launcher.user == BrowserUser("nobody", 65534, 65534)
        assert stat.S_IMODE(wrapper.stat().st_mode) == 0o700 and wrapper.stat().st_uid == 0
        assert "--reuid=65534 --regid=65534 --clear-groups" in text
        assert "--no-new-privs" in text and chromium in text
        assert 'chown -R -P -- 65534:65534 "${arg#--user-data-dir=}"' in text
        home = wrapper.parent / "home"
        assert home.stat().st_uid == 65534 and stat.S_IMODE(home.stat().st_mode) == 0o700
        launcher.close()
        assert not wrapper.parent.exists()
    finally:
        os.unlink(chromium)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_as_root_a_chromium_the_user_cannot_reach_is_refused(monkeypatch, tmp_path):
    """Playwright's own Chromium under /root/.cache is closed to other users: a clear error."""
    monkeypatch.delenv("MONITOR_BROWSER_USER", raising=False)
    monkeypatch.setattr(browser.pwd, "getpwnam", passwd(nobody=(65534, 65534)))
    monkeypatch.setattr(browser.shutil, "which", lambda _name: "/usr/bin/setpriv")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    chromium = executable(closed / "chrome")
    with pytest.raises(ScreenshotError, match="cannot be run by user nobody"):
        Launcher(chromium)


NO_SANDBOX = """#!/bin/sh
echo "[1206/084700.000000:FATAL:zygote_host_impl_linux.cc(128)] No usable sandbox! Update \
your kernel or see https://chromium.googlesource.com/chromium/src/+/main/docs/linux/suid_sandbox_development.md" >&2
exit 1
"""


async def test_a_chromium_that_cannot_sandbox_itself_is_a_clear_error():
    """Where user namespaces are forbidden Chromium cannot build its sandbox: the browser is
    not started without it, and the error says what it needs."""
    pytest.importorskip("playwright.async_api")
    folder = Path(tempfile.mkdtemp())  # under /tmp: reachable by the browser's user as root
    try:
        folder.chmod(0o755)
        fake = folder / "chromium"
        fake.write_text(NO_SANDBOX)
        fake.chmod(0o755)
        shooter = Screenshotter(executable_path=str(fake), timeout=30)
        with pytest.raises(ScreenshotError) as info:
            await shooter.start()
        message = str(info.value)
        assert "could not be started" in message and "sandboxed" in message
        assert "No usable sandbox!" in message
        assert "unprivileged user namespaces" in message
    finally:
        shutil.rmtree(folder)
