"""Organisations that monitor people on consent (issue 13): scoping through every command that
takes a person or a case, roles, consent gates (which backends get the name, expiry, withdrawal),
the append-only audit log, retention, statistics, and PostgreSQL's row-level security."""

from __future__ import annotations

import functools
import json
import urllib.parse
from datetime import timedelta
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import select, text

from monitor import passphrases, store
from monitor.cases.capture import evidence_key
from monitor.config import OrgsConfig, load_settings
from monitor.db import Database
from monitor.db.models import (
    AuditEntry,
    Match,
    Membership,
    Notice,
    Operator,
    OutboxMessage,
    PersonLogin,
    Sighting,
    Subject,
    utcnow,
)
from monitor.demo.photos import photo_bytes
from monitor.demo.web import build_web
from monitor.evidence import evidence_dir
from monitor.orgs import accounts, casework, consent
from monitor.orgs.maintenance import run_maintenance
from monitor.scheduler import Scheduler, due_subjects
from monitor.testing.searxng import FakeSearxng
from monitor.testing.web import LoopbackWeb
from tests.conftest import run_cli

PASS = "correct horse battery staple"


@functools.cache
def _hash_lines(photos: tuple[bytes, ...]) -> str:
    from monitor.hashing import compute_hashes

    return "".join(
        f"pdq:{h.value}\n" for p in photos for h in compute_hashes(p).hashes if h.algorithm == "pdq"
    )


class World:
    """Two organisations (A: Ann, B: Bob), a household person (Hal), one admin each, a viewer in
    A, a loopback web where Ann's photos are found, and a case of Ann's."""

    def __init__(self, tmp_path: Path, capsys, monkeypatch, web: LoopbackWeb) -> None:
        self.capsys, self.monkeypatch = capsys, monkeypatch
        refs = [photo_bytes(seed, (480, 360)) for seed in (1, 2)]
        demo = build_web(
            web,
            subject_names=["Ann Smith", "Bob Jones", "Hal Home"],
            references=refs,
            distractors=[photo_bytes(100, (480, 360))],
            pages=2,
            images_per_page=3,
        )
        self.searxng = demo.searxng
        self.other = FakeSearxng()  # a second backend the consent may exclude
        other_url = self.other.install(web, "/other/search")
        self.cfg = tmp_path / "monitor.toml"
        self.cfg.write_text(
            f'data_dir = "{tmp_path / "data"}"\n'
            f'[[search.backends]]\nkind = "searxng"\nname = "main"\nurl = "{demo.searxng_url}"\n'
            f'[[search.backends]]\nkind = "searxng"\nname = "other"\nurl = "{other_url}"\n'
            "[fetch]\nallow_private_networks = true\n[cases]\ncapture_evidence = false\n"
        )
        self.form = tmp_path / "consent.pdf"
        self.form.write_bytes(b"%PDF signed consent")
        (tmp_path / "pass").write_text(PASS)
        self.photos = tmp_path / "refs"
        self.photos.mkdir()
        for i, data in enumerate(refs):
            (self.photos / f"{i}.jpg").write_bytes(data)
        # enrolled from their hashes (quicker than hashing the photos' variants every test)
        self.hashes = tmp_path / "refs.txt"
        self.hashes.write_text(_hash_lines(tuple(refs)))
        monkeypatch.setattr(passphrases, "COST", 2**10)  # cheap passphrase hashing in tests
        self.secrets: dict[str, str] = {}
        self.ok("org", "add", "A")
        self.ok("org", "add", "B")
        for email, org, role in (
            ("a@a.org", "A", "admin"),
            ("b@b.org", "B", "admin"),
            ("v@a.org", "A", "viewer"),
        ):
            as_admin = {"a@a.org": None, "b@b.org": None}.get(email, "a@a.org")
            out = self.ok(
                *(["--operator", as_admin] if as_admin else []),
                *("operator", "add", email, "--org", org, "--role", role, "--json"),
                "--passphrase-file",
                str(tmp_path / "pass"),
            )
            uri = json.loads(out)["provisioning_uri"]
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
            self.secrets[email] = query["secret"][0]
        self.ok(
            "--operator",
            "a@a.org",
            *("subject", "add", "Ann Smith", "--consent-by", "person"),
            *("--consent-file", str(self.form), "--allow-backend", "main"),
        )
        self.ok("--operator", "a@a.org", "enroll", "Ann Smith", "--hashes", str(self.hashes))
        self.ok("--operator", "b@b.org", "subject", "add", "Bob Jones", "--consent-by", "person")
        self.ok("subject", "add", "Hal Home")
        self.settings = load_settings(self.cfg)
        self.db = Database(self.settings.database_url, key_file=self.settings.key_path)

    def run(self, *argv: str) -> tuple[int, str, str]:
        operator = argv[1] if argv[:1] == ("--operator",) else None
        if operator:
            self.monkeypatch.setenv("MONITOR_OPERATOR_PASSPHRASE", PASS)
            self.monkeypatch.setenv("MONITOR_TOTP", pyotp.TOTP(self.secrets[operator]).now())
        return run_cli(self.capsys, "--config", str(self.cfg), *argv)

    def ok(self, *argv: str) -> str:
        if "--consent-by" in argv and not {"--consent-file", "--consent-link"} & set(argv):
            argv = (*argv, "--consent-file", str(self.form))
        code, out, err = self.run(*argv)
        assert code == 0, (argv, out, err)
        return out


