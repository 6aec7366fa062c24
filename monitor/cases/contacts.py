"""Who to ask for removal: abuse contacts for a page, ranked, each with where it was found.

Looked up, in this order of preference (lower ``tier`` first; ties keep the order found):

0. ``mailto:`` links on the page, its site's home page or a contact page whose address or text
   says abuse, report, DMCA, takedown, removal (English) or misbruik, melden, klacht,
   verwijderen (Dutch).
1. Links (report forms, abuse pages) with those words.
2. Other ``mailto:`` links (contact, help, support, privacy, legal, info...).
3. Contact, help, legal and privacy pages (followed one hop, ``[cases] max_contact_pages``).
4. ``Contact:`` lines of the site's ``/.well-known/security.txt``.
5. The hosting network's abuse address (RDAP for the server's IP, a regional registry).
6. The domain registrar's abuse address (RDAP for the domain).

Pages are fetched with the scan's :class:`~monitor.fetch.Fetcher` (address guard, robots.txt,
caps). RDAP base URLs are configuration (``[cases] rdap_domain_url``, ``rdap_ip_url``).
The parsing functions are pure; :func:`find_contacts` does the I/O.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import httpx
import lxml.html
from lxml import etree

from monitor.config import Settings
from monitor.errors import FetchError
from monitor.extract import charset_from_content_type
from monitor.fetch import ACCEPT_ENCODING, Fetcher, UndecodableBody, read_bounded

__all__ = [
    "Contact",
    "ContactReport",
    "classify",
    "find_contacts",
    "links_in_html",
    "page_language",
    "parse_security_txt",
    "rank",
    "rdap_abuse_contacts",
]

log = logging.getLogger("monitor.cases.contacts")

STRONG = (
    "abuse",
    "report",
    "dmca",
    "takedown",
    "take-down",
    "take down",
    "removal",
    "remove",
    "copyright",
    "ncii",
    "trust-and-safety",
    "trust & safety",
    "misbruik",
    "melden",
    "meld ",
    "meldpunt",
    "melding",
    "klacht",
    "verwijder",
)
WEAK = (
    "contact",
    "help",
    "support",
    "legal",
    "privacy",
    "impressum",
    "juridisch",
    "hulp",
    "klantenservice",
    "info@",
    "webmaster",
)

TIER_STRONG_EMAIL, TIER_STRONG_URL, TIER_EMAIL, TIER_URL = 0, 1, 2, 3
TIER_SECURITY_TXT, TIER_RDAP_IP, TIER_RDAP_DOMAIN = 4, 5, 6

_EMAIL = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+$")


@dataclass(frozen=True, slots=True)
class Contact:
    """One way to reach someone who can remove the page: an email address or a web address."""

    kind: str  # "email" | "url"
    value: str
    source: str  # page | site | contact page | security.txt | rdap-ip | rdap-domain
    found_at: str  # the URL it was found at
    tier: int
    label: str = ""  # the link text, or the RDAP entity's name

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "value": self.value,
            "source": self.source,
            "found_at": self.found_at,
            "label": self.label,
        }


@dataclass
class ContactReport:
    contacts: list[Contact] = field(default_factory=list)  # ranked
    lang: str | None = None  # the page's language (``<html lang>`` or Content-Language)
    errors: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- pure parts


def _words(*texts: str) -> str:
    return " ".join(unquote(t).lower() for t in texts if t)


def classify(href: str, text: str = "") -> int | None:
    """The tier of a link (see the module docstring), or ``None`` when it is no contact."""
    if href.lower().startswith("mailto:"):
        address = _mailto_address(href)
        if address is None:
            return None
        words = _words(address.split("@")[0], text)
        return TIER_STRONG_EMAIL if any(k in words for k in STRONG) else TIER_EMAIL
    words = _words(urlsplit(href).path, urlsplit(href).query, text)
    if any(k in words for k in STRONG):
        return TIER_STRONG_URL
    if any(k.rstrip("@") in words for k in WEAK):
        return TIER_URL
    return None


def _mailto_address(href: str) -> str | None:
    address = unquote(href[len("mailto:") :].split("?", 1)[0]).strip()
    address = address.split(",")[0].strip()
    return address.lower() if _EMAIL.match(address) else None


def _parse(html: bytes, content_type: str = "") -> etree._Element | None:
    if not html.strip():
        return None
    try:
        parser = lxml.html.HTMLParser(encoding=charset_from_content_type(content_type) or None)
        return lxml.html.document_fromstring(html, parser=parser)
    except (etree.ParserError, ValueError, LookupError):
        try:
            return lxml.html.document_fromstring(html)
        except (etree.ParserError, ValueError):
            return None


def links_in_html(html: bytes, page_url: str, content_type: str = "") -> list[tuple[str, str]]:
    """``(absolute href, link text)`` of every ``<a href>`` (and ``<area>``), in order."""
    root = _parse(html, content_type)
    if root is None:
        return []
    base = page_url
    for el in root.iter("base"):
        href = el.get("href")
        if href:
            base = urljoin(page_url, href.strip())
            break
    links: list[tuple[str, str]] = []
    for el in root.iter("a", "area"):
        href = (el.get("href") or "").strip()
        if not href or href.startswith(("#", "javascript:")):
            continue
        text = " ".join(
            t for t in (el.text_content(), el.get("title") or "", el.get("aria-label") or "") if t
        )
        absolute = href if href.lower().startswith("mailto:") else urljoin(base, href)
        links.append((absolute, " ".join(text.split())[:200]))
    return links


def page_language(html: bytes, content_language: str = "", content_type: str = "") -> str | None:
    """The page's primary language tag (``"nl"``, ``"en"``...), from ``<html lang>``, else the
    Content-Language header; ``None`` when neither says."""
    root = _parse(html, content_type) if html else None
    if root is not None:
        for el in root.iter("html"):
            lang = (
                el.get("lang") or el.get("{http://www.w3.org/XML/1998/namespace}lang") or ""
            ).strip()
            if lang:
                return lang.split("-")[0].split("_")[0].lower()
    if content_language.strip():
        return content_language.split(",")[0].strip().split("-")[0].lower() or None
    return None


def contacts_from_links(
    links: Iterable[tuple[str, str]], found_at: str, source: str
) -> list[Contact]:
    out: list[Contact] = []
    for href, text in links:
        tier = classify(href, text)
        if tier is None:
            continue
        if href.lower().startswith("mailto:"):
            address = _mailto_address(href)
            assert address is not None
            out.append(Contact("email", address, source, found_at, tier, text))
        elif urlsplit(href).scheme in ("http", "https"):
            out.append(Contact("url", href.split("#")[0], source, found_at, tier, text))
    return out


def parse_security_txt(text: str) -> list[str]:
    """The values of ``Contact:`` lines (RFC 9116), in order: ``mailto:``, ``https:``, ``tel:``."""
    values: list[str] = []
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "contact" and value.strip():
            values.append(value.strip())
    return values


def _security_contacts(text: str, found_at: str) -> list[Contact]:
    out: list[Contact] = []
    for value in parse_security_txt(text):
        if value.lower().startswith("mailto:"):
            address = _mailto_address(value)
            if address:
                out.append(Contact("email", address, "security.txt", found_at, TIER_SECURITY_TXT))
        elif value.lower().startswith(("http://", "https://")):
            out.append(Contact("url", value, "security.txt", found_at, TIER_SECURITY_TXT))
        elif _EMAIL.match(value):
            out.append(Contact("email", value.lower(), "security.txt", found_at, TIER_SECURITY_TXT))
    return out


def _vcard(entity: dict[str, Any]) -> tuple[str, list[str]]:
    """``(name, emails)`` from an RDAP entity's jCard (``vcardArray``)."""
    name, emails = "", []
    card = entity.get("vcardArray")
    if isinstance(card, list) and len(card) == 2 and isinstance(card[1], list):
        for prop in card[1]:
            if not isinstance(prop, list) or len(prop) < 4:
                continue
            key, value = str(prop[0]).lower(), prop[3]
            if key == "fn" and isinstance(value, str):
                name = value
            elif key == "email" and isinstance(value, str) and _EMAIL.match(value.strip()):
                emails.append(value.strip().lower())
    return name, emails


