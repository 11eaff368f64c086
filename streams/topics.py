"""Every topic the worker reads or writes; names as in DESIGN.md, with the configured prefix."""

from __future__ import annotations

from faust.types import TopicT

from streams.app import app
from streams.settings import get_settings

_settings = get_settings()

def _topic(name: str) -> TopicT:
    return app.topic(_settings.topic(name), key_type=bytes, value_type=bytes)


usage_topic = _topic("api.usage")
deadletter_topic = _topic("misuse.deadletter")
# Valid events without their prompts, keyed by network range, for the per-IP and per-range
# detectors: a range's state then lives on one partition and so on one worker.
network_events_topic = _topic("misuse.events.by-network")
# Events with a (redacted) prompt, keyed by account, for the embedding stage.
prompts_topic = _topic("misuse.prompts")
# Prompt vectors keyed by an LSH bucket: similar prompts meet on one partition.
prompt_vectors_topic = _topic("misuse.prompt-vectors")
# Jailbreak pattern matches keyed by pattern id, to see one pattern sprayed across accounts.
jailbreak_matches_topic = _topic("misuse.jailbreak-matches")
signals_topic = _topic("misuse.signals")
alerts_topic = _topic("misuse.alerts")
# Campaign and account documents for Elasticsearch: {"index", "id", "source"}.
documents_topic = _topic("misuse.documents")
account_actions_topic = _topic("misuse.account-actions")
feedback_topic = _topic("misuse.feedback")