@pytest.fixture
def world(tmp_path: Path, capsys, monkeypatch) -> World:
    with LoopbackWeb() as web:
        yield World(tmp_path, capsys, monkeypatch, web)


def _ann_case(w: World) -> int:
    out = w.ok("--operator", "a@a.org", "scan", "Ann Smith", "--json")
    assert json.loads(out)["matches"] >= 1
    rows = json.loads(w.ok("--operator", "a@a.org", "cases", "Ann Smith", "--json"))
    return int(rows[0]["id"])


def test_no_command_reads_or_changes_another_organisations_person(world: World) -> None:
    case = str(_ann_case(world))
    # the name only went to the backend the consent allows
    assert world.searxng.queries and not world.other.queries
    name = "Ann Smith"
    person_commands = [
        ("subject", "set", name, "--minor"),
        ("subject", "remove", name, "--yes"),
        ("enroll", name, "--hashes", str(world.hashes)),
        ("scan", name),
        ("scan", name, "--dry-run"),
        ("matches", name),
        ("cases", name),
        ("consent", "show", name),
        ("consent", "renew", name, "--consent-by", "person", "--consent-file", str(world.form)),
        ("consent", "withdraw", name, "--yes"),
        ("audit", name),
    ]
    case_commands = [
        ("case", "show", case),
        ("case", "confirm", case),
        ("case", "dismiss", case),
        ("case", "evidence", case, str(world.photos.parent / "x.zip")),
        ("case", "notice", case, "--no-lookup"),
        ("case", "recheck", case),
        ("case", "assign", case, "b@b.org"),
        ("case", "request", case, "removed"),
    ]
    for who in (("--operator", "b@b.org"), ()):  # another organisation, and the household
        for argv in person_commands + case_commands:
            code, out, err = world.run(*who, *argv)
            assert code == 2, (who, argv, out, err)
            refusals = ("no subject named", f"there is no case {case}", "for organisations")
            assert any(r in err for r in refusals), (who, argv, err)
        for argv in (("subject", "list", "--json"), ("matches", "--json"), ("cases", "--json")):
            assert name not in world.ok(*who, *argv)
    # nor can another organisation add people to A, or read A's statistics
    form = ("--consent-by", "person", "--consent-file", str(world.form))
    code, _, err = world.run("--operator", "b@b.org", "subject", "add", "Eve", "--org", "A", *form)
    assert code == 2 and "does not work for" in err
    code, _, err = world.run("--operator", "b@b.org", "stats", "--org", "A")
    assert code == 2 and "no organisation named" in err
    # Ann, her references and her case are untouched; her own organisation still sees her
    with world.db.session() as s:
        ann = s.scalar(select(Subject).where(Subject.name == name))
        assert ann is not None and not ann.minor and ann.references
        assert s.get(Match, int(case)).status == "new"
    assert name in world.ok("--operator", "a@a.org", "subject", "list", "--json")
    # Ann's alert is in her organisation's outbox listing only
    assert json.loads(world.ok("--operator", "a@a.org", "outbox", "--json"))
    for who in (("--operator", "b@b.org"), ()):
        assert json.loads(world.ok(*who, "outbox", "--json")) == []
    # the household still works as before, and sees only its own person
    listed = json.loads(world.ok("subject", "list", "--json"))
    assert [p["name"] for p in listed] == ["Hal Home"]


