"""Operators added on the web, and the organisation switcher of an admin of several
organisations (issue 13): after a switch every page shows only the organisation switched to,
the other one's people, cases, audit log, statistics and operators are out of reach, a switch
to an organisation the operator is not an admin of is refused, and switches are audited."""

from __future__ import annotations

import re

import pyotp
import pytest
from sqlalchemy import select
from starlette.testclient import TestClient

from monitor.db.models import AuditEntry, Match, Membership, Operator, Organisation
from monitor.orgs import accounts
from tests.test_web import csrf_of
from tests.test_web_orgs import (  # noqa: F401 - the fixture
    PASS,
    World,
    _forget_codes,
    _routes,
    _send,
    _state,
    world,
)

pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

NEW = "a new operator's passphrase"


def _org_ids(w: World) -> dict[str, int]:
    with w.app.db.session() as s:
        return {o.name: o.id for o in s.scalars(select(Organisation))}


def _add(c: TestClient, email: str, role: str, passphrase: str = NEW, repeat: str | None = None):
    data = {"email": email, "role": role, "passphrase": passphrase}
    data["repeat"] = passphrase if repeat is None else repeat
    return _send(c, "POST", "/operators/add", data)


def _switch(c: TestClient, org_id: int | str):
    return _send(c, "POST", "/organisation", {"org": str(org_id)})


def _details(w: World) -> str:
    with w.app.db.session() as s:
        return " ".join(s.scalars(select(AuditEntry.detail)))


def test_an_admin_adds_an_operator_on_the_web(world: World) -> None:  # noqa: F811
    a, c, v, b = (world.client(e) for e in ("a@a.org", "c@a.org", "v@a.org", "b@b.org"))
    page = a.get("/operators").text
    assert 'action="/operators/add"' in page and "otpauth://" not in page
    # only the organisation's admins; a form from elsewhere is refused
    for who in (c, v):
        assert _add(who, "n@a.org", "caseworker").status_code == 403
    r = a.post("/operators/add", data={"email": "n@a.org", "role": "viewer", "csrf": "forged"})
    assert r.status_code == 403
    # the passphrase twice, 12 characters or more; a valid address and role
    assert _add(a, "n@a.org", "caseworker", repeat="something else").status_code == 400
    assert _add(a, "n@a.org", "caseworker", passphrase="too short").status_code == 400
    assert _add(a, "not an address", "caseworker").status_code == 400
    assert _add(a, "n@a.org", "owner").status_code == 400
    with world.app.db.session() as s:
        assert accounts.find_by_email(s, "n@a.org") is None
    # added: the authenticator's URI is shown once, on this answer only
    r = _add(a, "N@A.org", "caseworker")
    assert r.status_code == 200 and "otpauth://" in r.text and "n@a.org" in r.text
    assert "otpauth://" not in a.get("/operators").text
    assert r.headers["cache-control"] == "no-store"
    secret = re.search(r"secret=([A-Z2-7]+)", r.text).group(1)
    world.secrets["n@a.org"] = secret
    n = world.app.new_client()
    assert world.log_in(n, "n@a.org", passphrase=NEW).status_code == 303
    assert "Ann Smith" in n.get("/people").text and "Bob Jones" not in n.get("/people").text
    with world.app.db.session() as s:
        op = accounts.find_by_email(s, "n@a.org")
        assert (op.role, op.organisation_id) == ("caseworker", _org_ids(world)["A"])
    assert ("a@a.org", "operator add", None) in world.audit()
    assert "@" not in _details(world)
    # the same email again, and B's admin never sees A's operators
    assert _add(a, "n@a.org", "viewer").status_code == 400
    assert "n@a.org" not in b.get("/operators").text
    # B's admin adding someone adds them to B
    r = _add(b, "m@b.org", "viewer")
    assert r.status_code == 200
    with world.app.db.session() as s:
        assert accounts.find_by_email(s, "m@b.org").organisation_id == _org_ids(world)["B"]
    assert "m@b.org" not in a.get("/operators").text


