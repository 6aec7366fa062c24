"""Who to call: support lines by country, for alerts and the web app's "What to do now" page.

``[mail] country`` (an ISO 3166 code; "BQ" is the Caribbean Netherlands: Bonaire, Sint
Eustatius and Saba) picks the lines; ``[mail] support_contacts`` replaces them with your own;
``[mail] support_lines = false`` leaves them out of alerts altogether (more discreet).
Helpwanted (NL) is now part of Offlimits.
"""

from __future__ import annotations

from dataclasses import dataclass

from monitor.config import MailConfig

__all__ = ["COUNTRIES", "SupportLine", "lines_for", "support_lines"]


@dataclass(frozen=True, slots=True)
class SupportLine:
    name: str
    how: str  # a web address and/or a phone number

    def __str__(self) -> str:
        return f"{self.name}: {self.how}"


_INTERNATIONAL = (
    SupportLine("StopNCII (blocks re-uploads by hash)", "https://stopncii.org"),
    SupportLine("Take It Down (images from before you were 18)", "https://takeitdown.ncmec.org"),
)

_BY_COUNTRY: dict[str, tuple[SupportLine, ...]] = {
    "NL": (
        SupportLine("Emergency (danger now)", "112"),
        SupportLine("Offlimits (formerly Helpwanted)", "https://www.offlimits.nl"),
        SupportLine("Politie (report, non-emergency)", "0900-8844, https://www.politie.nl"),
        SupportLine("Slachtofferhulp Nederland", "0900-0101, https://www.slachtofferhulp.nl"),
    ),
    "BQ": (
        SupportLine("Emergency (danger now)", "911"),
        SupportLine("Korps Politie Caribisch Nederland (KPCN)", "https://www.politiecn.com"),
        SupportLine("Offlimits (online help, in Dutch)", "https://www.offlimits.nl"),
    ),
    "GB": (
        SupportLine("Emergency (danger now)", "999"),
        SupportLine("Revenge Porn Helpline", "0345 6000 459, https://revengepornhelpline.org.uk"),
        SupportLine("Police (report, non-emergency)", "101"),
    ),
    "US": (
        SupportLine("Emergency (danger now)", "911"),
        SupportLine("Cyber Civil Rights Initiative", "844-878-2274, https://cybercivilrights.org"),
    ),
}

COUNTRIES = {
    "": "international",
    "NL": "Netherlands",
    "BQ": "Caribbean Netherlands (Bonaire, Sint Eustatius, Saba)",
    "GB": "United Kingdom",
    "US": "United States",
}


def lines_for(country: str) -> list[SupportLine]:
    """The support lines for ``country`` (unknown or empty: the international ones, after a
    line saying to call the local emergency number)."""
    own = _BY_COUNTRY.get(country.strip().upper())
    if own is None:
        own = (SupportLine("In danger now", "call your local emergency number"),)
    return [*own, *_INTERNATIONAL]


def support_lines(mail: MailConfig) -> list[str]:
    """The lines an alert ends with: ``[mail] support_contacts`` if set, else by country;
    none when ``[mail] support_lines`` is off."""
    if not mail.support_lines:
        return []
    if mail.support_contacts is not None:
        return [c for c in mail.support_contacts if c]
    return [str(line) for line in lines_for(mail.country)]