def test_a_viewer_looks_but_changes_nothing_and_every_look_is_audited(world: World) -> None:
    world.ok("--operator", "v@a.org", "consent", "show", "Ann Smith")
    for argv in (("consent", "withdraw", "Ann Smith", "--yes"), ("subject", "remove", "Ann Smith")):
        code, _, err = world.run("--operator", "v@a.org", *argv)
        assert code == 2 and "viewer may not" in err
    world.monkeypatch.setenv("MONITOR_TOTP", "000000")
    code, _, err = run_cli(
        world.capsys, "--config", str(world.cfg), "--operator", "a@a.org", "subject", "list"
    )
    assert code == 2 and "login failed" in err
    entries = json.loads(world.ok("--operator", "a@a.org", "audit", "Ann Smith", "--json"))
    seen = [(e["operator"], e["action"]) for e in entries]
    assert ("v@a.org", "consent show") in seen and ("a@a.org", "subject add") in seen
    assert all("Ann" not in e["detail"] for e in entries)
    # an operator who leaves cannot log in any more
    code, _, _ = world.run("--operator", "v@a.org", "operator", "disable", "v@a.org", "--org", "A")
    assert code == 2
    world.ok("--operator", "a@a.org", "operator", "disable", "v@a.org", "--org", "A")
    code, _, err = world.run("--operator", "v@a.org", "subject", "list")
    assert code == 2 and "login failed" in err
    # the household cannot give consent options (they would be dropped): refused
    code, _, err = world.run("subject", "add", "Zed", "--consent-by", "person")
    assert code == 2 and "--operator" in err


def test_withdrawal_erases_at_once_and_the_log_keeps_only_that_it_happened(world: World) -> None:
    _ann_case(world)
    with world.db.session() as s:
        ann_id = s.scalar(select(Subject.id).where(Subject.name == "Ann Smith"))
    world.ok("--operator", "a@a.org", "consent", "withdraw", "Ann Smith", "--yes")
    with world.db.session() as s:
        assert s.get(Subject, ann_id) is None
        assert not s.scalars(select(Match).where(Match.subject_id == ann_id)).all()
        assert not s.scalars(select(Sighting).where(Sighting.subject_id == ann_id)).all()
        log = s.scalars(select(AuditEntry).where(AuditEntry.subject_id == ann_id)).all()
    assert "consent withdrawn" in [e.action for e in log]
    assert all("Ann" not in f"{e.detail} {e.action}" for e in log)
    code, _, err = world.run("--operator", "a@a.org", "scan", "Ann Smith")
    assert code == 2 and "no subject named" in err


def test_expired_consent_pauses_monitoring_and_tells_the_caseworker(world: World) -> None:
    world.ok("--operator", "a@a.org", "operator", "add", "c@a.org", "--org", "A", "--role",
             "caseworker", "--passphrase-file", str(world.photos.parent / "pass"))  # fmt: skip
    now = utcnow()
    with world.db.session() as s:
        ann = s.scalar(select(Subject).where(Subject.name == "Ann Smith"))
        consent.latest(s, ann.id).valid_until = now + timedelta(days=1)
        ann_id = ann.id
    later = now + timedelta(days=2)
    assert ann_id in due_subjects(world.db, later)
    scanned: list[int] = []
    Scheduler(world.db, world.settings, scanned.append).run_due(later)  # maintenance first
    assert scanned and ann_id not in scanned
    assert ann_id not in due_subjects(world.db, later)
    with world.db.session() as s:
        ann = s.get(Subject, ann_id)
        assert ann.paused_reason and "expired" in ann.paused_reason
        with pytest.raises(consent.ConsentRequired):
            consent.permit(s, ann, later)
        notices = s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "consent")).all()
    assert [n.recipient for n in notices] == ["c@a.org"]
    assert "Ann" not in notices[0].body
    sent_before = len(world.searxng.queries)
    code, _, err = world.run("--operator", "a@a.org", "scan", "Ann Smith")
    assert code == 2 and "consent" in err and len(world.searxng.queries) == sent_before
    # renewing lifts the pause
    world.ok("--operator", "a@a.org", "consent", "renew", "Ann Smith", "--consent-by", "person",
             "--consent-file", str(world.form))  # fmt: skip
    assert ann_id in due_subjects(world.db, later)


