"""What every stage sends on: alerts (with a risk signal per account they name), signals and
documents for Elasticsearch, through the stage's `emit` (the runtime batches them)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from detectors.alerts import Alert
from detectors.policy import RulePolicy
from detectors.risk import Signal, signals_from_alert
from streams.runtime.driver import Emit
from streams.runtime.messages import (
    ALERTS,
    AlertRecord,
    DocumentRecord,
    PageRequest,
    SignalRecord,
)

log = logging.getLogger(__name__)

SIGNALS, DOCUMENTS = "misuse.signals", "misuse.documents"
ACTIONS = "misuse.account-actions"


def emit_alert(emit: Emit, alert: Alert, rule: RulePolicy) -> None:
    """Shadow rules write their alerts but feed no risk score, so they trigger no action."""
    alert = replace(alert, shadow=rule.shadow)
    log.info("alert rule=%s entity=%s:%s id=%s shadow=%s", alert.rule_id, alert.entity.kind,
             alert.entity.id, alert.alert_id, alert.shadow)
    emit(ALERTS, alert.alert_id, AlertRecord(alert))
    if alert.shadow:
        return
    # The act stage decides whether it pages (policy routing, grouping, rate limit).
    emit(ACTIONS, page_group(alert), PageRequest("trigger", page_group(alert),
                                                 alert.window_end_ms, alert))
    if rule.action == "none":
        return
    for signal in signals_from_alert(alert):
        emit_signal(emit, signal)


def page_group(alert: Alert) -> str:
    return page_group_of(alert.rule_id, alert.entity.kind, alert.entity.id)


def page_group_of(rule_id: str, entity_kind: str, entity_id: str) -> str:
    """What pages once per window: a campaign, or one rule on one entity (its updates and
    its next incidents alike)."""
    if entity_kind == "campaign":
        return f"campaign:{entity_id}"
    return f"{rule_id}:{entity_kind}:{entity_id}"


def emit_page_resolve(emit: Emit, group: str, ts_ms: int) -> None:
    """The incident behind a group's page is over (a campaign withdrawn)."""
    emit(ACTIONS, group, PageRequest("resolve", group, ts_ms))


def emit_signal(emit: Emit, signal: Signal) -> None:
    emit(SIGNALS, signal.account_id, SignalRecord(signal))


def emit_document(emit: Emit, index: str, doc_id: str, source: dict[str, Any]) -> None:
    """`index` is the name without the prefix ("campaigns", "accounts", "actions")."""
    emit(DOCUMENTS, doc_id, DocumentRecord(index, doc_id, source))
