"""The floors and the parts: consume-only, encode-only, index-only, the embedding and campaign
stages in one process, and a naive pipeline to compare against."""

from __future__ import annotations

import json
import resource
import statistics
import time
from typing import Any

from elasticsearch import Elasticsearch, helpers
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic

from detectors.alerts import Alert, Entity
from detectors.events import event_from_dict
from detectors.redaction import redact
from streams.embedding.loader import load_encoder
from streams.embedding.model import MINILM, USE_MULTILINGUAL
from streams.runtime import clock
from streams.runtime.broker import connection_options
from streams.runtime.policy import current_policy
from streams.settings import REPO_ROOT, Settings
from streams.sinks.documents import alert_document
from streams.stages import STAGES
from streams.tooling.inprocess import InProcessPipeline
from streams.tooling.produce import produce_lines


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def consume_only(settings: Settings, lines: list[bytes]) -> dict[str, Any]:
    """How fast a plain Python consumer drains the usage events from this broker: the floor
    under any Python stage that reads them."""
    topic = settings.topic("bench.consume-only")
    admin = KafkaAdminClient(**connection_options(settings))
    try:  # partitioned as api.usage; produce_lines refuses a topic that does not exist
        if topic not in admin.list_topics():
            admin.create_topics([NewTopic(topic, settings.partitions("api.usage"), 1)])
    finally:
        admin.close()
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


# Every CPU configuration of each model: (label, model, backend, precision). The first of
# each model is its reference, which the others' drift and speed-up are measured against.
ENCODERS = (
    ("use numpy fp32", USE_MULTILINGUAL, "numpy", "fp32"),
    ("use torch fp32", USE_MULTILINGUAL, "torch", "fp32"),
    ("use onnx fp32", USE_MULTILINGUAL, "onnx", "fp32"),
    ("use onnx int8", USE_MULTILINGUAL, "onnx", "int8"),
    ("minilm torch fp32", MINILM, "torch", "fp32"),
    ("minilm torch int8", MINILM, "torch", "int8"),
    ("minilm onnx fp32", MINILM, "onnx", "fp32"),
    ("minilm onnx int8", MINILM, "onnx", "int8"),
)


REAL_PROMPT_FILES = ("instructions.jsonl", "claims.jsonl", "statements.jsonl",
                     "dataset_prompts.jsonl", "jailbreaks.jsonl")


def real_prompts(count: int = 1024, max_words: int = 64) -> list[str]:
    """Real prompts from tests/data, the corpus files taken in turn, cut to the first
    `max_words` words as the embed stage cuts them."""
    folder = REPO_ROOT / "tests" / "data"
    pools = [[json.loads(line)["text"] for line in (folder / name).read_text(
              encoding="utf-8").splitlines() if line.strip()] for name in REAL_PROMPT_FILES]
    prompts: list[str] = []
    for row in range(max(map(len, pools))):
        prompts.extend(" ".join(pool[row].split()[:max_words]) for pool in pools
                       if row < len(pool))
    return prompts[:count]


def encode_only(settings: Settings, prompts: list[str], batch_size: int = 64,
                rounds: int = 3) -> dict[str, Any]:
    """Each model x backend x precision on the CPU, on the same prompts, in batches of
    `batch_size`: the rate (median of `rounds` rounds taken in turn, so that other work on
    the machine weighs on all alike), the ratio to the model's reference (median of the
    per-round ratios) and the drift check's cosines to the reference (median, 1st percentile;
    refused: the load would fail)."""
    from streams.embedding.loader import drift_result

    out: dict[str, Any] = {"prompts": len(prompts), "batch_size": batch_size,
                           "rounds": rounds}
    encoders = {label: load_encoder.__wrapped__(name, "cpu", precision, backend,
                                                settings.cache_dir, check_drift=False)
                for label, name, backend, precision in ENCODERS}
    rates: dict[str, list[float]] = {label: [] for label in encoders}
    for _ in range(rounds):
        for label, encoder in encoders.items():
            encoder.encode(prompts[:batch_size])  # warm-up
            began = time.perf_counter()
            for start in range(0, len(prompts), batch_size):
                encoder.encode(prompts[start:start + batch_size])
            rates[label].append(rate(len(prompts), time.perf_counter() - began))
    references = {name: label for label, name, _, _ in reversed(ENCODERS)}
    for label, name, _, _ in ENCODERS:
        reference = rates[references[name]]
        out[f"{label} prompts_per_s"] = statistics.median(rates[label])
        out[f"{label} / reference"] = statistics.median(
            own / ref for own, ref in zip(rates[label], reference, strict=True))
        drift = drift_result(encoders[label], settings.cache_dir)
        if drift is not None:
            out[f"{label} drift median"] = drift.median
            out[f"{label} drift p1"] = drift.p1
            out[f"{label} drift"] = "ok" if drift.ok else "REFUSED"
    out["rates"] = rates  # every round, for the JSON record
    return out


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


def stages_in_process(lines: list[bytes]) -> dict[str, Any]:
    """Every stage of the worker, as it runs them, minus Kafka and Faust: the pipeline's cost
    in Python, stage by stage."""
    pipeline = InProcessPipeline(STAGES, current_policy(), now_ms=clock.now_ms)
    began = time.perf_counter()
    collected = pipeline.run("api.usage", lines)
    seconds = time.perf_counter() - began
    stats = pipeline.stage("embed_prompts").embedder.planner.stats()  # type: ignore[attr-defined]
    planned = max(1, stats["planned"])
    return {
        "events": len(lines), "seconds": seconds, "events_per_s": rate(len(lines), seconds),
        **{f"{name} s": value for name, value in collected.seconds.items()},
        "full_model_embeddings": stats["full"],
        "full_model_share": stats["full"] / planned,
        "exact_hit_rate": stats["exact"] / planned, "near_hit_rate": stats["near"] / planned,
        "static_share": stats["static"] / planned, "planner": stats,
        "alerts": len(collected.records["misuse.alerts"]),
        "campaigns": len(pipeline.stage("detect_campaigns").tracker.emitted),  # type: ignore[attr-defined]
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def naive_pipeline(settings: Settings, es: Elasticsearch, events: list[dict[str, Any]]
                   ) -> dict[str, Any]:
    """What a first version would do: every prompt through the full model as it comes, and
    one index request per document."""
    encoder = load_encoder(settings.embedding_model)
    index = settings.index("bench-naive")
    began = time.perf_counter()
    for event in events:
        usage = event_from_dict(event, now_ms=event["ts"] + 1000)
        vector = encoder.encode([redact(usage.prompt or "")])[0]
        es.index(index=index, id=usage.event_id,
                 document={"event": usage.event_id, "vector_norm": float(vector @ vector)})
    seconds = time.perf_counter() - began
    return {"events": len(events), "seconds": seconds, "events_per_s": rate(len(events), seconds)}


if __name__ == "__main__":
    # The encode-only figures alone, on real prompts: python -m tests.bench.stages
    figures = encode_only(Settings(), real_prompts())
    for key, value in figures.items():
        if not isinstance(value, dict):
            print(f"  {key:32s} {value:.3f}" if isinstance(value, float)
                  else f"  {key:32s} {value}")
