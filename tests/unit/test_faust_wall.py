"""Contract tests of the wall around Faust (`streams/runtime/faust_wall.py`), with Faust's own app,
consumer, messages, events and tables, and no broker: each fails when the Faust behaviour its
hook relies on changes. The hooks that need a broker are tested against the real Kafka
(tests/integration/test_faust_wall.py). The pure helpers of the commit (`drop_done`, `hole`,
`tail_hole`) are tested here too."""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

import pytest
from aiokafka.structs import ConsumerRecord
from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP, EventT
from mode import Service

from streams.runtime.faust_wall import (
    TAIL_HOLE_SIGHTINGS,
    App,
    Consumer,
    ConsumerThread,
    CrashCounter,
    HeldMessages,
    ReadOffsets,
    Undecodable,
    Worker,
    drop_done,
    give_up_message,
    hold_message,
    hole,
    make_event_current,
    recovering_table,
    set_producer_buffer,
    tail_hole,
    write_table,
)
from streams.runtime.faust_wall import Table as WallTable
from streams.runtime.state import state_table
from streams.settings import REPO_ROOT
from tests.unit.faust_app import TP0, delivered, wall_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    yield wall_app(tmp_path)


def committable(app: App) -> dict[TP, int]:
    """What Faust's next commit of TP0 would commit (its `_commit_tps` commits this)."""
    return dict(app.consumer._filter_committable_offsets({TP0}))


def test_the_app_builds_the_walls_consumer_and_thread(app: App) -> None:
    """Guards App._new_transport, Transport.Consumer and Consumer._new_consumer_thread: Faust
    builds its consumer and the consumer's thread from them, or none of the hooks below
    would run in the worker."""
    assert type(app.consumer) is Consumer
    assert type(app.consumer._thread) is ConsumerThread
    assert type(app.consumer._read_offset) is ReadOffsets


@pytest.mark.parametrize("committed", [None, 10], ids=["before-first-commit", "committed"])
def test_a_commit_never_passes_a_held_record(app: App, committed: int | None) -> None:
    """Guards Consumer._new_offset (with hold_message): Faust's own rule commits past one
    unacknowledged offset at the head, and past any before a partition's first commit, so
    records held for event-time order and acknowledged out of order would be committed
    unprocessed. Relies on Faust asking `_new_offset` what to commit, on the bookkeeping in
    `_acked`, and on a message being acknowledged only when its last reference goes."""
    consumer = app.consumer
    start = 0 if committed is None else committed
    if committed is None:
        app.start_offsets[TP0] = start  # what seek_to_committed leaves: never committed
    else:
        consumer._committed_offset[TP0] = committed  # what Faust's perform_seek leaves
    events = delivered(app, range(start, start + 4))
    hold_message(events[0].message)
    hold_message(events[2].message)
    for event in events:
        event.ack()  # the batch's end (Stream.take_events)
    assert sorted(consumer._acked[TP0]) == [start + 1, start + 3]  # out of order
    assert committable(app) == {}
    events[2].ack()  # released: the head is still held
    assert committable(app) == {}
    events[0].ack()
    assert committable(app) == {TP0: start + 4}


def test_nothing_is_committed_before_the_seek_names_the_head(app: App) -> None:
    """Guards Consumer._new_offset: records come before the worker's seek to the committed
    offsets, and Faust's own rule, with no committed offset, commits any run of them, past a
    record held at the head."""
    events = delivered(app, range(5, 9))
    hold_message(events[0].message)
    for event in events:
        event.ack()
    assert committable(app) == {}
    app.start_offsets[TP0] = 5  # what seek_to_committed leaves
    assert committable(app) == {}  # the head is held
    events[0].ack()
    assert committable(app) == {TP0: 9}