def _entities(data: Any) -> Iterator[dict[str, Any]]:
    if isinstance(data, dict):
        for entity in data.get("entities") or []:
            if isinstance(entity, dict):
                yield entity
                yield from _entities(entity)


def rdap_abuse_contacts(data: Any) -> list[tuple[str, str]]:
    """``(email, entity name)`` of every entity with the role ``abuse`` (nested ones too), in
    document order; the name of the parent (e.g. the registrar) when the abuse entity has none."""
    out: list[tuple[str, str]] = []

    def walk(obj: Any, parent_name: str) -> None:
        if not isinstance(obj, dict):
            return
        for entity in obj.get("entities") or []:
            if not isinstance(entity, dict):
                continue
            name, emails = _vcard(entity)
            roles = [str(r).lower() for r in entity.get("roles") or []]
            if "abuse" in roles:
                out.extend((e, name or parent_name) for e in emails)
            walk(entity, name or parent_name)

    walk(data, "")
    seen: set[str] = set()
    return [(e, n) for e, n in out if not (e in seen or seen.add(e))]  # type: ignore[func-returns-value]


def rank(contacts: Iterable[Contact]) -> list[Contact]:
    """Deduplicated (by kind and value; the best-ranked place wins), best first."""
    best: dict[tuple[str, str], tuple[int, Contact]] = {}
    for order, c in enumerate(contacts):
        key = (c.kind, c.value.lower().rstrip("/"))
        if key not in best or c.tier < best[key][1].tier:
            best[key] = (order if key not in best else best[key][0], c)
    return [c for _, c in sorted(best.values(), key=lambda oc: (oc[1].tier, oc[0]))]


