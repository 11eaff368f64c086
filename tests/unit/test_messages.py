"""The wire between stages: typed batches that round-trip, refuse what they cannot read with a
reason, and land on the partition a keyed send would have chosen."""

import msgpack
import numpy as np
import pytest
from aiokafka.partitioner import DefaultPartitioner

from detectors.events import UsageEvent
from streams.runtime.messages import (
    EventRecord,
    MessageError,
    PromptVector,
    decode_batch,
    encode_batch,
    records_of,
    vector_bytes,
    vector_from,
)
from streams.runtime.outbox import Outbox, partition_for
from streams.runtime.sealing import DEVELOPMENT_RING as RING  # a local stack's keys

EVENT = UsageEvent(event_id="ev-1", ts_ms=1_790_000_000_000, account_id="acct-1",
                   api_key_id="key-1", ip="198.51.100.7", endpoint="/v1/chat/completions",
                   status=200, prompt="hello there", extra={"max_tokens": 64})


def vector_record(n: int = 0) -> PromptVector:
    return PromptVector(f"ev-{n}", 1_790_000_000_000 + n, "acct-1", "key-1", "198.51.100.7",
                        "python-sdk/1.0", "sample", "text", "full",
                        vector_bytes(np.ones(384, dtype=np.float32)), 3, 1_789_000_000_000)


def test_records_round_trip_through_a_batch() -> None:
    vectors = encode_batch(PromptVector.TYPE, [vector_record(1), vector_record(2)], RING)
    assert records_of(decode_batch(vectors, RING), PromptVector) == [vector_record(1),
                                                                    vector_record(2)]
    events = encode_batch(EventRecord.TYPE, [EventRecord(EVENT)], RING)
    [event] = records_of(decode_batch(events, RING), EventRecord)
    assert event.event == EVENT


@pytest.mark.parametrize(("raw", "reason"), [
    (None, "empty message"),
    (b"\xc1", "not a msgpack batch"),
    (b'{"v": 1}', "not a msgpack batch"),
    (msgpack.packb([1, 2]), "not a map"),
    (msgpack.packb({"v": 2, "type": "prompt-vector", "records": []}), "unknown wire version"),
    (msgpack.packb({"v": 1, "type": 7, "records": []}), "str type"),
    (msgpack.packb({"v": 1, "type": "x", "records": [1]}), "record maps"),
])
def test_an_unreadable_batch_is_refused_with_its_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        decode_batch(raw, RING)


def test_a_prompt_vector_written_under_its_old_field_names_is_still_read() -> None:
    """The vectors a restart reads back may have been written before `ts` and
    `key_first_seen` became `ts_ms` and `key_first_seen_ms`; a record naming both is refused."""
    plain = vector_record(5).to_plain()
    old = {{"ts_ms": "ts", "key_first_seen_ms": "key_first_seen"}.get(k, k): v
           for k, v in plain.items()}
    assert "ts" in old and "ts_ms" not in old
    [read] = records_of(decode_batch(batch_of("prompt-vector", old), RING), PromptVector)
    assert read == vector_record(5)
    for both in (plain | {"ts": plain["ts_ms"]}, {"ts": plain["ts_ms"]} | plain):
        with pytest.raises(MessageError, match="ts_ms given under both its names"):
            records_of(decode_batch(batch_of("prompt-vector", both), RING), PromptVector)


def test_an_action_request_written_as_a_map_before_it_had_fields_is_still_read() -> None:
    """Requests a worker wrote before ActionRequest had fields: the status change's whole map,
    `by` for the analyst. They are read (the approval queue keeps such maps for days), to the
    same request as one written now."""
    from streams.runtime.messages import ActionRequest
    written_before = {"request": {
        "account_id": "acct-1", "status": "suspended", "previous": "flagged",
        "ts_ms": 1_790_000_000_000, "score": 0.91, "request_suspension": True,
        "reasons": ["two detectors"], "detectors": ["jailbreak"], "alert_ids": ["a1"],
        "evidence_since_ms": None, "set_by": "worker", "action": "suspend",
        "automated": True, "dry_run": False}}
    [read] = records_of(decode_batch(batch_of("action-request", written_before), RING),
                        ActionRequest)
    assert read == ActionRequest(
        account_id="acct-1", action="suspend", ts_ms=1_790_000_000_000, automated=True,
        dry_run=False, reasons=("two detectors",), alert_ids=("a1",), detectors=("jailbreak",),
        score=0.91, status="suspended", previous="flagged")
    assert not read.dry
    assert ActionRequest.from_map({"account_id": "acct-1", "action": "unsuspend",
                                   "ts_ms": 1_790_000_000_000, "by": "alice"}).analyst == "alice"
    [again] = records_of(decode_batch(encode_batch(ActionRequest.TYPE, [read], RING), RING),
                         ActionRequest)
    assert again == read


