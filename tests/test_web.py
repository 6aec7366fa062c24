"""The local web app (monitor/web/): passphrase, sessions, CSRF, headers, binding, uploads
hashed in memory, and the pages, through Starlette's TestClient (no sockets, no sleeping)."""

from __future__ import annotations

import atexit
import io
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageFilter, ImageStat
from sqlalchemy import select
from starlette.testclient import TestClient

from monitor import enrol, store
from monitor.config import Settings
from monitor.db import Database
from monitor.db.models import Match, Notice, Reference, SubjectHealth, WebAccess
from monitor.demo.photos import photo_bytes
from monitor.errors import MonitorError
from monitor.testing.searxng import FakeSearxng
from monitor.testing.smtp import LoopbackSMTP
from monitor.testing.web import LoopbackWeb
from monitor.web import create_app
from monitor.web.app import SECURITY_HEADERS
from monitor.web.i18n import NL
from monitor.web.serve import check_bind
from tests.conftest import run_cli

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

BASE = "http://127.0.0.1:8765"
PASSPHRASE = "correct horse battery"
NAME = "Jane Example"
TEMPLATES = Path(__file__).parents[1] / "monitor" / "web" / "templates"


POOL = ThreadPoolExecutor(2)  # hashing in threads: no worker processes to start per scan


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def detail(im: Image.Image) -> float:
    """Mean difference between an image and a slightly blurred copy: its fine detail."""
    im = im.crop((10, 10, im.width - 10, im.height - 10))
    return ImageStat.Stat(ImageChops.difference(im, im.filter(ImageFilter.BoxBlur(3)))).mean[0]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def post(client: TestClient, path: str, data: dict[str, str] | None = None, **kw: object):
    """POST a form the way the browser does: with the CSRF token of the page it is on."""
    token = csrf_of(client.get("/help" if client.cookies.get("sid") else "/login").text)
    return client.post(path, data={"csrf": token, **(data or {})}, **kw)  # type: ignore[arg-type]


_HASHED: dict[bytes, object] = {}