# ---------------------------------------------------------------- I/O


def _same_site(a: str, b: str) -> bool:
    ha, hb = (urlsplit(u).hostname or "" for u in (a, b))
    ha, hb = ha.removeprefix("www."), hb.removeprefix("www.")
    return ha == hb or ha.endswith("." + hb) or hb.endswith("." + ha)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _domain_candidates(host: str) -> list[str]:
    """``www.a.example.co.uk`` -> the host and each parent down to two labels (RDAP answers for
    the registered domain only; without a public-suffix list we try from the longest)."""
    labels = host.rstrip(".").lower().split(".")
    if len(labels) == 1:
        return labels
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


RDAP_MAX_BYTES = 1_000_000
"""The most (decoded) bytes of an RDAP answer read; real answers are a few KB."""


async def _rdap(client: httpx.AsyncClient, url: str) -> Any | None:
    # Streamed and decoded here, bounded: httpx itself would inflate a gzip or br bomb whole.
    try:
        async with client.stream("GET", url) as response:
            if response.status_code != 200:
                return None
            body, cut = await read_bounded(response, RDAP_MAX_BYTES)
    except (httpx.HTTPError, UndecodableBody) as exc:
        log.info("RDAP %s failed: %s", url, exc)
        return None
    if cut:
        log.info("RDAP %s: answer not read: %s", url, cut)
        return None
    try:
        return json.loads(body)
    except (json.JSONDecodeError, ValueError):
        return None


async def rdap_contacts(settings: Settings, page_url: str) -> list[Contact]:
    """Abuse addresses of the hosting network (by IP) and the domain's registrar."""
    cfg = settings.cases
    host = (urlsplit(page_url).hostname or "").strip("[]")
    if not host:
        return []
    found: list[Contact] = []
    headers = {
        "Accept": "application/rdap+json, application/json",
        "Accept-Encoding": ACCEPT_ENCODING,  # only what read_bounded decodes
        "User-Agent": settings.fetch.user_agent,
    }
    async with httpx.AsyncClient(
        headers=headers, timeout=settings.fetch.timeout, follow_redirects=True, trust_env=False
    ) as client:
        try:
            ip: str | None = str(ipaddress.ip_address(host))
            is_literal = True
        except ValueError:
            is_literal, ip = False, None
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, None)
                ip = str(infos[0][4][0]) if infos else None
            except OSError:
                ip = None
        if ip and cfg.rdap_ip_url:
            url = cfg.rdap_ip_url + ip
            data = await _rdap(client, url)
            for email, name in rdap_abuse_contacts(data) if data else []:
                found.append(Contact("email", email, "rdap-ip", url, TIER_RDAP_IP, name))
        if not is_literal and cfg.rdap_domain_url:
            for domain in _domain_candidates(host):
                url = cfg.rdap_domain_url + domain
                data = await _rdap(client, url)
                if data is None:
                    continue
                for email, name in rdap_abuse_contacts(data):
                    found.append(
                        Contact("email", email, "rdap-domain", url, TIER_RDAP_DOMAIN, name)
                    )
                break
    return found


