"""Alerts: what a detector found, with the evidence that made it fire."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("low", "medium", "high", "critical")


@dataclass(frozen=True, slots=True)
class Entity:
    """Who an alert is about: an account, an API key, an IP, a network range or a campaign."""

    kind: str
    id: str


@dataclass(frozen=True, slots=True)
class Alert:
    rule_id: str
    severity: str
    score: float
    entity: Entity
    # The incident start fixes the alert's identity: updates of a growing incident and replays
    # of the same events produce the same id, so sinks overwrite instead of duplicating.
    incident_start_ms: int
    window_start_ms: int
    window_end_ms: int
    reasons: tuple[str, ...]
    evidence: Mapping[str, Any] = field(default_factory=dict)
    accounts: tuple[str, ...] = ()
    shadow: bool = False
    repeats: int = 0  # times it held again since it opened, suppressed into this alert

    @property
    def alert_id(self) -> str:
        key = f"{self.rule_id}|{self.entity.kind}|{self.entity.id}|{self.incident_start_ms}"
        return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]

    @property
    def detector(self) -> str:
        return self.rule_id.split(".", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id, "rule_id": self.rule_id, "severity": self.severity,
            "score": self.score, "entity": {"kind": self.entity.kind, "id": self.entity.id},
            "incident_start_ms": self.incident_start_ms, "window_start_ms": self.window_start_ms,
            "window_end_ms": self.window_end_ms, "reasons": list(self.reasons),
            "evidence": dict(self.evidence), "accounts": list(self.accounts),
            "shadow": self.shadow, "repeats": self.repeats,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Alert:
        return cls(
            rule_id=data["rule_id"], severity=data["severity"], score=float(data["score"]),
            entity=Entity(**data["entity"]), incident_start_ms=int(data["incident_start_ms"]),
            window_start_ms=int(data["window_start_ms"]),
            window_end_ms=int(data["window_end_ms"]), reasons=tuple(data["reasons"]),
            evidence=data.get("evidence", {}), accounts=tuple(data.get("accounts", ())),
            shadow=bool(data.get("shadow", False)), repeats=int(data.get("repeats", 0)),
        )
