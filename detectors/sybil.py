"""Sybil accounts: many accounts run from one network range by one client, each kept under the
rate limits so that together they get what no single account may.

A crowd behind one NAT (a university, an office) also shows many accounts on one range; what
gives the sybils away is that one client identity (user agent string) dominates, that every
one of them stays low and that they do not belong to one organisation. A team of one company
sharing an SDK is one organisation and is left alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TypeVar

from detectors.alerts import Alert, Entity
from detectors.events import UsageEvent
from detectors.incidents import Incident, anchor_ms
from detectors.network import network_range
from detectors.windows import SlidingWindow, drop_idle

RULE_ID = "sybil.shared_client"
DEFAULT_SEVERITY = "medium"
MINUTE_MS = 60_000
K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class _Request:
    account_id: str
    user_agent: str
    org_id: str | None
    minute: int


@dataclass
class RangeState:
    """Request counts per user agent and account, and per account and minute, in step with the
    window's evictions."""

    window: SlidingWindow[_Request]
    agent_accounts: dict[str, Counter[str]] = field(default_factory=dict)
    account_requests: Counter[str] = field(default_factory=Counter)
    account_minutes: Counter[tuple[str, int]] = field(default_factory=Counter)
    account_org: dict[str, str | None] = field(default_factory=dict)
    incident: Incident = field(default_factory=Incident)

    def count(self, request: _Request) -> None:
        self.agent_accounts.setdefault(request.user_agent, Counter())[request.account_id] += 1
        self.account_requests[request.account_id] += 1
        self.account_minutes[(request.account_id, request.minute)] += 1
        self.account_org[request.account_id] = request.org_id

    def forget(self, request: _Request) -> None:
        accounts = self.agent_accounts[request.user_agent]
        _decrement(accounts, request.account_id)
        if not accounts:
            del self.agent_accounts[request.user_agent]
        _decrement(self.account_minutes, (request.account_id, request.minute))
        if _decrement(self.account_requests, request.account_id):
            self.account_org.pop(request.account_id, None)


def _decrement(counter: Counter[K], key: K) -> bool:
    """Count one less; return True when the key is gone."""
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
        return True
    return False


@dataclass(frozen=True, slots=True)
class _Cohort:
    user_agent: str
    accounts: tuple[str, ...]
    agent_accounts: int
    range_accounts: int
    agent_share: float
    requests: int
    peak_account_rate: int
    top_org_share: float
    orgs: int


