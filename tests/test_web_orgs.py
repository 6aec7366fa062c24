"""The web app for organisations (issue 13): operators log in with a passphrase and a one-time
code, see and change only their organisation's people through every route, viewers only look,
every look and change is in the audit log, a person is added only with consent, casework
(assignment, removal-request outcomes, statistics)."""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from monitor import passphrases, store
from monitor.config import Settings
from monitor.db.models import (
    AuditEntry,
    Consent,
    Image,
    Match,
    Notice,
    Operator,
    OutboxMessage,
    Sighting,
    Subject,
    utcnow,
)
from monitor.orgs import accounts, consent
from tests.test_web import App, csrf_of, make_app

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

PASS = "correct horse battery staple"


@dataclass
class World:
    app: App
    secrets: dict[str, str] = field(default_factory=dict)
    people: dict[str, int] = field(default_factory=dict)  # name -> subject id
    cases: dict[str, int] = field(default_factory=dict)  # name -> case id
    notices: dict[str, int] = field(default_factory=dict)  # name -> sent notice id

    def client(self, email: str, code: str | None = None) -> TestClient:
        """A browser logged in as ``email``."""
        c = self.app.new_client()
        r = self.log_in(c, email, code)
        assert r.status_code == 303 and r.headers["location"] == "/", r.text
        return c

    def log_in(self, c: TestClient, email: str, code: str | None = None, passphrase: str = PASS):
        page = c.get("/login")
        return c.post(
            "/login",
            data={
                "csrf": csrf_of(page.text),
                "email": email,
                "passphrase": passphrase,
                "code": code or pyotp.TOTP(self.secrets[email]).now(),
            },
        )

    def audit(self) -> list[tuple[str, str, int | None]]:
        with self.app.db.session() as s:
            return [
                (e.operator, e.action, e.subject_id)
                for e in s.scalars(select(AuditEntry).order_by(AuditEntry.id))
            ]


def _case(s, subject: Subject, seed: int, host: str) -> tuple[int, int]:
    image = Image(sha256=hashlib.sha256(f"img{seed}".encode()).hexdigest(), width=9, height=9)
    s.add(image)
    s.flush()
    seen = utcnow() - timedelta(days=10)
    s.add(
        Sighting(
            subject_id=subject.id,
            image_id=image.id,
            page_url=f"https://{host}/page{seed}",
            image_url=f"https://{host}/img{seed}.jpg",
            first_seen=seen,
            last_seen=seen,
        )
    )
    match = Match(
        subject_id=subject.id,
        image_id=image.id,
        algorithm="pdq",
        distance=5,
        first_seen=seen,
        status="confirmed",
    )
    s.add(match)
    s.flush()
    notice = Notice(
        match_id=match.id,
        lang="en",
        subject_line="Removal request",
        body="Please remove.",
        sent_at=seen + timedelta(days=1),
        sent_to=f"abuse@{host}",
    )
    s.add(notice)
    s.flush()
    return match.id, notice.id


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setattr(passphrases, "COST", 2**10)  # cheap passphrase hashing in tests
    settings = Settings(
        data_dir=tmp_path / "data",
        web={"exit_url": "https://example.org/"},
        search={"backends": [{"kind": "searxng", "name": "main", "url": "http://127.0.0.1:9/"}]},
    )
    w = World(make_app(settings))
    populate(w)
    yield w
    w.app.db.dispose()


def populate(w: World) -> None:
    """Organisations A and B; A's admin, caseworker and viewer, B's admin; Ann (A) and Bob
    (B), each with consent and a confirmed case with a sent removal request."""
    with w.app.db.session() as s:
        orgs = {n: accounts.add_organisation(s, n) for n in ("A", "B")}
        for email, org, role in (
            ("a@a.org", "A", "admin"),
            ("c@a.org", "A", "caseworker"),
            ("v@a.org", "A", "viewer"),
            ("b@b.org", "B", "admin"),
        ):
            new = accounts.add_operator(s, email, orgs[org], role, PASS)
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(new.provisioning_uri).query)
            w.secrets[email] = query["secret"][0]
        for name, org in (("Ann Smith", "A"), ("Bob Jones", "B")):
            subject = store.add_subject(
                s, name, interval=timedelta(days=1), organisation_id=orgs[org].id
            )
            consent.record_consent(
                s, subject, given_by="person", names=[name], backends=["main"], form_sha="0" * 64
            )
            w.people[name] = subject.id
            w.cases[name], w.notices[name] = _case(s, subject, subject.id, f"{org.lower()}.test")


