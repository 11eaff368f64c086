"""The worker's /metrics over HTTP after a known stream: what the alert rules read
(ops/prometheus/misuse-rules.yml) is there, counts what went in, and names no one."""

from __future__ import annotations

import io
import ipaddress
import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from streams.runtime import clock
from streams.tooling.progress import Progress, alerts_written, worker_offsets
from streams.tooling.simulation import simulate

from .conftest import Pipeline, close_pipeline, open_pipeline

FAMILIES = {
    "misuse_stage_events_in": "counter", "misuse_stage_events_out": "counter",
    "misuse_deadletters": "counter", "misuse_stage_batch_duration_seconds": "histogram",
    "misuse_event_to_alert_latency_seconds": "histogram", "misuse_consumer_lag": "gauge",
    "misuse_embedding_path": "counter", "misuse_embedding_pending_prompts": "gauge",
    "misuse_elasticsearch_bulk_failures": "counter", "misuse_elasticsearch_retries": "counter",
    "misuse_webhook_deliveries": "counter", "misuse_worker_ready": "gauge",
    "misuse_worker_crashes": "counter",
}
NOT_JSON = [b'{"event_id": "broken-1", ', b"\xff\xfe", b"plain text, not an event"]
NO_TS = [json.dumps({"event_id": f"no-ts-{i}", "account_id": "acct-nots",
                     "api_key_id": "key-nots", "ip": "192.0.2.44",
                     "endpoint": "/v1/models", "status": 200}).encode() for i in range(2)]


@pytest.fixture(scope="module")
def metrics_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    # A worker of its own: its counters start at zero, whatever the other tests send.
    pipeline = open_pipeline("metrics", tmp_path_factory.mktemp("metrics-data"),
                             tmp_path_factory.mktemp("metrics-logs") / "worker.log")
    yield pipeline
    close_pipeline(pipeline)


def scrape(url: str) -> dict[str, tuple[str, list[Sample]]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode()
    return {family.name: (family.type, family.samples)
            for family in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def looks_identifying(label: str, identities: set[str]) -> bool:
    try:
        ipaddress.ip_address(label)
        return True
    except ValueError:
        pass
    return label in identities or bool(re.search(r"acct-|key-|\d+\.\d+\.\d+\.\d+", label))


def test_metrics_count_the_stream_and_name_no_one(metrics_pipeline: Pipeline,
                                                  tmp_path: Path) -> None:
    pipeline = metrics_pipeline
    traffic = simulate(seed=31, start_ms=clock.now_ms() - 1_800_000, duration_s=1800,
                       benign_accounts=12, stuffing_attacks=1)
    produced = len(traffic.events) + len(NOT_JSON) + len(NO_TS)
    url = pipeline.worker.metrics_url
    shown = io.StringIO()
    progress = Progress(lambda: worker_offsets(pipeline.settings), lambda: alerts_written(url),
                        expected=produced, stream=shown, interval_s=0.0)
    pipeline.produce(traffic.events + NOT_JSON + NO_TS)
    pipeline.worker.wait_drained(timeout_s=300, progress=progress)
    assert pipeline.wait_for_alerts(1, **{"misuse.entity.id": traffic.labels[0].entity_id})
    progress.finish()

    families = scrape(url)
    assert set(FAMILIES) <= set(families)
    for name, kind in FAMILIES.items():
        assert families[name][0] == kind, name
    for name, (kind, samples) in families.items():
        assert name.startswith("misuse_"), name
        if kind == "counter":
            assert all(s.name.endswith("_total") for s in samples), name
        if kind == "histogram":
            assert name.endswith("_seconds"), name

    # Ready (the runner waited for it), and nothing crashed.
    assert value(families["misuse_worker_ready"][1], "misuse_worker_ready") == 1
    assert value(families["misuse_worker_crashes"][1], "misuse_worker_crashes_total") == 0
    ins = families["misuse_stage_events_in"][1]
    assert value(ins, "misuse_stage_events_in_total", stage="ingest") == produced
    dead = families["misuse_deadletters"][1]
    assert value(dead, "misuse_deadletters_total", stage="ingest",
                 reason="malformed_json") == len(NOT_JSON)
    assert value(dead, "misuse_deadletters_total", stage="ingest",
                 reason="schema") == len(NO_TS)
    assert value(dead, "misuse_deadletters_total") == len(NOT_JSON) + len(NO_TS)
    out = families["misuse_stage_events_out"][1]
    assert value(out, "misuse_stage_events_out_total", stage="ingest",
                 topic="misuse.events.by-network") > 0
    assert {s.labels["stage"] for s in ins} >= {"ingest", "embed_prompts", "index_documents"}
    durations = families["misuse_stage_batch_duration_seconds"][1]
    assert value(durations, "misuse_stage_batch_duration_seconds_count", stage="ingest") > 0
    latency = families["misuse_event_to_alert_latency_seconds"][1]
    assert value(latency, "misuse_event_to_alert_latency_seconds_count") >= 1
    paths = families["misuse_embedding_path"][1]
    assert {s.labels["path"] for s in paths} <= {"exact", "near_duplicate", "static",
                                                 "full_model"}
    assert value(paths, "misuse_embedding_path_total") > 0
    # Measured every 5 s, one call into the consumer's thread that waits behind its fetches:
    # a worker that drained quickly may not have reported it yet.
    deadline = time.monotonic() + 30
    while not families["misuse_consumer_lag"][1] and time.monotonic() < deadline:
        time.sleep(1)
        families = scrape(url)
    lag = families["misuse_consumer_lag"][1]
    assert {"api.usage", "misuse.alerts"} <= {s.labels["topic"] for s in lag}

    identities = {str(e.get(field)) for e in traffic.events
                  for field in ("account_id", "api_key_id", "ip", "org_id") if e.get(field)}
    labels = {v for _, samples in families.values() for s in samples
              for k, v in s.labels.items() if k not in ("le",)}
    assert not [v for v in labels if looks_identifying(v, identities)]

    # The progress callback ran while the worker drained, and its last line is the stream.
    lines = shown.getvalue().splitlines()
    assert len(lines) >= 2
    assert lines[-1].startswith(f"  processed {produced:,} / {produced:,} events · lag 0 · "
                                "alerts ")
    (tmp_path / "progress.txt").write_text(shown.getvalue())
    (tmp_path / "scrape.txt").write_text(urllib.request.urlopen(url, timeout=10).read().decode())
