"""What the act stage may do: the hourly cap on automated suspensions, the circuit breaker that
stops automation when suspensions surge, the approval queue for what either holds back, and the
grouping and rate limit of pages. Pure: time is passed in, decisions are returned as values.

The act stage reads one single-partition topic, so one worker at a time holds this ledger: the
cap and the breaker hold across every worker, not per process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detectors.policy import Automation

HOUR_MS = 3_600_000
REVERSAL_DAYS = 90
SEVERITIES = ("low", "medium", "high", "critical")

# What becomes of an automated suspension request.
SEND, QUEUE_CAP, QUEUE_BREAKER = "send", "awaiting_approval:cap", "awaiting_approval:breaker"


@dataclass
class AutomationLedger:
    """The automated suspensions asked for, by request id: when each was asked for (the last
    hour against the usual hourly rate), when each was sent (the cap), the breaker, the requests
    waiting for an analyst (by account), and the accounts a suspension was sent for (to
    reverse). By id, so that a request read again after a restart counts once."""

    asked_ms: dict[str, int] = field(default_factory=dict)
    sent_ms: dict[str, int] = field(default_factory=dict)
    breaker_open_since_ms: int | None = None
    queued: dict[str, dict[str, Any]] = field(default_factory=dict)
    suspended: dict[str, int] = field(default_factory=dict)  # account -> when it was sent

    def admit(self, request_id: str, now_ms: int, automation: Automation) -> tuple[str, bool]:
        """The verdict on one automated suspension request, and whether it tripped the
        breaker (page on-call). Sending is recorded here; a held request is the caller's to
        `queue`. A request seen before gets its first verdict again (it is a replay)."""
        self.forget_before(now_ms, automation.breaker_baseline_hours)
        if request_id in self.sent_ms:
            return SEND, False
        if request_id in self.asked_ms:
            return (QUEUE_BREAKER if self.breaker_open_since_ms is not None else QUEUE_CAP), False
        self.asked_ms[request_id] = now_ms
        tripped = False
        if self.breaker_open_since_ms is None and self.surging(now_ms, automation):
            self.breaker_open_since_ms = now_ms
            tripped = True
        if self.breaker_open_since_ms is not None:
            return QUEUE_BREAKER, tripped
        if len(self.sent_ms) >= automation.max_suspensions_per_hour:
            return QUEUE_CAP, tripped
        self.sent_ms[request_id] = now_ms
        return SEND, tripped

    def surging(self, now_ms: int, automation: Automation) -> bool:
        """More suspensions asked for in the last hour than `breaker_multiple` times their
        usual hourly rate (the mean over the baseline hours before it), and at least
        `breaker_min_suspensions`: a detector gone wrong, or an attack on the automation.
        The hour slides: a surge across the top of a clock hour is one surge, not two
        halves each under the minimum."""
        hour_ago = now_ms - HOUR_MS
        recent = sum(1 for t in self.asked_ms.values() if t > hour_ago)
        usual = sum(1 for t in self.asked_ms.values() if t <= hour_ago) \
            / automation.breaker_baseline_hours
        return recent >= automation.breaker_min_suspensions \
            and recent > automation.breaker_multiple * usual

    def resume(self) -> None:
        """An analyst closed the breaker: automation runs again (the queue stays for review)."""
        self.breaker_open_since_ms = None

    def queue(self, account_id: str, request: dict[str, Any]) -> None:
        self.queued[account_id] = request

    def take(self, account_id: str) -> dict[str, Any] | None:
        """The request waiting for this account, removed from the queue."""
        return self.queued.pop(account_id, None)

    def forget_before(self, now_ms: int, baseline_hours: int) -> None:
        """Bounded: the cap needs an hour, the usual rate its baseline, and a reversal is asked
        for within REVERSAL_DAYS of the suspension or by hand."""
        self.sent_ms = {r: t for r, t in self.sent_ms.items() if t > now_ms - HOUR_MS}
        oldest = now_ms - (1 + baseline_hours) * HOUR_MS
        self.asked_ms = {r: t for r, t in self.asked_ms.items() if t > oldest}
        reversible = now_ms - REVERSAL_DAYS * 24 * HOUR_MS
        self.suspended = {a: t for a, t in self.suspended.items() if t > reversible}


@dataclass
class PageLedger:
    """Pages sent: the open page of each group (a campaign, or one rule on one entity) with
    when it went out (its resolve must match it), the times of the pages of the last hour (the
    rate limit), and how many were held back since the last page that went out."""

    open: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    sent_ms: list[int] = field(default_factory=list)
    held_back: int = 0

    def trigger(self, group: str, page: dict[str, Any], now_ms: int, group_window_ms: int,
                max_per_hour: int) -> tuple[bool, int]:
        """Whether this page goes out, and how many were held back before it (to say so in
        it). One page per group per window: a campaign of 300 accounts pages once."""
        self.sent_ms = [t for t in self.sent_ms if t > now_ms - HOUR_MS]
        paged = self.open.get(group)
        if paged is not None and now_ms - paged[0] < group_window_ms:
            return False, 0
        if len(self.sent_ms) >= max_per_hour:
            self.held_back += 1
            return False, 0
        self.open[group] = (now_ms, page)
        self.sent_ms.append(now_ms)
        held, self.held_back = self.held_back, 0
        return True, held

    def resolve(self, group: str) -> dict[str, Any] | None:
        """The group's open page, which the end of its incident resolves."""
        paged = self.open.pop(group, None)
        return paged[1] if paged else None

    def forget_before(self, now_ms: int, keep_ms: int) -> None:
        """Pages older than `keep_ms` are left to the pager's own expiry."""
        self.open = {g: p for g, p in self.open.items() if p[0] > now_ms - keep_ms}


def severity_at_least(severity: str, minimum: str) -> bool:
    rank = {name: i for i, name in enumerate(SEVERITIES)}
    return rank.get(severity, -1) >= rank.get(minimum, len(SEVERITIES))