def _routes(w: World, name: str) -> list[tuple[str, str, dict[str, str]]]:
    """Every route that reads or changes a person's data, for ``name``."""
    sid, cid, nid = w.people[name], w.cases[name], w.notices[name]
    place = f"/cases/{cid}/places/{sid}"  # sighting ids follow subject ids in this world
    return [
        ("GET", f"/people/{sid}", {}),
        ("GET", f"/people/{sid}/audit.json", {}),
        ("POST", f"/people/{sid}/settings", {"every": "2h", "aliases": "X"}),
        ("POST", f"/people/{sid}/scan", {}),
        ("POST", f"/people/{sid}/photos", {}),
        ("POST", f"/people/{sid}/erase", {"confirm_name": name}),
        ("POST", f"/people/{sid}/consent/withdraw", {"confirm_name": name}),
        ("GET", f"/cases/{cid}", {}),
        ("POST", f"/cases/{cid}/confirm", {}),
        ("POST", f"/cases/{cid}/dismiss", {}),
        ("POST", f"/cases/{cid}/recheck", {}),
        ("GET", f"/cases/{cid}/bundle", {}),
        ("POST", f"/cases/{cid}/notice", {"lookup": "off"}),
        ("GET", f"/cases/{cid}/notices/{nid}", {}),
        ("POST", f"/cases/{cid}/notices/{nid}/send", {"confirm": "yes", "to": "x@y.test"}),
        ("POST", f"/cases/{cid}/assign", {"email": "c@a.org"}),
        ("POST", f"/cases/{cid}/request", {"state": "removed", "at": "2026-01-02"}),
        ("GET", f"{place}/image", {}),
        ("POST", f"{place}/image", {}),
        ("GET", f"{place}/blurred.jpg?k=x", {}),
        ("GET", f"{place}/screenshot/0", {}),
        ("GET", f"{place}/screenshot/0.png", {}),
    ]


def _send(c: TestClient, method: str, path: str, data: dict[str, str]):
    if method == "GET":
        return c.get(path)
    token = csrf_of(c.get("/help").text)
    return c.post(path, data={"csrf": token, **data})


def _state(w: World, name: str) -> tuple[object, ...]:
    with w.app.db.session() as s:
        subject = s.get(Subject, w.people[name])
        case = s.get(Match, w.cases[name])
        notice = s.get(Notice, w.notices[name])
        return (
            subject.interval_seconds,
            len(subject.aliases),
            case.status,
            case.assigned_to,
            notice.removed_at,
            s.scalar(select(Consent.withdrawn_at).where(Consent.subject_id == subject.id)),
        )


def test_an_operator_sees_and_changes_nothing_of_another_organisation(world: World) -> None:
    c = world.client("a@a.org")
    before = _state(world, "Bob Jones")
    for page in ("/", "/people", "/cases", "/scans", "/stats"):
        r = c.get(page)
        assert r.status_code == 200, page
        assert "Bob Jones" not in r.text and "b.test" not in r.text, page
    assert "Ann Smith" in c.get("/people").text
    for method, path, data in _routes(world, "Bob Jones"):
        r = _send(c, method, path, data)
        assert r.status_code in (400, 403, 404), (method, path, r.status_code)
        assert "Bob Jones" not in r.text and "b.test" not in r.text, path
    assert _state(world, "Bob Jones") == before
    # and B's admin does see Bob, not Ann
    b = world.client("b@b.org")
    assert "Bob Jones" in b.get("/people").text
    assert "Ann Smith" not in b.get("/cases").text


def test_a_viewer_looks_but_changes_nothing(world: World) -> None:
    v = world.client("v@a.org")
    before = _state(world, "Ann Smith")
    assert "Ann Smith" in v.get(f"/people/{world.people['Ann Smith']}").text
    assert v.get(f"/cases/{world.cases['Ann Smith']}").status_code == 200
    for method, path, data in _routes(world, "Ann Smith"):
        if method == "POST" and not path.endswith("/image"):
            r = _send(v, method, path, data)
            assert r.status_code == 403, (path, r.status_code)
    r = _send(v, "POST", "/people", {"name": "New Person", "consent_by": "person"})
    assert r.status_code == 403
    assert _state(world, "Ann Smith") == before
    with world.app.db.session() as s:
        assert s.scalar(select(Subject).where(Subject.name == "New Person")) is None


