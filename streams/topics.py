"""Every topic the worker reads or writes; names as in DESIGN.md, with the configured prefix."""

from __future__ import annotations

from streams.app import app
from streams.settings import get_settings

_settings = get_settings()


def _topic(name: str):  # type: ignore[no-untyped-def]
    return app.topic(_settings.topic(name), key_type=bytes, value_type=bytes)


usage_topic = _topic("api.usage")
deadletter_topic = _topic("misuse.deadletter")
# Valid events without their prompts, keyed by network range, for the per-IP and per-range
# detectors: a range's state then lives on one partition and so on one worker.
network_events_topic = _topic("misuse.events.by-network")
alerts_topic = _topic("misuse.alerts")
signals_topic = _topic("misuse.signals")
account_actions_topic = _topic("misuse.account-actions")

ALL_TOPICS = (usage_topic, deadletter_topic, network_events_topic, alerts_topic, signals_topic,
              account_actions_topic)
