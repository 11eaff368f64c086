"""A stage's aligned input in the worker (`AlignedInput`), on Faust's own app and messages with
no broker: what it holds goes through once the watermark passes it or the input stalls, and
is acknowledged then. The consumer's answers (assignment, partition ends) are set by hand."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from faust.types import TP

from streams.runtime.driver import Prepared
from streams.runtime.faust_wall import App
from streams.runtime.stage_agent import AlignedInput
from tests.unit.faust_app import TOPIC, TP0, delivered, wall_app

TP1 = TP(TOPIC, 1)


@dataclass(frozen=True)
class Record:
    event_id: str
    ts_ms: int


@pytest.fixture
def app(tmp_path: Path) -> App:
    """Partition 0 has 10 records, partition 1 has 2,580, all of them committed already."""
    app = wall_app(tmp_path)
    ends = {TP0: 10, TP1: 2580}
    app.assigned_partitions = lambda: set(ends)  # type: ignore[method-assign]
    app.highwater = ends.__getitem__  # type: ignore[method-assign]
    return app


def read(app: App, aligned: AlignedInput, offsets: range) -> Prepared:
    """Partition 0's records at `offsets` read as one batch; what may be processed now."""
    events = delivered(app, offsets)
    prepared = Prepared(messages=[(event, [(Record(f"e{o}", 1_000 * o), None)])
                                  for o, event in zip(offsets, events, strict=True)])
    for event in events:
        event.ack()  # the batch's end (Stream.take_events): the held keep their reference
    return aligned.order(events, prepared)


def test_a_start_learnt_after_the_first_records_lets_them_go(app: App) -> None:
    """The worker's first records come before its seek to the committed offsets: partition 1,
    read to its end by the worker before, first looks behind (its start unknown), and must
    stop holding the others back once the seek tells where it starts."""
    aligned = AlignedInput(app, "test", {TOPIC}, max_skew_seconds=5, max_hold_seconds=60,
                           idle_seconds=0)
    assert read(app, aligned, range(0, 10)).messages == []  # held: partition 1 unknown
    app.start_offsets.update({TP0: 0, TP1: 2580})  # the seek
    released = aligned.order([], Prepared())
    assert [record.event_id for _, [(record, _)] in released.messages] == \
        [f"e{o}" for o in range(10)]
    aligned.acknowledge(released, read_input=False)
    assert sorted(app.consumer._acked[TP0]) == list(range(10))


def test_the_release_timers_turns_do_not_hide_a_stall(app: App) -> None:
    """Partition 1 never delivers (its start says 2,500 records are left): what partition 0
    brought goes once the input has delivered nothing for `max_hold_seconds`, although the
    release timer turns to the stage every moment meanwhile."""
    app.start_offsets.update({TP0: 0, TP1: 80})
    aligned = AlignedInput(app, "test", {TOPIC}, max_skew_seconds=5, max_hold_seconds=0.2,
                           idle_seconds=0)
    held = read(app, aligned, range(0, 10))
    aligned.acknowledge(held, read_input=True)
    assert held.messages == []
    released = Prepared()
    deadline = time.monotonic() + 5.0
    while not released.messages and time.monotonic() < deadline:
        time.sleep(0.02)
        released = aligned.order([], Prepared())  # the release timer's turn
        aligned.acknowledge(released, read_input=False)
    assert len(released.messages) == 10
    assert sorted(app.consumer._acked[TP0]) == list(range(10))
