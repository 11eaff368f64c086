"""The worker's own records are sealed with its key: what it did not seal (unsigned, signed with
another key, tampered, moved to another state key) is refused, keys rotate, and without a key
a local stack uses the development key while a secured one refuses to start."""

import pytest
from pydantic import SecretStr

from detectors.policy import Policy
from detectors.risk import Signal
from detectors.state_codec import encode_state
from streams.runtime.driver import MemoryState, StageDriver
from streams.runtime.messages import (
    RECORD_TYPES,
    UNSEALED_TYPES,
    AlertRecord,
    FeedbackRecord,
    SignalRecord,
    UnverifiedRecordError,
    decode_batch,
    encode_batch,
    feedback_batch,
    records_in,
)
from streams.runtime.outbox import Outbox
from streams.runtime.sealing import (
    DEVELOPMENT_RING,
    FORGED_RECORD_RULE,
    HEADER_BYTES,
    InternalKeyMissingError,
    KeyRing,
    UnsealedError,
    require_key,
)
from streams.runtime.state import TableState
from streams.settings import Settings
from streams.stages.score_risk import RiskStage
from streams.tooling.doctor import internal_key_row
from tests.unit.test_state import FakeTable, unreadable_count

OLD, NEW = SecretStr("old-internal-key-0123456789"), SecretStr("new-internal-key-9876543210")
NOW_MS = 1_790_000_000_000
SIGNAL = SignalRecord(Signal("acct-1", "sybil", "sybil.x", 1.0, NOW_MS, "a1", "why"))


def test_a_sealed_value_opens_and_a_tampered_byte_is_refused() -> None:
    ring = KeyRing((NEW,))
    sealed = ring.seal(b"payload", b"ctx")
    assert ring.open(sealed, b"ctx") == b"payload"
    for at in range(len(sealed)):  # every byte: the magic, the MAC and the payload
        tampered = bytearray(sealed)
        tampered[at] ^= 0x01
        with pytest.raises(UnsealedError):
            ring.open(bytes(tampered), b"ctx")
    with pytest.raises(UnsealedError, match="does not verify"):
        ring.open(sealed, b"other context")
    with pytest.raises(UnsealedError, match="no MAC"):
        ring.open(b"payload")


def test_rotation_the_first_key_seals_and_every_listed_key_opens() -> None:
    before, during, after = KeyRing((OLD,)), KeyRing((NEW, OLD)), KeyRing((NEW,))
    assert during.open(before.seal(b"x")) == b"x"  # written before the rotation
    assert after.open(during.seal(b"x")) == b"x"  # written during it: sealed with NEW
    with pytest.raises(UnsealedError):
        before.open(during.seal(b"x"))
    with pytest.raises(UnsealedError):
        after.open(before.seal(b"x"))  # the old key, once retired, opens nothing


def test_every_batch_travels_sealed_and_only_analysts_decisions_travel_as_they_are() -> None:
    ring = KeyRing((NEW,))
    assert records_in(encode_batch(SignalRecord.TYPE, [SIGNAL], ring), ring) == [SIGNAL]
    for record_type in RECORD_TYPES.keys() - UNSEALED_TYPES:
        empty = encode_batch(record_type, [], ring)
        unsigned = empty[HEADER_BYTES:]  # the bare msgpack, as the worker wrote it before
        wrong = encode_batch(record_type, [], KeyRing((OLD,)))
        for forged, why in ((unsigned, "no MAC"), (wrong, "does not verify")):
            with pytest.raises(UnverifiedRecordError, match=why) as refused:
                decode_batch(forged, ring)
            assert refused.value.record_type == record_type
    assert {FeedbackRecord.TYPE} == UNSEALED_TYPES
    decision = FeedbackRecord("acct-1", "cleared", "alice", NOW_MS, signature="by alice")
    assert records_in(feedback_batch([decision]), ring) == [decision]
    with pytest.raises(UnverifiedRecordError, match="does not verify"):  # sealed: ours or none
        decode_batch(encode_batch(FeedbackRecord.TYPE, [decision], KeyRing((OLD,))), ring)


def test_a_forged_signal_batch_is_a_dead_letter_with_a_security_alert_and_the_stage_goes_on(
) -> None:
    ring, state = KeyRing((NEW,)), MemoryState()
    driver = StageDriver(RiskStage(Policy(), state), Outbox(lambda _: 1, ring),
                         value=lambda m: m, policy=Policy(), state=state,
                         source=lambda m: "misuse.signals")
    forged = encode_batch(SignalRecord.TYPE, [SIGNAL], DEVELOPMENT_RING)  # not our key
    result = driver.run([forged, encode_batch(SignalRecord.TYPE, [SIGNAL], ring)], NOW_MS)
    [dead] = result.dead_letters
    assert dead.message == forged and "unverified signal batch" in dead.reason
    alerts = [r.alert for e in result.envelopes if e.topic == "misuse.alerts"
              for r in records_in(e.value, ring) if isinstance(r, AlertRecord)]
    forged_alerts = [a for a in alerts if a.rule_id == FORGED_RECORD_RULE]
    assert len(forged_alerts) == 1 and forged_alerts[0].severity == "high"
    assert "misuse.signals" in forged_alerts[0].reasons[0]
    assert "acct-1" in state.tables["state-risk"]  # the genuine signal was scored


def test_a_state_value_not_sealed_for_its_table_and_key_is_skipped_and_counted() -> None:
    ring = KeyRing((NEW,))
    genuine = ring.seal(encode_state("allowlisted"), f"{FakeTable.name}\0acct-1".encode())
    table = FakeTable(**{"acct-1": genuine, "acct-2": genuine,  # copied to another account
                         "acct-3": encode_state("allowlisted")})  # unsigned
    state = TableState(table, ring)  # type: ignore[arg-type]
    before = unreadable_count()
    assert state.get("acct-1") == "allowlisted"
    assert state.get("acct-2") is None and state.get("acct-3") is None
    assert list(state) == ["acct-1"]
    assert unreadable_count() == before + 2
    assert sorted(key for key, _ in state.unverified) == ["acct-2", "acct-3"]


def test_without_a_key_a_local_stack_uses_the_development_key_and_a_secured_one_refuses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISUSE_INTERNAL_KEY", raising=False)
    local = Settings(_env_file=None)  # type: ignore[call-arg]
    assert local.internal_keys is DEVELOPMENT_RING
    require_key(local.internal_key, "PLAINTEXT")
    row = internal_key_row(local)
    assert row.ok and row.warning and "development key" in row.detail
    for keys in ([], [DEVELOPMENT_RING.keys[0]]):
        with pytest.raises(InternalKeyMissingError, match="MISUSE_INTERNAL_KEY"):
            require_key(keys, "SASL_SSL")

    monkeypatch.setenv("MISUSE_INTERNAL_KEY", '["new-internal-key-9876543210", "old"]')
    rotating = Settings(_env_file=None)  # type: ignore[call-arg]
    assert rotating.internal_keys.keys[0].get_secret_value() == NEW.get_secret_value()
    require_key(rotating.internal_key, "SASL_SSL")
    row = internal_key_row(rotating)
    assert row.ok and not row.warning
    assert "9876543210" not in repr(rotating) + row.detail  # never shown

    monkeypatch.setenv("MISUSE_INTERNAL_KEY", "one-key")
    assert len(Settings(_env_file=None).internal_key) == 1  # type: ignore[call-arg]
    monkeypatch.setenv("MISUSE_INTERNAL_KEY", "")
    with pytest.raises(ValueError, match="empty key"):
        Settings(_env_file=None)  # type: ignore[call-arg]