def test_looks_and_changes_are_audited_without_personal_data(world: World) -> None:
    c = world.client("c@a.org")
    ann, case = world.people["Ann Smith"], world.cases["Ann Smith"]
    c.get(f"/people/{ann}")
    c.get(f"/cases/{case}")
    assert c.get(f"/cases/{case}/bundle").status_code == 200
    assert _send(c, "POST", f"/people/{ann}/settings", {"every": "3h"}).status_code == 303
    assert _send(c, "POST", f"/cases/{case}/dismiss", {}).status_code == 303
    log = world.audit()
    assert ("c@a.org", "subject show", ann) in log
    assert ("c@a.org", "case show", ann) in log
    assert ("c@a.org", "case evidence export", ann) in log
    assert ("c@a.org", "subject update", ann) in log
    assert ("c@a.org", "case dismiss", ann) in log
    export = c.get(f"/people/{ann}/audit.json")
    assert export.status_code == 200
    assert {"subject show", "case show"} <= {e["action"] for e in export.json()}
    assert {e["subject_id"] for e in export.json()} == {ann}
    assert "subject update" in c.get("/audit").text
    assert world.client("v@a.org").get("/audit").status_code == 403
    assert "c@a.org" not in world.client("b@b.org").get("/audit").text
    r = _send(c, "POST", f"/people/{ann}/erase", {"confirm_name": "Ann Smith"})
    assert r.status_code == 303
    assert ("c@a.org", "subject remove", ann) in world.audit()
    with world.app.db.session() as s:
        assert s.get(Subject, ann) is None
        details = " ".join(s.scalars(select(AuditEntry.detail)))
    assert "Ann" not in details and "a.test" not in details


def test_wrong_login_parts_are_not_told_apart(world: World) -> None:
    secret = world.secrets["a@a.org"]
    wrong_code = str((int(pyotp.TOTP(secret).now()) + 500_000) % 1_000_000).zfill(6)
    texts = set()
    for email, passphrase, code in (
        ("nobody@a.org", PASS, pyotp.TOTP(secret).now()),
        ("a@a.org", "wrong passphrase!", pyotp.TOTP(secret).now()),
        ("a@a.org", PASS, wrong_code),
    ):
        c = world.app.new_client()
        r = world.log_in(c, email, code, passphrase)
        assert r.status_code == 400
        texts.add(re.search(r'role="alert">([^<]*)<', r.text).group(1))
        assert c.get("/people").status_code == 303  # still logged out
    assert len(texts) == 1
    # after five wrong tries in a row even the right ones wait (the household's slow-down)
    for _ in range(2):
        world.log_in(world.app.new_client(), "a@a.org", wrong_code)
    r = world.log_in(world.app.new_client(), "a@a.org")
    assert r.status_code == 400 and "wait" in r.text
    world.app.clock.now += timedelta(minutes=1)
    assert world.log_in(world.app.new_client(), "a@a.org").status_code == 303
    # the household passphrase page is not offered once organisations exist
    assert world.app.new_client().get("/setup").headers["location"] == "/login"


def test_a_person_is_added_only_with_consent(world: World) -> None:
    c = world.client("c@a.org")
    token = csrf_of(c.get("/people").text)
    fields = {"csrf": token, "name": "Cas Doe", "consent_by": "person", "backend": "main"}
    r = c.post("/people", data=fields)  # no signed form
    assert r.status_code == 400 and "consent" in r.text
    form = b"%PDF signed by Cas"
    r = c.post(
        "/people",
        data={**fields, "consent_until": "2099-01-01"},
        files={"consent_form": ("consent.pdf", form, "application/pdf")},
    )
    assert r.status_code == 303, r.text
    with world.app.db.session() as s:
        subject = s.scalar(select(Subject).where(Subject.name == "Cas Doe"))
        record = consent.latest(s, subject.id)
        assert subject.organisation_id == s.scalar(
            select(accounts.Organisation.id).where(accounts.Organisation.name == "A")
        )
        assert record.form_sha256 == hashlib.sha256(form).hexdigest()
        assert record.valid_until.year == 2099 and "main" in record.backends
        cas = subject.id
    page = c.get(f"/people/{cas}").text
    assert hashlib.sha256(form).hexdigest() in page
    assert ("c@a.org", "subject add", cas) in world.audit()
    # withdrawal erases at once, after the name is typed
    r = _send(c, "POST", f"/people/{cas}/consent/withdraw", {"confirm_name": "Cas"})
    with world.app.db.session() as s:
        assert s.get(Subject, cas) is not None
    r = _send(c, "POST", f"/people/{cas}/consent/withdraw", {"confirm_name": "Cas Doe"})
    assert r.status_code == 303
    with world.app.db.session() as s:
        assert s.get(Subject, cas) is None
    assert ("c@a.org", "consent withdrawn", cas) in world.audit()