def test_a_jump_in_the_offsets_delivered_is_committed_past_only_where_nothing_was_delivered(
        app: App) -> None:
    """Guards Consumer._add_gap and ReadOffsets: Faust's fetcher records a jump in the offsets
    it delivers as a gap a commit passes, the record being delivered included. After a seek
    moved the read offset back, records fetched before it are still handed out: the jump
    spans records delivered (here one held). A jump over offsets never delivered (a
    transaction marker) is still passed. Relies on the fetcher recording a jump through
    `_add_gap` and setting read offsets through `_read_offset`."""
    consumer = app.consumer
    fetcher = inspect.getsource(FaustConsumer._drain_messages)
    assert "self._add_gap(tp, r_offset + 1, offset)" in fetcher
    assert "self._read_offset.__setitem__" in fetcher
    app.start_offsets[TP0] = 0
    events = delivered(app, range(0, 6))
    consumer._read_offset[TP0] = 4  # the fetcher: 0-4 handed out, 5 next
    consumer._read_offset.update({TP0: 0})  # perform_seek: back to the committed offset
    asyncio.run(consumer._add_gap(TP0, 1, 5))  # the fetcher, handing out 5 after the seek
    hold_message(events[2].message)
    for event in events:
        event.ack()
    assert committable(app) == {TP0: 2}
    consumer._committed_offset[TP0] = 2  # what the commit leaves
    assert committable(app) == {}  # offset 2 is held
    events[2].ack()
    assert committable(app) == {TP0: 6}
    consumer._committed_offset[TP0] = 6
    consumer._read_offset[TP0] = 6
    [marker_before, after] = delivered(app, [6, 8])  # offset 7: a transaction marker
    asyncio.run(consumer._add_gap(TP0, 7, 8))
    marker_before.ack()
    assert committable(app) == {TP0: 7}
    consumer._committed_offset[TP0] = 7
    hold_message(after.message)
    after.ack()
    assert committable(app) == {}  # 7 may be passed, not 8: held
    after.ack()
    assert committable(app) == {TP0: 9}


def test_stale_acknowledgements_below_the_committed_start_are_dropped(app: App) -> None:
    """Guards drop_done in Consumer._new_offset: records fetched before the seek to the
    committed offsets and acknowledged before that offset was known would stand at the head
    of `_acked` for good, and the partition would never commit again. Relies on Faust's
    `ack` accepting any offset while `_committed_offset` is None (checked first)."""
    consumer = app.consumer
    for event in delivered(app, [940, 946]):
        event.ack()
    assert sorted(consumer._acked[TP0]) == [940, 946]  # Faust kept them
    consumer._committed_offset[TP0] = 947  # what Faust's perform_seek leaves
    for event in delivered(app, [947, 948]):
        event.ack()
    assert committable(app) == {TP0: 949}
    assert not consumer._acked[TP0]
    assert not consumer._acked_index[TP0]


def test_a_record_given_up_is_done_for_the_wait_and_never_committed(app: App) -> None:
    """Guards give_up_message: what a stage gives up at a revocation must end
    Faust's wait for in-flight records (`wait_empty` cleans out the acked messages) without
    being committed, so that the partition's next owner reads it again."""
    consumer = app.consumer
    app.start_offsets[TP0] = 0
    [event] = delivered(app, [0])
    hold_message(event.message)
    event.ack()  # the batch's end
    assert event.message in consumer._unacked_messages
    give_up_message(event.message)
    consumer._clean_unacked_messages()  # what wait_empty does between its checks
    assert event.message not in consumer._unacked_messages
    assert not event.ack()  # a late acknowledgement is no acknowledgement
    assert committable(app) == {}