class SybilDetector:
    """Fires when, within the window, at least `min_accounts` distinct accounts on one network
    range use one user agent, that user agent covers >= min_agent_share of the range's
    accounts, each of those accounts peaks at <= max_account_rate_per_minute requests in any
    minute, and no single organisation holds > max_org_share of them. It judges only after the
    range has been watched for `min_observed_ms`.

    State is per network range (`self.ranges`, replaceable by a Faust table), and so is the
    incident: its alert id stays stable while the cohort grows. Missing user agents count as
    one client identity: scripts that send none look alike too.
    """

    def __init__(self, window_ms: int = 600_000, min_accounts: int = 20,
                 max_account_rate_per_minute: int = 10, min_agent_share: float = 0.6,
                 max_org_share: float = 0.5, min_observed_ms: int | None = None,
                 severity: str = DEFAULT_SEVERITY, max_listed_accounts: int = 500) -> None:
        self.window_ms = window_ms
        # "Each stays under the limits" means nothing after a few seconds: by default judge
        # only once the range has been watched for half a window.
        self.min_observed_ms = window_ms // 2 if min_observed_ms is None else min_observed_ms
        self.min_accounts = min_accounts
        self.max_account_rate_per_minute = max_account_rate_per_minute
        self.min_agent_share = min_agent_share
        self.max_org_share = max_org_share
        self.severity = severity
        self.max_listed_accounts = max_listed_accounts
        self.ranges: MutableMapping[str, RangeState] = {}

    def observe(self, event: UsageEvent) -> list[Alert]:
        """Learn from one event and return the alerts it completes (usually none)."""
        if event.account_id is None or event.is_auth_failure:
            return []
        cidr = network_range(event.ip)
        state = self.ranges.get(cidr) or RangeState(SlidingWindow(self.window_ms))
        request = _Request(event.account_id, event.user_agent or "", event.org_id,
                           event.ts_ms // MINUTE_MS)
        if not state.window.add(event.ts_ms, event.event_id, request, state.forget):
            return []
        state.count(request)
        alerts = self._check(cidr, state, request.user_agent)
        self.ranges[cidr] = state
        return alerts

    def forget_idle(self, now_ms: int) -> int:
        return drop_idle(self.ranges, lambda s: s.window.latest_ms, now_ms - self.window_ms)

    def _check(self, cidr: str, state: RangeState, agent: str) -> list[Alert]:
        latest = state.window.latest_ms
        state.incident.close_if_quiet(latest, self.window_ms)
        accounts = state.agent_accounts.get(agent, Counter())
        # Cheap gates first: most events come from ranges where nothing is near the threshold.
        if len(accounts) < self.min_accounts or \
                len(accounts) < self.min_agent_share * len(state.account_requests) or \
                latest - state.window.start_ms < self.min_observed_ms:
            return []
        if not state.incident.is_news(len(accounts)):
            state.incident.hold(latest)  # the farm is still there; nothing new to report
            return []
        cohort = self._cohort(state, agent, accounts)
        if cohort is None:
            return []
        start = anchor_ms(state.window.run_start_ms, latest, self.window_ms)
        if not state.incident.report(start, len(cohort.accounts), latest):
            return []
        return [self._alert(cidr, state, cohort)]

    def _cohort(self, state: RangeState, agent: str, accounts: Counter[str]) -> _Cohort | None:
        last_minute = state.window.latest_ms // MINUTE_MS
        minutes = range(last_minute - self.window_ms // MINUTE_MS - 1, last_minute + 1)
        low: list[str] = []
        peak = 0
        for account in accounts:
            account_peak = max(state.account_minutes.get((account, m), 0) for m in minutes)
            if account_peak <= self.max_account_rate_per_minute:
                low.append(account)
                peak = max(peak, account_peak)
        if len(low) < self.min_accounts:
            return None
        orgs = Counter(state.account_org.get(a) for a in low)
        orgs.pop(None, None)
        top_org_share = orgs.most_common(1)[0][1] / len(low) if orgs else 0.0
        if top_org_share > self.max_org_share:
            return None
        return _Cohort(
            user_agent=agent, accounts=tuple(sorted(low)), agent_accounts=len(accounts),
            range_accounts=len(state.account_requests),
            agent_share=len(accounts) / len(state.account_requests),
            requests=sum(accounts[a] for a in low), peak_account_rate=peak,
            top_org_share=top_org_share, orgs=len(orgs),
        )

    def _alert(self, cidr: str, state: RangeState, cohort: _Cohort) -> Alert:
        assert state.incident.start_ms is not None
        agent = cohort.user_agent
        listed = cohort.accounts[: self.max_listed_accounts]
        n = len(cohort.accounts)
        return Alert(
            rule_id=RULE_ID, severity=self.severity,
            score=min(1.0, n / (2 * self.min_accounts)),
            entity=Entity("network", cidr), incident_start_ms=state.incident.start_ms,
            repeats=state.incident.repeats,
            window_start_ms=state.window.start_ms, window_end_ms=state.window.latest_ms,
            reasons=(
                f"{n} accounts on {cidr} with one user agent within "
                f"{self.window_ms // 1000} s",
                f"the user agent covers {cohort.agent_share:.0%} of the "
                f"{cohort.range_accounts} accounts seen on the range",
                f"each account stays at <= {cohort.peak_account_rate} requests per minute "
                f"(ceiling {self.max_account_rate_per_minute})",
            ),
            evidence={
                "network_range": cidr, "user_agent": agent[:200] or None,
                "accounts_on_user_agent": cohort.agent_accounts,
                "low_rate_accounts": n, "range_accounts": cohort.range_accounts,
                "user_agent_share": round(cohort.agent_share, 3),
                "requests": cohort.requests,
                "mean_requests_per_account": round(cohort.requests / n, 1),
                "peak_account_requests_per_minute": cohort.peak_account_rate,
                "organisations": cohort.orgs,
                "top_organisation_share": round(cohort.top_org_share, 3),
                "accounts": list(listed),
            },
            accounts=listed,
        )
