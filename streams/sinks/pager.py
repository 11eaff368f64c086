"""Pages: PagerDuty Events API v2 events and Alertmanager webhook payloads (pure builders),
and their delivery through WebhookClient's retries. Neither service uses Standard Webhooks
signatures: PagerDuty authenticates by the routing key in the body, Alertmanager receivers by
their URL (or a proxy in front of it).

PagerDuty: https://developer.pagerduty.com/docs/events-api-v2/trigger-events/
Alertmanager: https://prometheus.io/docs/alerting/latest/configuration/#webhook_config
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import SecretStr

from streams.sinks.webhooks import DeliveryResult, WebhookClient

PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
PAGERDUTY_SEVERITIES = ("critical", "error", "warning", "info")
SEVERITY_TO_PAGERDUTY = {"critical": "critical", "high": "error", "medium": "warning",
                         "low": "info"}
PAGERDUTY_SUMMARY_MAX = 1024
PAGERDUTY_DEDUP_KEY_MAX = 255
CLIENT_NAME = "misuse-detector"
# Alertmanager's zero time.Time: how it says "no end yet" for a firing alert.
ALERTMANAGER_NO_END = "0001-01-01T00:00:00Z"

PagerDutyAction = Literal["trigger", "resolve"]
AlertmanagerStatus = Literal["firing", "resolved"]


@dataclass(frozen=True)
class PageAlert:
    """What a page says. `entity_id` is already pseudonymous and `details` already redacted
    by the caller: both leave the worker as they are."""
    dedup_key: str
    rule_id: str
    severity: str  # ours (low / medium / high / critical)
    summary: str
    entity_kind: str
    entity_id: str
    ts_ms: int
    details: Mapping[str, Any] = field(default_factory=dict)
    link: str | None = None


def rfc3339(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def pagerduty_severity(severity: str) -> str:
    """Ours (low..critical) or PagerDuty's own word, as PagerDuty's."""
    if severity in SEVERITY_TO_PAGERDUTY:
        return SEVERITY_TO_PAGERDUTY[severity]
    if severity in PAGERDUTY_SEVERITIES:
        return severity
    raise ValueError(f"unknown severity {severity!r}")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pagerduty_event(routing_key: SecretStr, action: PagerDutyAction, dedup_key: str,
                    summary: str = "", severity: str = "info", source: str = CLIENT_NAME,
                    component: str | None = None, group: str | None = None,
                    custom_details: Mapping[str, Any] | None = None,
                    links: Sequence[Mapping[str, str]] = (), *,
                    timestamp_ms: int | None = None, event_class: str | None = None,
                    client_url: str | None = None) -> dict[str, Any]:
    """An Events API v2 event. A resolve carries routing_key, event_action and dedup_key
    only (PagerDuty ignores the rest). The result holds the routing key: send it, never log
    it."""
    if action not in ("trigger", "resolve"):
        raise ValueError(f"unknown PagerDuty action {action!r}")
    # Our dedup keys name the incident; truncating one could merge two incidents.
    if not dedup_key or len(dedup_key) > PAGERDUTY_DEDUP_KEY_MAX:
        raise ValueError(f"dedup_key must be 1..{PAGERDUTY_DEDUP_KEY_MAX} characters")
    event: dict[str, Any] = {"routing_key": routing_key.get_secret_value(),
                             "event_action": action, "dedup_key": dedup_key}
    if action == "resolve":
        return event
    if not summary or not source:
        raise ValueError("a trigger needs a summary and a source")
    payload: dict[str, Any] = {
        "summary": _truncate(summary, PAGERDUTY_SUMMARY_MAX),
        "source": source,
        "severity": pagerduty_severity(severity),
    }
    optional = {"timestamp": None if timestamp_ms is None else rfc3339(timestamp_ms),
                "component": component, "group": group, "class": event_class}
    payload.update({name: value for name, value in optional.items() if value is not None})
    if custom_details:
        payload["custom_details"] = dict(custom_details)
    event["payload"] = payload
    for link in links:
        if not link.get("href"):
            raise ValueError("a PagerDuty link needs an href")
    if links:
        event["links"] = [{k: v for k, v in link.items() if k in ("href", "text")}
                          for link in links]
    event["client"] = CLIENT_NAME
    if client_url:
        event["client_url"] = client_url
    return event


def pagerduty_event_for(alert: PageAlert, routing_key: SecretStr, action: PagerDutyAction,
                        source: str = CLIENT_NAME) -> dict[str, Any]:
    """The event for one PageAlert: the rule is the class, the entity the component."""
    links = [{"href": alert.link, "text": "Alert in Kibana"}] if alert.link else []
    details = {"rule_id": alert.rule_id, "entity_kind": alert.entity_kind,
               "entity_id": alert.entity_id, **alert.details}
    return pagerduty_event(routing_key, action, alert.dedup_key, alert.summary,
                           alert.severity, source, f"{alert.entity_kind}:{alert.entity_id}",
                           alert.rule_id, details, links, timestamp_ms=alert.ts_ms,
                           event_class=alert.rule_id)


def _labels(alert: PageAlert) -> dict[str, str]:
    return {"alertname": alert.rule_id, "severity": alert.severity,
            "entity_kind": alert.entity_kind, "entity_id": alert.entity_id,
            "dedup_key": alert.dedup_key}


def _annotations(alert: PageAlert) -> dict[str, str]:
    # Alertmanager annotations are strings: structured details travel as JSON text.
    annotations = {"summary": alert.summary}
    for name, value in alert.details.items():
        annotations[name] = value if isinstance(value, str) else json.dumps(value,
                                                                            sort_keys=True)
    return annotations


def _fingerprint(labels: Mapping[str, str]) -> str:
    # Alertmanager's fingerprint is a 64-bit hash of the label set, in 16 hex digits.
    text = "\xff".join(f"{k}\xff{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def alertmanager_payload(status: AlertmanagerStatus, group_key: str, receiver: str,
                         alerts: Sequence[PageAlert], external_url: str, *,
                         resolved_at_ms: int | None = None,
                         group_by: Sequence[str] = ("alertname",),
                         max_alerts: int = 0) -> dict[str, Any]:
    """A webhook notification in Alertmanager's format (version 4). Every alert carries the
    group's status; a resolved group needs `resolved_at_ms` for endsAt. `max_alerts` > 0
    keeps the first ones and counts the rest in truncatedAlerts, as Alertmanager does."""
    if status not in ("firing", "resolved"):
        raise ValueError(f"unknown Alertmanager status {status!r}")
    if status == "resolved" and resolved_at_ms is None:
        raise ValueError("a resolved notification needs resolved_at_ms")
    ends_at = ALERTMANAGER_NO_END if resolved_at_ms is None else rfc3339(resolved_at_ms)
    kept = list(alerts[:max_alerts]) if max_alerts > 0 else list(alerts)
    labels = [_labels(alert) for alert in kept]
    annotations = [_annotations(alert) for alert in kept]
    common_labels = _common(labels)
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": len(alerts) - len(kept),
        "status": status,
        "receiver": receiver,
        "groupLabels": {k: common_labels[k] for k in group_by if k in common_labels},
        "commonLabels": common_labels,
        "commonAnnotations": _common(annotations),
        "externalURL": external_url,
        "alerts": [
            {"status": status, "labels": alert_labels, "annotations": alert_annotations,
             "startsAt": rfc3339(alert.ts_ms), "endsAt": ends_at,
             "generatorURL": alert.link or "", "fingerprint": _fingerprint(alert_labels)}
            for alert, alert_labels, alert_annotations in zip(kept, labels, annotations,
                                                              strict=True)
        ],
    }


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact, key-sorted JSON: the same page is the same bytes on every attempt."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True,
                      ensure_ascii=False).encode()


async def send_page(client: WebhookClient, url: str, payload: Mapping[str, Any],
                    label: str) -> DeliveryResult:
    """POST a PagerDuty event or an Alertmanager payload with the client's retries, unsigned.
    `label` (a dedup key or group key) names it in logs; the payload is never logged."""
    return await client.post_with_retries(url, encode(payload), _no_headers, label=label)


def _no_headers() -> dict[str, str]:
    return {}
