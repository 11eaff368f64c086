"""Every stage of the worker, wired as in the worker (`streams.stages.STAGES`), with plain lists
of messages and state in dicts: no Kafka, no Elasticsearch, the real embedding model."""

from __future__ import annotations

import json
from collections import Counter

import msgpack
import numpy as np
import pytest

from detectors.policy import Policy
from detectors.risk import Signal
from streams.runtime import clock
from streams.runtime.driver import MemoryState, StageDriver
from streams.runtime.messages import (
    WIRE_VERSION,
    AlertRecord,
    DocumentRecord,
    EventRecord,
    PageRequest,
    PromptVector,
    Record,
    SignalRecord,
    encode_batch,
    vector_bytes,
)
from streams.runtime.outbox import Outbox
from streams.runtime.sealing import DEVELOPMENT_RING as RING  # a local stack's keys
from streams.stages import STAGES
from streams.stages.detect_campaigns import DetectCampaigns
from streams.stages.score_risk import RiskStage
from streams.tooling.inprocess import InProcessPipeline
from streams.tooling.simulation import TrafficSimulator, simulate
from tests.unit.test_campaign_tracker import (
    DIM,
    HOLD_DOWN,
    MINUTE,
    T0,
    Operation,
    strict_participation,
)

NOW_MS = clock.now_ms()


def lines(events: list[dict]) -> list[bytes]:
    return [json.dumps(e).encode() for e in events]


def alert_ids(records: list, rule_id: str) -> dict[str, set[str]]:
    """entity id -> the distinct alert ids of that rule (an alert re-sent keeps its id)."""
    out: dict[str, set[str]] = {}
    for record in records:
        if isinstance(record, AlertRecord) and record.alert.rule_id == rule_id:
            out.setdefault(record.alert.entity.id, set()).add(record.alert.alert_id)
    return out


@pytest.fixture(scope="module")
def mixed_traffic() -> tuple[InProcessPipeline, str]:
    traffic = simulate(11, NOW_MS - 1_800_000, duration_s=1800, benign_accounts=40,
                       stuffing_attacks=1)
    pipeline = InProcessPipeline(STAGES, Policy(), now_ms=lambda: NOW_MS)
    pipeline.run("api.usage", lines(traffic.events))
    return pipeline, traffic.labels[0].entity_id


def test_every_stage_runs_and_the_attacker_gets_one_alert(mixed_traffic) -> None:
    pipeline, attacker = mixed_traffic
    collected = pipeline.collected
    # (The risk stage has no signal here: stuffing names an address, not an account.)
    for stage in ("ingest", "detect_network_abuse", "embed_prompts", "detect_campaigns"):
        assert collected.processed[stage] > 0, stage
    alerts = collected.records["misuse.alerts"]
    stuffing = alert_ids(alerts, "credential_stuffing.key_enumeration")
    assert list(stuffing) == [attacker] and len(stuffing[attacker]) == 1
    # Nothing else is alerted on in benign traffic, and nothing was lost on the way.
    assert {r.alert.rule_id for r in alerts} == {"credential_stuffing.key_enumeration"}
    assert not collected.dead_letters
    # No benign account was flagged either.
    assert not [r for r in collected.records["misuse.documents"]
                if isinstance(r, DocumentRecord) and r.index == "accounts"]


def test_a_bad_message_or_record_between_stages_is_a_dead_letter_and_the_rest_goes_on() -> None:
    pipeline = InProcessPipeline(STAGES, Policy(), now_ms=lambda: NOW_MS)
    simulator = TrafficSimulator(5, NOW_MS - 600_000)
    events, _ = simulator.credential_stuffing(attempts=30, offset_ms=0)
    good = encode_batch(EventRecord.TYPE, [
        EventRecord.from_plain(e) for e in events if e["status"] == 401], RING)
    bad_record = msgpack.packb({"v": WIRE_VERSION, "type": EventRecord.TYPE,
                                "records": [{"event_id": "x", "ts": "soon"}]})
    collected = pipeline.run("misuse.events.by-network",
                             [b"\x00not msgpack", bad_record, b'{"v": 99}', good])
    reasons = [reason for _, reason in collected.dead_letters]
    assert len(reasons) == 3
    assert collected.processed["detect_network_abuse"] == sum(
        1 for e in events if e["status"] == 401)
    assert alert_ids(collected.records["misuse.alerts"], "credential_stuffing.key_enumeration")


