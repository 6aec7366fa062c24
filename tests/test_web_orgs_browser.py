"""The organisations' pages in Debian's Chromium, checked with axe-core against the WCAG 2.1 A
and AA rules: an operator's (log-in with a one-time code, overview, people, a person, cases, a
case, audit, statistics, operators, settings) and an invited person's own (set-up from the
mailed link, their cases, log-in); an operator added on the Operators page (the answer
showing the authenticator's setup code once) and the organisation switcher of an admin of two
organisations."""

from __future__ import annotations

import os
import re

import pyotp
import pytest
from sqlalchemy import select

from monitor.db.models import Membership, Operator, Organisation, OutboxMessage, Subject
from monitor.evidence import chromium_path
from tests.test_web_browser import Served, accessibility_problems
from tests.test_web_orgs import PASS, World, world  # noqa: F401 - the fixture

pytestmark = [
    pytest.mark.skipif(
        chromium_path() is None,
        reason="no Chromium at /usr/bin/chromium (apt-get install chromium) or $MONITOR_CHROMIUM",
    ),
    pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`"),
]


def test_operator_and_person_pages_pass_axe(world: World) -> None:  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    ann, case = world.people["Ann Smith"], world.cases["Ann Smith"]
    with world.app.db.session() as s:
        s.get(Subject, ann).email = "ann@x.test"
        a_id = s.scalar(select(Operator.id).where(Operator.email == "a@a.org"))
        b_org = s.scalar(select(Organisation.id).where(Organisation.name == "B"))
        s.add(Membership(operator_id=a_id, organisation_id=b_org, role="admin"))
    found: list[str] = []
    # Only our own loopback pages are opened: no sandbox needed when the tests run as root.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with Served(world.app.client.app) as served, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=args)
        page = browser.new_context().new_page()
        page.goto(served.url + "/login")
        found += accessibility_problems(page, "operator log-in")
        page.fill("#email", "a@a.org")
        page.fill("#passphrase", PASS)
        page.fill("#code", pyotp.TOTP(world.secrets["a@a.org"]).now())
        page.click("button[type=submit]")
        expect(page).to_have_url(served.url + "/")
        for path in (
            "/",
            "/people",
            f"/people/{ann}",
            "/cases",
            f"/cases/{case}",
            "/audit",
            "/stats",
            "/operators",
            "/settings",
        ):
            page.goto(served.url + path)
            assert page.url == served.url + path, f"{path}: went to {page.url}"
            found += accessibility_problems(page, path)
        # add an operator: the answer shows the authenticator's setup code once
        page.goto(served.url + "/operators")
        page.fill("#new-email", "new@a.org")
        page.fill("#new-pp", "an initial passphrase")
        page.fill("#new-rp", "an initial passphrase")
        page.click("text=Add operator")
        expect(page.locator("#new-operator")).to_contain_text("otpauth://")
        found += accessibility_problems(page, "operator added")
        # switch to the other organisation the operator is an admin of
        page.select_option("#org-select", str(b_org))
        page.click("#organisation-switch button")
        expect(page.locator("#organisation")).to_contain_text("B")
        found += accessibility_problems(page, "switched")
        page.select_option("#org-select", label="A")
        page.click("#organisation-switch button")
        expect(page.locator("#organisation")).to_contain_text("A")
        # invite the person, who sets a passphrase from the mailed link
        page.goto(f"{served.url}/people/{ann}")
        page.click("text=Invite the person to see their own cases")
        with world.app.db.session() as s:
            body = s.scalar(select(OutboxMessage.body).where(OutboxMessage.kind == "person_invite"))
        code = re.search(r"/me/invite\?code=(\S+)", body).group(1)
        person = browser.new_context().new_page()
        person.goto(f"{served.url}/me/invite?code={code}")
        found += accessibility_problems(person, "person set-up")
        person.fill("#passphrase", "my own passphrase here")
        person.fill("#repeat", "my own passphrase here")
        person.click("button[type=submit]")
        expect(person).to_have_url(served.url + "/me")
        found += accessibility_problems(person, "/me")
        person.goto(served.url + "/me/login")
        found += accessibility_problems(person, "person log-in")
        browser.close()
    assert not found, "\n".join(found)