def test_a_paused_persons_places_are_not_checked_again(world: World) -> None:
    """Re-checks fetch the places a person was found: the same consent gate as scans."""
    import asyncio

    from monitor.cases.recheck import recheck_due

    case = _ann_case(world)
    now = utcnow()
    with world.db.session() as s:
        ann = s.scalar(select(Subject).where(Subject.name == "Ann Smith"))
        consent.latest(s, ann.id).valid_until = now - timedelta(minutes=1)
        ann_id = ann.id
    later = now + timedelta(days=3)  # the case is due (recheck_every: a day)

    def rechecked() -> set[int]:
        return {r.case_id for r in asyncio.run(recheck_due(world.settings, world.db, now=later))}

    # expired, before the scheduler's maintenance marks the pause: left out already
    assert case not in rechecked()
    code, _, err = world.run("--operator", "a@a.org", "case", "recheck", str(case))
    assert code == 2 and "not re-checked" in err and "consent expired" in err
    out = world.ok("--operator", "a@a.org", "consent", "show", "Ann Smith")
    assert "monitoring paused" in out and "not checked again" in out
    with world.db.session() as s:
        assert s.get(Match, case).last_checked_at is None
    # renewed: checked again; paused by the maintenance (or by hand): not
    world.ok("--operator", "a@a.org", "consent", "renew", "Ann Smith", "--consent-by", "person",
             "--consent-file", str(world.form))  # fmt: skip
    assert case in rechecked()
    with world.db.session() as s:
        s.get(Subject, ann_id).paused_reason = "paused"
        s.get(Match, case).last_checked_at = None
    assert case not in rechecked()


def test_consent_that_allows_no_configured_backend_sends_nothing(world: World) -> None:
    world.ok("--operator", "b@b.org", "enroll", "Bob Jones", "--hashes", str(world.hashes))
    # Bob's consent allows the kinds configured (searxng): both backends get his name
    world.ok("--operator", "b@b.org", "scan", "Bob Jones")
    assert any("Bob" in q for q, *_ in world.other.queries)
    with world.db.session() as s:
        bob = s.scalar(select(Subject).where(Subject.name == "Bob Jones"))
        consent.latest(s, bob.id).backends = json.dumps(["brave"])
    before = len(world.searxng.queries) + len(world.other.queries)
    code, _, err = world.run("--operator", "b@b.org", "scan", "Bob Jones")
    assert code == 2 and "allows none" in err
    assert len(world.searxng.queries) + len(world.other.queries) == before


def test_casework_statistics_and_retention(world: World) -> None:
    case = _ann_case(world)
    code, _, err = world.run("--operator", "a@a.org", "case", "assign", str(case), "v@a.org")
    assert code == 2 and "viewer" in err
    world.ok("--operator", "a@a.org", "case", "assign", str(case), "a@a.org")
    now = utcnow()
    with world.db.session() as s:
        m = s.get(Match, case)
        assert m.assigned_to is not None
        s.add(Notice(match_id=case, lang="en", subject_line="x", body="x", sent_at=now))
        m.status, m.removed_at = "removed", m.first_seen + timedelta(days=4)
    world.ok("--operator", "a@a.org", "case", "request", str(case), "acknowledged")
    stats = json.loads(world.ok("--operator", "a@a.org", "stats", "--json"))
    cases_a = stats["cases"]
    assert stats["removed"] == 1 and stats["median_days_to_removal"] == 4.0
    assert stats["removal_rate"] == round(1 / cases_a, 3)
    assert stats["requests"] == {"sent": 1, "acknowledged": 1, "removed": 0, "refused": 0}
    assert sum(x["cases"] for x in stats["by_site"].values()) == cases_a
    other = json.loads(world.ok("--operator", "b@b.org", "stats", "--json"))
    assert other["cases"] == 0  # B's figures hold none of A's cases
    # retention (the scheduler's maintenance): not yet, then the removed case's findings go
    settings = world.settings.model_copy(update={"orgs": OrgsConfig(retention_days=30)})
    folder = evidence_dir(settings, evidence_key(case))
    (folder / "shot.png").write_bytes(b"evidence")
    run_maintenance(world.db, settings, m.removed_at + timedelta(days=29))
    assert folder.exists()
    run_maintenance(world.db, settings, m.removed_at + timedelta(days=31))
    assert not folder.exists()
    with world.db.session() as s:
        assert s.get(Match, case) is None
        ann_id = s.scalar(select(Subject.id).where(Subject.name == "Ann Smith"))
        assert s.scalars(select(Match).where(Match.subject_id == ann_id)).all()  # still open


