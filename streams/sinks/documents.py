"""How alerts look in Elasticsearch: ECS field names where ECS has them, the rest under misuse.*"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from detectors.alerts import Alert
from streams.settings import Settings
from streams.sinks.elasticsearch import Document

# ECS event.severity is numeric; keep the words under misuse.severity for people.
_SEVERITY_NUMBER = {"low": 21, "medium": 47, "high": 73, "critical": 99}


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def alert_index(alert: Alert, settings: Settings) -> str:
    # Dated by the incident's start, not by wall time, so every update of one alert and every
    # replay of its events lands in the same daily index under the same id.
    day = datetime.fromtimestamp(alert.incident_start_ms / 1000, tz=UTC).strftime("%Y.%m.%d")
    return settings.index(f"alerts-{day}")


def alert_document(alert: Alert, settings: Settings) -> Document:
    source: dict[str, Any] = {
        "@timestamp": iso(alert.window_end_ms),
        "message": "; ".join(alert.reasons),
        "event": {
            "id": alert.alert_id, "kind": "alert", "category": ["threat"],
            "start": iso(alert.window_start_ms), "end": iso(alert.window_end_ms),
            "severity": _SEVERITY_NUMBER[alert.severity], "risk_score": alert.score * 100,
        },
        "rule": {"id": alert.rule_id, "name": alert.rule_id, "ruleset": alert.detector},
        "misuse": {
            "detector": alert.detector, "severity": alert.severity, "score": alert.score,
            "shadow": alert.shadow,
            "entity": {"kind": alert.entity.kind, "id": alert.entity.id},
            "accounts": list(alert.accounts), "reasons": list(alert.reasons),
            "incident_start": iso(alert.incident_start_ms),
            "evidence": {alert.detector: dict(alert.evidence)},
        },
    }
    if alert.entity.kind == "account":
        source["user"] = {"id": alert.entity.id}
    elif alert.entity.kind == "ip":
        source["source"] = {"ip": alert.entity.id}
    return Document(alert_index(alert, settings), alert.alert_id, source)