def test_a_disabled_operator_is_logged_out(world: World) -> None:
    c = world.client("c@a.org")
    assert c.get("/people").status_code == 200
    with world.app.db.session() as s:
        s.scalar(select(Operator).where(Operator.email == "c@a.org")).disabled_at = utcnow()
    assert c.get("/people").headers["location"] == "/login"


def test_casework_assignment_request_outcomes_and_statistics(world: World) -> None:
    c = world.client("c@a.org")
    case, ann = world.cases["Ann Smith"], world.people["Ann Smith"]
    page = c.get(f"/cases/{case}").text
    assert "not assigned" in page and "c@a.org" in page and "b@b.org" not in page
    assert _send(c, "POST", f"/cases/{case}/assign", {"email": "b@b.org"}).status_code == 400
    assert _send(c, "POST", f"/cases/{case}/assign", {"email": "v@a.org"}).status_code == 400
    assert _send(c, "POST", f"/cases/{case}/assign", {"email": "c@a.org"}).status_code == 303
    assert re.search(r'id="assigned">c@a.org<', c.get(f"/cases/{case}").text)
    stats = c.get("/stats").text
    assert "a.test" in stats and "0%" in stats
    r = _send(c, "POST", f"/cases/{case}/request", {"state": "removed", "at": "2030-01-05"})
    assert r.status_code == 303
    assert "2030-01-05" in c.get(f"/cases/{case}").text
    with world.app.db.session() as s:
        notice = s.get(Notice, world.notices["Ann Smith"])
        assert notice.removed_at.date().isoformat() == "2030-01-05"
        # the case counts as removed once every place is gone (re-check); here by hand
        s.get(Match, case).removed_at = notice.removed_at
    stats = c.get("/stats").text
    assert re.search(r"a\.test</td><td>1</td><td>1</td><td>100%", stats), stats
    assert "b.test" not in stats
    log = world.audit()
    assert ("c@a.org", "case assign", ann) in log and ("c@a.org", "case request", ann) in log


def test_the_mailed_consent_link_confirms_only_after_the_button(world: World) -> None:
    with world.app.db.session() as s:
        subject = store.add_subject(
            s, "Dee Link", interval=timedelta(days=1), organisation_id=1, email="d@x.test"
        )
        token = consent.new_link_token()
        consent.record_consent(
            s, subject, given_by="person", names=["Dee Link"], backends=["*"], link_token=token
        )
        dee = subject.id
    person = world.app.new_client()  # not logged in
    page = person.get(f"/confirm?code={token}")
    assert page.status_code == 200 and "Dee Link" not in page.text
    with world.app.db.session() as s:
        assert consent.latest(s, dee).confirmed_at is None  # opening the link is not agreeing
    r = person.post("/confirm", data={"csrf": csrf_of(page.text), "code": token + "x"})
    assert r.status_code == 400
    r = person.post("/confirm", data={"csrf": csrf_of(page.text), "code": token})
    assert r.status_code == 200
    with world.app.db.session() as s:
        assert consent.latest(s, dee).confirmed_at is not None
    assert ("the person (confirmation link)", "consent confirmed", dee) in world.audit()
    # B's admin cannot confirm a code of A's person
    token2 = "another-code-for-dee"
    with world.app.db.session() as s:
        consent.record_consent(
            s,
            s.get(Subject, dee),
            given_by="person",
            names=["Dee Link"],
            backends=["*"],
            link_token=token2,
        )
    b = world.client("b@b.org")
    assert _send(b, "POST", "/consent/confirm", {"code": token2}).status_code == 400
    a = world.client("c@a.org")
    assert _send(a, "POST", "/consent/confirm", {"code": token2}).status_code == 303