def test_audit_log_is_append_only(database_url: str, tmp_path: Path) -> None:
    db = Database(database_url, key_file=tmp_path / "k")
    with db.session() as s:
        s.add(AuditEntry(organisation_id=1, operator="x", action="view", detail=""))
    for sql in ("UPDATE audit_log SET operator = 'y'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), db.session() as s:
            s.execute(text(sql))
    with db.session() as s:
        assert s.scalar(select(AuditEntry.operator)) == "x"
    db.dispose()


def test_same_name_in_two_organisations_is_two_people(database_url: str, tmp_path: Path) -> None:
    from monitor.orgs.scope import Scope

    db = Database(database_url, key_file=tmp_path / "k")
    with db.session() as s:
        a, b = accounts.add_organisation(s, "A"), accounts.add_organisation(s, "B")
        for org in (a, b, None):
            store.add_subject(
                s, "Sam", interval=timedelta(days=1), organisation_id=org.id if org else None
            )
        with pytest.raises(store.SubjectExists):
            store.add_subject(s, "Sam", interval=timedelta(days=1), organisation_id=a.id)
        got = store.get_subject(s, "Sam", Scope(org_id=b.id))
        assert got.organisation_id == b.id
        assert [x.organisation_id for x in store.all_subjects(s, Scope(org_id=None))] == [None]
    db.dispose()


def test_row_level_security_hides_other_organisations_rows(tmp_path: Path) -> None:
    """The second wall: on PostgreSQL, even a query without the data layer's filter sees only
    the organisation named by ``app.org_id``, and cannot write into another."""
    from tests.conftest import _postgres_answers

    if reason := _postgres_answers():
        pytest.skip(reason)
    import uuid

    import psycopg

    schema, role = f"t_{uuid.uuid4().hex[:12]}", "monitor_rls_test"
    dsn = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            conn.execute(f"CREATE ROLE {role} NOLOGIN")  # not a superuser: RLS applies
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
    try:
        db = Database(url, key_file=tmp_path / "k")
        with db.session() as s:
            a, b = accounts.add_organisation(s, "A"), accounts.add_organisation(s, "B")
            ids = {}
            for name, org in (("Ann", a.id), ("Bob", b.id), ("Hal", None)):
                subj = store.add_subject(
                    s, name, interval=timedelta(days=1), organisation_id=org, aliases=[name + "2"]
                )
                ids[name] = subj.id
                s.add(PersonLogin(subject_id=subj.id, login=f"{name.lower()}@x.test"))
            # each organisation's admin is an admin of the other too (0016's memberships)
            for home, other in ((a, b), (b, a)):
                op = Operator(
                    organisation_id=home.id,
                    email=f"admin@{home.name}.test",
                    role="admin",
                    passphrase_hash="-",
                    totp_secret="-",
                )
                s.add(op)
                s.flush()
                s.add(Membership(operator_id=op.id, organisation_id=other.id, role="admin"))
            s.flush()
            ops = {o.email: o.id for o in s.scalars(select(Operator))}
            s.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
            s.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}"))
            s.execute(text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"))
        with db.engine.connect() as conn:
            conn.execute(text(f"SET ROLE {role}"))
            for setting, visible in ((str(a.id), {"Ann"}), ("none", {"Hal"})):
                conn.execute(text("SELECT set_config('app.org_id', :v, false)"), {"v": setting})
                names = set(conn.scalars(text("SELECT name FROM subjects")))
                aliases = set(conn.scalars(text("SELECT alias FROM aliases")))
                assert names == visible and aliases == {n + "2" for n in visible}
                logins = set(conn.scalars(text("SELECT login FROM person_logins")))
                assert logins == {f"{n.lower()}@x.test" for n in visible}
                members = set(conn.scalars(text("SELECT organisation_id FROM memberships")))
                assert members == ({a.id} if setting == str(a.id) else set())
            conn.execute(text("SELECT set_config('app.org_id', :v, false)"), {"v": str(a.id)})
            # changing another organisation's person touches nothing; writing into it fails
            done = conn.execute(text("UPDATE subjects SET email = 'x@y.z' WHERE name = 'Bob'"))
            assert done.rowcount == 0
            with pytest.raises(Exception, match="row-level security"):
                conn.execute(
                    text("INSERT INTO aliases (subject_id, alias) VALUES (:s, 'sneaky')"),
                    {"s": ids["Bob"]},
                )
            conn.rollback()  # the SET ROLE too
            conn.execute(text(f"SET ROLE {role}"))
            conn.execute(text("SELECT set_config('app.org_id', :v, false)"), {"v": str(a.id)})
            done = conn.execute(text("UPDATE memberships SET disabled_at = now()"))
            assert done.rowcount == 1  # A's own only
            with pytest.raises(Exception, match="row-level security"):
                conn.execute(
                    text(
                        "INSERT INTO memberships (operator_id, organisation_id, role, created_at) "
                        "VALUES (:o, :b, 'admin', now())"
                    ),
                    {"o": ops["admin@B.test"], "b": b.id},
                )
            conn.rollback()
        db.dispose()
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
            conn.execute(f"DROP OWNED BY {role}")


def test_alerts_go_to_the_caseworker_when_asked(world: World) -> None:
    with world.db.session() as s:
        ann = s.scalar(select(Subject).where(Subject.name == "Ann Smith"))
        ann.email, ann.alert_to = "ann@example.org", "both"
        s.flush()
        world_rcpt = casework.alert_recipient(s, ann)
    assert world_rcpt == "ann@example.org"  # no caseworker yet: the person alone
    world.ok("--operator", "a@a.org", "operator", "add", "c@a.org", "--org", "A", "--role",
             "caseworker", "--passphrase-file", str(world.photos.parent / "pass"))  # fmt: skip
    with world.db.session() as s:
        ann = s.scalar(select(Subject).where(Subject.name == "Ann Smith"))
        assert casework.alert_recipient(s, ann) == "ann@example.org, c@a.org"
        ann.alert_to = "caseworker"
        assert casework.alert_recipient(s, ann) == "c@a.org"


def test_consent_by_mailed_link_counts_only_once_confirmed(world: World) -> None:
    world.ok("--operator", "a@a.org", "subject", "add", "Liz Link", "--email", "liz@example.org",
             "--consent-by", "person", "--consent-link")  # fmt: skip
    with world.db.session() as s:
        liz = s.scalar(select(Subject).where(Subject.name == "Liz Link"))
        (mail,) = s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "consent_link"))
        with pytest.raises(consent.ConsentRequired, match="not confirmed"):
            consent.permit(s, liz)
    assert mail.recipient == "liz@example.org" and mail.status == "sent"
    assert "Liz" not in mail.body
    code = mail.body.split("person helping you:")[1].split()[0]
    bad, _, err = world.run("--operator", "b@b.org", "consent", "confirm", code)
    assert bad == 2 and "unknown" in err  # another organisation cannot confirm it
    world.ok("--operator", "a@a.org", "consent", "confirm", code)
    with world.db.session() as s:
        liz = s.scalar(select(Subject).where(Subject.name == "Liz Link"))
        assert consent.permit(s, liz).allows_name("Liz Link")


