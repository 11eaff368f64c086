"""Account status rules for the `misuse-accounts` document: when the worker may move an account
to flagged or suspended, given what analysts decided before.

Analysts have the last word. A cleared account has been looked at, so only evidence newer than
the clearing can flag it again; an allowlisted account is left alone until the allowlisting
ends, and the evidence from while it was allowlisted stays vetted. The worker never clears,
never un-suspends and never downgrades: a risk score that decays does not undo a flag, an
analyst does.

A "suspended" change is the worker's decision to ask for a suspension; whether the request is
carried out, dry-run or refused by the hourly cap is the act stage's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detectors.alerts import Alert, Entity
from detectors.risk import RiskAssessment

STATUSES = ("flagged", "suspended", "cleared", "allowlisted")
SETTERS = ("worker", "analyst")
MAX_HISTORY = 100


@dataclass(frozen=True, slots=True)
class AccountStatus:
    status: str
    set_by: str
    allowlisted_until_ms: int | None = None  # None while allowlisted: until an analyst ends it
    cleared_at_ms: int | None = None
    since_ms: int | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown account status {self.status!r}")
        if self.set_by not in SETTERS:
            raise ValueError(f"set_by must be 'worker' or 'analyst', got {self.set_by!r}")
        if self.status in ("cleared", "allowlisted") and self.set_by != "analyst":
            raise ValueError(f"only an analyst sets {self.status!r}")
        if self.status == "cleared" and self.cleared_at_ms is None:
            # Without the time of the clearing, "new evidence" has no meaning.
            raise ValueError("a cleared status needs cleared_at_ms")


@dataclass
class AccountRecord:
    """What the worker knows of an account between signals: status, flag times, and the last
    MAX_HISTORY status changes and analyst decisions. Stored per account in the risk stage."""

    status: AccountStatus | None = None
    first_flagged_ms: int | None = None
    last_flagged_ms: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def record(self, entry: dict[str, Any]) -> None:
        self.history.append(entry)
        del self.history[:-MAX_HISTORY]


@dataclass(frozen=True, slots=True)
class StatusChange:
    account_id: str
    status: str  # "flagged" or "suspended"
    previous: str | None
    ts_ms: int
    score: float
    request_suspension: bool
    reasons: tuple[str, ...]
    detectors: tuple[str, ...]
    alert_ids: tuple[str, ...]
    evidence_since_ms: int | None  # older evidence did not count (already reviewed)
    set_by: str = "worker"

    def apply(self, current: AccountStatus | None) -> AccountStatus:
        """The status to store, keeping the analysts' history (clearing, allowlist end)."""
        return AccountStatus(
            status=self.status, set_by=self.set_by,
            allowlisted_until_ms=current.allowlisted_until_ms if current else None,
            cleared_at_ms=current.cleared_at_ms if current else None, since_ms=self.ts_ms)


def is_allowlisted(current: AccountStatus | None, now_ms: int) -> bool:
    return current is not None and current.status == "allowlisted" and (
        current.allowlisted_until_ms is None or now_ms < current.allowlisted_until_ms)


def vetted_until(current: AccountStatus | None, now_ms: int) -> int | None:
    """Evidence up to this time has been reviewed by an analyst and no longer counts."""
    if current is None:
        return None
    marks = [current.cleared_at_ms]
    if current.allowlisted_until_ms is not None and current.allowlisted_until_ms <= now_ms:
        marks.append(current.allowlisted_until_ms)
    known = [m for m in marks if m is not None]
    return max(known) if known else None


def next_status(current: AccountStatus | None, assessment: RiskAssessment,
                now_ms: int) -> StatusChange | None:
    """The worker's status change for this assessment, or None when the status stays."""
    if is_allowlisted(current, now_ms):
        return None
    if current is not None and current.status == "suspended":
        return None  # the strongest status already; lifting it is an analyst's decision
    since = vetted_until(current, now_ms)
    judged = assessment if since is None else assessment.only_since(since)
    if judged.decision == "none":
        return None
    status = "suspended" if judged.decision == "suspend" else "flagged"
    previous = current.status if current else None
    if previous == status:
        return None
    reasons = judged.reasons
    if since is not None:
        reasons = (f"only evidence after the analyst review at {since} ms counted", *reasons)
    return StatusChange(
        account_id=assessment.account_id, status=status, previous=previous, ts_ms=now_ms,
        score=judged.score, request_suspension=status == "suspended", reasons=reasons,
        detectors=judged.detectors, alert_ids=judged.alert_ids, evidence_since_ms=since)


ALLOWLIST_REVIEW_RULE = "review.allowlisted_account_evidence"


def allowlist_review_alert(account_id: str, status: AccountStatus,
                           assessment: RiskAssessment) -> Alert:
    """Strong new evidence on an allowlisted account: the worker leaves the account alone (an
    analyst decided), but asks for the decision to be looked at again rather than letting the
    evidence vanish. One alert per allowlisting, updated as evidence grows."""
    since = status.since_ms or assessment.ts_ms
    return Alert(
        rule_id=ALLOWLIST_REVIEW_RULE, severity="medium", score=round(assessment.score, 4),
        entity=Entity("account", account_id), incident_start_ms=since,
        window_start_ms=since, window_end_ms=assessment.ts_ms,
        reasons=(f"allowlisted by an analyst, and new evidence scores "
                 f"{assessment.score:.2f} ({', '.join(assessment.detectors) or 'signals'}): "
                 "review the allowlisting", *assessment.reasons),
        evidence={"allowlisted_until_ms": status.allowlisted_until_ms,
                  "detectors": list(assessment.detectors)},
        accounts=(account_id,))