def test_add_with_a_mailed_link_and_renew_with_a_new_form(world: World) -> None:
    c = world.client("c@a.org")
    token = csrf_of(c.get("/people").text)
    fields = {"csrf": token, "name": "Eve Mail", "consent_by": "person", "backend": "main"}
    r = c.post("/people", data={**fields, "consent_how": "link"})  # no email to mail it to
    assert r.status_code == 400
    with world.app.db.session() as s:
        assert s.scalar(select(Subject).where(Subject.name == "Eve Mail")) is None
    r = c.post(
        "/people",
        data={**fields, "consent_how": "link", "email": "eve@x.test", "alert_to": "both"},
    )
    assert r.status_code == 303, r.text
    with world.app.db.session() as s:
        eve = s.scalar(select(Subject).where(Subject.name == "Eve Mail"))
        assert eve.alert_to == "both"
        assert consent.latest(s, eve.id).confirmed_at is None  # not valid before the person agrees
        mail = s.scalar(select(OutboxMessage).where(OutboxMessage.subject_id == eve.id))
        assert mail.kind == "consent_link" and "Eve" not in mail.body
        eve_id = eve.id
    form = b"%PDF renewed"
    r = c.post(
        f"/people/{eve_id}/consent/renew",
        data={"csrf": token, "consent_by": "Rita Rep", "authority": "guardian", "backend": "main"},
        files={"consent_form": ("c.pdf", form, "application/pdf")},
    )
    assert r.status_code == 303, r.text
    with world.app.db.session() as s:
        record = consent.latest(s, eve_id)
        assert record.form_sha256 == hashlib.sha256(form).hexdigest()
        assert record.representative == "Rita Rep" and record.confirmed_at is not None
    assert ("c@a.org", "consent renew", eve_id) in world.audit()


def test_a_one_time_code_opens_one_session_only(world: World) -> None:
    """A code seen over a shoulder (or replayed) within its ~90 s window opens no second
    session; the next code does."""
    totp = pyotp.TOTP(world.secrets["a@a.org"])
    code = totp.now()
    assert world.log_in(world.app.new_client(), "a@a.org", code).status_code == 303
    replay = world.app.new_client()
    assert world.log_in(replay, "a@a.org", code).status_code == 400
    assert replay.get("/people").status_code == 303  # logged out
    later = totp.at(datetime.now(UTC) + timedelta(seconds=30))
    assert world.log_in(world.app.new_client(), "a@a.org", later).status_code == 303


def test_a_paused_persons_case_is_not_checked_again_from_the_page(world: World) -> None:
    ann, case = world.people["Ann Smith"], world.cases["Ann Smith"]
    with world.app.db.session() as s:
        consent.latest(s, ann).valid_until = utcnow() - timedelta(minutes=1)
    c = world.client("c@a.org")
    assert "no re-checks" in c.get(f"/people/{ann}").text
    r = _send(c, "POST", f"/cases/{case}/recheck", {})
    assert r.status_code == 400 and "not re-checked" in r.text
    with world.app.db.session() as s:
        assert s.get(Match, case).last_checked_at is None


def _forget_codes(w: World) -> None:
    """Let the one-time codes of this 30 s window serve again (more log-ins than a test can
    wait windows for)."""
    with w.app.db.session() as s:
        for op in s.scalars(select(Operator)):
            op.totp_last_step = None