def test_an_admin_manages_operators_role_reset_disable_enable(world: World) -> None:
    def secret_of(out: str) -> str:
        uri = json.loads(out)["provisioning_uri"]
        return urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["secret"][0]

    pw = str(world.photos.parent / "pass")
    out = world.ok("--operator", "a@a.org", "operator", "add", "c@a.org", "--role", "caseworker",
                   "--passphrase-file", pw, "--json")  # fmt: skip
    world.secrets["c@a.org"] = secret_of(out)

    def refused(*argv: str) -> str:
        code, _, err = world.run(*argv)
        assert code == 2, (argv, err)
        return err

    # only A's admins: not a viewer, a caseworker, another organisation's admin, or the owner
    assert "viewer may not" in refused("--operator", "v@a.org", "operator", "role", "v@a.org",
                                       "admin")  # fmt: skip
    assert "admin" in refused("--operator", "c@a.org", "operator", "role", "c@a.org", "admin")
    err = refused("--operator", "b@b.org", "operator", "role", "v@a.org", "admin", "--org", "A")
    assert "no organisation named" in err
    assert "no such operator" in refused("--operator", "b@b.org", "operator", "disable", "v@a.org")
    assert "has an admin" in refused("operator", "role", "v@a.org", "admin", "--org", "A")
    # roles
    world.ok("--operator", "a@a.org", "operator", "role", "v@a.org", "caseworker")
    listed = json.loads(world.ok("--operator", "a@a.org", "operator", "list", "--json"))
    assert {o["email"]: o["role"] for o in listed}["v@a.org"] == "caseworker"
    world.ok("--operator", "v@a.org", "subject", "set", "Ann Smith", "--minor")  # may change now
    # the organisation keeps an active admin
    assert "last admin" in refused("--operator", "a@a.org", "operator", "role", "a@a.org", "viewer")
    assert "last admin" in refused("--operator", "a@a.org", "operator", "disable", "a@a.org")
    # a new passphrase: the old one no longer logs in, the new one does
    (world.photos.parent / "new").write_text("a brand new passphrase")
    world.ok("--operator", "a@a.org", "operator", "reset", "c@a.org",
             "--passphrase-file", str(world.photos.parent / "new"))  # fmt: skip
    assert "login failed" in refused("--operator", "c@a.org", "subject", "list")
    world.monkeypatch.setenv("MONITOR_OPERATOR_PASSPHRASE", "a brand new passphrase")
    world.monkeypatch.setenv("MONITOR_TOTP", pyotp.TOTP(world.secrets["c@a.org"]).now())
    code, _, err = run_cli(world.capsys, "--config", str(world.cfg), "--operator", "c@a.org",
                           "subject", "list")  # fmt: skip
    assert code == 0, err
    # a new second factor: the old authenticator's codes fail, the new one's work
    old = world.secrets["v@a.org"]
    out = world.ok("--operator", "a@a.org", "operator", "reset", "v@a.org", "--totp", "--json")
    assert json.loads(out)["reset"] == "totp"
    world.secrets["v@a.org"] = secret_of(out)
    assert world.secrets["v@a.org"] != old
    world.ok("--operator", "v@a.org", "subject", "list")
    world.secrets["v@a.org"] = old
    assert "login failed" in refused("--operator", "v@a.org", "subject", "list")
    world.secrets["v@a.org"] = secret_of(out)
    # disable, enable
    world.ok("--operator", "a@a.org", "operator", "disable", "v@a.org")
    assert "login failed" in refused("--operator", "v@a.org", "subject", "list")
    assert "disabled" in world.ok("--operator", "a@a.org", "operator", "list")
    world.ok("--operator", "a@a.org", "operator", "enable", "v@a.org")
    world.ok("--operator", "v@a.org", "subject", "list")
    # the machine's owner may reset an admin's second factor (recovery: a lost phone)
    out = world.ok("operator", "reset", "a@a.org", "--org", "A", "--totp", "--json")
    world.secrets["a@a.org"] = secret_of(out)
    entries = json.loads(world.ok("--operator", "a@a.org", "audit", "--json"))
    seen = [(e["operator"], e["action"], e["detail"]) for e in entries]
    with world.db.session() as s:
        ids = {o.email: o.id for o in s.scalars(select(accounts.Operator))}
    v, c, a = ids["v@a.org"], ids["c@a.org"], ids["a@a.org"]
    for entry in (
        ("a@a.org", "operator role", f"operator {v}: viewer -> caseworker"),
        ("a@a.org", "operator reset", f"operator {c}: passphrase"),
        ("a@a.org", "operator reset", f"operator {v}: second factor"),
        ("a@a.org", "operator disable", f"operator {v}"),
        ("a@a.org", "operator enable", f"operator {v}"),
        ("local", "operator reset", f"operator {a}: second factor"),
    ):
        assert entry in seen, entry
    assert all("@" not in e["detail"] for e in entries)
    for action in ("role", "reset", "enable", "disable", "list"):
        with pytest.raises(SystemExit) as exited:
            world.run("operator", action, "--help")
        assert exited.value.code == 0 and "usage" in world.capsys.readouterr().out