def test_a_record_that_does_not_fit_its_type_is_refused() -> None:
    plain = vector_record().to_plain()
    wrong_type = decode_batch(encode_batch(PromptVector.TYPE, [vector_record()], RING), RING)
    with pytest.raises(MessageError, match="expected usage-event"):
        records_of(wrong_type, EventRecord)
    extra = batch_of("prompt-vector", plain | {"x": 1})
    with pytest.raises(MessageError, match="unknown field"):
        records_of(decode_batch(extra, RING), PromptVector)
    short = batch_of("prompt-vector", {k: v for k, v in plain.items() if k != "account_id"})
    with pytest.raises(MessageError, match="account_id"):
        records_of(decode_batch(short, RING), PromptVector)
    bad_event = batch_of("usage-event", EVENT.to_dict() | {"status": "two hundred"})
    with pytest.raises(MessageError, match="status"):
        records_of(decode_batch(bad_event, RING), EventRecord)


def test_vectors_travel_as_float16_and_come_back_unit_length() -> None:
    vector = np.arange(1, 385, dtype=np.float32)
    back = vector_from(vector_bytes(vector))
    assert back.dtype == np.float32 and abs(float(np.linalg.norm(back)) - 1.0) < 1e-3
    assert float(back @ (vector / np.linalg.norm(vector))) > 0.999
    with pytest.raises(MessageError):
        vector_from(b"\x00\x7c" * 4)  # float16 infinity


def test_records_go_to_the_partition_a_keyed_send_would_choose() -> None:
    partitioner = DefaultPartitioner()
    partitions = list(range(6))
    for key in (b"acct-1", b"acct-2", b"198.51.100.0/24", b"full:3", b"\xff\x00"):
        assert partition_for(key, 6) == partitioner(key, partitions, partitions)


def test_the_outbox_sends_one_message_per_partition_and_splits_big_batches() -> None:
    outbox = Outbox(lambda topic: 3, RING, max_records=50)
    for n in range(120):
        outbox.put("vectors", f"full:{n % 4}", vector_record(n))
    assert len(outbox) == 120
    envelopes = list(outbox.drain())
    assert len(outbox) == 0
    assert sum(e.records for e in envelopes) == 120
    assert all(e.records <= 50 for e in envelopes)
    seen = {}
    for envelope in envelopes:
        for record in records_of(decode_batch(envelope.value, RING), PromptVector):
            key = f"full:{int(record.event_id.split('-')[1]) % 4}".encode()
            assert envelope.partition == partition_for(key, 3)
            seen[record.event_id] = envelope.partition
    assert len(seen) == 120
    # A batch over the byte limit is split, never sent too big.
    small = Outbox(lambda topic: 1, RING, max_bytes=4_000)
    for n in range(20):
        small.put("vectors", "k", vector_record(n))
    split = list(small.drain())
    assert len(split) > 1 and all(len(e.value) <= 4_000 for e in split)
    assert sum(e.records for e in split) == 20


# Records are held to their ranges when read, so an absurd value is one dead letter instead of
# state that fails the stage's end-of-batch work on every restart (issue 23: a signal dated
# 10^17 ms crash-looped the risk stage).

FAR_FUTURE_SIGNAL = {"account_id": "acct-1", "detector": "sybil", "rule_id": "sybil.x",
                     "strength": 1.0, "ts_ms": 10**17, "alert_id": "a1", "reason": "why"}


def batch_of(record_type: str, *plains: dict) -> bytes:
    """A batch as the worker would write it (sealed), values unchecked."""
    return RING.seal(msgpack.packb({"v": 1, "type": record_type, "records": list(plains)}))


