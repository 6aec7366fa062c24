"""Cases: what happens after a match — evidence, re-checks, who to contact, removal requests.

One case per matched image (by content) per person: the ``Match`` row and its sightings. See
:mod:`monitor.cases.core` for the states, :mod:`~monitor.cases.capture` (evidence at first
sighting), :mod:`~monitor.cases.recheck` (removal and reappearance), :mod:`~monitor.cases.contacts`
(who to ask) and :mod:`~monitor.cases.notices` (removal requests, sent only after a person
confirms). ``docs/cases.md`` describes the whole.
"""

from __future__ import annotations

from monitor.cases.capture import erase_evidence, export_bundle
from monitor.cases.core import (
    OPEN_STATES,
    STATES,
    CaseDetail,
    CaseNotFound,
    CaseStateError,
    CaseSummary,
    case_detail,
    confirm_case,
    dismiss_case,
    is_minor_case,
    list_cases,
    next_steps,
)
from monitor.cases.recheck import after_scan, recheck_case, recheck_due, run_due_rechecks

__all__ = [
    "OPEN_STATES",
    "STATES",
    "CaseDetail",
    "CaseNotFound",
    "CaseStateError",
    "CaseSummary",
    "after_scan",
    "case_detail",
    "confirm_case",
    "dismiss_case",
    "erase_evidence",
    "export_bundle",
    "is_minor_case",
    "list_cases",
    "next_steps",
    "recheck_case",
    "recheck_due",
    "run_due_rechecks",
]
