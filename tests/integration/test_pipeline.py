"""Usage events in through the real Kafka, alerts out in the real Elasticsearch."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime

from streams.runtime import clock
from streams.tooling.simulation import TrafficSimulator, simulate

from .conftest import Pipeline


def stuffing_events(seed: int, attempts: int = 60) -> tuple[list[dict], str]:
    simulator = TrafficSimulator(seed, clock.now_ms() - 120_000)  # recent: see test_state
    events, labels = simulator.credential_stuffing(attempts=attempts, offset_ms=0)
    return events, labels[0].entity_id


def test_stuffing_among_benign_traffic_gives_one_alert_document(pipeline: Pipeline) -> None:
    traffic = simulate(seed=11, start_ms=clock.now_ms() - 1_800_000, duration_s=1800,
                       benign_accounts=40, stuffing_attacks=1)
    attacker = traffic.labels[0].entity_id
    pipeline.produce(traffic.events)
    pipeline.wait_drained()

    hits = pipeline.wait_for_alerts(1, **{"misuse.entity.id": attacker})
    assert len(hits) == 1, [(h["_id"], h["_source"]["misuse"]["incident_start"],
                             h["_source"]["misuse"]["evidence"]) for h in hits]
    hit = hits[0]
    source = hit["_source"]
    assert source["rule"]["id"] == "credential_stuffing.key_enumeration"
    assert source["source"]["ip"] == attacker
    assert source["event"]["id"] == hit["_id"]
    evidence = source["misuse"]["evidence"]["credential_stuffing"]
    assert evidence["distinct_failed_keys"] >= 20
    day = datetime.fromisoformat(source["misuse"]["incident_start"]).astimezone(UTC)
    assert hit["_index"] == pipeline.settings.index(f"alerts-{day:%Y.%m.%d}")
    # No benign account's address was alerted on.
    benign_ips = {e["ip"] for e in traffic.events if str(e.get("account_id", "")).startswith(
        "acct-0")}
    all_entities = {h["_source"]["misuse"]["entity"]["id"] for h in pipeline.alerts()}
    assert not all_entities & benign_ips


def malformed_events(rng: random.Random, now_ms: int) -> list[tuple[bytes, str]]:
    """A few hundred broken messages of every kind, each with the reason we expect."""
    def event(**changes: object) -> bytes:
        base = {"event_id": str(uuid.uuid4()), "ts": now_ms - 60_000,
                "account_id": f"acct-x-{uuid.uuid4().hex[:8]}",
                "api_key_id": "key-x", "ip": "192.0.2.1", "endpoint": "/v1/chat/completions",
                "status": 200}
        base.update(changes)
        return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()

    def unique() -> bytes:  # every message distinct, so a missing one can be named
        return uuid.uuid4().hex.encode()

    kinds = [
        (lambda: b"{not json " + unique(), "not valid JSON"),
        (lambda: b'"just a string ' + unique() + b'"', "must be a JSON object"),
        (lambda: b'[1, "' + unique() + b'"]', "must be a JSON object"),
        (lambda: b'{"prompt": "\xc3\x28 ' + unique() + b'"}', "not valid UTF-8"),
        (lambda: event(status="200"), "'status' must be an integer"),
        (lambda: event(event_id=...), "missing required field 'event_id'"),
        (lambda: event(ip=...), "missing required field 'ip'"),
        (lambda: event(ip="not-an-ip"), "not an IPv4 or IPv6"),
        (lambda: event(prompt="y" * 70_000), "byte limit"),
        (lambda: event(ts=1), "before 2015"),
        (lambda: event(ts="3026-01-01T00:00:00Z"), "in the future"),
        (lambda: event(prompt_tokens=-1), "outside"),
    ]
    out = []
    for i in range(300):
        make, reason = kinds[i % len(kinds)]
        out.append((make(), reason))
    rng.shuffle(out)
    return out


def test_malformed_events_go_to_the_dead_letter_topic_and_valid_ones_still_alert(
        pipeline: Pipeline) -> None:
    rng = random.Random(5)
    attack, attacker = stuffing_events(seed=23)
    bad = malformed_events(rng, clock.now_ms())
    mixed: list = list(attack)
    for raw, _ in bad:
        mixed.insert(rng.randrange(len(mixed) + 1), raw)
    mark = pipeline.dead_letter_mark()  # the session's pipeline: other files' letters before
    pipeline.produce(mixed)
    pipeline.wait_drained()

    letters = pipeline.dead_letters(expected=len(bad), since=mark)
    by_value: dict[bytes, str] = {}
    for record in letters:
        headers = dict(record.headers)
        assert headers["misuse.source.topic"] == pipeline.settings.topic("api.usage").encode()
        assert int(headers["misuse.source.offset"]) >= 0
        by_value[record.value] = headers["misuse.reason"].decode()
    missing = [(raw[:100], reason) for raw, reason in bad if raw not in by_value]
    assert not missing, missing
    assert len(letters) == len(bad)
    for raw, reason in bad:
        assert reason in by_value[raw], (reason, by_value[raw])
    assert len(pipeline.wait_for_alerts(1, **{"misuse.entity.id": attacker})) == 1


def test_replaying_the_same_events_gives_the_same_documents(pipeline: Pipeline) -> None:
    attack, attacker = stuffing_events(seed=31, attempts=90)
    pipeline.produce(attack)
    pipeline.wait_drained()
    first = pipeline.wait_for_alerts(1, **{"misuse.entity.id": attacker})
    assert len(first) == 1

    pipeline.produce(attack)
    pipeline.wait_drained()
    second = pipeline.alerts(**{"misuse.entity.id": attacker})
    assert [(h["_id"], h["_index"]) for h in second] == [(h["_id"], h["_index"]) for h in first]
    assert second[0]["_source"]["misuse"]["evidence"] == first[0]["_source"]["misuse"]["evidence"]


def test_setup_creates_every_changelog_and_keeps_dead_letters_for_a_set_time(
        pipeline: Pipeline) -> None:
    """Changelogs exist before any stage writes a table (else Faust stops the worker with
    PartitionsMismatch), compacted and partitioned like the topics their stages read."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    from streams.runtime.broker import connection_options
    from streams.stages import changelog_topics

    settings = pipeline.settings
    admin = KafkaAdminClient(**connection_options(settings))
    try:
        wanted = changelog_topics(settings)
        assert len(wanted) >= 8
        topics = {t["name"]: len(t["partitions"])
                  for t in admin.describe_topics(list(wanted))}
        assert topics == wanted
        dead_letters = settings.topic("misuse.deadletter")
        configs = admin.describe_configs([
            ConfigResource(ConfigResourceType.TOPIC, name)
            for name in (dead_letters, next(iter(wanted)))])["topic"]
        assert configs[next(iter(wanted))]["cleanup.policy"]["value"] == "compact"
        assert configs[dead_letters]["retention.ms"]["value"] == \
            str(settings.deadletter_retention_days * 86_400_000)
    finally:
        admin.close()
