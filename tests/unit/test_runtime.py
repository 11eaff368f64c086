"""The loop's contract, with plain lists of messages: decode, process record by record, dead-
letter what one record breaks, raise what no record explains, send one batch per partition."""

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from detectors.policy import Policy
from streams.runtime.driver import Emit, MemoryState, Stage, StageDriver
from streams.runtime.messages import PlainRecord, decode_batch, encode_batch, records_of
from streams.runtime.outbox import Outbox
from streams.runtime.sealing import DEVELOPMENT_RING as RING  # a local stack's keys


@dataclass(frozen=True, slots=True)
class Number(PlainRecord):
    TYPE: ClassVar[str] = "number"
    key: str
    value: int
    ts_ms: int = 0


class Doubler(Stage):
    """Emits each number doubled; 13 is bad input, -1 is a broken disk."""

    name = "doubler"
    reads = (Number,)

    def __init__(self) -> None:
        self.factor = 2
        self.seen: list[int] = []
        self.prepared_batches = 0

    def prepare(self, records: Any) -> Any:
        self.prepared_batches += 1
        if any(r.value == 7 for r in records) and len(records) > 1:
            raise ValueError("7 spoils a batch, not a record alone")
        return records

    def process(self, item: Any, emit: Emit, now_ms: int) -> None:
        if item.value == 13:
            raise ValueError("unlucky")
        if item.value == -1:
            raise OSError("disk gone")
        self.seen.append(item.value)
        emit("out", item.key, Number(item.key, item.value * self.factor, item.ts_ms))

    def reconfigure(self, policy: Policy) -> None:
        self.factor = 3


class CountingState(MemoryState):
    def __init__(self) -> None:
        super().__init__()
        self.flushed = 0

    def flush(self) -> None:
        self.flushed += 1


def message(*numbers: int) -> bytes:
    return encode_batch(Number.TYPE, [Number(f"k{n % 3}", n, 1000 + n) for n in numbers], RING)


def driver(stage: Doubler, state: MemoryState | None = None) -> StageDriver[bytes]:
    return StageDriver(stage, Outbox(lambda topic: 2, RING), value=lambda m: m,
                       state=state or MemoryState())


def outputs(result: Any) -> list[int]:
    return sorted(r.value for e in result.envelopes
                  for r in records_of(decode_batch(e.value, RING), Number))


def test_records_are_processed_and_sent_as_one_batch_per_partition() -> None:
    state = CountingState()
    result = driver(Doubler(), state).run([message(1, 2, 3), message(4, 5)], now_ms=0)
    assert outputs(result) == [2, 4, 6, 8, 10]
    assert len(result.envelopes) <= 2 and result.records == 5 and not result.dead_letters
    assert state.flushed == 1


def test_the_batch_step_runs_once_over_every_message_of_the_batch() -> None:
    """One call of the model for the batch, not one per message."""
    stage = Doubler()
    result = driver(stage).run([message(1, 2), message(3), message(4, 5)], now_ms=0)
    assert outputs(result) == [2, 4, 6, 8, 10] and stage.prepared_batches == 1


def test_an_unreadable_message_and_a_bad_record_are_dead_letters_the_rest_goes_on() -> None:
    stage = Doubler()
    result = driver(stage).run([b"not msgpack", message(1, 13, 2)], now_ms=0)
    assert outputs(result) == [2, 4]
    reasons = [d.reason for d in result.dead_letters]
    assert len(reasons) == 2
    assert "not a msgpack batch" in reasons[0]
    assert "stage doubler failed on a number record" in reasons[1] and "unlucky" in reasons[1]


def test_a_batch_step_that_fails_is_retried_record_by_record() -> None:
    stage = Doubler()
    result = driver(stage).run([message(6, 7, 8)], now_ms=0)
    assert outputs(result) == [12, 14, 16]
    assert not result.dead_letters and stage.prepared_batches == 4


def test_an_error_no_record_explains_is_raised_so_the_batch_is_not_acknowledged() -> None:
    state = CountingState()
    with pytest.raises(OSError):
        driver(Doubler(), state).run([message(1, -1, 2)], now_ms=0)
    assert state.flushed == 0  # nothing written back for a batch that will be read again


def test_a_new_policy_reconfigures_the_stage_before_the_batch() -> None:
    stage = Doubler()
    run = driver(stage)
    first, second = Policy(), Policy.model_validate({"version": 1})
    assert outputs(run.run([message(1)], 0, policy=first)) == [2]
    assert outputs(run.run([message(1)], 0, policy=first)) == [2]
    assert outputs(run.run([message(1)], 0, policy=second)) == [3]


def test_a_record_of_a_type_the_stage_does_not_read_is_a_dead_letter() -> None:
    result = driver(Doubler()).run([encode_batch("other", [], RING)], now_ms=0)
    assert "does not read 'other'" in result.dead_letters[0].reason


class TimeOrderedDoubler(Doubler):
    in_event_time_order = True


def test_a_stage_that_asks_sees_its_batch_in_event_time_order_with_each_records_message(
) -> None:
    activated: list[bytes] = []
    late, early = message(9, 3), message(1, 5)  # event times 1009, 1003 / 1001, 1005
    stage = TimeOrderedDoubler()
    result = StageDriver(stage, Outbox(lambda topic: 2, RING), value=lambda m: m,
                         activate=activated.append).run([late, early], 0)
    assert stage.seen == [1, 3, 5, 9] and result.records == 4
    assert activated == [early, late, early, late]  # the current event follows the record


def test_other_stages_see_their_batch_in_the_order_read() -> None:
    stage = Doubler()
    driver(stage).run([message(9, 3), message(1, 5)], now_ms=0)
    assert stage.seen == [9, 3, 1, 5]