def test_an_admin_manages_operators_on_the_web(world: World) -> None:
    with world.app.db.session() as s:
        ids = {o.email: o.id for o in s.scalars(select(Operator))}
    v_id, c_id = ids["v@a.org"], ids["c@a.org"]
    a, c, v, b = (world.client(e) for e in ("a@a.org", "c@a.org", "v@a.org", "b@b.org"))
    # only A's admins see and use the page
    assert c.get("/operators").status_code == 403 and v.get("/operators").status_code == 403
    assert 'href="/operators"' in a.get("/people").text
    assert 'href="/operators"' not in c.get("/people").text
    page = a.get("/operators").text
    assert "c@a.org" in page and "b@b.org" not in page
    changes = [
        ("role", {"role": "admin"}),
        ("disable", {}),
        ("enable", {}),
        ("passphrase", {"passphrase": "x" * 20, "repeat": "x" * 20}),
        ("totp", {}),
    ]
    for who in (b, c, v):
        for action, data in changes:
            r = _send(who, "POST", f"/operators/{v_id}/{action}", data)
            assert r.status_code in (400, 403), (action, r.status_code)
            assert who is v or "v@a.org" not in r.text
    with world.app.db.session() as s:
        op = s.get(Operator, v_id)
        assert op.role == "viewer" and op.disabled_at is None
    # a role change applies from the operator's next page
    assert (
        _send(
            v, "POST", f"/people/{world.people['Ann Smith']}/settings", {"every": "3h"}
        ).status_code
        == 403
    )
    assert _send(a, "POST", f"/operators/{v_id}/role", {"role": "caseworker"}).status_code == 303
    assert (
        _send(
            v, "POST", f"/people/{world.people['Ann Smith']}/settings", {"every": "3h"}
        ).status_code
        == 303
    )
    # disabled: their session ends, they cannot log in; enabled: they can
    assert _send(a, "POST", f"/operators/{v_id}/disable", {}).status_code == 303
    assert v.get("/people").headers["location"] == "/login"
    _forget_codes(world)
    assert world.log_in(world.app.new_client(), "v@a.org").status_code == 400
    assert _send(a, "POST", f"/operators/{v_id}/enable", {}).status_code == 303
    v = world.client("v@a.org")
    # a new passphrase: their session ends, the old passphrase fails, the new one works
    new = "a brand new passphrase"
    r = _send(a, "POST", f"/operators/{c_id}/passphrase", {"passphrase": new, "repeat": new})
    assert r.status_code == 303
    assert c.get("/people").headers["location"] == "/login"
    _forget_codes(world)
    assert world.log_in(world.app.new_client(), "c@a.org").status_code == 400
    _forget_codes(world)
    assert world.log_in(world.app.new_client(), "c@a.org", passphrase=new).status_code == 303
    # a new second factor, shown once: the session ends, the old codes fail, the new ones work
    r = _send(a, "POST", f"/operators/{v_id}/totp", {})
    assert r.status_code == 200 and "otpauth://" in r.text
    assert "otpauth://" not in a.get("/operators").text
    assert v.get("/people").headers["location"] == "/login"
    old = world.secrets["v@a.org"]
    secret = re.search(r"secret=([A-Z2-7]+)", r.text).group(1)
    assert secret != old
    assert world.log_in(world.app.new_client(), "v@a.org", pyotp.TOTP(old).now()).status_code == 400
    world.secrets["v@a.org"] = secret
    world.client("v@a.org")
    # the organisation keeps an active admin
    a_id = ids["a@a.org"]
    assert _send(a, "POST", f"/operators/{a_id}/disable", {}).status_code == 400
    assert _send(a, "POST", f"/operators/{a_id}/role", {"role": "viewer"}).status_code == 400
    log = [(who, what) for who, what, _ in world.audit()]
    for action in ("operator role", "operator disable", "operator enable", "operator reset"):
        assert ("a@a.org", action) in log, action
    with world.app.db.session() as s:
        details = " ".join(s.scalars(select(AuditEntry.detail)))
    assert "@" not in details


def test_an_operator_changes_their_own_passphrase(world: World) -> None:
    """A viewer too; their other sessions end, this one goes on."""
    v = world.client("v@a.org")
    other = world.client(
        "v@a.org",
        pyotp.TOTP(world.secrets["v@a.org"]).at(datetime.now(UTC) + timedelta(seconds=30)),
    )
    assert 'minlength="12"' in v.get("/settings").text
    new = "my own new passphrase"
    r = _send(
        v,
        "POST",
        "/settings/passphrase",
        {"current": "wrong one!", "passphrase": new, "repeat": new},
    )
    assert r.status_code == 303 and "not right" in v.get("/settings").text
    r = _send(
        v, "POST", "/settings/passphrase", {"current": PASS, "passphrase": new, "repeat": new}
    )
    assert r.status_code == 303
    assert "The passphrase was changed." in v.get("/settings").text  # this session goes on
    assert other.get("/people").headers["location"] == "/login"  # the other one ended
    _forget_codes(world)
    assert world.log_in(world.app.new_client(), "v@a.org", passphrase=new).status_code == 303
    assert ("v@a.org", "operator passphrase") in [(w, a) for w, a, _ in world.audit()]


