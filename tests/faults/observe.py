"""What one run left behind: every event id on every internal topic that carries them, the
dead letters, and the alerts, accounts and campaigns in Elasticsearch."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import Elasticsearch
from kafka import KafkaConsumer, TopicPartition

from streams.runtime.broker import connection_options
from streams.runtime.messages import MessageError, decode_batch
from streams.runtime.sealing import KeyRing
from streams.settings import Settings
from streams.sinks.elasticsearch import client_options
from streams.tooling.findings import Findings
from streams.tooling.replay import sent_alerts

# The topics whose records are (or carry) one usage event each.
EVENT_TOPICS = ("api.usage", "misuse.events.by-network", "misuse.prompts",
                "misuse.prompt-vectors", "misuse.jailbreak-matches")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    key: str
    sha256: str
    reason: str
    source_topic: str


@dataclass
class Observation:
    # topic (logical name) -> event id -> how many records carry it
    event_ids: dict[str, Counter[str]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # alert id -> (rule, entity kind, entity id)
    alerts: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    account_statuses: dict[str, str] = field(default_factory=dict)
    # account -> every alert id its risk reasons name, repeats included
    account_reason_alert_ids: dict[str, list[str]] = field(default_factory=dict)
    # account -> the rules its risk reasons name (what flagged it)
    account_reason_rules: dict[str, list[str]] = field(default_factory=dict)
    # campaign id -> member accounts
    campaigns: dict[str, frozenset[str]] = field(default_factory=dict)
    # what `misuse eval --runs 2` compares: alerts with their evidence, campaigns with their
    # members, accounts with their risk scores
    findings: Findings = field(default_factory=lambda: Findings({}, {}, {}))

    def to_json(self) -> dict[str, Any]:
        return {"events_per_topic": {t: sum(c.values()) for t, c in self.event_ids.items()},
                "dead_letters": len(self.dead_letters), "alerts": len(self.alerts),
                "accounts": len(self.account_statuses), "campaigns": len(self.campaigns)}


def observe(settings: Settings) -> Observation:
    seen = Observation()
    for topic in EVENT_TOPICS:
        seen.event_ids[topic] = Counter(
            event_id for _, value, _ in read_topic(settings, topic)
            for event_id in event_ids_in(topic, value, settings.internal_keys))
    seen.dead_letters = [
        DeadLetter((key or b"").decode(errors="replace"), sha256(value),
                   headers.get("misuse.reason", b"").decode(errors="replace"),
                   headers.get("misuse.source.topic", b"").decode(errors="replace"))
        for key, value, headers in read_topic(settings, "misuse.deadletter")]
    es = Elasticsearch(**client_options(settings))
    try:
        es.indices.refresh(index=f"{settings.index_prefix}*", ignore_unavailable=True)
        for hit in all_hits(es, settings.index("alerts")):
            source = hit["_source"]
            seen.alerts[hit["_id"]] = (source["rule"]["id"], source["misuse"]["entity"]["kind"],
                                       source["misuse"]["entity"]["id"])
        accounts = all_hits(es, settings.index("accounts"))
        for hit in accounts:
            misuse = hit["_source"].get("misuse", {})
            seen.account_statuses[hit["_id"]] = misuse.get("status", "")
            reasons = misuse.get("reasons", [])
            seen.account_reason_alert_ids[hit["_id"]] = [
                r["alert_id"] for r in reasons if r.get("alert_id")]
            seen.account_reason_rules[hit["_id"]] = sorted({r.get("rule_id", "")
                                                            for r in reasons})
        campaigns = all_hits(es, settings.index("campaigns"))
        for hit in campaigns:
            misuse = hit["_source"].get("misuse", {})
            seen.campaigns[misuse.get("campaign_id", hit["_id"])] = frozenset(
                misuse.get("accounts", []))
        seen.findings = Findings.of(sent_alerts(settings),
                                    [hit["_source"]["misuse"] for hit in campaigns],
                                    [hit["_source"] for hit in accounts])
    finally:
        es.close()
    return seen


def fingerprint(es: Elasticsearch, settings: Settings) -> str:
    """Every document's index, id and version: unchanged between two looks, nothing is being
    written any more."""
    es.indices.refresh(index=f"{settings.index_prefix}*", ignore_unavailable=True)
    hits = all_hits(es, f"{settings.index_prefix}*", version=True)
    return sha256(json.dumps(sorted((h["_index"], h["_id"], h.get("_version", 0))
                                    for h in hits)).encode())


def all_hits(es: Elasticsearch, index: str, **options: Any) -> list[dict[str, Any]]:
    """Every document of `index` (they are a few thousand at most here)."""
    response = es.search(index=index, query={"match_all": {}}, size=10_000,
                         ignore_unavailable=True, **options)
    hits = list(response["hits"]["hits"])
    assert len(hits) < 10_000, f"{index}: more documents than one search returns"
    return hits


def read_topic(settings: Settings, logical: str
               ) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
    """Every message of the topic from its beginning to its current end: key, value, headers."""
    consumer = KafkaConsumer(**connection_options(settings), enable_auto_commit=False,
                             max_poll_records=5000, fetch_max_bytes=64 * 1024 * 1024)
    out: list[tuple[bytes | None, bytes | None, dict[str, bytes]]] = []
    try:
        topic = settings.topic(logical)
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)
                      or ()]
        ends = consumer.end_offsets(partitions)
        todo = {p for p in partitions if ends[p] > 0}
        if not todo:
            return out
        consumer.assign(sorted(todo))
        consumer.seek_to_beginning(*todo)
        while todo:
            for partition, records in consumer.poll(timeout_ms=1000).items():
                out.extend((r.key, r.value, dict(r.headers or ())) for r in records
                           if r.offset < ends[partition])
                if consumer.position(partition) >= ends[partition]:
                    todo.discard(partition)
                    consumer.pause(partition)
    finally:
        consumer.close()
    return out


def event_ids_in(topic: str, value: bytes | None, ring: KeyRing) -> list[str]:
    """The event ids one message carries: a usage event's own (when it has one: crafted input
    may not), or one per record of a batch between stages."""
    if topic == "api.usage":
        try:
            event = json.loads(value or b"")
        except (ValueError, RecursionError):
            return []
        event_id = event.get("event_id") if isinstance(event, dict) else None
        return [event_id] if isinstance(event_id, str) else []
    try:
        records = decode_batch(value, ring).records
    except MessageError:
        return []
    return [r.get("event_id") or r.get("event", {}).get("event_id") for r in records]


def sha256(value: bytes | None) -> str:
    return "none" if value is None else hashlib.sha256(value).hexdigest()
