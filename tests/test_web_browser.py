"""The web app end to end in Debian's Chromium (Playwright): set the passphrase, add a person,
enrol a photo by upload, scan a loopback web, open the case, reveal the blurred image, draft a
removal request, download the bundle, quick exit. Screenshots of each step are kept under the
test's temporary folder (printed at the end). Every page on the way is checked with axe-core
(axe-playwright-python, which carries it) against the WCAG 2.1 A and AA rules."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from monitor.config import Settings
from monitor.db import Database
from monitor.demo.photos import photo_bytes
from monitor.evidence import chromium_path
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb
from monitor.web import create_app

pytestmark = [
    pytest.mark.skipif(
        chromium_path() is None,
        reason="no Chromium at /usr/bin/chromium (apt-get install chromium) or $MONITOR_CHROMIUM",
    ),
]

NAME = "Jane Example"
PASSPHRASE = "correct horse battery"
PAGE = '<html lang="en"><body><img src="/img/1.jpg"><img src="/img/other.jpg"></body></html>'


class Served:
    """The app on uvicorn in a thread, on a loopback port of its own."""

    def __init__(self, app: object) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True
        )

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[str, LoopbackWeb, bytes]]:
    web = LoopbackWeb().start()
    search = FakeSearxng()
    searxng = search.install(web)
    photo = photo_bytes(7, (320, 240))
    web.add("/img/1.jpg", photo, "image/jpeg")
    web.add("/img/other.jpg", photo_bytes(99, (320, 240)), "image/jpeg")
    search.add_result(NAME, "general", {"url": web.add("/post/1.html", PAGE), "title": "a"})
    neutral = web.add("/weather.html", "<html><title>Weather</title><h1>Weather</h1></html>")
    settings = Settings(
        data_dir=tmp_path / "data",
        search={"backends": [{"kind": "searxng", "url": searxng}]},
        fetch={"allow_private_networks": True, "timeout": 10},
        cases={"screenshots": False, "rdap_domain_url": "", "rdap_ip_url": ""},
        web={"exit_url": neutral},
    )
    db = Database(settings.database_url)
    pool = ThreadPoolExecutor(2)
    app = create_app(settings, db, pool=pool)
    with Served(app) as served:
        yield served.url, web, photo
    app.state.web.runner.shutdown()
    pool.shutdown()
    db.dispose()
    web.stop()


def accessibility_problems(page: object, name: str) -> list[str]:
    """What axe-core (WCAG 2.x A and AA rules, run in the page) finds wrong with the page
    as it is now, one line per rule broken; nothing when the package is not installed."""
    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError:  # pragma: no cover - in the test extra
        return []
    options = {
        "resultTypes": ["violations"],
        "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
    }
    results = Axe().run(page, options=options).response
    return [
        f"{name}: {v['id']} ({v['impact']}): {v['help']} at "
        + ", ".join(str(n["target"]) for n in v["nodes"][:3])
        for v in results["violations"]
    ]


def test_the_whole_flow_in_chromium(world: tuple[str, LoopbackWeb, bytes], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, web, photo = world
    shots = tmp_path / "screenshots"
    shots.mkdir()
    # Only our own loopback pages are opened, so the browser may run without its sandbox when
    # the tests run as root (Chromium refuses to start as root with it).
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=args)
        context = browser.new_context(accept_downloads=True)
        page = context.new_page()
        errors: list[str] = []
        page.on(
            "console",
            lambda m: (
                errors.append(m.text)
                if m.type == "error" and m.location.get("url", "").startswith(base)
                else None
            ),
        )

        started = time.monotonic()

        found: list[str] = []  # accessibility problems, per page

        def shot(name: str, ours: bool = True) -> None:
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            print(f"{name}: {time.monotonic() - started:.1f}s")
            if ours:  # (not the neutral page the quick exit leaves for)
                found.extend(accessibility_problems(page, name))

        # 1. first visit: choose the passphrase
        page.goto(base + "/")
        expect(page).to_have_url(base + "/setup")
        assert page.title() == "Notes"
        page.keyboard.press("Tab")  # keyboard: the skip link comes first, then the exit
        assert page.evaluate("document.activeElement.className") == "skip"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "quick-exit"
        page.fill("#passphrase", PASSPHRASE)
        page.fill("#repeat", PASSPHRASE)
        shot("1-passphrase")
        page.click("text=Save passphrase")
        expect(page).to_have_url(base + "/")

        # 2. add a person, 3. enrol a photo by upload (from memory: no file on disk)
        page.click("nav >> text=People")
        page.fill("#name", NAME)
        page.click("button:has-text('Add')")
        expect(page.locator("h1")).to_have_text(NAME)
        page.set_input_files(
            "#photos", files=[{"name": "me.jpg", "mimeType": "image/jpeg", "buffer": photo}]
        )
        page.click("text=Upload and hash")
        expect(page.locator(".flash")).to_contain_text("Hashed 1 photo(s)")
        expect(page.locator("#hash-count")).to_contain_text("hashes stored")
        unlabelled = page.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
               .filter(e => !e.labels || e.labels.length === 0).map(e => e.id || e.name)"""
        )
        assert unlabelled == []
        shot("2-person")

        # 4. scan the loopback web from the page
        page.click("button:has-text('Scan now')")
        expect(page).to_have_url(base + "/scans")
        for _ in range(300):  # until the scan has finished (the page says so on reload)
            rows = page.locator(".scan-row")
            if rows.count() and "Running" not in rows.first.inner_text():
                break
            time.sleep(0.1)
            page.reload()
        expect(page.locator(".scan-row").first).to_contain_text("Every planned search")
        shot("3-scans")

        # 5. open the case
        page.click("nav >> text=Cases")
        page.click("text=Case 1")
        expect(page.locator("#case-state")).to_have_text("new")
        assert page.locator("img").count() == 0  # no found image by default
        shot("4-case")

        # 6. reveal the blurred image after the warning
        page.click("text=Show a blurred version of the image")
        expect(page.locator("text=you do not have to look")).to_be_visible()
        page.click("text=Show it blurred")
        blurred = page.locator("#blurred")
        expect(blurred).to_be_visible()
        page.wait_for_function("document.getElementById('blurred').naturalWidth > 0")
        shot("5-blurred")
        page.click("text=Go back")

        # 7. confirm, draft a removal request (nothing is sent)
        page.click("text=It is me, without my consent")
        expect(page.locator("#case-state")).to_have_text("confirmed")
        page.fill("#reply_to", "relay@example.org")
        page.uncheck("#lookup")
        page.click("button:has-text('Draft')")
        expect(page.locator("#notice-body")).to_contain_text(web.url("/img/1.jpg"))
        shot("6-notice")
        page.click("text=Case 1")

        # 8. download the evidence bundle
        with page.expect_download() as info:
            page.click("text=Download the evidence bundle")
        bundle = tmp_path / "bundle.zip"
        info.value.save_as(bundle)
        names = zipfile.ZipFile(io.BytesIO(bundle.read_bytes())).namelist()
        assert "SHA256SUMS" in names and any("warc" in n for n in names)

        for path in ("/", "/people", "/cases", "/help", "/settings"):  # the other pages
            page.goto(base + path)
            found.extend(accessibility_problems(page, path))

        # 9. quick exit: Shift three times leaves for the neutral page and locks
        page.keyboard.press("Shift")
        page.keyboard.press("Shift")
        page.keyboard.press("Shift")
        page.wait_for_url(web.url("/weather.html"))
        assert page.title() == "Weather"
        shot("7-exit", ours=False)
        page.go_back()  # the case page was replaced; what is before it is locked now
        page.wait_for_load_state()
        assert page.url.startswith(base + "/login")
        found.extend(accessibility_problems(page, "login"))
        assert not errors, errors  # no CSP violation or script error on the way
        assert not found, "\n".join(found)
        browser.close()
    print(f"screenshots: {shots}")
