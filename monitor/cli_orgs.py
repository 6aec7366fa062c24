"""Command line for organisations that monitor people on consent (docs/organisations.md).

``org``, ``operator``, ``consent``, ``audit``, ``stats``; the ``subject add`` options
``--org --consent-by --consent-file --consent-until``; ``case assign`` and ``case request``;
and :func:`command_scope`, which every command runs in: who is acting (``--operator EMAIL`` or
``$MONITOR_OPERATOR``, checked with the passphrase and a one-time code), which people they may
see, whether their role may do this, and the audit log entry.

Without ``--operator`` the command acts for the household: only people without an
organisation are visible, exactly as before organisations existed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from monitor import store
from monitor.config import Settings
from monitor.db import Database
from monitor.errors import MonitorError
from monitor.inputs import check_email, clean_name, parse_interval
from monitor.orgs import accounts, audit, casework, consent
from monitor.orgs.scope import HOUSEHOLD, ROLES, Scope, current_scope, using_scope
from monitor.textsafe import markup as esc
from monitor.textsafe import text as cell

out = Console(highlight=False, emoji=False)
err = Console(stderr=True, highlight=False, emoji=False)

OPERATOR_ENV = "MONITOR_OPERATOR"
PASSPHRASE_ENV = "MONITOR_OPERATOR_PASSPHRASE"
TOTP_ENV = "MONITOR_TOTP"
CASE_ACTIONS = ("assign", "request")

# Commands (and sub-actions) that only look; every other one changes something and needs an
# admin or caseworker. `run`, `worker`, `serve` and `backends` act for no one in particular
# (the scheduler, queued scans, the web app; a backend check). `outbox --send` and
# `--retry-failed` act on the scope's alerts only (alerts.deliver_pending, requeue_failed).
_READS = {
    ("subject", "list"),
    ("matches", None),
    ("cases", None),
    ("case", "show"),
    ("consent", "show"),
    ("stats", None),
    ("org", "list"),
    ("operator", "list"),
    ("outbox", None),
}
_SYSTEM = {"run", "backends", "worker", "serve"}
# Install-wide: they act for every organisation (the scheduler's scans, re-checks, maintenance
# and alert delivery; queued scans; the web app, whose pages log operators in themselves), so
# they are the machine's owner's, never an operator's.
_INSTALL_WIDE = {"run", "worker", "serve"}
# Commands that write their own audit entry (with the new person's number, or the erasure).
_SELF_AUDITED = {
    ("subject", "add"),
    ("consent", "withdraw"),
    ("consent", "confirm"),
    ("operator", "add"),
    ("operator", "disable"),
    ("operator", "enable"),
    ("operator", "role"),
    ("operator", "reset"),
    ("subject", "invite"),
}


def _db(settings: Settings) -> Database:
    from monitor.cli import _db as open_db  # one opener: closed when the command ends

    return open_db(settings)


def _print_json(data: object) -> None:
    print(json.dumps(data, indent=2, default=str))


def _action(args: argparse.Namespace) -> str | None:
    for attr in ("subject_command", "case_command", "org_command", "operator_command"):
        if getattr(args, attr, None):
            return str(getattr(args, attr))
    if args.command == "consent":
        return str(args.consent_command)
    if args.command == "outbox" and (args.send or args.retry_failed):
        return "send"
    return None


# ---------------------------------------------------------------- who is acting


def add_global_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--operator",
        metavar="EMAIL",
        help=f"act as this organisation's operator (or ${OPERATOR_ENV}); asks for the "
        f"passphrase and the authenticator's 6-digit code (or ${PASSPHRASE_ENV}, ${TOTP_ENV}). "
        "Without it: the household (people without an organisation)",
    )


def _secret(env: str, prompt: str) -> str:
    value = os.environ.get(env)
    if value:
        return value
    if not sys.stdin.isatty():
        raise MonitorError(f"{prompt.rstrip(': ')} needed: set ${env} or run on a terminal")
    return getpass.getpass(prompt)


def login(db: Database, email: str) -> Scope:
    passphrase = _secret(PASSPHRASE_ENV, "Passphrase: ")
    code = _secret(TOTP_ENV, "One-time code: ")
    with db.session() as s:
        return accounts.authenticate(s, email, passphrase, code)


@contextmanager
def command_scope(args: argparse.Namespace, settings: Settings) -> Iterator[Scope | None]:
    """Run a command as its operator (or for the household): people outside the scope are
    "not found", a viewer may only look, and what was done to whom goes into the audit log."""
    if args.command in _SYSTEM:
        if args.command in _INSTALL_WIDE and getattr(args, "operator", None):
            raise MonitorError(
                f"`{args.command}` works for the whole install (every organisation): the "
                "machine's owner runs it, without --operator"
                + ("; operators log in on the pages" if args.command == "serve" else "")
            )
        yield None
        return
    email = getattr(args, "operator", None) or os.environ.get(OPERATOR_ENV) or ""
    if not email:
        with using_scope(HOUSEHOLD):
            yield HOUSEHOLD
        return
    db = _db(settings)
    scope = login(db, email)
    action = _action(args)
    if (args.command, action) not in _READS:
        scope.require("admin", "caseworker")
    with using_scope(scope):
        subject_id = _subject_of(db, args)  # "not found" before anything runs
        yield scope
        if (args.command, action) in _SELF_AUDITED:
            return
        with db.session() as s:
            audit.log(
                s,
                scope,
                " ".join(x for x in (args.command, action) if x),
                subject_id=subject_id,
                detail=_detail(args),
            )


def _subject_of(db: Database, args: argparse.Namespace) -> int | None:
    from monitor.cases.core import get_case

    with db.session() as s:
        if args.command == "case" and getattr(args, "id", None) is not None:
            return get_case(s, args.id).subject_id
        name = getattr(args, "name", None)
        if name and (args.command, _action(args)) != ("subject", "add"):
            if args.command in ("org", "operator"):
                return None
            return store.get_subject(s, name).id
    return None


def _detail(args: argparse.Namespace) -> str:
    """What was done, without personal data (no names, no addresses)."""
    parts = []
    if getattr(args, "id", None) is not None:
        parts.append(f"case {args.id}")
    if getattr(args, "json", False):
        parts.append("json")
    if getattr(args, "all", False):
        parts.append("all")
    if args.command == "case" and getattr(args, "case_command", "") == "evidence":
        parts.append("export")
    return ", ".join(parts)


# ---------------------------------------------------------------- parsers


def add_subject_options(sa: argparse.ArgumentParser) -> None:
    """The organisation options of ``subject add``."""
    g = sa.add_argument_group(
        "organisation (docs/organisations.md)",
        "An organisation's person is monitored only with recorded consent: who gave it, the "
        "signed form (only its SHA-256 is kept), until when, which backends may be searched.",
    )
    g.add_argument("--org", metavar="ORG", help="the organisation monitoring this person")
    g.add_argument(
        "--consent-by",
        metavar="WHO",
        help="'person' (the person consented), or the name of a representative (with --authority)",
    )
    g.add_argument("--authority", metavar="TEXT", help="the representative's stated authority")
    g.add_argument("--consent-file", type=Path, metavar="FILE", help="the signed consent form")
    g.add_argument(
        "--consent-link",
        action="store_true",
        help="instead of a form: mail the person (--email) a link or code that confirms their "
        "consent; nothing is searched until they do ([orgs] confirm_url, `consent confirm`)",
    )
    g.add_argument("--consent-until", metavar="DATE", help="consent ends (YYYY-MM-DD, UTC)")
    g.add_argument(
        "--allow-backend",
        action="append",
        default=[],
        metavar="NAME",
        help="a search backend (name or kind) that may receive the names (repeatable; default: "
        "the kinds configured now)",
    )
    g.add_argument(
        "--alert-to",
        choices=casework.ALERT_TO,
        default="person",
        help="who gets the alerts (default: the person)",
    )


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    o = sub.add_parser("org", help="organisations that monitor people on consent")
    osub = o.add_subparsers(dest="org_command", metavar="ACTION", required=True)
    oa = osub.add_parser("add", help="create an organisation")
    oa.add_argument("name")
    oa.add_argument("--json", action="store_true")
    osub.add_parser("list", help="list organisations").add_argument("--json", action="store_true")

    op = sub.add_parser("operator", help="an organisation's admins, caseworkers and viewers")
    opsub = op.add_subparsers(dest="operator_command", metavar="ACTION", required=True)
    opa = opsub.add_parser(
        "add",
        help="add an operator (prints the authenticator setup URI once), or make another "
        "organisation's operator an admin of this one too",
        description="The first operator of an organisation can be added by the machine's "
        "owner; later ones by an admin of the organisation (--operator). The passphrase "
        "comes from a prompt or --passphrase-file; the TOTP provisioning URI is printed once. "
        "An EMAIL that is already another organisation's operator (--role admin only) becomes "
        "an admin of this one too, instead of failing: no new passphrase or second factor, "
        "they log in as before and switch between the organisations on the web pages.",
    )
    opa.add_argument("email")
    opa.add_argument("--org", metavar="ORG", help="the organisation (default: the admin's own)")
    opa.add_argument("--role", required=True, choices=ROLES)
    opa.add_argument("--passphrase-file", type=Path, metavar="FILE")
    opa.add_argument("--json", action="store_true")
    org_help = "the organisation (default: the admin's own; the machine's owner must give it)"
    who = (
        "By an admin of the organisation (--operator); the machine's owner only while it has "
        "no active admin. The organisation always keeps one active admin."
    )
    opd = opsub.add_parser(
        "disable",
        help="an operator leaves: they cannot log in any more, their sessions end (their log "
        "stays)",
        description=who,
    )
    opd.add_argument("email")
    opd.add_argument("--org", metavar="ORG", help=org_help)
    ope = opsub.add_parser("enable", help="a disabled operator may log in again", description=who)
    ope.add_argument("email")
    ope.add_argument("--org", metavar="ORG", help=org_help)
    opr = opsub.add_parser(
        "role",
        help="change an operator's role (admin, caseworker, viewer)",
        description=who + " The new role applies from their next command or page.",
    )
    opr.add_argument("email")
    opr.add_argument("role", choices=ROLES)
    opr.add_argument("--org", metavar="ORG", help=org_help)
    opx = opsub.add_parser(
        "reset",
        help="a new passphrase (asked, or --passphrase-file), or with --totp a new second "
        "factor (prints the authenticator setup URI once); their sessions end",
        description="Without --totp: a new passphrase for the operator, from a prompt or "
        "--passphrase-file (tell it to them in person). With --totp: a new authenticator "
        "secret instead (a lost or new phone); the passphrase stays. By an admin of the "
        "organisation, or the machine's owner (recovery, e.g. an admin who lost their phone).",
    )
    opx.add_argument("email")
    opx.add_argument("--org", metavar="ORG", help=org_help)
    opx.add_argument("--totp", action="store_true", help="reset the second factor instead")
    opx.add_argument("--passphrase-file", type=Path, metavar="FILE")
    opx.add_argument("--json", action="store_true")
    opl = opsub.add_parser("list", help="list an organisation's operators")
    opl.add_argument("--org", metavar="ORG", help=org_help)
    opl.add_argument("--json", action="store_true")

    c = sub.add_parser("consent", help="show, renew or withdraw a person's consent")
    csub = c.add_subparsers(dest="consent_command", metavar="ACTION", required=True)
    cs = csub.add_parser("show", help="the person's consent record")
    cs.add_argument("name")
    cs.add_argument("--json", action="store_true")
    cw = csub.add_parser(
        "withdraw", help="consent withdrawn: stop monitoring and erase everything now"
    )
    cw.add_argument("name")
    cw.add_argument("--yes", action="store_true", help="confirm the erasure")
    cc = csub.add_parser(
        "confirm", help="the person confirmed their consent: the code from the mailed link"
    )
    cc.add_argument("code")
    cr = csub.add_parser("renew", help="record a new consent (lifts a pause)")
    cr.add_argument("name")
    for a in ("--consent-by", "--authority", "--consent-until"):
        cr.add_argument(a)
    cr.add_argument("--consent-file", type=Path, required=True)
    cr.add_argument("--allow-backend", action="append", default=[])

    a = sub.add_parser(
        "audit",
        help="the organisation's audit log, or one person's (right of access export)",
        description="Every view, change and export of a person's data, by whom and when. "
        "Entries hold no personal data; after an erasure they say only that it happened.",
    )
    a.add_argument("name", nargs="?")
    a.add_argument("--json", action="store_true")

    st = sub.add_parser(
        "stats", help="removal rate and median days to removal, overall and by site"
    )
    st.add_argument("--org", metavar="ORG", help="default: the operator's (or the household)")
    st.add_argument("--json", action="store_true")


def add_invite_parser(ssub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    si = ssub.add_parser(
        "invite",
        help="mail an organisation's person a link to see their own cases (read only)",
        description="The person gets a discreet mail (no name, no organisation) with a "
        "one-time link to the web app's /me/invite page ([web] public_url), valid 7 days, "
        "where they choose a passphrase. Signed in at /me/login they see their own cases "
        "(places, state, what was done; no image) and may withdraw their consent.",
    )
    si.add_argument("name")
    si.add_argument("--json", action="store_true")


def cmd_subject_invite(args: argparse.Namespace, settings: Settings) -> int:
    from monitor import alerts
    from monitor.orgs import person

    scope = _org_scope("subject invite")
    db = _db(settings)
    with db.session() as s:
        subject = store.get_subject(s, args.name)
        person.invite(s, settings, subject, scope)
        address = subject.email
    alerts.deliver_pending(db, alerts.notifier_from_settings(settings), settings)
    if args.json:
        _print_json({"invited": args.name, "mailed_to": address})
    else:
        out.print(
            f"Mailed {esc(repr(args.name))} a link to see their own cases (valid "
            f"{person.INVITE_VALID.days} days)."
        )
    if not settings.web.public_url:
        err.print(
            "[yellow]note[/yellow]: [web] public_url is not set: the link points to this "
            "computer's loopback address, which the person can open only here"
        )
    return 0


def register_case_actions(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``case assign ID EMAIL`` and ``case request ID STATE`` on the existing ``case``."""
    case_parser = sub.choices["case"]
    actions = next(a for a in case_parser._actions if isinstance(a, argparse._SubParsersAction))
    ca = actions.add_parser("assign", help="give the case to a caseworker (organisations)")
    ca.add_argument("id", type=int)
    ca.add_argument("email")
    cr = actions.add_parser(
        "request",
        help="record what the site did with the removal request: acknowledged, removed, refused",
    )
    cr.add_argument("id", type=int)
    cr.add_argument("state", choices=(*casework.REQUEST_STATES, "show"))
    cr.add_argument("--at", metavar="DATE", help="when (YYYY-MM-DD; default now)")
    cr.add_argument("--json", action="store_true")