def test_an_invited_person_sees_only_their_own_cases_and_can_withdraw(world: World) -> None:
    from monitor.db.models import PersonLogin

    ann, case = world.people["Ann Smith"], world.cases["Ann Smith"]
    with world.app.db.session() as s:
        s.get(Subject, ann).email = "ann@x.test"
    c, v, b = world.client("c@a.org"), world.client("v@a.org"), world.client("b@b.org")
    assert _send(v, "POST", f"/people/{ann}/invite", {}).status_code == 403
    assert _send(b, "POST", f"/people/{ann}/invite", {}).status_code in (400, 404)
    assert "Invite the person" in c.get(f"/people/{ann}").text
    assert _send(c, "POST", f"/people/{ann}/invite", {}).status_code == 303
    with world.app.db.session() as s:
        mail = s.scalar(select(OutboxMessage).where(OutboxMessage.kind == "person_invite"))
        assert mail.recipient == "ann@x.test" and "Ann" not in mail.body
        assert s.scalar(select(PersonLogin.invite_sha256)) is not None
    code = re.search(r"/me/invite\?code=(\S+)", mail.body).group(1)
    p = world.app.new_client()  # the person's browser
    page = p.get(f"/me/invite?code={code}")
    assert page.status_code == 200 and "Ann" not in page.text
    token = csrf_of(page.text)
    r = p.post(
        "/me/invite", data={"csrf": token, "code": code, "passphrase": "short", "repeat": "short"}
    )
    assert r.status_code == 400
    mine = "my own passphrase here"
    r = p.post("/me/invite", data={"csrf": token, "code": code, "passphrase": mine, "repeat": mine})
    assert r.status_code == 303 and r.headers["location"] == "/me"
    again = world.app.new_client()  # the link works once
    r = again.post(
        "/me/invite",
        data={
            "csrf": csrf_of(again.get("/me/invite").text),
            "code": code,
            "passphrase": "x" * 12,
            "repeat": "x" * 12,
        },
    )
    assert r.status_code == 400
    me = p.get("/me")
    assert me.status_code == 200 and 'id="quick-exit"' in me.text
    assert "https://a.test/page" in me.text and f'id="case-{case}"' in me.text
    assert "img" + str(ann) + ".jpg" not in me.text  # no found image, not even its address
    assert "b.test" not in me.text and "Bob" not in me.text
    assert ("the person", "person view", ann) in world.audit()
    # a person's session opens no operator page, and changes nothing there
    for path in (
        "/",
        "/people",
        f"/people/{ann}",
        f"/cases/{case}",
        "/audit",
        "/operators",
        "/stats",
    ):
        assert p.get(path).headers["location"] == "/login", path
    r = p.post(f"/cases/{case}/dismiss", data={"csrf": csrf_of(me.text)})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    # log out; log in again (a wrong passphrase is refused)
    assert p.post("/me/logout", data={"csrf": csrf_of(me.text)}).headers["location"] == "/me/login"
    assert p.get("/me").headers["location"] == "/me/login"
    login = p.get("/me/login")
    form = {"csrf": csrf_of(login.text), "email": "ann@x.test", "passphrase": "wrong passphrase"}
    assert p.post("/me/login", data=form).status_code == 400
    form["csrf"] = csrf_of(p.get("/me/login").text)
    assert p.post("/me/login", data={**form, "passphrase": mine}).headers["location"] == "/me"
    # withdrawal by the person erases everything, their log-in too
    me = p.get("/me")
    assert p.post("/me/withdraw", data={"csrf": csrf_of(me.text)}).status_code == 400
    r = p.post("/me/withdraw", data={"csrf": csrf_of(me.text), "confirm": "yes"})
    assert r.status_code == 200 and "erased" in r.text
    with world.app.db.session() as s:
        assert s.get(Subject, ann) is None and s.scalar(select(PersonLogin)) is None
    assert p.get("/me").headers["location"] == "/me/login"
    assert ("the person", "consent withdrawn", ann) in world.audit()


