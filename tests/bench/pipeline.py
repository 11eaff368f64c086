"""The whole worker on the local stack: throughput at saturation, and event-to-alert latency at
a fixed offered load."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from kafka import KafkaConsumer

from streams.runtime import clock
from streams.runtime.broker import connection_options, consumer_lag, producer
from streams.runtime.messages import alerts_in
from streams.settings import Settings
from streams.tooling.produce import produce_lines
from streams.tooling.progress import Progress
from streams.tooling.runner import WorkerProcess


def saturation(worker: WorkerProcess, lines: list[bytes], show_progress: bool = True
               ) -> dict[str, Any]:
    """All events offered at once: the rate at which the worker gets through them, from the
    first produced to the last committed by every stage."""
    settings = worker.settings
    progress = Progress.of_worker(settings, worker.metrics_url, expected=len(lines)) \
        if show_progress else None
    topics = [settings.topic(name) for name in ("api.usage", "misuse.events.by-network",
                                                "misuse.prompts", "misuse.prompt-vectors")]
    began = time.perf_counter()
    produce_lines(settings, lines, settings.topic("api.usage"))
    ingest_done = None
    while True:
        lags = {topic: consumer_lag(settings, settings.app_id, [topic]) for topic in topics}
        if ingest_done is None and lags[topics[0]] == 0:
            ingest_done = time.perf_counter() - began
        if not any(lags.values()):
            break
        if progress is not None:
            progress()
        time.sleep(0.25)
    seconds = time.perf_counter() - began
    if progress is not None:
        progress.finish()
    return {"events": len(lines), "seconds": seconds, "events_per_s": len(lines) / seconds,
            "ingest_seconds": ingest_done,
            "ingest_events_per_s": len(lines) / ingest_done if ingest_done else None}


def paced(events: Iterator[dict[str, Any]], rate_per_s: float, seconds: float
          ) -> Iterator[bytes]:
    """The simulated events re-stamped with the wall clock and offered at a fixed rate, so
    that an alert's latency is its send time minus the event time of the event that made it
    fire."""
    interval = 1.0 / rate_per_s
    began = time.perf_counter()
    for sent, event in enumerate(events):
        due = began + sent * interval
        if due - began > seconds:
            return
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield json.dumps({**event, "ts": clock.now_ms()}).encode()


def with_attacks(events: Iterator[dict[str, Any]], every: int, attempts: int = 30
                 ) -> Iterator[dict[str, Any]]:
    """Benign traffic with a credential-stuffing burst from a fresh address every `every`
    events, so that alerts keep firing while the latency is measured."""
    for index, event in enumerate(events):
        yield event
        if index % every == every - 1:
            burst = index // every
            ip = f"203.{burst // 250 % 250}.{burst % 250}.7"  # a range of its own each time
            for attempt in range(attempts):
                yield {"event_id": f"bench-burst-{burst}-{attempt}", "ts": 0,
                       "api_key_id": f"guess-{burst}-{attempt}", "ip": ip,
                       "endpoint": "/v1/models", "status": 401}


def latency(worker: WorkerProcess, events: Iterator[dict[str, Any]], rate_per_s: float,
            seconds: float) -> dict[str, Any]:
    settings = worker.settings
    began_ms = clock.now_ms()
    kafka = producer(settings)
    topic = settings.topic("api.usage")
    offered = 0
    progress = Progress.of_worker(settings, worker.metrics_url)  # produced: so far
    for line in paced(events, rate_per_s, seconds):
        key = json.loads(line).get("account_id")
        kafka.send(topic, key=key.encode() if key else None, value=line)
        offered += 1
        if offered % 100 == 0:
            progress()
    kafka.flush()
    kafka.close()
    worker.wait_drained(progress=progress)
    progress.finish()
    latencies = sorted(alert_latencies(settings, since_ms=began_ms))
    return {"offered_events_per_s": rate_per_s, "events": offered, "alerts": len(latencies),
            "p50_s": percentile(latencies, 50), "p99_s": percentile(latencies, 99),
            "max_s": latencies[-1] if latencies else None}


def alert_latencies(settings: Settings, since_ms: int) -> list[float]:
    """For each alert version sent after `since_ms`: its Kafka timestamp (when the detector
    sent it) minus the end of its window (the event that completed it)."""
    consumer = KafkaConsumer(settings.topic("misuse.alerts"), **connection_options(settings),
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    out, ring = [], settings.internal_keys
    for record in consumer:
        for alert in alerts_in(record.value, ring):
            if alert.window_end_ms >= since_ms:  # fired by this phase's (re-stamped) events
                out.append((record.timestamp - alert.window_end_ms) / 1000)
    consumer.close()
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    index = min(len(values) - 1, round(q / 100 * (len(values) - 1)))
    return values[index]