# ---------------------------------------------------------------- commands


def _date(value: str | None, what: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise MonitorError(f"{what}: expected a date YYYY-MM-DD, got {value!r}") from None


def _scope() -> Scope:
    return current_scope() or HOUSEHOLD


def _org_scope(what: str) -> Scope:
    scope = _scope()
    if scope.org_id is None:
        raise MonitorError(f"{what} is for organisations: give --operator EMAIL")
    return scope


def _consent_fields(args: argparse.Namespace, settings: Settings) -> dict[str, object]:
    link = bool(getattr(args, "consent_link", False))
    if not args.consent_by or bool(args.consent_file) == link:
        raise MonitorError(
            "an organisation's person needs consent: --consent-by WHO and --consent-file FILE "
            "(the signed form) or --consent-link (mailed to the person)"
        )
    person = args.consent_by.strip().lower() == "person"
    backends = args.allow_backend or sorted({b.kind for b in settings.search.backends}) or ["*"]
    return {
        "given_by": "person" if person else "representative",
        "representative": None if person else clean_name(args.consent_by, "--consent-by"),
        "authority": args.authority,
        "form_sha": None if link else consent.form_sha256(args.consent_file),
        "link_token": consent.new_link_token() if link else None,
        "valid_until": _date(args.consent_until, "--consent-until"),
        "backends": backends,
    }


def wants_org_subject(args: argparse.Namespace) -> bool:
    """Whether ``subject add`` is for an organisation (refusing consent options without one,
    rather than dropping them silently)."""
    if args.org or _scope().org_id is not None:
        return True
    given = [
        opt
        for opt, value in (
            ("--consent-by", args.consent_by),
            ("--consent-file", args.consent_file),
            ("--consent-link", args.consent_link),
            ("--consent-until", args.consent_until),
            ("--allow-backend", args.allow_backend),
        )
        if value
    ]
    if given:
        raise MonitorError(
            f"{given[0]} is for an organisation's person: give --operator EMAIL (and --org)"
        )
    return False


def cmd_subject_add(args: argparse.Namespace, settings: Settings) -> int:
    """``subject add`` for an organisation: with consent, scoped, audited."""
    scope = _org_scope("--org")
    db = _db(settings)
    interval = parse_interval(args.every) if args.every else settings.schedule.default_interval
    name = clean_name(args.name, "the name")
    aliases = [clean_name(x, "an alias") for x in args.alias]
    email = check_email(args.email) if args.email else None
    fields = _consent_fields(args, settings)
    with db.session() as s:
        org = (
            accounts.get_organisation(s, args.org)
            if args.org
            else s.get(accounts.Organisation, scope.org_id)
        )
        if org is None or org.id != scope.org_id:
            raise MonitorError(f"{scope.operator} does not work for {args.org!r}")
        subject = store.add_subject(
            s, name, aliases=aliases, email=email, interval=interval, organisation_id=org.id
        )
        subject.minor = bool(args.minor)
        subject.alert_to = args.alert_to
        consent.record_consent(
            s,
            subject,
            names=[name, *aliases],
            operator_id=scope.operator_id,
            **fields,  # type: ignore[arg-type]
        )
        if fields["link_token"]:
            consent.queue_link_mail(s, settings, subject, str(fields["link_token"]))
        how = "link mailed" if fields["link_token"] else "signed form"
        audit.log(s, scope, "subject add", subject_id=subject.id, detail=f"consent: {how}")
        info = {"name": subject.name, "organisation": org.name, "id": subject.id}
    if fields["link_token"]:
        from monitor import alerts

        alerts.deliver_pending(db, alerts.notifier_from_settings(settings), settings)
    if args.json:
        _print_json(info)
    elif fields["link_token"]:
        out.print(
            f"Added {esc(repr(name))} to {esc(org.name)}; a consent link was mailed to them. "
            "Nothing is searched until they confirm."
        )
    else:
        out.print(
            f"Added {esc(repr(name))} to {esc(org.name)} with consent. Next: `enroll "
            f"{esc(repr(name))} PHOTO_OR_FOLDER...`"
        )
    return 0


def cmd_org(args: argparse.Namespace, settings: Settings) -> int:
    db = _db(settings)
    scope = _scope()
    if args.org_command == "add":
        if scope.org_id is not None:
            raise MonitorError("organisations are added by the machine's owner (no --operator)")
        with db.session() as s:
            org = accounts.add_organisation(s, clean_name(args.name, "the organisation's name"))
            info = {"id": org.id, "name": org.name}
        if args.json:
            _print_json(info)
        else:
            out.print(
                f"Added organisation {esc(repr(info['name']))}. Next: `operator add EMAIL "
                f"--org {esc(repr(info['name']))} --role admin`"
            )
        return 0
    with db.session() as s:
        orgs = [
            {"id": o.id, "name": o.name}
            for o in accounts.organisations(s)
            if scope.org_id in (None, o.id)
        ]
    if args.json:
        _print_json(orgs)
    else:
        for o in orgs:
            out.print(cell(f"{o['id']}  {o['name']}"))
    return 0


def _organisation(s: Session, scope: Scope, name: str | None) -> accounts.Organisation:
    """The organisation named (never another than the operator's own), or the operator's."""
    if name:
        org = accounts.get_organisation(s, name)
        if scope.org_id is not None and scope.org_id != org.id:
            raise accounts.OrganisationNotFound(f"no organisation named {name!r}")
        return org
    org = s.get(accounts.Organisation, scope.org_id) if scope.org_id is not None else None
    if org is None:
        raise MonitorError("which organisation? give --org ORG")
    return org


def cmd_operator(args: argparse.Namespace, settings: Settings) -> int:
    from monitor.orgs import management

    db = _db(settings)
    scope = _scope()
    action = args.operator_command
    with db.session() as s:
        org = _organisation(s, scope, args.org)
        if action == "list":
            rows = [o.as_json() for o in management.list_operators(s, org.id, scope)]
            if args.json:
                _print_json(rows)
            else:
                for r in rows:
                    state = "  (disabled)" if r["disabled"] else ""
                    home = "  (member: logs in through another organisation)" * bool(r["member"])
                    out.print(cell(f"{r['email']}  {r['role']}{state}{home}"))
            return 0
        if action in ("disable", "enable", "role"):
            op = management.find_operator(s, org.id, email=args.email)
            if action == "role":
                old = management.change_role(s, scope, op, args.role, org.id)
                said = f"{op.email} is now {args.role} (was {old})."
            else:
                changed = management.set_disabled(s, scope, op, action == "disable", org.id)
                said = (
                    f"{op.email} can no longer log in; their sessions end."
                    if action == "disable"
                    else f"{op.email} may log in again."
                )
                if op.organisation_id != org.id:  # a member: their home log-in stays
                    said = f"{op.email} " + (
                        "can no longer act for this organisation."
                        if action == "disable"
                        else "may act for this organisation again."
                    )
                if not changed:
                    said = f"{op.email} was already {action}d."
            out.print(said, markup=False)
            return 0
        if action == "reset":
            op = management.find_operator(s, org.id, email=args.email)
            management.may_manage(s, scope, org.id, recovery=True)  # before any prompt
            management.home_only(s, op, org.id)
            email = op.email
        else:
            email = ""
            management.may_manage(s, scope, org.id)  # before any prompt
            existing = accounts.find_by_email(s, check_email(args.email, "EMAIL"))
    if action == "reset":
        return _reset(db, scope, org.id, email, args)
    # an existing operator (of another organisation) becomes an admin here: no new passphrase
    passphrase = None if existing else _new_passphrase(args.passphrase_file)
    with db.session() as s:
        org = s.get(accounts.Organisation, org.id)
        assert org is not None
        new = management.add_operator(s, scope, org, args.email, args.role, passphrase)
    if args.json:
        _print_json(
            {
                "email": new.email,
                "role": new.role,
                "provisioning_uri": new.provisioning_uri,
                "member": new.member,
            }
        )
    elif new.member:
        out.print(
            f"{esc(new.email)} is now an admin of {esc(new.organisation)} too; they log in as "
            "before (their own passphrase and second factor) and switch to it on the web pages."
        )
    else:
        out.print(f"Added {esc(new.email)} ({new.role}) to {esc(new.organisation)}.")
        out.print(
            "Add this to the operator's authenticator app now; it is not shown again:",
            markup=False,
        )
        out.print(new.provisioning_uri, markup=False, soft_wrap=True)
    return 0


def _reset(db: Database, scope: Scope, org_id: int, email: str, args: argparse.Namespace) -> int:
    """``operator reset EMAIL [--totp]``."""
    from monitor.orgs import management

    if args.totp and args.passphrase_file:
        raise MonitorError("--passphrase-file is for a passphrase reset: leave out --totp")
    passphrase = None if args.totp else _new_passphrase(args.passphrase_file)
    with db.session() as s:
        op = management.find_operator(s, org_id, email=email)
        if passphrase is None:
            uri = management.reset_totp(s, scope, op, org_id)
        else:
            management.reset_passphrase(s, scope, op, passphrase, org_id)
            uri = None
    if args.json:
        _print_json(
            {"email": email, "reset": "totp" if uri else "passphrase", "provisioning_uri": uri}
        )
    elif uri:
        out.print(f"{email} has a new second factor; their sessions end.", markup=False)
        out.print(
            "Add this to the operator's authenticator app now (remove the old entry); it is "
            "not shown again:",
            markup=False,
        )
        out.print(uri, markup=False, soft_wrap=True)
    else:
        out.print(
            f"{email} has a new passphrase; their sessions end. Tell it to them in person.",
            markup=False,
        )
    return 0


def _new_passphrase(path: Path | None) -> str:
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").strip("\r\n")
        except OSError as exc:
            raise MonitorError(f"cannot read {path}: {exc.strerror}") from None
    if not sys.stdin.isatty():
        raise MonitorError("give --passphrase-file FILE, or run on a terminal to be asked")
    first = getpass.getpass("New passphrase for the operator: ")
    if getpass.getpass("Again: ") != first:
        raise MonitorError("the passphrases differ")
    return first


def cmd_consent(args: argparse.Namespace, settings: Settings) -> int:
    from monitor.orgs.erasure import withdraw_and_erase

    scope = _org_scope("consent")
    db = _db(settings)
    if args.consent_command == "show":
        with db.session() as s:
            subject = store.get_subject(s, args.name)
            c = consent.latest(s, subject.id)
            data = {
                "name": subject.name,
                "paused": consent.paused_because(s, subject),
                "consent": consent.describe(c) if c else None,
            }
        if args.json:
            _print_json(data)
            return 0
        out.print(f"[bold]{esc(data['name'])}[/bold]")
        for key, value in (data["consent"] or {"consent": "none recorded"}).items():
            out.print(cell(f"  {key}: {value}"))
        if data["paused"]:
            out.print(
                cell(
                    f"  monitoring paused: {data['paused']} (no searches, and the places "
                    "already found are not checked again, until consent is renewed)"
                )
            )
        return 0
    if args.consent_command == "confirm":
        with db.session() as s:
            c = consent.confirm_link(s, args.code)
            audit.log(s, scope, "consent confirmed", subject_id=c.subject_id)
        out.print("Consent confirmed: monitoring can start.")
        return 0
    if args.consent_command == "renew":
        fields = _consent_fields(args, settings)
        with db.session() as s:
            subject = store.get_subject(s, args.name)
            names = [subject.name, *(a.alias for a in subject.aliases)]
            consent.record_consent(
                s,
                subject,
                names=names,
                operator_id=scope.operator_id,
                **fields,  # type: ignore[arg-type]
            )
        out.print(f"Recorded new consent for {esc(repr(args.name))}; monitoring goes on.")
        return 0
    if not args.yes:
        raise MonitorError("withdrawal erases everything about the person at once: add --yes")
    scrubbed = withdraw_and_erase(settings, db, args.name, scope)
    out.print(
        f"Consent withdrawn: {esc(repr(args.name))} is no longer monitored and everything "
        "stored about them is erased. The audit log keeps that this happened, without the name."
    )
    if not scrubbed:
        err.print("[yellow]warning[/yellow]: another process has the database open")
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    scope = _org_scope("the audit log")
    db = _db(settings)
    with db.session() as s:
        subject_id = store.get_subject(s, args.name).id if args.name else None
        rows = audit.entries(s, scope, subject_id)
    if args.json:
        _print_json([r.as_json() for r in rows])
        return 0
    t = Table("when", "who", "what", "person", "detail")
    for r in rows:
        t.add_row(
            r.at.strftime("%Y-%m-%d %H:%M UTC"),
            cell(r.operator),
            cell(r.action),
            f"#{r.subject_id}" if r.subject_id else "-",
            cell(r.detail),
        )
    out.print(t)
    return 0


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    scope = _scope()
    db = _db(settings)
    with db.session() as s:
        org_id = scope.org_id
        if args.org:
            org = accounts.get_organisation(s, args.org)
            if scope.org_id is not None and org.id != scope.org_id:
                raise accounts.OrganisationNotFound(f"no organisation named {args.org!r}")
            if scope.org_id is None:
                raise MonitorError("an organisation's statistics: give --operator EMAIL")
            org_id = org.id
        data = casework.removal_stats(s, org_id)
    if args.json:
        _print_json(data)
        return 0
    rate = data["removal_rate"]
    out.print(
        f"{data['cases']} case(s), {data['removed']} removed"
        + (f" ({rate:.0%})" if rate is not None else "")
        + (
            f", median {data['median_days_to_removal']} days to removal"
            if data["median_days_to_removal"] is not None
            else ""
        ),
        markup=False,
    )
    t = Table("site", "cases", "removed", "rate", "median days")
    for site, x in data["by_site"].items():  # type: ignore[attr-defined]
        t.add_row(
            cell(site),
            str(x["cases"]),
            str(x["removed"]),
            "-" if x["removal_rate"] is None else f"{x['removal_rate']:.0%}",
            "-" if x["median_days_to_removal"] is None else str(x["median_days_to_removal"]),
        )
    out.print(t)
    return 0


def cmd_case(args: argparse.Namespace, settings: Settings) -> int:
    """``case assign`` and ``case request``."""
    db = _db(settings)
    if args.case_command == "assign":
        with db.session() as s:
            casework.assign_case(s, args.id, args.email)
        out.print(f"Case {args.id} is assigned to {esc(args.email)}.")
        return 0
    with db.session() as s:
        if args.state != "show":
            casework.record_request_outcome(s, args.id, args.state, _date(args.at, "--at"))
        rows = casework.requests_of(s, args.id)
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            out.print(cell(", ".join(f"{k} {v}" for k, v in r.items() if v is not None)))
    return 0


COMMANDS = {
    "org": cmd_org,
    "operator": cmd_operator,
    "consent": cmd_consent,
    "audit": cmd_audit,
    "stats": cmd_stats,
}
