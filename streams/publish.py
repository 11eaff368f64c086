"""What every stage sends on: alerts (with a risk signal per account they name), signals and
documents for Elasticsearch."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from detectors.alerts import Alert
from detectors.policy import RulePolicy
from detectors.risk import Signal, signals_from_alert
from streams import codec
from streams.topics import alerts_topic, documents_topic, signals_topic

log = logging.getLogger(__name__)


async def publish_alert(alert: Alert, rule: RulePolicy) -> None:
    """Shadow rules write their alerts but feed no risk score, so they trigger no action."""
    alert = replace(alert, shadow=rule.shadow)
    log.info("alert rule=%s entity=%s:%s id=%s shadow=%s", alert.rule_id, alert.entity.kind,
             alert.entity.id, alert.alert_id, alert.shadow)
    await alerts_topic.send(key=alert.alert_id.encode(), value=codec.dumps(alert.to_dict()))
    if alert.shadow or rule.action == "none":
        return
    for signal in signals_from_alert(alert):
        await publish_signal(signal)


async def publish_signal(signal: Signal) -> None:
    await signals_topic.send(key=signal.account_id.encode(), value=codec.dumps(signal.to_dict()))


async def publish_document(index: str, doc_id: str, source: dict[str, Any]) -> None:
    """`index` is the name without the prefix ("campaigns", "accounts", "actions")."""
    await documents_topic.send(key=doc_id.encode(),
                               value=codec.dumps({"index": index, "id": doc_id,
                                                  "source": source}))