def test_an_admin_of_two_organisations_switches_between_them(world: World) -> None:  # noqa: F811
    orgs = _org_ids(world)
    b = world.client("b@b.org")
    # B's admin makes A's admin an admin of B too: no new passphrase, no new second factor
    assert _add(b, "c@a.org", "caseworker", passphrase="").status_code == 400  # admins only
    r = _add(b, "a@a.org", "admin", passphrase="")
    assert r.status_code == 303 and "otpauth://" not in r.text
    assert "a@a.org" in b.get("/operators").text and "c@a.org" not in b.get("/operators").text
    assert _add(b, "a@a.org", "admin", passphrase="").status_code == 400  # already
    # one organisation: named on every page, no switcher
    c = world.client("c@a.org")
    for path in ("/", "/people", "/cases", "/stats", "/settings"):
        html = c.get(path).text
        assert "Organisation: <strong>A</strong>" in html and "organisation-switch" not in html
    # two: the switcher; the session starts in the home organisation
    a = world.client("a@a.org")
    html = a.get("/people").text
    assert "organisation-switch" in html and "Organisation: <strong>A</strong>" in html
    assert "Ann Smith" in html and "Bob Jones" not in html
    # refused: no form token, an organisation not theirs, nonsense; a caseworker, a viewer
    assert a.post("/organisation", data={"org": str(orgs["B"])}).status_code == 403
    with world.app.db.session() as s:
        orgs["C"] = accounts.add_organisation(s, "C").id
    for org in (orgs["C"], 999, "x"):
        assert _switch(a, org).status_code in (400, 403)
    assert "Ann Smith" in a.get("/people").text
    assert _switch(c, orgs["B"]).status_code == 403
    assert _switch(world.client("v@a.org"), orgs["B"]).status_code == 403
    # a membership that is not admin does not let one switch
    with world.app.db.session() as s:
        c_id = accounts.find_by_email(s, "c@a.org").id
        s.add(Membership(operator_id=c_id, organisation_id=orgs["B"], role="caseworker"))
    assert _switch(c, orgs["B"]).status_code == 403
    assert "Bob Jones" not in c.get("/people").text
    with world.app.db.session() as s:
        s.delete(s.scalar(select(Membership).where(Membership.operator_id == c_id)))

    # switched to B: every page is B's only
    ann_before = _state(world, "Ann Smith")
    r = _switch(a, orgs["B"])
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "You now act for B." in a.get("/").text
    for path in ("/", "/people", "/cases", "/scans", "/stats", "/audit", "/operators"):
        r = a.get(path)
        assert r.status_code == 200, path
        assert "Organisation: <strong>B</strong>" in r.text, path
        assert "Ann Smith" not in r.text and "a.test" not in r.text, path
    assert "Bob Jones" in a.get("/people").text and "Bob Jones" in a.get("/cases").text
    ops = a.get("/operators").text
    assert "b@b.org" in ops and "c@a.org" not in ops and "v@a.org" not in ops
    audit = a.get("/audit").text
    assert "organisation switch" in audit and "operator add" in audit
    assert "subject show" not in audit  # A's entries stay in A
    # A's people and cases: out of reach for reading and changing
    for method, path, data in _routes(world, "Ann Smith"):
        r = _send(a, method, path, data)
        assert r.status_code in (400, 403, 404), (method, path, r.status_code)
        assert "Ann Smith" not in r.text and "a.test" not in r.text, path
    assert _state(world, "Ann Smith") == ann_before
    with world.app.db.session() as s:
        v_id = accounts.find_by_email(s, "v@a.org").id
        b_id = accounts.find_by_email(s, "b@b.org").id
        a_id = accounts.find_by_email(s, "a@a.org").id
    for action, data in (("role", {"role": "admin"}), ("disable", {}), ("totp", {})):
        assert _send(a, "POST", f"/operators/{v_id}/{action}", data).status_code == 400
    # B's people and cases: as B's admin
    bob = world.people["Bob Jones"]
    assert a.get(f"/people/{bob}").status_code == 200
    case = world.cases["Bob Jones"]
    r = _send(a, "POST", f"/cases/{case}/assign", {"email": "a@a.org"})
    assert r.status_code == 303
    with world.app.db.session() as s:
        assert s.get(Match, case).assigned_to == a_id
    r = _send(a, "POST", f"/cases/{world.cases['Ann Smith']}/assign", {"email": "a@a.org"})
    assert r.status_code in (400, 404)
    assert ("a@a.org", "case assign", bob) in world.audit()
    # B's admin manages the membership, not the member's log-in (their home's business)
    for action, data in (
        ("role", {"role": "viewer"}),
        ("passphrase", {"passphrase": "x" * 20, "repeat": "x" * 20}),
        ("totp", {}),
    ):
        assert _send(b, "POST", f"/operators/{a_id}/{action}", data).status_code in (400, 403)
    # switches are in both organisations' logs; back home shows A again
    assert _switch(a, orgs["A"]).status_code == 303
    assert "Ann Smith" in a.get("/people").text and "Bob Jones" not in a.get("/people").text
    with world.app.db.session() as s:
        switches = s.execute(
            select(AuditEntry.organisation_id, AuditEntry.detail).where(
                AuditEntry.action == "organisation switch"
            )
        ).all()
    assert (orgs["A"], f"web: to organisation {orgs['B']}") in switches
    assert (orgs["B"], f"web: from organisation {orgs['A']}") in switches
    assert len(switches) == 4
    # B's admin disables the membership: a session acting for B ends, the switcher goes
    assert _switch(a, orgs["B"]).status_code == 303
    assert _send(b, "POST", f"/operators/{a_id}/disable", {}).status_code == 303
    assert "a@a.org can no longer act for this organisation." in b.get("/operators").text
    assert a.get("/people").headers["location"] == "/login"
    _forget_codes(world)
    a = world.client("a@a.org")
    assert "organisation-switch" not in a.get("/").text
    assert _switch(a, orgs["B"]).status_code == 403
    # B's last admin cannot go while the member is disabled
    assert _send(b, "POST", f"/operators/{b_id}/disable", {}).status_code == 400
    assert "@" not in _details(world)


