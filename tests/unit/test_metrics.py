"""The dead-letter reason classes (the `reason` label of misuse_deadletters_total), from the
reasons the decoders really give, and the registry's naming conventions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgpack
import pytest
from prometheus_client.parser import text_string_to_metric_families

from detectors.events import InvalidEventError, parse_usage_event
from streams.runtime import metrics
from streams.runtime.messages import MessageError, decode_batch
from streams.runtime.metrics import reason_class
from streams.runtime.sealing import DEVELOPMENT_RING as RING  # a local stack's keys

NOW_MS = 1_760_000_000_000
VALID = {"event_id": "e1", "ts": NOW_MS - 1000, "account_id": "acct-1", "api_key_id": "k1",
         "ip": "198.51.100.7", "endpoint": "/v1/chat/completions", "status": 200}


def usage_reason(raw: bytes) -> str:
    with pytest.raises(InvalidEventError) as caught:
        parse_usage_event(raw, NOW_MS)
    return str(caught.value)


def batch_reason(raw: bytes) -> str:
    with pytest.raises(MessageError) as caught:
        decode_batch(raw, RING)
    return str(caught.value)


@pytest.mark.parametrize(("raw", "expected"), [
    (b'{"event_id": "e1", ', "malformed_json"),
    (b"\xff\xfe not utf-8", "malformed_json"),
    (b"[1, 2, 3]", "malformed_json"),
    (json.dumps({k: v for k, v in VALID.items() if k != "ts"}).encode(), "schema"),
    (json.dumps({**VALID, "status": "ok"}).encode(), "schema"),
    (json.dumps({**VALID, "ip": "not-an-ip"}).encode(), "schema"),
    (json.dumps({**VALID, "ts": "yesterday"}).encode(), "schema"),
    (json.dumps({**VALID, "prompt": "x" * 70_000}).encode(), "too_large"),
])
def test_usage_event_reasons(raw: bytes, expected: str) -> None:
    assert reason_class(usage_reason(raw)) == expected


def test_batch_reasons() -> None:
    assert reason_class(batch_reason(b"\xc1 not msgpack")) == "malformed_batch"
    future = msgpack.packb({"v": 99, "type": "alert", "records": []})
    assert reason_class(batch_reason(future)) == "unknown_version"
    unsealed = msgpack.packb({"v": 1, "type": "prompt-vector", "records": []})
    assert reason_class(batch_reason(unsealed)) == "unverified_record"


@pytest.mark.parametrize(("reason", "expected"), [
    # score_risk raises this inside the driver, which wraps it: the specific class wins.
    ("stage score_risk failed on a feedback record: ValueError(\"unverified analyst decision: "
     "a 'clear' decision on this account in the name of 'mallory' was refused: unsigned\")",
     "unverified_decision"),
    ("delivery 3f2a to suspension failed: 503 after 6 attempts", "delivery_failed"),
    ("undeliverable: not a msgpack batch: ExtraData: unpack(b) received extra data",
     "malformed_batch"),
    ("undecodable batch: unverified document batch: its MAC does not verify under any "
     "internal key", "unverified_record"),
    ("elasticsearch refused the document: {\"type\": \"mapper_parsing_exception\"}",
     "rejected_document"),
    ("stage ingest failed on a event record: KeyError('x')", "stage_error"),
    ("something nobody foresaw", "other"),
])
def test_wrapped_reasons(reason: str, expected: str) -> None:
    assert reason_class(reason) == expected


def test_classes_are_bounded() -> None:
    """Whatever the text, the label is one of a few fixed words."""
    classes = {name for name, _ in metrics._REASON_CLASSES} | {"other"}
    for reason in ("", "acct-123 at 10.0.0.1 sent garbage", "x" * 10_000):
        assert reason_class(reason) in classes


def test_registry_names_follow_the_conventions() -> None:
    families = list(text_string_to_metric_families(
        metrics.generate_latest(metrics.REGISTRY).decode()))
    names = {family.name for family in families}
    assert names >= {"misuse_stage_events_in", "misuse_deadletters", "misuse_consumer_lag",
                     "misuse_event_to_alert_latency_seconds", "misuse_webhook_deliveries"}
    for family in families:
        assert re.fullmatch(r"misuse_[a-z_]+", family.name), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds"), family.name


def test_plan_kinds_have_paths() -> None:
    assert set(metrics.EMBEDDING_PATHS.values()) == {"exact", "near_duplicate", "static",
                                                     "full_model"}


def test_the_readme_table_names_what_the_registry_serves() -> None:
    """ops/prometheus/README.md is what the rules were written against."""
    readme = (Path(__file__).parents[2] / "ops" / "prometheus" / "README.md").read_text()
    table = readme.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(misuse_\w+)`", table, re.MULTILINE))
    served = {family.name + ("_total" if family.type == "counter" else "")
              for family in metrics.REGISTRY.collect()}
    assert documented == served
