"""How alerts look in Elasticsearch: ECS field names where ECS has them, the rest under misuse.*"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from detectors.alerts import Alert
from detectors.campaigns import CampaignFinding
from detectors.risk import RiskAssessment
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
            "incident_start": iso(alert.incident_start_ms), "repeats": alert.repeats,
            "evidence": {alert.detector: dict(alert.evidence)},
        },
    }
    if alert.entity.kind == "account":
        source["user"] = {"id": alert.entity.id}
    elif alert.entity.kind == "ip":
        source["source"] = {"ip": alert.entity.id}
    # Partial: the analyst's workflow fields (misuse.workflow) survive the incident's updates.
    return Document(alert_index(alert, settings), alert.alert_id, source, partial=True)


def campaign_document(finding: CampaignFinding, history: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "@timestamp": iso(finding.last_seen_ms),
        "message": "; ".join(finding.reasons),
        "misuse": {
            "campaign_id": finding.campaign_id, "status": "active", "score": finding.score,
            "label_terms": list(finding.label_terms), "accounts": list(finding.accounts),
            "account_count": len(finding.accounts), "api_keys": list(finding.api_keys),
            "ips": list(finding.ips), "first_seen": iso(finding.first_seen_ms),
            "last_seen": iso(finding.last_seen_ms), "size": finding.size,
            "size_over_time": [{"@timestamp": iso(h["ts"]), "size": h["size"],
                                "accounts": h["accounts"]} for h in history],
            "sample_prompts": list(finding.sample_prompts),
            # What the operation spans: its linked clusters and the wrappers (persona, format,
            # channel) its narrative came in.
            "clusters": list(finding.evidence.get("clusters", ())),
            "wrappers": list(finding.evidence.get("wrappers", ())),
            "languages": list(finding.evidence.get("languages", {})),
            "reasons": list(finding.reasons),
            "evidence": {"campaign": dict(finding.evidence)},
        },
    }


def account_document(account_id: str, status: dict[str, Any], assessment: RiskAssessment,
                     first_flagged_ms: int | None, last_flagged_ms: int | None,
                     history: list[dict[str, Any]]) -> dict[str, Any]:
    """Written as a partial update: fields an analyst adds in Kibana are left alone."""
    contributions = assessment.to_dict()["contributions"]
    return {
        "@timestamp": iso(assessment.ts_ms),
        "user": {"id": account_id},
        "misuse": {
            "status": status["status"], "status_set_by": status["set_by"],
            "status_since": iso(status["since_ms"]) if status.get("since_ms") else None,
            "allowlisted_until": iso(status["allowlisted_until_ms"])
            if status.get("allowlisted_until_ms") else None,
            "risk_score": round(assessment.score, 4), "risk_decision": assessment.decision,
            "detectors": sorted({c["detector"] for c in contributions}),
            "reasons": [{"detector": c["detector"], "rule_id": c["rule_id"],
                         "reason": c["reason"], "weight": c["weight"],
                         "alert_id": c["alert_id"], "at": iso(c["ts_ms"])}
                        for c in contributions],
            "last_alert_ids": list(assessment.alert_ids[-20:]),
            "campaigns": sorted({c["evidence_link"] or "" for c in contributions
                                 if c["detector"] == "campaign"} - {""}),
            "first_flagged": iso(first_flagged_ms) if first_flagged_ms else None,
            "last_flagged": iso(last_flagged_ms) if last_flagged_ms else None,
            "history": [{**entry, "at": iso(entry["ts_ms"])} for entry in history],
        },
    }


def action_document(action: dict[str, Any], outcome: str, reason: str | None = None,
                    actor: str | None = None, **details: Any) -> dict[str, Any]:
    """The audit record of an action asked for or taken, automated or by an analyst, or of a
    delivery (`details`: receiver, attempts, response status, latency)."""
    ts_ms = int(action["ts_ms"])
    return {
        "@timestamp": iso(ts_ms),
        "event": {"action": action["action"], "outcome": outcome},
        "user": {"id": action.get("account_id")},
        "misuse": {
            "automated": bool(action.get("automated")), "dry_run": action.get("dry_run"),
            "actor": actor or action.get("analyst") or "misuse-detector",
            "reason": reason or "; ".join(action.get("reasons", [])) or action.get("note", ""),
            "score": action.get("score"), "detectors": action.get("detectors", []),
            "alert_ids": action.get("alert_ids", []),
            "policy_version": action.get("policy_version"), **details,
        },
    }
