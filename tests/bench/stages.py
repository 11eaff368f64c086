"""The floors and the parts: consume-only, encode-only, index-only, the embedding and campaign
stages in one process, and a naive pipeline to compare against."""

from __future__ import annotations

import json
import resource
import time
from typing import Any

from elasticsearch import Elasticsearch, helpers
from kafka import KafkaConsumer

from detectors.alerts import Alert, Entity
from detectors.campaign_tracker import CampaignTracker
from detectors.events import event_from_dict
from detectors.redaction import redact
from streams import clock
from streams.agents.detect_campaigns import add_vector
from streams.agents.embed_prompts import prompt_vector
from streams.broker import connection_options, produce_lines
from streams.embedder import PromptEmbedder
from streams.embedding_model import load_model
from streams.policy import current_policy
from streams.settings import Settings
from streams.sinks.documents import alert_document


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def consume_only(settings: Settings, lines: list[bytes]) -> dict[str, Any]:
    """How fast a plain Python consumer drains the usage events from this broker: the floor
    under any Python stage that reads them."""
    topic = settings.topic("bench.consume-only")
    produce_lines(settings, lines, topic)
    consumer = KafkaConsumer(topic, **connection_options(settings), group_id=None,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             fetch_max_bytes=50 * 1024 * 1024, max_poll_records=5000)
    count, began = 0, time.perf_counter()
    while count < len(lines):
        for records in consumer.poll(timeout_ms=1000).values():
            for record in records:
                json.loads(record.value)  # every real stage decodes what it reads
                count += 1
    seconds = time.perf_counter() - began
    consumer.close()
    return {"events": count, "seconds": seconds, "events_per_s": rate(count, seconds)}


def encode_only(model_name: str, prompts: list[str], batch_size: int = 64) -> dict[str, Any]:
    model = load_model(model_name)
    model.encode(prompts[:batch_size], batch_size=batch_size)  # warm-up
    began = time.perf_counter()
    model.encode(prompts, batch_size=batch_size, normalize_embeddings=True)
    seconds = time.perf_counter() - began
    return {"prompts": len(prompts), "batch_size": batch_size, "seconds": seconds,
            "prompts_per_s": rate(len(prompts), seconds)}


def sample_alert(i: int) -> Alert:
    return Alert(rule_id="credential_stuffing.key_enumeration", severity="high", score=0.9,
                 entity=Entity("ip", f"198.51.{i // 250 % 250}.{i % 250 + 1}"),
                 incident_start_ms=1_790_000_000_000 + i, window_start_ms=1_790_000_000_000,
                 window_end_ms=1_790_000_300_000, reasons=("bench",),
                 evidence={"distinct_failed_keys": 40, "failures": 80})


def index_only(settings: Settings, es: Elasticsearch, count: int = 20_000) -> dict[str, Any]:
    documents = [alert_document(sample_alert(i), settings) for i in range(count)]
    actions = ({"_index": d.index, "_id": d.id, "_source": d.source} for d in documents)
    began = time.perf_counter()
    helpers.bulk(es, actions, chunk_size=500)
    seconds = time.perf_counter() - began
    return {"documents": count, "seconds": seconds, "documents_per_s": rate(count, seconds)}


def embedding_and_campaigns(settings: Settings, events: list[dict[str, Any]],
                            batch_size: int = 256) -> dict[str, Any]:
    """The embed and campaign stages as their agents run them, minus Kafka."""
    policy = current_policy()
    embedder = PromptEmbedder(settings.embedding_model, settings.cache_dir,
                              settings.jailbreak_patterns_file, policy.embedding)
    tracker = CampaignTracker(policy)
    pacing = clock.Every(5.0)
    with_prompts = [e for e in events if e.get("prompt") and e.get("account_id")]
    counts: dict[str, int] = {}
    key_first_seen: dict[str, int] = {}
    began = time.perf_counter()
    for start in range(0, len(with_prompts), batch_size):
        batch = with_prompts[start:start + batch_size]
        embedded = embedder.embed([redact(e["prompt"]) for e in batch],
                                  [e["account_id"] for e in batch], [False] * len(batch))
        for event, vector in zip(batch, embedded, strict=True):
            counts[event["account_id"]] = counts.get(event["account_id"], 0) + 1
            first_seen = key_first_seen.setdefault(event["api_key_id"], event["ts"])
            usage = event_from_dict(event, now_ms=event["ts"] + 1000)
            add_vector(tracker, prompt_vector(usage, vector, counts[event["account_id"]],
                                              first_seen))
        if tracker.due(idle=False) and pacing.due():  # as the agent paces it
            tracker.judge_all()
    tracker.judge_all()
    seconds = time.perf_counter() - began
    stats = embedder.planner.stats()
    planned = max(1, stats["planned"])
    return {
        "events": len(with_prompts), "seconds": seconds,
        "events_per_s": rate(len(with_prompts), seconds),
        "full_model_embeddings": stats["full"],
        "full_model_embeddings_per_s": rate(stats["full"], seconds),
        "full_model_share": stats["full"] / planned,
        "exact_hit_rate": stats["exact"] / planned, "near_hit_rate": stats["near"] / planned,
        "static_share": stats["static"] / planned, "planner": stats,
        "campaigns": len(tracker.emitted),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def naive_pipeline(settings: Settings, es: Elasticsearch, events: list[dict[str, Any]]
                   ) -> dict[str, Any]:
    """What a first version would do: every prompt through the full model as it comes, and
    one index request per document."""
    model = load_model(settings.embedding_model)
    index = settings.index("bench-naive")
    began = time.perf_counter()
    for event in events:
        usage = event_from_dict(event, now_ms=event["ts"] + 1000)
        vector = model.encode([redact(usage.prompt or "")], normalize_embeddings=True)[0]
        es.index(index=index, id=usage.event_id,
                 document={"event": usage.event_id, "vector_norm": float(vector @ vector)})
    seconds = time.perf_counter() - began
    return {"events": len(events), "seconds": seconds, "events_per_s": rate(len(events), seconds)}
