"""Account risk: the detectors' signals about one account, combined into a decaying score and a
decision (none, flag, suspend) that says which signals made it.

Scoring: each contribution weighs weight(detector) x strength x 2^(-age / half_life); the sum
is squashed to [0, 1) by 1 - exp(-sum), so a few strong signals saturate instead of adding up
without bound. Supporting-only detectors (the population anomaly model) may at most double the
weight of the primary evidence and count for nothing without it: an account is never flagged
just for being unusual.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detectors.alerts import Alert

DECISIONS = ("none", "flag", "suspend")
HOUR_MS = 3_600_000
# Starting weights per detector (strength 1.0 with weight 1.0 alone gives a score of 0.63).
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "credential_stuffing": 1.0, "leaked_key": 1.0, "jailbreak": 1.2, "scraping": 0.8,
    "sybil": 0.8, "campaign": 1.0, "anomaly": 0.5,
}


@dataclass(frozen=True, slots=True)
class Signal:
    """One piece of evidence about one account, as sent on `misuse.signals`."""

    account_id: str
    detector: str
    rule_id: str
    strength: float
    ts_ms: int
    alert_id: str | None
    reason: str
    evidence_link: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.strength <= 1.0 or math.isnan(self.strength):
            raise ValueError(f"signal strength must be in [0, 1], got {self.strength}")

    def to_dict(self) -> dict[str, Any]:
        return {"account_id": self.account_id, "detector": self.detector,
                "rule_id": self.rule_id, "strength": self.strength, "ts_ms": self.ts_ms,
                "alert_id": self.alert_id, "reason": self.reason,
                "evidence_link": self.evidence_link}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signal:
        return cls(account_id=str(data["account_id"]), detector=str(data["detector"]),
                   rule_id=str(data["rule_id"]), strength=float(data["strength"]),
                   ts_ms=int(data["ts_ms"]), alert_id=data.get("alert_id"),
                   reason=str(data.get("reason", "")),
                   evidence_link=data.get("evidence_link"))


def signals_from_alert(alert: Alert) -> list[Signal]:
    """One signal per account the alert names (none for an alert that names no account, such
    as a key-enumeration alert about an IP)."""
    accounts = alert.accounts or ((alert.entity.id,) if alert.entity.kind == "account" else ())
    reason = alert.reasons[0] if alert.reasons else alert.rule_id
    strength = min(1.0, max(0.0, alert.score))
    return [Signal(account, alert.detector, alert.rule_id, strength, alert.window_end_ms,
                   alert.alert_id, reason, alert.alert_id) for account in accounts]


@dataclass(frozen=True, slots=True)
class RiskThresholds:
    flag_threshold: float = 0.5
    suspend_threshold: float = 0.85
    suspend_min_detectors: int = 2
    supporting_only: tuple[str, ...] = ("anomaly",)


@dataclass(frozen=True, slots=True)
class Contribution:
    detector: str
    rule_id: str
    strength: float
    weight: float  # weight x strength x decay at the assessment time
    reason: str
    alert_id: str | None
    ts_ms: int
    supporting: bool
    evidence_link: str | None = None


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    account_id: str
    score: float
    decision: str
    contributions: tuple[Contribution, ...]
    reasons: tuple[str, ...]
    ts_ms: int
    detectors: tuple[str, ...] = ()  # distinct primary (non-supporting) detectors
    thresholds: RiskThresholds = field(default_factory=RiskThresholds)

    @property
    def alert_ids(self) -> tuple[str, ...]:
        return tuple(c.alert_id for c in self.contributions if c.alert_id)

    def only_since(self, since_ms: int) -> RiskAssessment:
        """The same judgement counting only evidence newer than `since_ms` (after an analyst
        cleared the account, older evidence has been looked at)."""
        return judge(self.account_id, [c for c in self.contributions if c.ts_ms > since_ms],
                     self.thresholds, self.ts_ms)

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id, "score": round(self.score, 4),
            "decision": self.decision, "reasons": list(self.reasons), "ts_ms": self.ts_ms,
            "detectors": list(self.detectors), "alert_ids": list(self.alert_ids),
            "contributions": [
                {"detector": c.detector, "rule_id": c.rule_id, "strength": c.strength,
                 "weight": round(c.weight, 4), "reason": c.reason, "alert_id": c.alert_id,
                 "ts_ms": c.ts_ms, "supporting": c.supporting,
                 "evidence_link": c.evidence_link}
                for c in self.contributions
            ],
        }


def judge(account_id: str, contributions: Sequence[Contribution], thresholds: RiskThresholds,
          now_ms: int) -> RiskAssessment:
    """Score and decide from already-decayed contributions."""
    ordered = tuple(sorted(contributions, key=lambda c: (-c.weight, c.ts_ms, c.rule_id)))
    primary = sum(c.weight for c in ordered if not c.supporting)
    supporting = sum(c.weight for c in ordered if c.supporting)
    score = 1.0 - math.exp(-(primary + min(supporting, primary)))
    detectors = tuple(sorted({c.detector for c in ordered if not c.supporting}))
    if score >= thresholds.suspend_threshold and \
            len(detectors) >= thresholds.suspend_min_detectors:
        decision = "suspend"
    elif score >= thresholds.flag_threshold and detectors:
        decision = "flag"
    else:
        decision = "none"
    reasons: list[str] = []
    if ordered:
        reasons.append(f"risk {score:.2f} from {len(ordered)} signal(s) by "
                       f"{len(detectors)} primary detector(s): {', '.join(detectors) or '-'}")
    if supporting and not primary:
        reasons.append("supporting signals only, which count only alongside a primary detector")
    if decision != "suspend" and score >= thresholds.suspend_threshold:
        reasons.append(f"suspension needs {thresholds.suspend_min_detectors} independent "
                       "detectors")
    reasons.extend(f"{c.detector}: {c.reason}" for c in ordered[:5])
    return RiskAssessment(account_id, score, decision, ordered, tuple(reasons), now_ms,
                          detectors, thresholds)


@dataclass
class AccountRisk:
    """The signals standing for one account, by dedup key."""

    signals: dict[str, Signal] = field(default_factory=dict)
    latest_ms: int = 0
    # Alerts an analyst closed as false positives: their signals no longer count, including
    # the updates of a still-growing incident (the newest MAX_DISMISSED).
    dismissed: list[str] = field(default_factory=list)


MAX_DISMISSED = 20


def _dedup_key(signal: Signal) -> str:
    # A re-sent growing alert replaces its earlier contribution. A signal without an alert id
    # (the anomaly model's periodic scores) is a running measurement: the latest replaces the
    # earlier one instead of piling up with each refit.
    return signal.alert_id or f"{signal.detector}|{signal.rule_id}"


class RiskScorer:
    """Decaying risk per account (`self.accounts`, replaceable by a Faust table keyed by
    account). Suspension needs score >= suspend_threshold AND >= suspend_min_detectors distinct
    primary detectors; contributions that decayed below `prune_below` are dropped, and at most
    `max_contributions` are kept, so the state stays bounded."""

    def __init__(self, half_life_ms: int = 12 * HOUR_MS,
                 weights: Mapping[str, float] | None = None, flag_threshold: float = 0.5,
                 suspend_threshold: float = 0.85, suspend_min_detectors: int = 2,
                 supporting_only: Iterable[str] = ("anomaly",), default_weight: float = 0.5,
                 prune_below: float = 0.01, max_contributions: int = 50) -> None:
        if half_life_ms <= 0:
            raise ValueError("half_life_ms must be positive")
        if not 0 < flag_threshold <= suspend_threshold < 1:
            raise ValueError("need 0 < flag_threshold <= suspend_threshold < 1")
        self.half_life_ms = half_life_ms
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.thresholds = RiskThresholds(flag_threshold, suspend_threshold,
                                         suspend_min_detectors, tuple(supporting_only))
        self.default_weight = default_weight
        self.prune_below = prune_below
        self.max_contributions = max_contributions
        self.accounts: MutableMapping[str, AccountRisk] = {}

    def add(self, signal: Signal) -> RiskAssessment:
        """Take one signal and return the account's assessment at the signal's time (or the
        latest time seen for the account, for a late signal)."""
        state = self.accounts.get(signal.account_id) or AccountRisk()
        if signal.alert_id is not None and signal.alert_id in state.dismissed:
            return self._assess(signal.account_id, state, max(state.latest_ms, signal.ts_ms))
        key = _dedup_key(signal)
        earlier = state.signals.get(key)
        if earlier is None or earlier.ts_ms <= signal.ts_ms:
            state.signals[key] = signal  # a redelivered older version changes nothing
        state.latest_ms = max(state.latest_ms, signal.ts_ms)
        return self._assess(signal.account_id, state, state.latest_ms, changed=True)

    def dismiss(self, account_id: str, alert_id: str, now_ms: int) -> RiskAssessment:
        """An analyst closed the alert as a false positive: it stops feeding this account."""
        state = self.accounts.get(account_id)
        if state is None:
            return judge(account_id, [], self.thresholds, now_ms)
        state.signals.pop(alert_id, None)
        state.dismissed = [*[a for a in state.dismissed if a != alert_id], alert_id][
            -MAX_DISMISSED:]
        return self._assess(account_id, state, max(state.latest_ms, now_ms), changed=True)

    def assess(self, account_id: str, now_ms: int) -> RiskAssessment:
        state = self.accounts.get(account_id)
        if state is None:
            return judge(account_id, [], self.thresholds, now_ms)
        return self._assess(account_id, state, now_ms)

    def prune(self, now_ms: int) -> int:
        """Decay every account to `now_ms`, dropping those left with nothing; return how many
        were dropped."""
        dropped = 0
        for account_id in list(self.accounts):
            if not self.assess(account_id, now_ms).contributions:
                dropped += 1
        return dropped

    def weight(self, detector: str) -> float:
        return self.weights.get(detector, self.default_weight)

    def _contribution(self, signal: Signal, now_ms: int) -> Contribution:
        age = max(0, now_ms - signal.ts_ms)
        decayed = self.weight(signal.detector) * signal.strength * \
            2.0 ** (-age / self.half_life_ms)
        return Contribution(signal.detector, signal.rule_id, signal.strength, decayed,
                            signal.reason, signal.alert_id, signal.ts_ms,
                            signal.detector in self.thresholds.supporting_only,
                            signal.evidence_link)

    def _assess(self, account_id: str, state: AccountRisk, now_ms: int,
                changed: bool = False) -> RiskAssessment:
        contributions = {key: self._contribution(s, now_ms) for key, s in state.signals.items()}
        keep = sorted((k for k, c in contributions.items() if c.weight >= self.prune_below),
                      key=lambda k: contributions[k].weight, reverse=True)
        keep = keep[: self.max_contributions]
        if len(keep) != len(state.signals):
            state.signals = {k: state.signals[k] for k in keep}
            changed = True
        if not state.signals:
            self.accounts.pop(account_id, None)
        elif changed:
            self.accounts[account_id] = state  # written back: a Faust table logs the change
        return judge(account_id, [contributions[k] for k in keep], self.thresholds, now_ms)
