"""Who to contact: a loopback site with contact pages, mailto links and a security.txt, and a
loopback RDAP server for the hosting address and the domain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.cases.contacts import (
    classify,
    find_contacts,
    links_in_html,
    page_language,
    parse_security_txt,
    rank,
    rdap_abuse_contacts,
)
from monitor.config import Settings
from monitor.testing.web import LoopbackWeb

PAGE = """<!DOCTYPE html><html lang="nl"><head><title>Album</title></head><body>
<img src="/img/1.jpg">
<a href="/contact">Contact</a>
<a href="/help/report-abuse">Report abuse</a>
<a href="mailto:info@site.test">mail ons</a>
<a href="/about">Over ons</a>
<a href="https://elsewhere.test/share">Delen</a>
</body></html>"""
HOME = """<html><body><a href="mailto:abuse@site.test">Misbruik melden</a>
<a href="/privacy">Privacy</a><a href="/post/1.html">Album</a></body></html>"""
CONTACT = """<html><body><a href="mailto:support@site.test">Support</a>
<a href="mailto:dmca@site.test?subject=takedown">Copyright</a></body></html>"""
PRIVACY = '<html><body><a href="mailto:privacy@site.test">privacy officer</a></body></html>'
SECURITY_TXT = "# security\nContact: mailto:security@site.test\nContact: https://site.test/security\nExpires: 2030-01-01T00:00:00Z\n"


def _vcard(name: str, email: str) -> list[object]:
    return [
        "vcard",
        [
            ["version", {}, "text", "4.0"],
            ["fn", {}, "text", name],
            ["email", {"type": "work"}, "text", email],
        ],
    ]


IP_RDAP = {
    "objectClassName": "ip network",
    "entities": [
        {
            "roles": ["registrant"],
            "vcardArray": _vcard("Example Hosting", "noc@hoster.test"),
            "entities": [
                {"roles": ["abuse"], "vcardArray": _vcard("Abuse desk", "abuse@hoster.test")}
            ],
        }
    ],
}
DOMAIN_RDAP = {
    "objectClassName": "domain",
    "entities": [
        {
            "roles": ["registrar"],
            "vcardArray": _vcard("Example Registrar", "info@registrar.test"),
            "entities": [
                {
                    "roles": ["abuse"],
                    "vcardArray": ["vcard", [["email", {}, "text", "abuse@registrar.test"]]],
                }
            ],
        }
    ],
}


@pytest.fixture
def site():
    with LoopbackWeb() as web, LoopbackWeb() as rdap:
        web.add("/post/1.html", PAGE)
        web.add("/", HOME)
        web.add("/contact", CONTACT)
        web.add("/privacy", PRIVACY)
        web.add("/.well-known/security.txt", SECURITY_TXT, "text/plain; charset=utf-8")
        for ip in ("127.0.0.1", "::1"):
            rdap.add(f"/ip/{ip}", json.dumps(IP_RDAP), "application/rdap+json")
        rdap.add("/domain/localhost", json.dumps(DOMAIN_RDAP), "application/rdap+json")
        yield web, rdap


def _settings(tmp_path: Path, rdap: LoopbackWeb) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        fetch={"allow_private_networks": True, "timeout": 10},
        cases={"rdap_domain_url": rdap.url("/domain/"), "rdap_ip_url": rdap.url("/ip/")},
    )


async def test_contacts_are_found_ranked_with_where_they_were_found(site, tmp_path: Path) -> None:
    web, rdap = site
    page_url = f"http://localhost:{web.port}/post/1.html"
    report = await find_contacts(_settings(tmp_path, rdap), page_url)

    values = [c.value for c in report.contacts]
    origin = f"http://localhost:{web.port}"
    assert values == [
        "abuse@site.test",  # abuse address on the home page
        "dmca@site.test",  # abuse address on a contact page (one hop)
        f"{origin}/help/report-abuse",  # a report link on the page
        "info@site.test",  # other addresses, in the order found
        "support@site.test",
        "privacy@site.test",
        f"{origin}/contact",  # contact pages
        f"{origin}/privacy",
        "security@site.test",  # security.txt
        "https://site.test/security",
        "abuse@hoster.test",  # hosting network (RDAP, IP)
        "abuse@registrar.test",  # registrar (RDAP, domain)
    ]
    by_value = {c.value: c for c in report.contacts}
    assert by_value["abuse@site.test"].source == "site"
    assert by_value["abuse@site.test"].found_at == origin + "/"
    assert by_value["dmca@site.test"].source == "contact page"
    assert by_value["dmca@site.test"].found_at == origin + "/contact"
    assert by_value["info@site.test"].found_at == page_url
    assert by_value["security@site.test"].found_at == origin + "/.well-known/security.txt"
    assert by_value["abuse@hoster.test"].source == "rdap-ip"
    assert by_value["abuse@hoster.test"].found_at.startswith(rdap.url("/ip/"))
    assert by_value["abuse@hoster.test"].label == "Abuse desk"
    assert by_value["abuse@registrar.test"].found_at == rdap.url("/domain/localhost")
    assert by_value["abuse@registrar.test"].label == "Example Registrar"
    assert "elsewhere.test" not in " ".join(values)  # a share link is no contact
    assert report.lang == "nl"
    # The report-abuse link was followed and failed; that is noted, not fatal.
    assert any("report-abuse" in e and "404" in e for e in report.errors)


async def test_an_ip_address_site_gets_the_hosting_network_only(site, tmp_path: Path) -> None:
    web, rdap = site
    report = await find_contacts(_settings(tmp_path, rdap), web.url("/post/1.html"))
    sources = {c.source for c in report.contacts}
    assert "rdap-ip" in sources and "rdap-domain" not in sources


def test_classify_english_and_dutch_words() -> None:
    assert classify("mailto:abuse@x.test") == 0
    assert classify("mailto:info@x.test", "Misbruik melden") == 0
    assert classify("mailto:info@x.test", "Mail us") == 2
    assert classify("https://x.test/meldpunt") == 1
    assert classify("https://x.test/klachten") == 1
    assert classify("https://x.test/a", "DMCA") == 1
    assert classify("https://x.test/contact") == 3
    assert classify("https://x.test/juridisch") == 3
    assert classify("https://x.test/about", "About us") is None
    assert classify("mailto:not-an-address") is None


def test_links_language_and_security_txt_parsing() -> None:
    html = b'<html xml:lang="en-GB"><head><base href="https://b.test/d/"></head><body><a href="c">x</a><a href="#top">t</a></body></html>'
    assert links_in_html(html, "https://a.test/") == [("https://b.test/d/c", "x")]
    assert page_language(b"<html><body></body></html>", "de-DE, en") == "de"
    assert page_language(b'<html lang="NL-be"></html>') == "nl"
    assert page_language(b"<html></html>") is None
    assert parse_security_txt("contact: mailto:a@b.test\nPolicy: x\nContact:https://c.test\n") == [
        "mailto:a@b.test",
        "https://c.test",
    ]


def test_rdap_abuse_entities_nested_and_deduplicated() -> None:
    data = {
        "entities": [
            {"roles": ["abuse"], "vcardArray": _vcard("Top", "a@x.test")},
            {
                "roles": ["registrar"],
                "vcardArray": _vcard("Reg", "r@x.test"),
                "entities": [
                    {
                        "roles": ["abuse"],
                        "vcardArray": ["vcard", [["email", {}, "text", "b@x.test"]]],
                    },
                    {"roles": ["ABUSE"], "vcardArray": _vcard("Dup", "a@x.test")},
                ],
            },
        ]
    }
    assert rdap_abuse_contacts(data) == [("a@x.test", "Top"), ("b@x.test", "Reg")]
    assert rdap_abuse_contacts({"entities": "garbage"}) == []


def test_rank_keeps_the_best_place_of_a_duplicate() -> None:
    from monitor.cases.contacts import Contact

    ranked = rank(
        [
            Contact("email", "x@s.test", "page", "u1", 2),
            Contact("url", "https://s.test/report", "page", "u1", 1),
            Contact("email", "X@s.test", "site", "u2", 0),
        ]
    )
    assert [(c.value, c.tier) for c in ranked] == [("X@s.test", 0), ("https://s.test/report", 1)]
