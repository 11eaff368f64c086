"""Per-IP and per-range detectors over the events keyed by network range."""

from __future__ import annotations

import logging
from dataclasses import replace

from faust.types import StreamT

from detectors.alerts import Alert
from detectors.credential_stuffing import CredentialStuffingDetector
from detectors.events import event_from_dict
from streams import clock, codec
from streams.app import app
from streams.policy import current_policy
from streams.topics import alerts_topic, network_events_topic

log = logging.getLogger(__name__)


def build_stuffing_detector() -> CredentialStuffingDetector:
    rule = current_policy().rules.credential_stuffing
    return CredentialStuffingDetector(
        window_ms=rule.window_seconds * 1000, min_distinct_keys=rule.min_distinct_keys,
        min_failure_ratio=rule.min_failure_ratio, severity=rule.severity,
    )


async def send_alert(alert: Alert) -> None:
    log.info("alert rule=%s entity=%s:%s id=%s", alert.rule_id, alert.entity.kind,
             alert.entity.id, alert.alert_id)
    await alerts_topic.send(key=alert.alert_id.encode(), value=codec.dumps(alert.to_dict()))


@app.agent(network_events_topic)
async def detect_network_abuse(stream: StreamT) -> None:
    stuffing = build_stuffing_detector()
    async for values in stream.take(500, within=0.2):
        now = clock.now_ms()
        policy = current_policy()
        for value in values:
            event = event_from_dict(codec.loads(value), now_ms=now)
            if not policy.rules.credential_stuffing.enabled:
                continue
            for alert in stuffing.observe(event):
                await send_alert(replace(alert, shadow=policy.rules.credential_stuffing.shadow))
