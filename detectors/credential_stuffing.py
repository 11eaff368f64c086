"""Credential stuffing and key enumeration: one IP or network range cycling through many keys
that the API does not recognise (status 401, so the event carries no account)."""

from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping
from dataclasses import dataclass, field

from detectors.alerts import Alert, Entity
from detectors.events import UsageEvent
from detectors.incidents import Incident, anchor_ms
from detectors.network import network_range
from detectors.windows import SlidingWindow, drop_idle

RULE_ID = "credential_stuffing.key_enumeration"


@dataclass(frozen=True, slots=True)
class _Attempt:
    ip: str
    api_key_id: str
    failed: bool
    user_agent: str


@dataclass
class _RangeState:
    window: SlidingWindow[_Attempt]
    failed_keys: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    incident: Incident = field(default_factory=Incident)

    def forget(self, attempt: _Attempt) -> None:
        if attempt.failed:
            self.failures -= 1
            self.failed_keys[attempt.api_key_id] -= 1
            if self.failed_keys[attempt.api_key_id] <= 0:
                del self.failed_keys[attempt.api_key_id]


class CredentialStuffingDetector:
    """Fires when a network range fails authentication with many distinct keys in a window.

    The state is per network range, so an attacker rotating addresses inside a /24 is still one
    incident; the alert names the single IP instead when one address made most of the attempts.
    An incident stays open (and its alert keeps its id) until the range has been quiet for a
    whole window; the alert is re-sent with fresh evidence each time the failures double.
    """

    def __init__(self, window_ms: int = 300_000, min_distinct_keys: int = 20,
                 min_failure_ratio: float = 0.8, severity: str = "high",
                 single_ip_share: float = 0.8) -> None:
        self.window_ms = window_ms
        self.min_distinct_keys = min_distinct_keys
        self.min_failure_ratio = min_failure_ratio
        self.severity = severity
        self.single_ip_share = single_ip_share
        # Replaceable by any mutable mapping (a Faust table): every changed state is written back.
        self.ranges: MutableMapping[str, _RangeState] = {}

    def observe(self, event: UsageEvent) -> list[Alert]:
        """Learn from one event and return the alerts it completes (usually none)."""
        cidr = network_range(event.ip)
        state = self.ranges.get(cidr) or _RangeState(SlidingWindow(self.window_ms))
        if event.ts_ms - state.window.latest_ms > self.window_ms:
            state.incident.close()  # the range was quiet for a whole window: the incident is over
        attempt = _Attempt(event.ip, event.api_key_id, event.is_auth_failure,
                           event.user_agent or "")
        if not state.window.add(event.ts_ms, event.event_id, attempt, state.forget):
            return []
        if attempt.failed:
            state.failed_keys[attempt.api_key_id] += 1
            state.failures += 1
        alerts = self._check(cidr, state)
        self.ranges[cidr] = state
        return alerts

    def forget_idle(self, now_ms: int) -> int:
        """Drop ranges with nothing in their window any more; returns how many."""
        return drop_idle(self.ranges, lambda s: s.window.latest_ms, now_ms - self.window_ms)

    def _check(self, cidr: str, state: _RangeState) -> list[Alert]:
        distinct = len(state.failed_keys)
        ratio = state.failures / len(state.window)
        if distinct < self.min_distinct_keys or ratio < self.min_failure_ratio:
            return []
        latest = state.window.latest_ms
        start = anchor_ms(state.window.run_start_ms, latest, self.window_ms)
        if not state.incident.report(start, state.failures, latest):
            return []
        return [self._alert(cidr, state, distinct, ratio)]

    def _alert(self, cidr: str, state: _RangeState, distinct: int, ratio: float) -> Alert:
        attempts = list(state.window)
        ips = Counter(a.ip for a in attempts if a.failed)
        top_ip, top_count = ips.most_common(1)[0]
        if top_count >= self.single_ip_share * state.failures:
            entity = Entity("ip", top_ip)
        else:
            entity = Entity("network", cidr)
        assert state.incident.start_ms is not None
        return Alert(
            rule_id=RULE_ID, severity=self.severity,
            score=min(1.0, distinct / (2 * self.min_distinct_keys)),
            entity=entity, incident_start_ms=state.incident.start_ms,
            repeats=state.incident.repeats,
            window_start_ms=state.window.start_ms, window_end_ms=state.window.latest_ms,
            reasons=(f"{distinct} distinct unrecognised API keys from {entity.kind} {entity.id} "
                     f"within {self.window_ms // 1000} s",
                     f"{ratio:.0%} of {len(attempts)} requests failed authentication"),
            evidence={
                "distinct_failed_keys": distinct, "failures": state.failures,
                "requests": len(attempts), "failure_ratio": round(ratio, 3),
                "network_range": cidr, "source_ips": len(ips),
                "top_ips": [ip for ip, _ in ips.most_common(5)],
                "sample_key_ids": sorted(state.failed_keys)[:10],
                "user_agents": [ua for ua, _ in
                                Counter(a.user_agent for a in attempts).most_common(3)],
            },
        )