def test_the_login_code_is_the_home_log_in_for_a_member(world: World) -> None:  # noqa: F811
    """A member logs in with their own passphrase and code, starting in their home."""
    b = world.client("b@b.org")
    assert _add(b, "a@a.org", "admin", passphrase="").status_code == 303
    _forget_codes(world)
    c = world.app.new_client()
    page = c.get("/login")
    r = c.post(
        "/login",
        data={
            "csrf": csrf_of(page.text),
            "email": "a@a.org",
            "passphrase": PASS,
            "code": pyotp.TOTP(world.secrets["a@a.org"]).now(),
        },
    )
    assert r.status_code == 303
    assert "Organisation: <strong>A</strong>" in c.get("/").text
    with world.app.db.session() as s:
        assert (
            s.scalar(select(Operator.organisation_id).where(Operator.email == "a@a.org"))
            == (_org_ids(world)["A"])
        )


ROLE = "monitor_rls_test"  # not a superuser: row-level security applies to it


@pytest.fixture
def pg_world(tmp_path, monkeypatch: pytest.MonkeyPatch):
    """The same world on PostgreSQL, the web app connected as an ordinary role, so that
    row-level security stands behind every page (the data layer's filters included)."""
    import uuid

    from sqlalchemy import event

    from monitor import passphrases
    from monitor.config import Settings
    from monitor.db import Database
    from monitor.web import create_app
    from tests.conftest import _postgres_answers
    from tests.test_web import BASE, POOL, App, Clock
    from tests.test_web_orgs import populate

    if reason := _postgres_answers():
        pytest.skip(reason)
    import psycopg

    monkeypatch.setattr(passphrases, "COST", 2**10)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    dsn = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            conn.execute(f"CREATE ROLE {ROLE} NOLOGIN")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    settings = Settings(
        data_dir=tmp_path / "data",
        database={"url": url, "key_file": str(tmp_path / "key")},
        web={"exit_url": "https://example.org/"},
        search={"backends": [{"kind": "searxng", "name": "main", "url": "http://127.0.0.1:9/"}]},
    )
    db = Database(url, key_file=tmp_path / "key")
    try:
        clock = Clock()
        app = create_app(settings, db, clock=clock, pool=POOL)
        w = World(App(settings, db, clock, TestClient(app, base_url=BASE, follow_redirects=False)))
        populate(w)
        with db.engine.begin() as conn:
            for what in ("SCHEMA", "ALL TABLES IN SCHEMA", "ALL SEQUENCES IN SCHEMA"):
                verb = "USAGE" if what == "SCHEMA" else "ALL"
                conn.exec_driver_sql(f"GRANT {verb} ON {what} {schema} TO {ROLE}")

        @event.listens_for(db.engine, "connect")
        def _as_ordinary_role(dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
            dbapi_conn.autocommit = True
            dbapi_conn.execute(f"SET ROLE {ROLE}")
            dbapi_conn.autocommit = False

        db.engine.dispose()
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT current_user").scalar() == ROLE
        yield w
    finally:
        db.dispose()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
            conn.execute(f"DROP OWNED BY {ROLE}")


def test_on_postgresql_row_level_security_follows_the_switch(pg_world: World) -> None:
    from sqlalchemy import text

    from monitor.orgs.scope import using_scope

    w = pg_world
    orgs = _org_ids(w)
    b = w.client("b@b.org")
    assert _add(b, "a@a.org", "admin", passphrase="").status_code == 303  # RLS: B's row
    assert "a@a.org" in b.get("/operators").text
    a = w.client("a@a.org")
    assert "organisation-switch" in a.get("/").text  # A's scope finds its B membership
    assert "Ann Smith" in a.get("/people").text
    assert _switch(a, orgs["B"]).status_code == 303
    for path in ("/people", "/cases", "/audit", "/stats", "/operators"):
        r = a.get(path)
        assert r.status_code == 200 and "Organisation: <strong>B</strong>" in r.text, path
        assert "Ann Smith" not in r.text, path
    assert "Bob Jones" in a.get("/people").text
    for method, path, data in _routes(w, "Ann Smith")[:8]:
        assert _send(a, method, path, data).status_code in (400, 403, 404), path
    # the session's scope names B to PostgreSQL: even an unfiltered query sees only B's
    web = w.app.client.app.state.web
    (scope,) = {
        s.scope
        for s in web.sessions._by_token.values()
        if s.scope and s.scope.operator == "a@a.org"
    }
    with using_scope(scope), w.app.db.session() as s:
        assert set(s.scalars(text("SELECT name FROM subjects"))) == {"Bob Jones"}
        assert {r.organisation_id for r in s.scalars(select(Membership))} == {orgs["B"]}
    # B's admin ends the membership; the session acting for B ends
    with w.app.db.session() as s:
        a_id = accounts.find_by_email(s, "a@a.org").id
    assert _send(b, "POST", f"/operators/{a_id}/disable", {}).status_code == 303
    assert a.get("/people").headers["location"] == "/login"