async def _security_txt(fetcher: Fetcher, origin: str) -> tuple[str, str] | None:
    url = origin + "/.well-known/security.txt"
    try:
        # security.txt is text/plain, which fetch_page refuses: fetch it without a type check.
        res = await fetcher._fetch(  # noqa: SLF001
            url, accept="text/plain,*/*;q=0.1", max_bytes=64_000, check_type=None
        )
    except FetchError:
        return None
    return res.body.decode("utf-8", "replace"), res.final_url


async def find_contacts(
    settings: Settings, page_url: str, *, fetcher: Fetcher | None = None
) -> ContactReport:
    """Look up, rank and return the contacts for ``page_url`` (see the module docstring)."""
    if fetcher is None:
        async with Fetcher(settings.fetch) as own:
            return await find_contacts(settings, page_url, fetcher=own)
    report = ContactReport()
    found: list[Contact] = []
    hops: list[str] = []

    async def visit(url: str, source: str) -> None:
        try:
            res = await fetcher.fetch_page(url)
        except FetchError as exc:
            report.errors.append(f"{url}: {exc.reason}")
            return
        links = links_in_html(res.body, res.final_url, res.content_type)
        if source == "page":
            report.lang = page_language(
                res.body, res.headers.get("content-language", ""), res.content_type
            )
        for c in contacts_from_links(links, res.final_url, source):
            found.append(c)
            if (
                source != "contact page"
                and c.kind == "url"
                and _same_site(c.value, page_url)
                and c.value not in hops
                and c.value.rstrip("/") != url.rstrip("/")
            ):
                hops.append(c.value)

    origin = _origin(page_url)
    await visit(page_url, "page")
    if page_url.rstrip("/") != origin:
        await visit(origin + "/", "site")
    for url in hops[: settings.cases.max_contact_pages]:
        await visit(url, "contact page")
    security = await _security_txt(fetcher, origin)
    if security is not None:
        found.extend(_security_contacts(*security))
    try:
        found.extend(await rdap_contacts(settings, page_url))
    except Exception as exc:  # a registry's odd answer must not lose the site's contacts
        report.errors.append(f"RDAP: {type(exc).__name__}: {exc}")
    report.contacts = rank(found)
    return report


async def lookup_case_contacts(
    settings: Settings, db: Any, case_id: int, *, fetcher: Fetcher | None = None
) -> list[Contact]:
    """Find the contacts for every place a case was seen (not known to be gone) and store them
    (replacing earlier ones), with each page's language. Returns them, ranked per page."""
    from sqlalchemy import delete

    from monitor.cases.core import case_sightings, get_case, sighting_states
    from monitor.db.models import CaseContact

    with db.session() as s:
        case = get_case(s, case_id)
        sightings = case_sightings(s, case)
        states = sighting_states(s, [x.id for x in sightings])
        places = [
            (x.id, x.page_url) for x in sightings if states[x.id].state not in ("gone", "changed")
        ] or [(x.id, x.page_url) for x in sightings]
    if fetcher is None:
        async with Fetcher(settings.fetch) as own:
            return await lookup_case_contacts(settings, db, case_id, fetcher=own)
    reports: dict[str, ContactReport] = {}
    for _, page_url in places:
        if page_url not in reports:
            reports[page_url] = await find_contacts(settings, page_url, fetcher=fetcher)
    ranked: list[tuple[int, Contact]] = []
    seen: set[tuple[str, str]] = set()
    for sighting_id, page_url in places:
        for c in reports[page_url].contacts:
            if (c.kind, c.value) not in seen:
                seen.add((c.kind, c.value))
                ranked.append((sighting_id, c))
    with db.session() as s:
        s.execute(delete(CaseContact).where(CaseContact.match_id == case_id))
        for rank_no, (sighting_id, c) in enumerate(ranked):
            s.add(
                CaseContact(
                    match_id=case_id,
                    sighting_id=sighting_id,
                    rank=rank_no,
                    kind=c.kind,
                    value=c.value,
                    source=c.source,
                    found_at=c.found_at,
                    label=c.label[:500],
                )
            )
        states = sighting_states(s, [sid for sid, _ in places])
        for sighting_id, page_url in places:
            lang = reports[page_url].lang
            if lang:
                states[sighting_id].page_lang = lang[:35]
    return [c for _, c in ranked]