def test_a_new_policy_retunes_a_stage_and_keeps_its_windows() -> None:
    strict = Policy.model_validate({"rules": {"credential_stuffing": {"min_distinct_keys": 500}}})
    pipeline = InProcessPipeline([s for s in STAGES if s.stage.name in (
        "ingest", "detect_network_abuse")], strict, now_ms=lambda: NOW_MS)
    events, labels = TrafficSimulator(6, NOW_MS - 600_000).credential_stuffing(
        attempts=60, offset_ms=0)
    pipeline.run("api.usage", lines(events[:40]))
    assert not pipeline.collected.records["misuse.alerts"]
    pipeline.policy = Policy()  # the default threshold: 20 distinct keys
    pipeline.run("api.usage", lines(events[40:]))
    alerts = alert_ids(pipeline.collected.records["misuse.alerts"],
                       "credential_stuffing.key_enumeration")
    # Fired on the 20 later attempts together with the 40 the window kept from before.
    assert list(alerts) == [labels[0].entity_id]


def test_a_new_risk_weight_applies_to_the_next_signal() -> None:
    def flagged(weight: float) -> Counter:
        policy = Policy.model_validate({"risk": {"weights": {"sybil": 0.1}}})
        state = MemoryState()
        driver = StageDriver(RiskStage(policy, state), Outbox(lambda _: 1, RING),
                             value=lambda m: m, policy=policy, state=state)
        retuned = Policy.model_validate({"risk": {"weights": {"sybil": weight}}})
        signal = Signal("acct-1", "sybil", "sybil.shared_client", 1.0, NOW_MS, "alert-1",
                        "shared client")
        result = driver.run([encode_batch(SignalRecord.TYPE, [SignalRecord(signal)], RING)],
                            NOW_MS, retuned)
        return Counter(e.topic for e in result.envelopes)

    assert flagged(0.1)["misuse.documents"] == 0  # too light to flag anyone
    assert flagged(1.0)["misuse.documents"] == 1  # the account is flagged: its document


def test_an_invalid_jailbreak_bank_on_reload_is_refused_and_the_bank_in_force_stays(
        mixed_traffic, tmp_path, caplog) -> None:
    import logging
    import os

    embedder = mixed_traffic[0].stage("embed_prompts").embedder  # type: ignore[attr-defined]
    shipped, banks = embedder.patterns_file, embedder.banks
    path = tmp_path / "patterns.yaml"
    path.write_text("patterns: [{id: broken, category: x}]")  # no text
    embedder.patterns_file = path
    try:
        with caplog.at_level(logging.ERROR, logger="streams.embedding.embedder"):
            assert embedder.reload_patterns() is False
            assert embedder.reload_patterns() is False  # not read again, not logged again
        assert embedder.banks is banks
        assert caplog.text.count("jailbreak_patterns_reload_refused") == 1
        assert "'text' must be a non-empty string" in caplog.text
        path.write_text(shipped.read_text())
        os.utime(path, (path.stat().st_mtime + 5,) * 2)
        assert embedder.reload_patterns() is True  # a fixed file is taken
    finally:
        embedder.patterns_file = shipped
        embedder.reload_patterns()


def test_nothing_leaves_ingest_unredacted() -> None:
    """The prompt, the user agent and unknown extra fields are redacted before any stage sends
    the event on."""
    pipeline = InProcessPipeline([s for s in STAGES if s.stage.name == "ingest"], Policy(),
                                 now_ms=lambda: NOW_MS)
    event = {"event_id": "e-redact", "ts": NOW_MS - 1000, "account_id": "acct-r1",
             "api_key_id": "key-r1", "ip": "203.0.113.9", "endpoint": "/v1/chat/completions",
             "status": 200, "prompt": "mail me at jane@example.org",
             "user_agent": "acme-bot/1.0 (ops: jane@example.org)",
             "customer": {"contact": "+1 415 555 0132", "notes": ["card 4111 1111 1111 1111"]}}
    collected = pipeline.run("api.usage", [json.dumps(event).encode()])
    sent = [r for topic in ("misuse.events.by-network", "misuse.prompts")
            for r in collected.records.get(topic, [])]
    assert len(sent) == 2 and not collected.dead_letters
    text = json.dumps([r.to_plain() for r in sent])
    for secret in ("jane@example.org", "555 0132", "4111 1111"):
        assert secret not in text