def test_one_address_two_organisations_two_separate_person_logins(world: World) -> None:
    """The same address may be a person of A and of B: inviting one tells nothing of the
    other, and each passphrase opens its own cases only."""
    from monitor.orgs import person

    ann, bob = world.people["Ann Smith"], world.people["Bob Jones"]
    phrases = {ann: "ann's own passphrase", bob: "bob's own passphrase"}
    for subject_id, operator in ((ann, "c@a.org"), (bob, "b@b.org")):
        with world.app.db.session() as s:
            s.get(Subject, subject_id).email = "same@x.test"
        assert (
            _send(world.client(operator), "POST", f"/people/{subject_id}/invite", {}).status_code
            == 303
        )
    with world.app.db.session() as s:
        bodies = s.scalars(select(OutboxMessage.body).where(OutboxMessage.kind == "person_invite"))
        codes = [re.search(r"code=(\S+)", b).group(1) for b in bodies]
    for code, subject_id in zip(codes, (ann, bob), strict=True):
        with world.app.db.session() as s:
            phrase = phrases[subject_id]
            assert person.accept_invite(s, code, phrase, phrase).subject_id == subject_id
    for subject_id, other in ((ann, "b.test"), (bob, "a.test")):
        p = world.app.new_client()
        form = {"csrf": csrf_of(p.get("/me/login").text), "email": "same@x.test"}
        assert (
            p.post("/me/login", data={**form, "passphrase": phrases[subject_id]}).status_code == 303
        )
        page = p.get("/me").text
        assert f'id="case-{world.cases["Ann Smith" if subject_id == ann else "Bob Jones"]}"' in page
        assert other not in page


def test_the_person_sees_their_evidence_screenshot_only_behind_the_warning(world: World) -> None:
    import json

    from monitor.db.models import SightingState
    from monitor.orgs import person

    png = b"\x89PNG\r\n\x1a\n not really a picture"
    shots = {}
    for name in ("Ann Smith", "Bob Jones"):
        sid, cid = world.people[name], world.cases[name]
        folder = world.app.settings.data_dir / "evidence" / f"case-{cid}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "shot.png").write_bytes(png + name.encode())
        with world.app.db.session() as s:
            sighting = s.scalar(select(Sighting.id).where(Sighting.subject_id == sid))
            files = [{"kind": "screenshot", "path": str(folder / "shot.png"), "sha256": "x"}]
            s.add(SightingState(sighting_id=sighting, evidence_files=json.dumps(files)))
        shots[name] = (cid, sighting)
    ann = world.people["Ann Smith"]
    with world.app.db.session() as s:
        s.get(Subject, ann).email = "ann@x.test"
        url = person.invite(s, world.app.settings, s.get(Subject, ann), accounts.scope_of(
            s.scalar(select(Operator).where(Operator.email == "c@a.org"))))  # fmt: skip
        person.accept_invite(s, url.split("code=")[1], "ann's passphrase", "ann's passphrase")
    p = world.app.new_client()
    form = {"csrf": csrf_of(p.get("/me/login").text), "email": "ann@x.test"}
    assert p.post("/me/login", data={**form, "passphrase": "ann's passphrase"}).status_code == 303
    cid, sighting = shots["Ann Smith"]
    base = f"/me/cases/{cid}/places/{sighting}/screenshot/0"
    assert f'href="{base}"' in p.get("/me").text
    warning = p.get(base)
    assert warning.status_code == 200 and "<img" not in warning.text and "blurred" in warning.text
    shown = p.post(base, data={"csrf": csrf_of(warning.text)})
    assert f'src="{base}.png"' in shown.text
    r = p.get(f"{base}.png")
    assert r.status_code == 200 and r.content == png + b"Ann Smith"
    # nothing of Bob's, by any number; nothing when logged out
    bob_cid, bob_sighting = shots["Bob Jones"]
    for path in (
        f"/me/cases/{bob_cid}/places/{bob_sighting}/screenshot/0",
        f"/me/cases/{bob_cid}/places/{bob_sighting}/screenshot/0.png",
        f"/me/cases/{cid}/places/{bob_sighting}/screenshot/0.png",
    ):
        r = p.get(path)
        assert r.status_code in (400, 404) and b"Bob" not in r.content, path
    log = world.audit()
    assert ("the person", "person screenshot", ann) in log
    assert ("the person", "person screenshot view", ann) in log
    assert world.app.new_client().get(f"{base}.png").headers["location"] == "/me/login"