@pytest.mark.parametrize(("record_type", "plain", "reason"), [
    ("signal", FAR_FUTURE_SIGNAL, "ts_ms = 100000000000000000 ms is outside 2015..2100"),
    ("signal", FAR_FUTURE_SIGNAL | {"ts_ms": 1_000}, "outside 2015..2100"),
    ("signal", FAR_FUTURE_SIGNAL | {"ts_ms": float("inf")}, "OverflowError"),
    ("signal", FAR_FUTURE_SIGNAL | {"ts_ms": 1_790_000_000_000, "strength": float("nan")},
     "strength"),
    ("signal", FAR_FUTURE_SIGNAL | {"ts_ms": 1_790_000_000_000, "account_id": " "},
     "account_id must be a non-empty string"),
    ("usage-event", EVENT.to_dict() | {"ts": 10**17}, "ts = 100000000000000000 ms is outside"),
    ("usage-event", EVENT.to_dict() | {"account_id": ""}, "account_id"),
    ("prompt-vector", vector_record().to_plain() | {"ts_ms": 10**17}, "ts_ms = .* is outside"),
    ("prompt-vector", vector_record().to_plain() | {"ts_ms": "soon"}, "ts_ms must be epoch millis"),
    ("prompt-vector", vector_record().to_plain() | {"event_id": ""}, "event_id"),
    ("prompt-vector", vector_record().to_plain() | {"account_prompts": -1}, "not a count"),
    ("page-request", {"action": "trigger", "group": "g", "ts_ms": -5}, "outside"),
    ("feedback", {"account_id": "acct-1", "decision": "cleared", "analyst": "alice",
                  "ts_ms": 1_790_000_000_000, "until_ms": 10**17}, "until_ms"),
    ("action-request", {"request": {"account_id": "acct-1", "action": "suspend",
                                    "ts_ms": 10**17}}, "request.ts_ms"),
    ("action-request", {"request": {"account_id": "acct-1", "action": "suspend",
                                    "ts_ms": 1_790_000_000_000, "reasons": "one"}},
     "request.reasons must be a list of strings"),
    ("action-request", {"request": {"account_id": "acct-1", "action": "suspend",
                                    "ts_ms": 1_790_000_000_000, "sudo": True}}, "request.sudo"),
    ("action-request", {"request": [1, 2]}, "a map of one field"),
    ("page-request", {"action": "trigger", "group": "g", "ts_ms": 1_790_000_000_000,
                      "alert": {"rule_id": "x"}}, "page-request"),
    ("jailbreak-match", {"event": {"event_id": "e"}, "similarity": 0.9, "pattern_id": "p",
                         "pattern_category": "c", "pattern_text": "t"}, "usage-event"),
    ("document", {"index": "accounts", "id": "acct-1", "source": {"score": float("inf")}},
     "non-finite"),
    ("delivery", {"id": "", "receiver": "suspension", "body": {}}, "id must be"),
])
def test_a_record_out_of_its_range_is_refused_when_read(record_type: str, plain: dict,
                                                       reason: str) -> None:
    from streams.runtime.messages import records_in
    with pytest.raises(MessageError, match=reason):
        records_in(batch_of(record_type, plain), RING)


def test_a_signal_dated_10_17_ms_is_a_dead_letter_and_the_risk_stage_goes_on() -> None:
    from detectors.policy import Policy
    from detectors.risk import Signal
    from streams.runtime.driver import MemoryState, StageDriver
    from streams.runtime.messages import SignalRecord
    from streams.stages.score_risk import RiskStage

    now_ms = 1_790_000_000_000
    state = MemoryState()
    driver = StageDriver(RiskStage(Policy(), state), Outbox(lambda _: 1, RING),
                         value=lambda m: m, policy=Policy(), state=state)
    good = SignalRecord(Signal("acct-2", "sybil", "sybil.x", 1.0, now_ms, "a2", "why"))
    poison = batch_of("signal", FAR_FUTURE_SIGNAL)
    result = driver.run([poison, encode_batch(SignalRecord.TYPE, [good], RING)], now_ms)
    [dead] = result.dead_letters
    assert dead.message == poison and "outside 2015..2100" in dead.reason
    assert result.envelopes  # the good signal was scored and sent on
    # The next batch, and the housekeeping after it, run as if the poison had never come.
    driver.run([encode_batch(SignalRecord.TYPE, [good], RING)], now_ms + 60_000)