@pytest.fixture(autouse=True)
def _hash_each_photo_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference hashing (with its variants) takes seconds a photo: these tests enrol the
    same few photos again and again, so each is hashed once per session."""
    real = enrol.compute_reference_hashes

    def cached(data: bytes) -> object:
        if data not in _HASHED:
            _HASHED[data] = real(data)
        return _HASHED[data]

    monkeypatch.setattr(enrol, "compute_reference_hashes", cached)


@dataclass
class App:
    settings: Settings
    db: Database
    clock: Clock
    client: TestClient

    def new_client(self) -> TestClient:
        return TestClient(self.client.app, base_url=BASE, follow_redirects=False)

    def set_up(self) -> TestClient:
        page = self.client.get("/setup")
        r = self.client.post(
            "/setup",
            data={"csrf": csrf_of(page.text), "passphrase": PASSPHRASE, "repeat": PASSPHRASE},
        )
        assert r.status_code == 303 and r.headers["location"] == "/"
        return self.client


_MIGRATED: list[Path] = []


def _migrated_copy(data_dir: Path) -> None:
    """An empty database at the newest schema, copied (migrating each test's costs more)."""
    if not _MIGRATED:
        folder = Path(tempfile.mkdtemp(prefix="web-test-db-"))
        atexit.register(shutil.rmtree, folder, True)
        Database(f"sqlite:///{folder / 'monitor.db'}", key_file=None).dispose()
        _MIGRATED.append(folder / "monitor.db")
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    shutil.copyfile(_MIGRATED[0], data_dir / "monitor.db")


def make_app(settings: Settings) -> App:
    _migrated_copy(settings.data_dir)
    db = Database(settings.database_url)
    clock = Clock()
    app = create_app(settings, db, clock=clock, pool=POOL)
    return App(settings, db, clock, TestClient(app, base_url=BASE, follow_redirects=False))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    a = make_app(Settings(data_dir=tmp_path / "data", web={"exit_url": "https://example.org/"}))
    yield a
    a.db.dispose()


# ---------------------------------------------------------------- passphrase and sessions


def test_first_visit_sets_a_passphrase_stored_only_as_a_hash(app: App) -> None:
    c = app.client
    assert c.get("/").headers["location"] == "/setup"
    token = csrf_of(c.get("/setup").text)
    r = c.post("/setup", data={"csrf": token, "passphrase": PASSPHRASE, "repeat": "different"})
    assert r.status_code == 400 and "differ" in r.text
    r = c.post("/setup", data={"csrf": token, "passphrase": "short", "repeat": "short"})
    assert r.status_code == 400 and "at least 8" in r.text
    app.set_up()
    assert c.get("/").status_code == 200
    with app.db.session() as s:
        (stored,) = s.scalars(select(WebAccess.passphrase_hash)).all()
    assert stored.startswith("scrypt$") and PASSPHRASE not in stored

    # a second visitor cannot set it again, and must log in
    other = app.new_client()
    assert other.get("/").headers["location"] == "/login"
    assert other.get("/setup").headers["location"] == "/login"
    token = csrf_of(other.get("/login").text)
    bad = other.post("/login", data={"csrf": token, "passphrase": "wrong one!"})
    assert bad.status_code == 400 and other.get("/").status_code == 303
    ok = other.post("/login", data={"csrf": token, "passphrase": PASSPHRASE})
    assert ok.status_code == 303 and other.get("/").status_code == 200


def test_logging_in_replaces_the_session_cookie(app: App) -> None:
    app.set_up()
    other = app.new_client()
    other.get("/login")
    before = other.cookies.get("sid")
    token = csrf_of(other.get("/login").text)
    other.post("/login", data={"csrf": token, "passphrase": PASSPHRASE})
    assert other.cookies.get("sid") not in (None, before)


def test_cookie_is_httponly_and_samesite_strict(app: App) -> None:
    cookie = app.client.get("/setup").headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie


def test_many_wrong_passphrases_make_the_next_try_wait(app: App) -> None:
    app.set_up()
    other = app.new_client()
    token = csrf_of(other.get("/login").text)
    for _ in range(5):
        other.post("/login", data={"csrf": token, "passphrase": "wrong one!"})
    r = other.post("/login", data={"csrf": token, "passphrase": PASSPHRASE})
    assert r.status_code == 400 and "wait" in r.text
    app.clock.now += timedelta(seconds=31)
    r = other.post("/login", data={"csrf": token, "passphrase": PASSPHRASE})
    assert r.status_code == 303


def test_session_locks_after_the_idle_timeout(app: App) -> None:
    c = app.set_up()
    app.clock.now += timedelta(minutes=14)
    assert c.get("/cases").status_code == 200  # use restarts the idle clock
    app.clock.now += timedelta(minutes=14)
    assert c.get("/cases").status_code == 200
    app.clock.now += timedelta(minutes=15, seconds=1)
    r = c.get("/cases")
    assert r.status_code == 303 and r.headers["location"] == "/login?expired=1"
    assert "not used for a while" in c.get("/login?expired=1").text
    assert c.get("/cases").headers["location"].startswith("/login")


def test_idle_timeout_is_configurable(tmp_path: Path) -> None:
    a = make_app(Settings(data_dir=tmp_path / "data", web={"idle_timeout": "2m"}))
    c = a.set_up()
    a.clock.now += timedelta(minutes=3)
    assert c.get("/").headers["location"].startswith("/login")
    a.db.dispose()


def test_lock_button_ends_the_session(app: App) -> None:
    c = app.set_up()
    r = post(c, "/lock")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert c.get("/").headers["location"] == "/login"


def test_quick_exit_locks_and_leaves_for_a_neutral_site(app: App) -> None:
    c = app.set_up()
    page = c.get("/").text
    assert 'id="quick-exit"' in page and 'src="/static/exit.js"' in page
    r = c.get("/exit")
    assert r.status_code == 303 and r.headers["location"] == "https://example.org/"
    assert c.get("/").headers["location"] == "/login"
    script = c.get("/static/exit.js").text
    assert "location.replace" in script and "Shift" in script


# ---------------------------------------------------------------- CSRF, headers


def test_forms_without_the_sessions_csrf_token_are_refused(app: App) -> None:
    c = app.set_up()
    r = c.post("/people", data={"name": NAME})
    assert r.status_code == 403
    for forged in ("forged", "ünïcode", ""):
        r = c.post("/people", data={"name": NAME, "csrf": forged})
        assert r.status_code == 403
    other = app.new_client()  # another browser's valid token is not this session's
    theirs = csrf_of(other.get("/login").text)
    assert c.post("/people", data={"name": NAME, "csrf": theirs}).status_code == 403
    with app.db.session() as s:
        assert store.all_subjects(s) == []
    assert post(c, "/people", {"name": NAME}).status_code == 303
    with app.db.session() as s:
        assert [x.name for x in store.all_subjects(s)] == [NAME]


def test_every_page_has_a_form_with_a_csrf_token() -> None:
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        forms = text.count("<form")
        assert text.count('name="csrf"') == forms, template.name


def test_security_headers_on_every_response(app: App) -> None:
    c = app.client
    responses = [c.get("/"), c.get("/setup"), c.get("/static/style.css"), c.get("/nowhere")]
    responses.append(c.post("/setup", data={}))  # refused: no CSRF
    app.set_up()
    for path in ("/", "/people", "/scans", "/cases", "/help", "/settings", "/cases/99", "/exit"):
        responses.append(c.get(path))
    statuses = {r.status_code for r in responses}
    assert {200, 303, 400, 403, 404} <= statuses
    for r in responses:
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, (r.url, name)
    csp = SECURITY_HEADERS["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp


def test_an_unexpected_error_is_a_plain_page_with_the_headers(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.web import data

    c = app.set_up()

    def broken(_session: object) -> None:
        raise RuntimeError("secret detail /home/jane")

    monkeypatch.setattr(data, "overview", broken)
    r = c.get("/")
    assert r.status_code == 500 and "secret detail" not in r.text and "Exit this page" in r.text
    assert r.headers["content-security-policy"] == SECURITY_HEADERS["content-security-policy"]


def test_pages_carry_a_neutral_title_and_no_inline_script(app: App) -> None:
    c = app.set_up()
    post(c, "/people", {"name": NAME})
    for path in ("/", "/people", "/people/1", "/scans", "/cases", "/help", "/settings"):
        html = c.get(path).text
        assert "<title>Notes</title>" in html, path
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert "style=" not in html, path
        assert not re.search(r'(src|href)="(https?:)?//', html), path  # nothing from elsewhere


# ---------------------------------------------------------------- binding


def test_requests_for_another_host_name_are_refused(app: App) -> None:
    """DNS rebinding: a page at evil.example whose name now points at 127.0.0.1."""
    rebound = TestClient(app.client.app, base_url="http://evil.example:8765")
    r = rebound.get("/setup")
    assert r.status_code == 400 and 'name="passphrase"' not in r.text
    assert r.headers["content-security-policy"] == SECURITY_HEADERS["content-security-policy"]
    for base in ("http://localhost:8765", "http://[::1]:8765"):
        assert TestClient(app.client.app, base_url=base).get("/setup").status_code == 200


def test_allowed_host_names_follow_the_address_and_public_url(tmp_path: Path) -> None:
    from monitor.web.app import allowed_hosts_for

    s = Settings(data_dir=tmp_path)
    assert "evil.example" not in allowed_hosts_for(s)
    assert "192.168.1.5" in allowed_hosts_for(s, "192.168.1.5")
    assert allowed_hosts_for(s, "0.0.0.0") == ["*"]
    named = Settings(data_dir=tmp_path, web={"public_url": "https://notes.example.org"})
    hosts = allowed_hosts_for(named, "0.0.0.0")
    assert "notes.example.org" in hosts and "*" not in hosts


def test_serve_listens_on_loopback_only_unless_public_with_tls(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert check_bind(host, 8765, public=False, cert=None, key=None).host == host
    for host in ("0.0.0.0", "192.168.1.20", "::", "example.org"):
        with pytest.raises(MonitorError, match="refusing to listen"):
            check_bind(host, 8765, public=False, cert=None, key=None)
        with pytest.raises(MonitorError, match="needs TLS"):
            check_bind(host, 8765, public=True, cert=None, key=None)
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    with pytest.raises(MonitorError, match="not found"):
        check_bind("0.0.0.0", 8765, public=True, cert=str(cert), key=str(key))
    cert.write_text("x")
    key.write_text("x")
    with pytest.raises(MonitorError, match="both"):
        check_bind("0.0.0.0", 8765, public=True, cert=str(cert), key=None)
    plan = check_bind("0.0.0.0", 8443, public=True, cert=str(cert), key=str(key))
    assert plan.url == "https://0.0.0.0:8443/"


def test_serve_command_refuses_a_public_address(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _out, err = run_cli(capsys, "serve", "--host", "0.0.0.0", "--no-scheduler")
    assert code == 2 and "refusing to listen on 0.0.0.0" in err


@pytest.mark.parametrize("no_scheduler", [False, True])
def test_serve_prints_the_address_and_runs_the_scheduler_unless_told_not_to(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    no_scheduler: bool,
) -> None:
    import uvicorn

    from monitor.scheduler import Scheduler

    calls: list[str] = []
    served: list[object] = []
    monkeypatch.setattr(Scheduler, "start", lambda self, block=True: calls.append(f"start {block}"))
    monkeypatch.setattr(Scheduler, "shutdown", lambda self, wait=True: calls.append("shutdown"))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: served.append(self.config))
    monkeypatch.setenv("MONITOR_DATA_DIR", str(tmp_path / "data"))
    argv = ["serve", "--port", "8799"] + (["--no-scheduler"] if no_scheduler else [])
    code, out, _err = run_cli(capsys, *argv)
    assert code == 0 and "http://127.0.0.1:8799/" in out
    (config,) = served
    assert config.host == "127.0.0.1" and config.port == 8799  # type: ignore[attr-defined]
    assert calls == ([] if no_scheduler else ["start False", "shutdown"])


# ---------------------------------------------------------------- people, upload in memory


def test_enrolment_upload_is_hashed_in_memory_and_never_written(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = app.set_up()
    post(c, "/people", {"name": NAME, "aliases": "J. Example\nj_example", "every": "12h"})
    # a JPEG followed by 2 MB of other bytes (decoders stop at its end): the upload is past
    # any 1 MB spool threshold, the hashing stays quick
    photo = photo_bytes(5, (320, 240)) + bytes(range(256)) * 8000

    def no_temp_files(*_a: object, **_k: object) -> None:
        raise AssertionError("a temporary file was opened during the upload")

    for name in ("SpooledTemporaryFile", "TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        monkeypatch.setattr(tempfile, name, no_temp_files)
    token = csrf_of(c.get("/people/1").text)
    r = c.post(
        "/people/1/photos",
        data={"csrf": token},
        files=[
            ("photos", ("me.png", photo, "image/png")),
            ("photos", ("me2.jpg", photo_bytes(7, (320, 240)), "image/jpeg")),
        ],
    )
    assert r.status_code == 303
    page = c.get("/people/1").text
    assert "Hashed 2 photo(s)" in page
    with app.db.session() as s:
        assert len(s.scalars(select(Reference)).all()) == 2
    hashes = re.search(r'id="hash-count">2 \((\d+) hashes stored', page)
    assert hashes and int(hashes.group(1)) > 2
    sample = photo[5000:5064]  # from the JPEG itself
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert sample not in path.read_bytes(), path


def test_upload_over_the_cap_is_refused(tmp_path: Path) -> None:
    a = make_app(Settings(data_dir=tmp_path / "data", web={"max_upload_bytes": 1_000_000}))
    c = a.set_up()
    post(c, "/people", {"name": NAME})
    token = csrf_of(c.get("/people/1").text)
    big = photo_bytes(7, (320, 240)) + bytes(1_000_000)
    r = c.post("/people/1/photos", data={"csrf": token}, files=[("photos", ("a.jpg", big))])
    assert r.status_code == 413
    a.db.dispose()


def test_people_pages_add_set_and_erase(app: App) -> None:
    c = app.set_up()
    r = post(c, "/people", {"name": NAME, "aliases": "J. E.", "email": "j@example.org"})
    assert r.headers["location"] == "/people/1"
    assert post(c, "/people", {"name": NAME}).status_code == 400  # exists
    assert NAME in c.get("/people").text and "J. E." in c.get("/people/1").text
    post(c, "/people/1/settings", {"every": "6h", "minor": "on", "aliases": "J. E.\nJE\nje"})
    with app.db.session() as s:
        subject = store.get_subject(s, NAME)
        assert subject.interval_seconds == 6 * 3600 and subject.minor
        assert [a.alias for a in subject.aliases] == ["J. E.", "JE"]
    post(c, "/people/1/erase", {"confirm_name": "someone else"})
    with app.db.session() as s:
        assert len(store.all_subjects(s)) == 1
    post(c, "/people/1/erase", {"confirm_name": NAME})
    with app.db.session() as s:
        assert store.all_subjects(s) == []


def test_dutch_labels(app: App) -> None:
    from monitor.web import data

    c = app.set_up()
    post(c, "/language", {"lang": "nl", "back": "/people"})
    html = c.get("/people").text
    assert "Personen" in html and "Verlaat deze pagina" in html and 'lang="nl"' in html
    used = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r'_\("([^"]+)"\)', template.read_text()))
        used |= set(re.findall(r"_\('([^']+)'\)", template.read_text()))
    used |= {"Overview", "People", "Scans", "Cases", "What to do now", "Settings", "Notes"}
    app_py = "\n".join(p.read_text() for p in TEMPLATES.parent.glob("views_*.py"))
    messages = set(re.findall(r'back\(\s*request,\s*[^,]+,\s*"([^"]+)"', app_py))
    messages |= set(re.findall(r'^\s+"([^"]*\{[a-z_]+\}[^"]*)"', app_py, re.MULTILINE))
    assert len(messages) > 10
    used |= messages | set(data.STATUS_WORDS.values())
    assert sorted(used - NL.keys()) == []
    for english, dutch in NL.items():  # the same fields to fill in
        assert set(re.findall(r"\{\w+\}", english)) == set(re.findall(r"\{\w+\}", dutch))
    post(c, "/people", {"name": NAME})
    assert f"{NAME} toegevoegd" in c.get("/people/1").text


def test_overview_says_when_monitoring_is_degraded(app: App) -> None:
    c = app.set_up()
    post(c, "/people", {"name": NAME})
    with app.db.session() as s:
        s.add(
            SubjectHealth(
                subject_id=1,
                search_failures=3,
                last_failure="searxng: unavailable",
                degraded_since=datetime.now(UTC),
            )
        )
    html = c.get("/").text
    assert "Monitoring is degraded" in html and "searxng: unavailable" in html
    assert "never" in html  # no scan yet


def test_help_page_lists_police_advice_and_support_by_country(tmp_path: Path) -> None:
    a = make_app(Settings(data_dir=tmp_path / "data", mail={"country": "BQ"}))
    c = a.set_up()
    html = c.get("/help").text
    assert "Never pay" in html and "police" in html and "KPCN" in html and "911" in html
    assert "helpwanted.nl" not in html
    a.db.dispose()


def test_settings_send_a_test_message_to_the_outbox_folder(app: App) -> None:
    c = app.set_up()
    r = post(c, "/settings/mail", {"to": "me@example.org"})
    assert r.status_code == 303
    assert "Test message delivered" in c.get("/settings").text
    assert list((app.settings.data_dir / "outbox").rglob("*"))


def test_passphrase_can_be_changed_with_the_current_one(app: App) -> None:
    c = app.set_up()
    new = "another long phrase"
    post(c, "/settings/passphrase", {"current": "wrong", "passphrase": new, "repeat": new})
    assert "not right" in c.get("/settings").text
    post(c, "/settings/passphrase", {"current": PASSPHRASE, "passphrase": new, "repeat": new})
    other = app.new_client()
    token = csrf_of(other.get("/login").text)
    assert other.post("/login", data={"csrf": token, "passphrase": new}).status_code == 303


def test_migration_matches_the_model(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from monitor.db.models import Base

    db = Database(f"sqlite:///{tmp_path / 'm.db'}", key_file=None)
    with db.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert [d for d in diffs if "web_access" in repr(d)] == []
    db.dispose()


# ---------------------------------------------------------------- cases


PAGE = '<html lang="en"><body><img src="/img/1.jpg"><img src="/img/other.jpg"></body></html>'


@dataclass
class World:
    web: LoopbackWeb
    search: FakeSearxng
    app: App
    photo: bytes
    smtp: LoopbackSMTP


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    web = LoopbackWeb().start()
    search = FakeSearxng()
    url = search.install(web)
    photo = photo_bytes(7, (320, 240))
    web.add("/img/1.jpg", photo, "image/jpeg")
    web.add("/img/other.jpg", photo_bytes(99, (320, 240)), "image/jpeg")
    page = web.add("/post/1.html", PAGE)
    search.add_result(NAME, "general", {"url": page, "title": "album"})
    smtp = LoopbackSMTP(tmp_path / "maildir").start()
    settings = Settings(
        data_dir=tmp_path / "data",
        search={"backends": [{"kind": "searxng", "url": url}]},
        fetch={"allow_private_networks": True, "timeout": 10},
        cases={"screenshots": False, "rdap_domain_url": "", "rdap_ip_url": ""},
        mail={"smtp_host": "127.0.0.1", "smtp_port": smtp.port, "starttls": False},
    )
    a = make_app(settings)
    yield World(web, search, a, photo, smtp)
    a.db.dispose()
    smtp.stop()
    web.stop()


def _scanned(w: World, *, minor: bool = False) -> TestClient:
    c = w.app.set_up()
    post(c, "/people", {"name": NAME, **({"minor": "on"} if minor else {})})
    token = csrf_of(c.get("/people/1").text)
    c.post("/people/1/photos", data={"csrf": token}, files=[("photos", ("a.jpg", w.photo))])
    r = post(c, "/people/1/scan")
    assert r.headers["location"] == "/scans"
    c.app.state.web.runner.wait()  # type: ignore[attr-defined]
    return c


def test_scan_from_the_page_then_the_case_from_list_to_bundle(world: World) -> None:
    c = _scanned(world)
    scans = c.get("/scans").text
    assert "Every planned search was answered" in scans and "searched" in scans
    with world.app.db.session() as s:
        case_id = s.scalars(select(Match.id)).one()
    listing = c.get("/cases").text
    assert f"/cases/{case_id}" in listing
    detail = c.get(f"/cases/{case_id}").text
    assert world.web.url("/post/1.html") in detail and world.web.url("/img/1.jpg") in detail
    assert "<img" not in detail  # no found image by default
    assert "Why it matched" in detail and "warc" in detail

    post(c, f"/cases/{case_id}/confirm")
    assert 'id="case-state">confirmed' in c.get(f"/cases/{case_id}").text

    r = post(c, f"/cases/{case_id}/notice", {"reply_to": "relay@example.org", "lang": "nl"})
    assert r.status_code == 303
    notice = c.get(r.headers["location"]).text
    assert world.web.url("/img/1.jpg") in notice and "relay@example.org" in notice
    notice_id = int(r.headers["location"].rsplit("/", 1)[1])
    post(c, f"/cases/{case_id}/notices/{notice_id}/send", {"to": "abuse@example.org"})
    with world.app.db.session() as s:
        assert s.get(Notice, notice_id).sent_at is None  # type: ignore[union-attr]
    assert "tick the box" in c.get(f"/cases/{case_id}/notices/{notice_id}").text
    sent_before = len(world.smtp.messages)
    post(
        c,
        f"/cases/{case_id}/notices/{notice_id}/send",
        {"to": "abuse@example.org", "confirm": "yes"},
    )
    assert len(world.smtp.messages) == sent_before + 1
    assert world.smtp.messages[-1]["To"] == "abuse@example.org"
    assert 'id="case-state">notice_sent' in c.get(f"/cases/{case_id}").text

    bundle = c.get(f"/cases/{case_id}/bundle")
    assert bundle.headers["content-type"] == "application/zip"
    assert "attachment" in bundle.headers["content-disposition"]
    names = zipfile.ZipFile(io.BytesIO(bundle.content)).namelist()
    assert any(n.endswith(".warc.gz") or "warc" in n for n in names) and "SHA256SUMS" in names
    assert not list(world.app.settings.data_dir.glob(".bundle-*"))

    r = post(c, f"/cases/{case_id}/recheck")
    assert "Checked again" in c.get(r.headers["location"]).text


def test_blurred_image_only_after_a_warning_and_a_click_once(world: World) -> None:
    c = _scanned(world)
    with world.app.db.session() as s:
        match = s.scalars(select(Match)).one()
    case_id = match.id
    sighting = re.search(r"/places/(\d+)/image", c.get(f"/cases/{case_id}").text)
    assert sighting
    base = f"/cases/{case_id}/places/{sighting.group(1)}"
    warning = c.get(f"{base}/image").text
    assert "<img" not in warning and "upsetting" in warning
    assert c.get(f"{base}/blurred.jpg").status_code == 403
    shown = post(c, f"{base}/image").text
    src = re.search(r'<img id="blurred" src="([^"]+)"', shown)
    assert src
    r = c.get(src.group(1).replace("&amp;", "&"))
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    blurred = Image.open(io.BytesIO(r.content)).convert("L")
    original = Image.open(io.BytesIO(world.photo)).convert("L").resize(blurred.size)
    assert detail(blurred) < detail(original) / 4  # little detail left
    assert c.get(src.group(1).replace("&amp;", "&")).status_code == 403  # the key works once


def test_the_image_to_blur_is_decoded_in_the_hashing_pool_not_in_the_server(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Web bytes are decoded where a scan decodes them (another process, with a deadline): a
    decoder that hangs on them costs a 502, not the server."""
    from concurrent.futures import Future

    from monitor.pool import TaskTimedOut

    c = _scanned(world)
    decoded_in: list[object] = []

    class HungDecoder(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
            decoded_in.append(getattr(fn, "__name__", fn))
            f: Future[bytes] = Future()
            f.set_exception(TaskTimedOut("the task ran past its deadline"))
            return f

    monkeypatch.setattr(c.app.state.web.runner, "pool", HungDecoder(1))  # type: ignore[attr-defined]
    with world.app.db.session() as s:
        case_id = s.scalars(select(Match.id)).one()
    sighting = re.search(r"/places/(\d+)/image", c.get(f"/cases/{case_id}").text)
    assert sighting
    shown = post(c, f"/cases/{case_id}/places/{sighting.group(1)}/image").text
    src = re.search(r'<img id="blurred" src="([^"]+)"', shown)
    assert src
    r = c.get(src.group(1).replace("&amp;", "&"))
    assert r.status_code == 502 and "Could not show it" in r.text
    assert decoded_in == ["blur_image_bytes"]


def test_no_image_at_all_for_a_person_who_may_be_under_18(world: World) -> None:
    c = _scanned(world, minor=True)
    with world.app.db.session() as s:
        case_id = s.scalars(select(Match.id)).one()
    detail = c.get(f"/cases/{case_id}").text
    assert "may be under 18" in detail and "/image" not in detail
    with world.app.db.session() as s:
        from monitor.db.models import Sighting

        sighting_id = s.scalars(select(Sighting.id)).first()
    shown = post(c, f"/cases/{case_id}/places/{sighting_id}/image").text
    assert "<img" not in shown


def test_alert_after_a_scan_links_to_the_cases_page(world: World) -> None:
    _scanned(world)
    from monitor.db.models import OutboxMessage

    with world.app.db.session() as s:
        body = s.scalars(select(OutboxMessage.body)).one()
    assert "http://127.0.0.1:8765/cases" in body and NAME not in body


def test_a_scan_whose_searches_all_failed_is_told_in_plain_words(world: World) -> None:
    world.search.fail_next(500, times=50)
    c = _scanned(world)
    scans = c.get("/scans").text
    assert "No search was answered" in scans and "this is not &#39;nothing found&#39;" in scans
    overview = c.get("/").text
    assert "searched 0 of" in overview


def _luminance(hex_colour: str) -> float:
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_text_colours_meet_wcag_aa_contrast() -> None:
    css = (TEMPLATES.parent / "static" / "style.css").read_text()
    colours = dict(re.findall(r"--([a-z]+): (#[0-9a-f]{6})", css))
    pairs = [  # (text, background) as the stylesheet uses them
        ("fg", "bg"),
        ("muted", "bg"),
        ("accent", "bg"),
        ("warn", "bg"),
        ("err", "bg"),
        ("#ffffff", "accent"),
        ("#ffffff", "exit"),
        ("#ffffff", "err"),
        ("muted", "#f3f3f3"),  # the hint beside the exit button
    ]
    for text, background in pairs:
        a = _luminance(colours.get(text, text))
        b = _luminance(colours.get(background, background))
        ratio = (max(a, b) + 0.05) / (min(a, b) + 0.05)
        assert ratio >= 4.5, (text, background, round(ratio, 2))


def test_evidence_screenshot_only_behind_a_click_and_only_from_the_evidence_folder(
    world: World,
) -> None:
    import json

    from monitor.db.models import SightingState

    c = _scanned(world)
    with world.app.db.session() as s:
        case_id = s.scalars(select(Match.id)).one()
        state = s.scalars(select(SightingState)).first()
        assert state is not None
        sighting_id = state.sighting_id
        folder = world.app.settings.data_dir / "evidence" / f"case-{case_id}"
        folder.mkdir(parents=True, exist_ok=True)
        shot = folder / "shot.png"
        png = io.BytesIO()
        Image.new("RGB", (8, 8), "grey").save(png, "PNG")
        shot.write_bytes(png.getvalue())
        outside = world.app.settings.data_dir / "elsewhere.png"
        outside.write_bytes(png.getvalue())
        files = json.loads(state.evidence_files or "[]")
        files += [
            {"kind": "screenshot", "path": str(shot), "sha256": "x"},
            {"kind": "screenshot", "path": str(outside), "sha256": "y"},
        ]
        state.evidence_files = json.dumps(files)
    base = f"/cases/{case_id}/places/{sighting_id}/screenshot"
    assert f"{base}/0" in c.get(f"/cases/{case_id}").text
    warning = c.get(f"{base}/0").text
    assert "<img" not in warning and "blurred" in warning
    assert f'src="{base}/0.png"' in post(c, f"{base}/0").text
    r = c.get(f"{base}/0.png")
    assert r.status_code == 200 and r.content == png.getvalue()
    assert c.get(f"{base}/1.png").status_code == 400  # not under <data>/evidence
    assert c.get(f"{base}/7.png").status_code == 400


def test_settings_check_the_search_backends_now(world: World) -> None:
    c = world.app.set_up()
    html = post(c, "/settings/backends").text
    assert "FAILING: searxng" in html and "Enable image engines" in html  # what to fix
    assert html.count("Enable image engines") == 1
    image = {"url": "https://p.example/", "img_src": "https://i.example/x.jpg"}
    world.search.add_result("weather", "images", image)
    html = post(c, "/settings/backends").text
    assert 'id="backend-reports"' in html and "ok: searxng" in html


def test_people_of_an_organisation_are_invisible_to_the_household_pages(world: World) -> None:
    """The pages act as the household (like the CLI without --operator): a person monitored by
    an organisation, with their scans and cases, cannot be seen, changed or erased here."""
    from monitor.db.models import Subject
    from monitor.orgs.accounts import add_organisation

    c = _scanned(world)
    with world.app.db.session() as s:
        case_id = s.scalars(select(Match.id)).one()
        org = add_organisation(s, "Helpline")
        s.get(Subject, 1).organisation_id = org.id  # type: ignore[union-attr]
        s.commit()
    assert NAME not in c.get("/people").text
    assert NAME not in c.get("/").text and NAME not in c.get("/scans").text
    assert f"/cases/{case_id}" not in c.get("/cases").text
    for path in ("/people/1", f"/cases/{case_id}", f"/cases/{case_id}/bundle"):
        r = c.get(path)
        assert r.status_code >= 400 and world.web.url("/img/1.jpg") not in r.text, path
    assert post(c, "/people/1/erase", {"confirm_name": NAME}).status_code >= 400
    assert post(c, f"/cases/{case_id}/dismiss").status_code >= 400
    with world.app.db.session() as s:
        subject = s.get(Subject, 1)
        assert subject is not None and s.get(Match, case_id).status == "new"  # type: ignore[union-attr]