def test_a_message_held_record_by_record_commits_once_its_last_record_is_processed(
        app: App) -> None:
    """Guards HeldMessages: an aligned input releases a message's records one by one, and a
    copy of it may be read again meanwhile; the message, copies included, is acknowledged
    only once its last record is processed, and a revocation gives both up uncommitted."""
    app.start_offsets[TP0] = 0
    [event, copy] = delivered(app, [0, 0])  # the same record read twice
    held = HeldMessages()
    held.hold(event, 3, first_copy=True)
    held.hold(copy, 3, first_copy=False)
    event.ack(), copy.ack()  # the batch's end
    held.processed(event, 1)
    held.processed(event, 1)
    assert committable(app) == {}
    held.processed(event, 1)
    assert committable(app) == {TP0: 1}
    [later] = delivered(app, [1])
    held.hold(later, 2, first_copy=True)
    later.ack()
    held.give_up({TP0}, [later, later])
    app.consumer._clean_unacked_messages()  # what wait_empty does between its checks
    assert later.message not in app.consumer._unacked_messages
    assert committable(app) == {} and not held.records  # nothing past offset 1


def test_the_current_event_decides_a_table_writes_partition(app: App) -> None:
    """Guards make_event_current and write_table: Faust picks a table
    write's changelog partition, and the RocksDB store the partition it reads and writes, from
    the current event; `streams/runtime/state.py` writes each key under the event that last touched
    it. Relies on the context variable `faust.streams._current_event`."""
    table = state_table(app, "wall-state")
    on_3, on_1 = (delivered(app, [5], partition=p)[0] for p in (3, 1))

    async def writes() -> None:  # the changelog send is queued on the running loop
        sent = write_table(table, on_3, "k", b"state")
        assert sent.message.partition == 3  # type: ignore[attr-defined]  # the changelog's
        assert table.partition_for_key("k") == 3
        assert table.data["k"] == b"state"
        make_event_current(on_1)
        assert table.partition_for_key("k") == 1
        assert "k" not in table.data  # partition 1's store
        deleted = write_table(table, on_3, "k", None)
        assert (deleted.message.partition, deleted.message.value) == (3, None)  # type: ignore[attr-defined]
        assert "k" not in table.data

    asyncio.run(writes())


def changelog_events(app: App, table: WallTable, records: Iterable[tuple[int, bytes, bytes]],
                     partition: int = 0) -> list[EventT]:
    """Records (offset, key, value) of the table's changelog as Faust's conductor hands them
    to recovery: decoded by the changelog topic's channel on recovery's queue."""
    channel = table.changelog_topic.clone_using_queue(asyncio.Queue())
    events = []
    for offset, key, value in records:
        tp = TP(table.changelog_topic_name, partition)
        record = ConsumerRecord(tp.topic, partition, offset, 0, 0, key, value, None, 1, 1, [])
        message = app.consumer._to_message(tp, record)
        events.append(asyncio.run(channel.decode(message, propagate=True)))
    return events


def test_a_changelog_key_faust_cannot_decode_is_undecodable_not_an_error(app: App) -> None:
    """Guards ChangelogSchema: Faust decodes a table's changelog records with the changelog
    topic's schema (the conductor with propagate=True, as here), and a key that is not JSON
    raises KeyDecodeError there, which Faust throws into its recovery queue: recovery then
    never counts that offset, and a partition ending in it never finishes recovering."""
    table = recovering_table(app, "wall-recovery", key_type=str, value_type=bytes,
                             on_undecodable=lambda *_: None)
    assert isinstance(table.changelog_topic.schema, type(table.schema))
    good, not_json, not_str = changelog_events(app, table, [
        (0, b'"acct-1"', b"state"), (1, b"acct-2", b"state"), (2, b"17", b"state")])
    assert (good.key, good.value) == ("acct-1", b"state")
    assert isinstance(not_json.key, Undecodable) and "key:" in not_json.key.reason
    assert not_str.key == Undecodable("key: a int, not a str")