def test_the_campaign_stage_holds_points_pending_until_a_judging_round_has_sent_its_outcome(
        mixed_traffic) -> None:
    """`pending()` is what the worker serves as misuse_stage_pending_records and what a replay
    waits for besides lag: points whose offsets may be committed but that no round judged."""
    pipeline, _ = mixed_traffic
    # The pipeline ran until nothing was in flight, ticks included: nothing is pending.
    stage = pipeline.stage("detect_campaigns")
    assert pipeline.collected.processed["detect_campaigns"] > 0
    assert stage.pending() == 0  # type: ignore[attr-defined]
    fresh = DetectCampaigns(Policy(), MemoryState())
    vector = np.full(16, 0.25, dtype=np.float32)  # unit length; any dimension will do
    sent: list[tuple] = []
    for n in range(3):
        fresh.process(PromptVector(
            event_id=f"e{n}", ts_ms=NOW_MS + n, account_id=f"acct-{n}", api_key_id=f"key-{n}",
            ip="203.0.113.7", user_agent="ua", sample="a claim", text_key=f"k{n}",
            space="full", vector=vector_bytes(vector),
            account_prompts=1, key_first_seen_ms=NOW_MS), lambda *m: sent.append(m), NOW_MS)
    assert fresh.pending() == 3
    fresh.after(lambda *m: sent.append(m), NOW_MS + 2)  # the batch's end: held for the round
    fresh.after(lambda *m: sent.append(m), NOW_MS + 2)  # a tick: input since the last one
    assert fresh.pending() == 3
    fresh.after(lambda *m: sent.append(m), NOW_MS + 2)  # a whole tick without input: judged
    assert fresh.pending() == 0


def test_the_stage_resolves_the_page_of_a_campaign_only_once_it_is_withdrawn() -> None:
    """What the campaign stage sends: through a dip shorter than the hold-down, neither a
    withdrawn status nor a page resolve; for one that stays below the bar through it, one of
    each."""
    op = Operation()
    stage = DetectCampaigns(strict_participation(), MemoryState())
    stage.tracker = op.tracker
    sent: list[Record] = []

    def judged() -> None:  # the input goes quiet: two ticks
        for _ in range(2):
            stage.after(lambda _topic, _key, record: sent.append(record), op.tracker.latest_ms)

    def resolves() -> list[str]:
        return [r.group for r in sent if isinstance(r, PageRequest) and r.action == "resolve"]

    def statuses() -> list[str]:
        return [r.source["misuse"]["status"] for r in sent
                if isinstance(r, DocumentRecord) and r.index == "campaigns"]

    op.post(90, elsewhere=20)
    judged()
    for minute in range(91, 100):
        op.tick(minute)
        judged()
    op.post(100, elsewhere=0)
    judged()
    assert resolves() == [] and statuses() == ["active"]  # only its update
    op.post(101, elsewhere=40)
    for minute in range(102, 102 + 3 * int(HOLD_DOWN)):
        op.tick(minute)
        judged()
    assert resolves() == [f"campaign:{op.campaign}"]
    assert statuses() == ["active", "withdrawn"]


def test_what_a_restart_rebuilt_is_reported_before_what_is_judged_after_it() -> None:
    """The rebuild's findings describe the campaign as it was before the restart: reported
    after a newer judging of the same campaign, they put its document back to its old size,
    where it stayed until the campaign changed again."""
    op = Operation()
    op.post(90, elsewhere=0)
    stale = [f for f in op.tracker.judge_all() if f.campaign_id == op.campaign]
    op.post(100, elsewhere=0)  # after the restart: not judged yet
    stage = DetectCampaigns(strict_participation(), MemoryState())
    stage.tracker, stage.restored_findings = op.tracker, stale
    sent: list[Record] = []

    def emit(_topic: str, _key: str, record: Record) -> None:
        sent.append(record)

    later = T0 + 120 * MINUTE  # past the judging lag: the window is judged first
    stage.process(PromptVector(
        event_id="later", ts_ms=later, account_id="bystander", api_key_id="key-bystander",
        ip="10.9.9.9", user_agent="", sample="unrelated", text_key="unrelated later",
        space="full", vector=vector_bytes(np.eye(1, DIM, 0, dtype=np.float32)[0]),
        account_prompts=1, key_first_seen_ms=T0), emit, later)
    stage.after(emit, later)
    sizes = [r.source["misuse"]["size"] for r in sent if isinstance(r, DocumentRecord)
             and r.index == "campaigns" and r.id == op.campaign]
    assert len(sizes) == 2 and sizes[-1] > sizes[0] == stale[0].size
