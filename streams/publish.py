"""What every stage sends on: alerts (with a risk signal per account they name), signals and
documents for Elasticsearch, through the stage's `emit` (the runtime batches them)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from detectors.alerts import Alert
from detectors.policy import RulePolicy
from detectors.risk import Signal, signals_from_alert
from streams.messages import AlertRecord, DocumentRecord, SignalRecord
from streams.runtime import Emit

log = logging.getLogger(__name__)

ALERTS, SIGNALS, DOCUMENTS = "misuse.alerts", "misuse.signals", "misuse.documents"


def emit_alert(emit: Emit, alert: Alert, rule: RulePolicy) -> None:
    """Shadow rules write their alerts but feed no risk score, so they trigger no action."""
    alert = replace(alert, shadow=rule.shadow)
    log.info("alert rule=%s entity=%s:%s id=%s shadow=%s", alert.rule_id, alert.entity.kind,
             alert.entity.id, alert.alert_id, alert.shadow)
    emit(ALERTS, alert.alert_id, AlertRecord(alert))
    if alert.shadow or rule.action == "none":
        return
    for signal in signals_from_alert(alert):
        emit_signal(emit, signal)


def emit_signal(emit: Emit, signal: Signal) -> None:
    emit(SIGNALS, signal.account_id, SignalRecord(signal))


def emit_document(emit: Emit, index: str, doc_id: str, source: dict[str, Any]) -> None:
    """`index` is the name without the prefix ("campaigns", "accounts", "actions")."""
    emit(DOCUMENTS, doc_id, DocumentRecord(index, doc_id, source))