def test_recovery_skips_undecodable_records_and_passes_their_offsets(app: App) -> None:
    """Guards Table.apply_changelog_batch: what recovery buffered goes to the store but for
    the undecodable records, which go to `on_undecodable` once each; the RocksDB store's
    recovered offset (where a restart resumes) still passes them. Relies on the store's
    apply_changelog_batch writing each event's raw key and value, and on
    set_persisted_offset."""
    skipped: list[tuple[str, int, str]] = []
    table = recovering_table(
        app, "wall-recovery", key_type=str, value_type=bytes,
        on_undecodable=lambda t, e, reason: skipped.append((t.name, e.message.offset, reason)))
    batch = changelog_events(app, table, [
        (10, b'"acct-1"', b"one"), (11, b"\xff\xfe", b"two"), (12, b'"acct-3"', b"three"),
        (13, b"not json", b"four")])
    table.apply_changelog_batch(batch)
    db = table.data._db_for_partition(0)
    assert {key: value for key, value in db.items() if not key.startswith(b"__faust")} == {
        b'"acct-1"': b"one", b'"acct-3"': b"three"}
    make_event_current(batch[0])  # the store reads the current event's partition
    assert table.data["acct-1"] == b"one"
    assert [(name, offset) for name, offset, _ in skipped] == [
        ("wall-recovery", 11), ("wall-recovery", 13)]
    assert table.data.persisted_offset(TP(table.changelog_topic_name, 0)) == 13


def test_the_producer_buffer_limit_is_set(app: App) -> None:
    """Guards set_producer_buffer: Faust stalls every stream while more than the buffer's
    `max_messages` (100 by default) sends wait in it."""
    assert app.producer.buffer.max_messages == 100
    set_producer_buffer(app, 10_000)
    assert app.producer.buffer.max_messages == 10_000


def test_acknowledgements_below_the_committed_offset_are_done_and_dropped() -> None:
    """Records fetched before the seek to the committed offsets after a restart, and
    acknowledged before that offset was known: kept, offset 946 would stand at the head
    and the commit (next: 947) would never move again."""
    acked = [946, 947, 948, 950]
    assert drop_done(acked, 947) == [946]
    assert acked == [947, 948, 950]
    assert drop_done(acked, 947) == []  # nothing more to drop
    assert acked == [947, 948, 950]


def test_a_run_of_offsets_never_delivered_is_a_hole() -> None:
    assert hole([23, 24, 25], 22, in_flight=[]) == (22, 23)
    assert hole([5, 6], 2, in_flight=[7]) == (2, 5)  # what is in hand is after it


def test_offsets_in_hand_or_acknowledged_at_the_head_are_no_hole() -> None:
    assert hole([23, 24], 22, in_flight=[22]) is None  # delivered, being processed
    assert hole([22, 23, 25], 22, in_flight=[24]) is None  # the head is done: it commits
    assert hole([], 22, in_flight=[]) is None  # nothing acknowledged: nothing waits
    assert hole([23], None, in_flight=[]) is None  # where reading starts is not known yet