def test_operator_add_of_another_organisations_operator_makes_them_an_admin_here(
    world: World,
) -> None:
    def refused(*argv: str) -> str:
        code, _, err = world.run(*argv)
        assert code == 2, (argv, err)
        return err

    with pytest.raises(SystemExit):
        world.run("operator", "add", "--help")
    assert "another organisation's operator" in " ".join(world.capsys.readouterr().out.split())
    # only as admin, only by B's admin (or the owner while B has none)
    err = refused("--operator", "b@b.org", "operator", "add", "v@a.org", "--role", "viewer")
    assert "as admin only" in err
    assert "has an admin" in refused("operator", "add", "a@a.org", "--org", "B", "--role", "admin")
    err = refused("--operator", "a@a.org", "operator", "add", "a@a.org", "--org", "B",
                  "--role", "admin")  # fmt: skip
    assert "no organisation named" in err
    # no passphrase asked, no new second factor: a membership
    out = world.ok("--operator", "b@b.org", "operator", "add", "A@A.org", "--org", "B",
                   "--role", "admin", "--json")  # fmt: skip
    added = json.loads(out)
    assert added["member"] is True and added["provisioning_uri"] is None
    assert "already an admin" in refused(
        "--operator", "b@b.org", "operator", "add", "a@a.org", "--role", "admin"
    )
    listed = json.loads(world.ok("--operator", "b@b.org", "operator", "list", "--json"))
    assert {(o["email"], o["role"], o["member"]) for o in listed} == {
        ("b@b.org", "admin", False),
        ("a@a.org", "admin", True),
    }
    assert "member" in world.ok("operator", "list", "--org", "B")
    # B's admin may disable the membership, not change the member's log-in or role
    assert "disable them here" in refused(
        "--operator", "b@b.org", "operator", "role", "a@a.org", "viewer"
    )
    assert "reset by its admins" in refused(
        "--operator", "b@b.org", "operator", "reset", "a@a.org", "--totp"
    )
    out = world.ok("--operator", "b@b.org", "operator", "disable", "a@a.org")
    assert "can no longer act for this organisation" in out
    assert "disabled" in world.ok("--operator", "b@b.org", "operator", "list")
    world.ok("--operator", "a@a.org", "subject", "list")  # their home log-in is untouched
    world.ok("--operator", "b@b.org", "operator", "enable", "a@a.org")
    entries = json.loads(world.ok("--operator", "b@b.org", "audit", "--json"))
    actions = [(e["operator"], e["action"], e["detail"]) for e in entries]
    with world.db.session() as s:
        a_id = s.scalar(select(Operator.id).where(Operator.email == "a@a.org"))
    assert ("b@b.org", "operator add", f"operator {a_id} (admin, member)") in actions
    assert ("b@b.org", "operator disable", f"operator {a_id}: member") in actions
    assert all("@" not in e["detail"] for e in entries)