def test_a_hole_is_passed_only_when_reading_it_again_proves_it_holds_no_record(
        app: App, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards Consumer.mend_commit_holes and ReadOffsets: offset 22 was never delivered (the
    fetcher started before the seek to the committed offsets) while 23-25 were. It is read
    again; a record fetched before that seek and handed out after it (30) raises the read
    offset, so the fetcher drops 22 when the seek brings it: the hole stays, and is read again,
    not passed (the old rule passed it: a record lost). Only a re-read that
    hands out 23 first proves 22 holds no record (a transaction marker): it is passed then.
    Relies on the fetcher setting the read offset through `__setitem__` as it hands out each
    record, and on `_new_offset` folding `_gap` into the acknowledged offsets. The consumer's
    thread (the broker's side: the assignment, the seek) is stood in for."""
    consumer = cast(Consumer, app.consumer)
    seeks: list[tuple[TP, int]] = []

    async def seek_back(tp: TP, offset: int) -> None:
        seeks.append((tp, offset))

    async def positions(tps: list[TP]) -> dict[TP, int]:
        return {TP0: 26}

    monkeypatch.setattr(consumer._thread, "seek_back", seek_back)
    monkeypatch.setattr(consumer._thread, "positions", positions)
    monkeypatch.setattr(consumer._thread, "assignment", lambda: {TP0})
    consumer._committed_offset[TP0] = 22
    consumer._read_offset.update({TP0: 22})  # perform_seek
    for event in delivered(app, [23, 24, 25]):
        consumer._read_offset[TP0] = event.message.offset  # the fetcher hands it out
        event.ack()
    mend = lambda: asyncio.run(consumer.mend_commit_holes())  # noqa: E731
    mend()  # seen once: records on their way may fill it
    assert seeks == [] and committable(app) == {}
    mend()
    assert seeks == [(TP0, 22)] and consumer._read_offset[TP0] == 22
    consumer._read_offset[TP0] = 30  # fetched before the seek: 22 will be dropped
    mend()
    assert seeks == [(TP0, 22)] * 2 and committable(app) == {}  # read again, not passed
    consumer._read_offset[TP0] = 23  # this time the re-read hands out 23 first
    with caplog.at_level(logging.WARNING):
        mend()
    assert "commit_hole_skipped" in caplog.text
    assert committable(app) == {TP0: 26}


def test_offsets_fetched_past_that_never_reached_the_streams_are_a_tail_hole() -> None:
    """A rebalance stopped the flow mid-batch: offset 42, the partition's last, was fetched
    (position 43) and dropped; nothing after it comes to show the hole."""
    assert tail_hole([], 42, in_flight=[], reached=None, position=43) == (42, 43)
    assert tail_hole([40], 42, in_flight=[41], reached=41, position=45) == (42, 45)
    assert tail_hole([], 42, in_flight=[], reached=42, position=43) is None  # in a channel
    assert tail_hole([], 42, in_flight=[42], reached=None, position=43) is None  # in hand
    assert tail_hole([43], 42, in_flight=[], reached=None, position=44) is None  # `hole`'s
    assert tail_hole([], 42, in_flight=[], reached=None, position=42) is None  # not fetched
    assert tail_hole([], None, in_flight=[], reached=None, position=43) is None


def test_a_tail_hole_is_read_again_and_only_between_batches(
        app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards Consumer.callback and Consumer.getmany (wrapped) and mend_commit_holes at a
    partition's tail: the fetcher takes its batches from `self.getmany` and hands each record
    to `self.callback`, and Faust's getmany drops the rest of a batch when the flow stops (a
    rebalance): offset 42 was fetched, so the consumer's position is 43, and never reached
    the streams. Seen unchanged for a minute, it is read again from 42. A record whose
    hand-out is cancelled (the flow stopped) did not reach them; one whose hand-out ended did.
    While a batch is handed out, the rest of it is fetched and not there yet: no tail hole is
    looked for then.
    The consumer's thread and the broker's side of the fetch are stood in for."""
    consumer = cast(Consumer, app.consumer)
    fetcher = inspect.getsource(FaustConsumer._drain_messages)
    assert "callback = self.callback" in fetcher and "getmany = self.getmany" in fetcher
    getmany = inspect.getsource(FaustConsumer.getmany)
    assert "if not self.flow_active:\n                    break" in getmany
    seeks: list[tuple[TP, int]] = []

    async def seek_back(tp: TP, offset: int) -> None:
        seeks.append((tp, offset))

    async def positions(tps: list[TP]) -> dict[TP, int]:
        return {TP0: 43}

    async def fetched(timeout: float) -> tuple[dict[TP, list[ConsumerRecord]], set[TP]]:
        record = ConsumerRecord(TP0.topic, 1, 43, 0, 0, b"k", b"v", None, 1, 1, [])
        return {TP(TP0.topic, 1): [record]}, {TP(TP0.topic, 1)}

    monkeypatch.setattr(consumer._thread, "seek_back", seek_back)
    monkeypatch.setattr(consumer._thread, "positions", positions)
    monkeypatch.setattr(consumer._thread, "assignment", lambda: {TP0})
    monkeypatch.setattr(consumer, "_wait_next_records", fetched)
    monkeypatch.setattr(consumer, "highwater", lambda tp: 44)
    consumer._committed_offset[TP0] = 42
    consumer._read_offset.update({TP0: 42})  # perform_seek
    mend = lambda: asyncio.run(consumer.mend_commit_holes())  # noqa: E731

    async def in_a_batch_then_a_cancelled_hand_out() -> None:
        batch = consumer.getmany(timeout=1.0)
        tp, message = await anext(batch)  # another partition's batch, being handed out
        assert consumer.batch_open
        await consumer.mend_commit_holes()
        await consumer.mend_commit_holes()
        assert seeks == []  # not looked for while a batch is handed out
        with pytest.raises(StopAsyncIteration):
            await anext(batch)
        assert not consumer.batch_open

        async def flow_stopped(message: object) -> None:
            raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await consumer._handing_out(flow_stopped)(message)
        assert tp not in consumer._read_offset.reached  # never reached the streams

    asyncio.run(in_a_batch_then_a_cancelled_hand_out())
    for _ in range(TAIL_HOLE_SIGHTINGS - 1):  # a minute unchanged before it is read again
        mend()
    assert seeks == []
    mend()
    assert seeks == [(TP0, 42)]
    [event] = delivered(app, [42])  # the re-read hands 42 out
    asyncio.run(consumer._handing_out(lambda message: asyncio.sleep(0))(event.message))
    assert consumer._read_offset.reached[TP0] == 42
    mend()
    mend()
    assert seeks == [(TP0, 42)]  # in a channel now: no hole


def test_a_service_crash_is_counted_from_modes_own_report() -> None:
    """`CrashCounter`: mode's `Service.crash` logs "Crashed reason=%r" first; the worker
    counts crashes from it (`misuse_worker_crashes_total`), which the runner reads."""
    crashed: list[str] = []
    counter = CrashCounter(crashed.append)
    logging.getLogger().addHandler(counter)
    try:
        class Stage(Service):
            pass

        asyncio.run(Stage().crash(ValueError("poisoned")))
        logging.getLogger("unrelated").error("Crashed reason=%r, quoted by someone else", 1)
    finally:
        logging.getLogger().removeHandler(counter)
    assert len(crashed) == 1


def test_the_worker_says_it_is_ready_when_faust_would(app: App) -> None:
    """`Worker.on_startup_finished`: Faust's worker hands it to the app, which calls it once
    the app and its tables' recovery are up; the worker then calls `on_ready`."""
    readies: list[bool] = []
    worker = Worker(app, on_ready=lambda: readies.append(True), loglevel="warning")
    list(worker.on_init_dependencies())  # what starting the worker does first
    assert app.on_startup_finished is not None
    assert readies == []
    asyncio.run(app.on_startup_finished())
    assert readies == [True]


# Faust's and aiokafka's names the wall relies on that their types do not declare public.
UNDECLARED = {"take_events", "incref", "send_changelog", "acked", "buffer", "data"}
FAUST = {"faust", "aiokafka", "mode"}


def test_no_private_faust_name_is_used_outside_the_wall() -> None:
    """The wall is the one place a Faust upgrade can break: in every other module that uses
    Faust, aiokafka or mode, no underscore name is imported from them, and no name the wall
    relies on undeclared is touched on anything but our own objects."""
    outside = []
    for path in sorted((REPO_ROOT / "streams").rglob("*.py")):
        tree = ast.parse(path.read_text())
        imports = [node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom)]
        modules = {(node.module or "") if isinstance(node, ast.ImportFrom) else a.name
                   for node in imports for a in node.names}
        if path.name == "faust_wall.py" or not {m.split(".")[0] for m in modules} & FAUST:
            continue
        outside += [f"{path.name}: {a.name}" for node in imports for a in node.names
                    if isinstance(node, ast.ImportFrom) and a.name.startswith("_")
                    and (node.module or "").split(".")[0] in FAUST]
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and not (
                    isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}):
                attr = node.attr
                if attr in UNDECLARED or (attr.startswith("_") and not attr.startswith("__")):
                    outside.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert outside == []