def test_outbox_send_and_retry_act_on_the_operators_organisation_only(world: World) -> None:
    from monitor import alerts

    with world.db.session() as s:
        people = {n: s.scalar(select(Subject.id).where(Subject.name == n))
                  for n in ("Ann Smith", "Bob Jones", "Hal Home")}  # fmt: skip
        for subject_id in people.values():
            for status in ("pending", "failed"):
                s.add(
                    OutboxMessage(
                        subject_id=subject_id,
                        message_id=f"<{subject_id}-{status}@test>",
                        recipient=None,  # the local outbox folder
                        status=status,
                        kind="consent",
                        new_items=0,
                        subject_line="Notes",
                        body=f"about person #{subject_id}",
                        attempts=0,
                        next_attempt_at=utcnow(),
                    )
                )

    def states() -> dict[tuple[int, str], str]:
        with world.db.session() as s:
            rows = s.scalars(select(OutboxMessage).where(OutboxMessage.kind == "consent"))
            return {(r.subject_id, r.message_id.split("-")[1]): r.status for r in rows}

    out = json.loads(world.ok("--operator", "b@b.org", "outbox", "--retry-failed", "--send",
                              "--json"))  # fmt: skip
    assert out["requeued"] == 1 and out["sent"] == 2  # Bob's two, nobody else's
    bob, ann, hal = people["Bob Jones"], people["Ann Smith"], people["Hal Home"]
    now = states()
    assert now[(bob, "pending@test>")] == now[(bob, "failed@test>")] == "sent"
    assert now[(ann, "pending@test>")] == "pending" and now[(ann, "failed@test>")] == "failed"
    assert now[(hal, "pending@test>")] == "pending"
    # the household (no operator) sends the household's; the scheduler everyone's
    assert json.loads(world.ok("outbox", "--send", "--json"))["sent"] == 1
    assert states()[(ann, "pending@test>")] == "pending"
    report = alerts.deliver_pending(world.db, alerts.notifier_from_settings(world.settings),
                                    world.settings)  # fmt: skip
    assert report.sent >= 1 and states()[(ann, "pending@test>")] == "sent"
    # install-wide commands are the machine's owner's
    for command in ("run", "serve", "worker"):
        code, _, err = world.run("--operator", "a@a.org", command)
        assert code == 2 and "whole install" in err, command


def test_subject_invite_mails_the_person_a_one_time_link(world: World) -> None:
    world.ok("--operator", "a@a.org", "subject", "add", "Ivy Invite", "--email", "ivy@x.test",
             "--consent-by", "person")  # fmt: skip
    code, _, err = world.run("--operator", "v@a.org", "subject", "invite", "Ivy Invite")
    assert code == 2 and "viewer may not" in err
    code, _, err = world.run("--operator", "b@b.org", "subject", "invite", "Ivy Invite")
    assert code == 2 and "no subject named" in err
    code, _, err = world.run("--operator", "a@a.org", "subject", "invite", "Ann Smith")
    assert code == 2 and "email address" in err  # Ann has none
    out = json.loads(world.ok("--operator", "a@a.org", "subject", "invite", "Ivy Invite", "--json"))
    assert out["mailed_to"] == "ivy@x.test"
    with world.db.session() as s:
        mail = s.scalar(select(OutboxMessage).where(OutboxMessage.kind == "person_invite"))
        ivy = s.scalar(select(Subject.id).where(Subject.name == "Ivy Invite"))
    assert mail.status == "sent" and "/me/invite?code=" in mail.body and "Ivy" not in mail.body
    entries = json.loads(world.ok("--operator", "a@a.org", "audit", "Ivy Invite", "--json"))
    assert [e["action"] for e in entries].count("person invited") == 1
    assert all(e["subject_id"] == ivy for e in entries)


def test_a_consent_code_never_looks_like_an_option(monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = iter(["-starts-with-a-dash", "fine-code"])
    monkeypatch.setattr(consent.secrets, "token_urlsafe", lambda n: next(tokens))
    assert consent.new_link_token() == "fine-code"
