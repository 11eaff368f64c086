"""The wall around Faust: every use of a private Faust or aiokafka name, and every reliance on
how Faust handles a message, an acknowledgement or a table's store, lives in this module and
nowhere else. The rest of `streams/` calls the named functions and classes below.

Checked against faust-streaming 0.15.3 and aiokafka 0.14.0 (pinned in pyproject.toml to their
minor versions); the contract tests (tests/unit/test_faust_wall.py,
tests/integration/test_faust_wall.py) fail when the behaviour relied on here changes.

Hooks: name; the loss it prevents; the Faust or aiokafka behaviour it relies on.

- `Consumer._new_offset` (override; reads and trims `_acked`, `_acked_index`, `_gap`,
  `_committed_offset`): a commit never passes a record not yet acknowledged, which a crash
  would lose. Relies on Faust's `_filter_committable_offsets` asking `_new_offset(tp)` for
  every commit; on acknowledged offsets kept per partition in `_acked` (a list) and
  `_acked_index` (a set); on `_committed_offset[tp]` being the next offset to read, None
  before the partition's first commit; and on Faust's own rule letting one unacknowledged
  offset at the head, and anything before a first commit, be committed past. Nothing is
  committed before the seek to the committed offsets names the head.
- `Consumer._add_gap` (override) and `ReadOffsets` (in place of `_read_offset`): a jump in
  the offsets delivered is committed past only over offsets never delivered (a transaction
  marker), never over the record being delivered nor over records delivered before a seek
  moved the read offset back (held, or not yet processed). Relies on Faust's fetcher
  (`_drain_messages`) recording a jump through `_add_gap(tp, read offset + 1, offset)`, on
  every read offset (a delivery's, a seek's) being set through `_read_offset`'s
  `__setitem__` or `update`, and on `_new_offset` folding `_gap` into the acknowledged
  offsets.
- `drop_done` (in `_new_offset`): acknowledgements below the committed start are dropped, or
  they stand at the head of `_acked` and the partition never commits again (a stall after a
  SIGKILL). Relies on `Consumer.ack` accepting any offset while `_committed_offset[tp]` is
  None (before the seek to the committed offsets after a rebalance fills it).
- `Consumer.commit_holes` and `mend_commit_holes` on a timer (read `_unacked_messages`,
  `_acked`, `_read_offset`; write `_gap`, `_read_offset`; seek in aiokafka): a run of
  offsets never delivered would stop the partition's commit for good (a lag that never
  drains, and nothing after it committed); it is read again, and passed only when reading
  it again proved it holds no record. Relies on `_unacked_messages` holding every message
  delivered and not acknowledged; on the fetcher (`_drain_messages`) dropping records below
  `_read_offset[tp]`, so it is lowered to read again, and setting it through `__setitem__`
  as it hands each record out; on `_new_offset` folding `_gap` intervals into the
  acknowledged offsets.
- `Consumer.callback` (wrapped), `Consumer.getmany` (wrapped) and `tail_hole`: the same loss
  at a partition's tail, where no later record comes to show the hole: between batches, the
  consumer's position stands past the committed offset, yet no record at or past it has
  reached the streams since the last seek (Faust's `getmany` drops the rest of a batch
  fetched when a rebalance stops the flow, and cancels the hand-out of the record in hand).
  Relies on the fetcher (`_drain_messages`) taking its batches from `self.getmany` and
  handing each record to `self.callback` (the conductor's `on_message`, which puts it in the
  agents' channels), cancelled when the flow stops, and on aiokafka's `position` being past
  every record it returned.
- `Consumer.pause_fetching` / `ConsumerThread.pause_fetching` (`_thread`, `call_thread`,
  `_ensure_consumer`; aiokafka `pause`/`resume`): pausing a partition never loses the records
  already fetched for it. Relies on Faust dropping the fetched records of a partition that
  leaves its set of active partitions, and on aiokafka discarding only what it has not
  handed out, and fetching it again on resume.
- `ConsumerThread.seek_back`, `positions` (`call_thread`, `_ensure_consumer`): the reread of
  a hole, and the lag gauge's positions in one call into the consumer's thread (each call
  waits behind the fetches there), leaving out a partition revoked meanwhile. Relies on the
  aiokafka consumer living in Faust's thread, and on its `position` raising
  `IllegalStateError` for a partition not assigned.
- `ConsumerThread.seek_to_committed` (override): a partition its group never committed
  rewinds to its beginning after a rebalance, or the records fetched while partitions moved
  (dropped by Faust's flow control) are never processed nor committed. Relies on Faust's
  `perform_seek` calling it after every assignment, and on aiokafka's seek_to_committed
  seeking only where an offset above 0 was committed. One call into the consumer's thread
  for all of it: each call waits there behind a fetch.
- `ConsumerThread._create_worker_consumer` (override; sets aiokafka's `_fetch_max_wait_ms`):
  not a loss but time. A call into the consumer's thread, and a request to the broker on
  the fetch's connection, waits behind the fetch, and Faust's fetches wait up to 1.5 s for
  records: each of the three lookups of a worker's start (high waters, changelog offsets,
  the seek above) waited that long, 4.5 of its 12-15 s, and so did the stage agent's pauses
  and resumes of partitions. Relies on aiokafka handing the consumer's `_fetch_max_wait_ms`
  to the fetcher it builds when it starts.
- `App.before_revoke` and `App._on_partitions_revoked` (override): a stage holding records
  back gives them up before Faust waits for every record read from revoked partitions to be
  acknowledged, or that wait would never end. Relies on Faust's `_on_partitions_revoked`
  waiting (`wait_empty`) for `_unacked_messages` to empty.
- `App._new_transport`, `Transport.Consumer`, `Consumer._new_consumer_thread`: how the
  consumer and its thread above are put in place of Faust's own. Relies on Faust building
  its consumer from the transport's `Consumer` class, and the thread from that method.
- `make_event_current` (`faust.streams._current_event`): a table read or write goes to the
  store of the current event's partition, the key's changelog partition, or the state is read
  from and written to the wrong partition. Relies on Faust's tables and its RocksDB store
  taking the partition from `current_event()`, and on that context variable holding a weak
  reference to the event; faust-streaming 0.15 has no public way to name it.
- `write_table` (`table.data`, `table.send_changelog`): a batch's state goes to the store
  without a changelog message of Faust's own; it sends its own to the partition named, which
  `streams/runtime/state.py` awaits before acknowledging (Faust's flush before a commit gives up
  after 0.1 s without a delivery). Relies on `table.data` being the table's store, which writes
  under the current event's partition (above).
- `hold_message` (`Message.incref`): a record held for event-time order stays unacknowledged
  when its batch ends. Relies on Faust acknowledging a message only when its reference count
  falls to 0, and on `Stream.take_events` dropping one reference per event at the end of a
  batch (in a `finally`).
- `batches` (`Stream.take_events`, which `StreamT` does not declare): a stage's input in
  batches. Relies on it acknowledging each batch's events when the consumer asks for the next
  batch or the agent ends (in a `finally`).
- `stop_worker` (`os._exit`): a batch failing on something other than a bad record would be
  acknowledged by that `finally` if the error were raised, and lost: the worker stops before
  anything commits, and reads it again when restarted.
- `App.assigned_partitions`, `App.highwater`, `App.log_end_offsets`, `App.pause_partitions`:
  the only way the stage agent reaches the consumer (its partitions, their ends as last
  fetched and as the broker has them now, pausing them), so that what it relies on of
  Faust's consumer is named here.
- `HeldMessages`: the held messages of an aligned input, acknowledged once their last record
  is processed, given up at a revocation (with `hold_message` and `give_up_message`).
- `give_up_message` (`Message.acked`): a record given up at a revocation is marked
  done for Faust's wait without being committed, so the partition's next owner reads it
  again. Relies on `Consumer.wait_empty` ending once every tracked message has `acked` set,
  and on `Consumer.ack` (never called here) being what records an offset to commit.
- `Worker.on_startup_finished` (override): the worker says it is ready (`on_ready`, the
  `misuse_worker_ready` gauge) when Faust would log "Ready", so a runner need not read the
  log. Relies on Faust's worker calling it, through `app.on_startup_finished`, once the app
  and its tables' recovery are up.
- `CrashCounter` (a logging handler on mode's crash report): the worker counts its crashed
  services (`misuse_worker_crashes_total`), which Faust may leave running in a live
  process. Relies on mode's `Service.crash` logging "Crashed reason=%r" with the reason as
  its argument before anything else.
- `set_producer_buffer` (`app.producer.buffer.max_messages`): not a loss but stalls, most of
  the event-to-alert latency. Relies on Faust's producer buffer stalling every stream while
  more than `max_messages` (100) sends wait in it.
- `ChangelogSchema` (`Schema.loads_key`, `loads_value`) and `Table.apply_changelog_batch`
  (override): not a loss but a hang. A changelog record whose key Faust cannot decode (not
  JSON) would never let the worker become ready: Faust throws the decode error into its
  recovery queue, recovery logs it and goes on, and the record's offset is never counted, so
  a partition ending in it is never recovered. Relies on Faust decoding every changelog
  record with the schema of the table's changelog topic (its `schema` argument) before
  recovery sees it, on recovery counting an offset only when it receives the record's event
  and handing every event it counts to `apply_changelog_batch`, and on the store's
  `set_persisted_offset` being where a restart resumes recovery.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NoReturn, cast

import faust
from aiokafka.errors import IllegalStateError
from faust.exceptions import KeyDecodeError, ValueDecodeError
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, EventT, Message, ModelArg, StreamT, TableT, TransportT
from faust.worker import Worker as FaustWorker
from mode import Service

log = logging.getLogger(__name__)

# How often a partition whose commit cannot move is looked at: a hole must be seen twice in a
# row, unchanged (10 s apart), before it is read again.
COMMIT_HOLE_CHECK_SECONDS = 10.0
HOLE_SIGHTINGS = 2
# A tail hole (`tail_hole`) must be seen unchanged for a minute: under load, two sightings of
# one measured twice in a busy worker's make test, for reasons not found; a tail truly dropped
# stays as it is for good.
TAIL_HOLE_SIGHTINGS = 6
# How long a fetch waits on the broker for records that have not come (Faust's: 1,500 ms).
FETCH_MAX_WAIT_MS = 250


def make_event_current(event: EventT) -> None:
    """Make `event` the current event of this task, as Faust's tables expect of a write.

    The changelog partition of a write is named explicitly (`TableState.flush`), but the
    RocksDB store reads and writes in the partition of the current event (`_get`, `_set`),
    and faust-streaming 0.15 has no public way to name it; its own Stream._set_current_event
    is what we must not call (below).

    Only the context variable (what faust.current_event() reads), never the stream's own
    current_event attribute: Stream.take_events reads that attribute from its background task
    to know which event it buffered, and changing it from an agent's body loses events.
    """
    _current_event.set(weakref.ref(event))


def current_event() -> EventT | None:
    """The event this task is processing now (faust.current_event, the public name)."""
    return faust.current_event()


def write_table(table: TableT, event: EventT, key: str, raw: bytes | None) -> Awaitable[Any]:
    """Write `raw` (or delete `key`, for None) in the table under `event`'s partition: the store
    first reads and writes in the partition of the current event, so `event` becomes it; the
    changelog message goes to the same partition, named explicitly. Returns the changelog
    send, which the caller awaits before acknowledging: Faust's own flush before a commit gives
    up after 0.1 s without a delivery."""
    make_event_current(event)
    partition = event.message.partition
    if raw is None:
        sent = table.send_changelog(partition, key, None, value_serializer="raw")
        table.data.pop(key, None)
    else:
        sent = table.send_changelog(partition, key, raw)
        table.data[key] = raw
    return sent


def batches(stream: StreamT, size: int, within: float) -> AsyncIterator[list[EventT]]:
    """The stream's events in batches of up to `size`, or what came within `within` s.
    Stream.take_events is a method of Faust's Stream that its StreamT type does not name."""
    return cast(AsyncIterator[list[EventT]], stream.take_events(size, within=within))  # type: ignore[attr-defined]


def stop_worker(name: str) -> NoReturn:
    """Stop the worker at once when a batch fails on something other than a bad record (stages
    and sinks dead-letter those): I/O, memory, a bug outside any one record. Raising would lose
    the batch, as Faust's `Stream.take_events` acknowledges it in a `finally`; stopped before
    anything commits, the worker reads it again when it is restarted."""
    log.critical("stage_failed stage=%s: stopping the worker so that the batch is read again "
                 "after a restart", name, exc_info=True)
    logging.shutdown()
    os._exit(70)  # EX_SOFTWARE


def hold_message(message: Message) -> None:
    """Keep `message` unacknowledged past the end of its batch, until acknowledged again."""
    message.incref()


def give_up_message(message: Message) -> None:
    """Done, for Faust's wait for in-flight records at a revocation; never committed."""
    message.acked = True


class HeldMessages:
    """Messages kept unacknowledged past their batch's end while their records wait (an
    aligned input holds a message's records one by one): each is acknowledged once its last
    record is processed, together with the copies of it read again meanwhile (a seek to the
    committed offsets after a rebalance), so no commit passes a record not yet processed. At a
    revocation they are given up: done for Faust's wait, never committed, so the partition's
    next owner reads them again. Relies on `hold_message`, `give_up_message` and `Event.ack`
    dropping one reference."""

    def __init__(self) -> None:
        self.records: dict[tuple[TP, int], int] = {}  # records of each message not processed
        self.copies: dict[tuple[TP, int], list[EventT]] = {}

    def hold(self, event: EventT, records: int, first_copy: bool) -> None:
        message = event.message
        hold_message(message)
        key = (message.tp, message.offset)
        if first_copy:
            self.records[key] = max(records, 1)
        else:
            self.copies.setdefault(key, []).append(event)

    def processed(self, event: EventT, records: int) -> None:
        """`records` of the message of `event` processed (a message without any counts one)."""
        key = (event.message.tp, event.message.offset)
        left = self.records.get(key, 1) - max(records, 1)
        if left > 0:
            self.records[key] = left
            return
        self.records.pop(key, None)
        event.ack()
        for copy in self.copies.pop(key, ()):
            copy.ack()

    def give_up(self, revoked: Set[TP], abandoned: Iterable[EventT]) -> None:
        """The `abandoned` events of the `revoked` partitions (an event once, however many of
        its records were held), and every copy of theirs."""
        for event in {id(event): event for event in abandoned}.values():
            give_up_message(event.message)
        for key in [key for key in self.records if key[0] in revoked]:
            del self.records[key]
        for key in [key for key in self.copies if key[0] in revoked]:
            for copy in self.copies.pop(key):
                give_up_message(copy.message)


def set_producer_buffer(app: AppT, max_messages: int) -> None:
    """How many sends may wait in the producer's buffer before Faust stalls every stream."""
    app.producer.buffer.max_messages = max_messages


@dataclass(frozen=True)
class Undecodable:
    """What stands for a changelog record's key or value that Faust could not decode."""

    reason: str


class ChangelogSchema(faust.Schema):
    """A table's changelog decoded as Faust decodes it, except that a key or value it cannot
    decode, or a key that is not of the table's key type, becomes `Undecodable` instead of an
    error thrown into the recovery queue (where it would stop recovery for good)."""

    def loads_key(self, app: AppT, message: Message, *, loads: Callable[..., Any] | None = None,
                  serializer: Any = None) -> Any:
        try:
            key = super().loads_key(app, message, loads=loads, serializer=serializer)
        except KeyDecodeError as exc:
            return Undecodable(f"key: {exc}")
        if isinstance(self.key_type, type) and not isinstance(key, self.key_type):
            return Undecodable(f"key: a {type(key).__name__}, not a {self.key_type.__name__}")
        return key

    def loads_value(self, app: AppT, message: Message, *,
                    loads: Callable[..., Any] | None = None, serializer: Any = None) -> Any:
        try:
            return super().loads_value(app, message, loads=loads, serializer=serializer)
        except ValueDecodeError as exc:
            return Undecodable(f"value: {exc}")


class Table(faust.Table):
    """A Faust table whose recovery skips the changelog records `ChangelogSchema` could not
    decode: each goes to `on_undecodable(table, event, reason)` and never to the store, and
    the store's recovered offset still passes it, so a restart does not read it again."""

    def __init__(self, app: AppT, *,
                 on_undecodable: Callable[[TableT, EventT, str], None], **kwargs: Any) -> None:
        super().__init__(app, schema=ChangelogSchema(), **kwargs)
        self.on_undecodable = on_undecodable

    def apply_changelog_batch(self, batch: Iterable[EventT]) -> None:
        readable: list[EventT] = []
        ends: dict[TP, int] = {}
        for event in batch:
            message = event.message
            ends[message.tp] = max(message.offset, ends.get(message.tp, message.offset))
            bad = next((part for part in (event.key, event.value)
                        if isinstance(part, Undecodable)), None)
            if bad is None:
                readable.append(event)
            else:
                self.on_undecodable(self, event, bad.reason)
        super().apply_changelog_batch(readable)
        for tp, offset in ends.items():
            self.data.set_persisted_offset(tp, offset)


def recovering_table(app: AppT, name: str, *, key_type: ModelArg, value_type: ModelArg,
                     on_undecodable: Callable[[TableT, EventT, str], None]) -> Table:
    """A table declared on `app` as `app.Table` declares one, of the class above."""
    table = Table(app, name=name, beacon=app.tables.beacon, key_type=key_type,
                  value_type=value_type, on_undecodable=on_undecodable)
    return cast(Table, app.tables.add(table))


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the rewind after a rebalance made whole.

    After a rebalance Faust's flow control drops the records fetched while partitions moved
    and then seeks every partition back to its committed offset. aiokafka seeks only where
    an offset above 0 was committed: a partition whose group has never committed (its first
    records written while the group rebalanced) keeps the fetch position past the dropped
    records, which are then never processed nor committed (an alert lost, and a lag that
    never drains). Those partitions go back to their beginning, as `earliest` means."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        """Faust's consumer, its fetches waiting at most `FETCH_MAX_WAIT_MS` (see above)."""
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # aiokafka gives it to its fetcher
        return consumer

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """In one call into the consumer's thread, where each call waits behind a fetch."""
        app = self.consumer.app
        committed, starts = await self.call_thread(
            self._seek_to_committed, app.tables.changelog_topics)  # recovery positions these
        cast(App, app).start_offsets.update(starts)
        return committed

    async def _seek_to_committed(self, changelogs: Set[str]
                                 ) -> tuple[dict[TP, int | None], dict[TP, int]]:
        consumer = self._ensure_consumer()
        committed = await consumer.seek_to_committed()
        never = [tp for tp, offset in committed.items()
                 if not offset and tp.topic not in changelogs]
        starts = {tp: offset for tp, offset in committed.items() if offset}
        if never:
            beginnings = await consumer.beginning_offsets(never)
            for tp, offset in beginnings.items():
                consumer.seek(tp, offset)
            starts.update(beginnings)
        return committed, starts

    async def pause_fetching(self, pause: Set[TP], resume: Set[TP]) -> None:
        await self.call_thread(self._pause_fetching, pause, resume)

    async def seek_back(self, tp: TP, offset: int) -> None:
        await self.call_thread(self._seek_back, tp, offset)

    async def _seek_back(self, tp: TP, offset: int) -> None:
        consumer = self._ensure_consumer()
        if tp in consumer.assignment():
            consumer.seek(tp, offset)

    async def positions(self, tps: list[TP]) -> dict[TP, int | None]:
        return cast(dict[TP, int | None], await self.call_thread(self._positions, tps))

    async def _positions(self, tps: list[TP]) -> dict[TP, int | None]:
        """Only the partitions still assigned: a rebalance may have revoked one since it was
        asked for (aiokafka raises for it, and the timer asking would crash the worker)."""
        consumer = self._ensure_consumer()
        positions: dict[TP, int | None] = {}
        for tp in tps:
            try:
                positions[tp] = await consumer.position(tp)
            except IllegalStateError:  # not assigned (any more)
                continue
        return positions

    async def _pause_fetching(self, pause: Set[TP], resume: Set[TP]) -> None:
        consumer = self._ensure_consumer()
        assigned = consumer.assignment()
        consumer.resume(*(tp for tp in assigned if tp in resume))
        consumer.pause(*(tp for tp in assigned if tp in pause))


def drop_done(acked: list[int], start: int) -> list[int]:
    """Remove from `acked` (and return) the offsets below `start`, the next one to commit:
    done already, they were fetched before the seek to the committed offsets after a
    rebalance and acknowledged before that offset was known. Kept, they would stand at the
    head of `acked` for good, and the partition would never commit again (a stall measured
    after a SIGKILL)."""
    done = [offset for offset in acked if offset < start]
    if done:
        acked[:] = [offset for offset in acked if offset >= start]
    return done


def hole(acked: Sequence[int], start: int | None, in_flight: Iterable[int]
         ) -> tuple[int, int] | None:
    """The offsets [start, first acknowledged) a commit waits on while no record in hand
    holds them, or None. Records reach the streams in offset order and are in hand from
    delivery to acknowledgement, so such a run of offsets was never delivered (seen after a
    SIGKILL, where Faust's fetcher starts before its seek to the committed offsets: the
    record at the committed offset never came) and would stop the commit for good."""
    if not acked or start is None:
        return None
    first = min(acked)
    if first <= start or any(start <= offset < first for offset in in_flight):
        return None
    return start, first


def tail_hole(acked: Iterable[int], start: int | None, in_flight: Iterable[int],
              reached: int | None, position: int | None) -> tuple[int, int] | None:
    """The offsets [start, position) the consumer has fetched past while none of them, nor any
    later one, reached the streams since the last seek (`reached`: the highest that did), and
    none is in hand or acknowledged: the records were fetched and dropped (a rebalance stopping
    the flow mid-batch). `hole` cannot see this at a partition's tail, where no later record
    is acknowledged; the commit would wait for the partition's next record, and a finite
    input would never drain."""
    if start is None or position is None or position <= start:
        return None
    if reached is not None and reached >= start:
        return None  # in a channel, on its way to a stream
    if any(offset >= start for offset in (*acked, *in_flight)):
        return None
    return start, position


class ReadOffsets(defaultdict[TP, int | None]):
    """Faust's read offset of each partition (`Consumer._read_offset`: the offset last handed
    to the streams, moved back by a seek), remembering the highest it has held: every offset
    up to it was delivered, whatever a seek made of the read offset since. A partition read
    again from a hole (`reread`) also remembers the first offset delivered after it, and each
    partition the highest offset that reached the streams since its last seek (`reached`)."""

    def __init__(self) -> None:
        super().__init__(lambda: None)
        self.highest: dict[TP, int] = {}
        self.first_reread: dict[TP, int | None] = {}
        self.reached: dict[TP, int] = {}

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        """The fetcher, handing out the record at `offset`."""
        self._set(tp, offset)
        if tp in self.first_reread and self.first_reread[tp] is None:
            self.first_reread[tp] = offset

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """A seek (Faust's to the committed offsets, after a rebalance): no re-read stands."""
        for tp, offset in dict(*args, **kwargs).items():
            self._set(tp, offset)
            self.first_reread.pop(tp, None)
            self.reached.pop(tp, None)

    def reached_streams(self, tp: TP, offset: int) -> None:
        """The record at `offset` was put in the streams' channels."""
        if offset > self.reached.get(tp, -1):
            self.reached[tp] = offset

    def reread(self, tp: TP, offset: int) -> None:
        """`tp` is read again from `offset` (the fetcher hands out only offsets at or above the
        read offset): the first offset handed out from now on is remembered."""
        self._set(tp, offset if offset else None)
        self.first_reread[tp] = None
        self.reached.pop(tp, None)

    def _set(self, tp: TP, offset: int | None) -> None:
        super().__setitem__(tp, offset)
        if offset is not None and offset > self.highest.get(tp, -1):
            self.highest[tp] = offset


class Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset: ReadOffsets = ReadOffsets()
        self.batch_open = False  # a fetched batch is being handed out
        self.callback = self._handing_out(self.callback)

    def _handing_out(self, callback: Callable[[Message], Awaitable[None]]
                     ) -> Callable[[Message], Awaitable[None]]:
        """The fetcher's hand-out of a record to the streams, noting the records that reach
        them: one whose hand-out is cancelled (the flow stopped) never did."""
        async def hand_out(message: Message) -> None:
            await callback(message)
            self._read_offset.reached_streams(message.tp, message.offset)
        return hand_out

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """Faust's batches as it fetches them, noting while one is handed out: its records
        are fetched (the consumer's position is past them) and not all handed out yet."""
        try:
            async for record in super().getmany(timeout):
                self.batch_open = True
                yield record
        finally:
            self.batch_open = False

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit: never past a record not yet acknowledged. Faust's own lets
        one unacknowledged offset at the head be skipped, and any before a partition's first
        commit; harmless while records are acknowledged in order, but ingest holds records
        for event-time order (`streams/runtime/alignment.py`) and acknowledges them out of order,
        and a record committed unprocessed is lost on a crash."""
        acked, start = self._acked[tp], self._start(tp)
        if start is None:  # before the seek to the committed offsets: the head is unknown
            return None
        if acked:
            self._acked_index[tp].difference_update(drop_done(acked, start))
            if acked and not self._gap[tp] and min(acked) != start:
                return None
        return cast(int | None, super()._new_offset(tp))

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """Faust's fetcher, on a jump in the offsets it delivers, records [from, to] as a gap of
        offsets without records (compaction, transaction markers) that a commit may pass. Two
        ways that passes records delivered and still held or unprocessed, lost on a crash:
        `to` is the offset of the record being delivered, and a jump also comes from a seek
        (to the committed offsets, or back to a hole) while records fetched before it are
        still handed out. Only what lies between the highest offset ever delivered and that
        record is a gap; the rest, never acknowledged, is a hole read again
        (`mend_commit_holes`)."""
        delivered = self._read_offset.highest.get(tp, -1)
        await super()._add_gap(tp, max(offset_from, delivered + 1), offset_to - 1)

    async def pause_fetching(self, pause: Set[TP], resume: Set[TP]) -> None:
        """Stop fetching from the partitions `pause`, fetch again from `resume`. In aiokafka,
        not in Faust's set of active partitions: Faust drops the records it has already
        fetched for a partition that leaves that set while it hands them out, and they would
        never be processed nor committed; aiokafka discards only what it has not handed out,
        and fetches it again on resume."""
        await cast(ConsumerThread, self._thread).pause_fetching(pause, resume)

    async def commit_holes(self) -> dict[TP, tuple[int, int, int]]:
        """The partitions whose commit waits on offsets no record in hand holds (`hole`), or
        that were fetched and never reached the streams (`tail_hole`). The latter are looked
        for only between batches: the rest of a batch being handed out (for seconds, when
        the fetcher waits on a full channel, the producer's buffer or a commit) is fetched
        and not there yet; between batches, every record fetched was handed out or
        dropped. Each with the sightings it needs before it is read again."""
        assigned = list(self.assignment())
        positions = await self.positions(*assigned)
        if self.batch_open:  # now, or begun while the positions were asked for
            positions = {}
        in_flight: dict[TP, list[int]] = defaultdict(list)
        for message in list(self._unacked_messages):
            if not message.acked:
                in_flight[message.tp].append(message.offset)
        holes: dict[TP, tuple[int, int, int]] = {}
        for tp in assigned:
            acked, start = self._acked.get(tp, []), self._start(tp)
            if found := hole(acked, start, in_flight[tp]):
                holes[tp] = (*found, HOLE_SIGHTINGS)
            elif found := tail_hole(acked, start, in_flight[tp],
                                    self._read_offset.reached.get(tp), positions.get(tp)):
                holes[tp] = (*found, TAIL_HOLE_SIGHTINGS)
        return holes

    def _start(self, tp: TP) -> int | None:
        """The next offset to commit, once known."""
        start = self._committed_offset.get(tp)
        return cast(App, self.app).start_offsets.get(tp) if start is None else start

    @Service.timer(COMMIT_HOLE_CHECK_SECONDS)
    async def _mend_commit_holes(self) -> None:
        await self.mend_commit_holes()

    async def mend_commit_holes(self) -> None:
        """Read again what a commit waits on and was never delivered, as often as it takes:
        without this the partition's commit would stay put for good. A hole is skipped only
        when reading it again proved it holds no record (transaction markers): the first
        offset handed out after the read offset went back to its start was the one after it.
        The read offset goes back before the seek, so nothing the seek fetches is dropped as
        read already; a record fetched before the seek and handed out after it comes first
        and proves nothing (it lies past every offset delivered), and the hole is read again.
        Judged from the read offset alone, a hole can be passed over a record: the stale
        record raises it, the fetcher drops the hole's own record, and the hole is skipped."""
        holes = await self.commit_holes()
        sightings: dict[TP, tuple[tuple[int, int], int]] = {}
        for tp, (start, first, needed) in holes.items():
            before, times = self._holes_seen.get(tp, ((0, 0), 0))
            times = times + 1 if before == (start, first) else 1
            sightings[tp] = ((start, first), times)
            if times < needed:
                continue  # records on their way may still fill it
            if self._read_offset.first_reread.get(tp) == first:
                log.warning("commit_hole_skipped topic=%s partition=%d offsets=%d-%d: read "
                            "again, no record there", tp.topic, tp.partition, start, first - 1)
                self._gap[tp].addi(start, first)
                continue
            log.warning("commit_hole topic=%s partition=%d offsets=%d-%d: never delivered, "
                        "reading them again (reached %s, read %s, highest %s, acked %s)",
                        tp.topic, tp.partition, start, first - 1,
                        self._read_offset.reached.get(tp), self._read_offset.get(tp),
                        self._read_offset.highest.get(tp), self._acked.get(tp, [])[:3])
            self._read_offset.reread(tp, start)
            await cast(ConsumerThread, self._thread).seek_back(tp, start)
        self._holes_seen.clear()
        self._holes_seen.update(sightings)

    @cached_property
    def _holes_seen(self) -> dict[TP, tuple[tuple[int, int], int]]:
        return {}

    async def positions(self, *tps: TP) -> dict[TP, int | None]:
        """Every partition's position in one call into the consumer's thread: each call waits
        its turn behind the fetches there (a third of a second each, measured)."""
        return await cast(ConsumerThread, self._thread).positions(list(tps))


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


class App(faust.App):
    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)  # type: ignore[arg-type]

    def before_revoke(self, callback: Callable[[Set[TP]], None]) -> None:
        """Call `callback(revoked)` when a rebalance revokes partitions, before Faust waits for
        every record read from them to be acknowledged: a stage holding records back (for
        event-time order) gives them up there, or the wait would never end."""
        self._before_revoke.append(callback)

    async def _on_partitions_revoked(self, revoked: set[TP]) -> None:
        for callback in self._before_revoke:
            callback(revoked)
        await super()._on_partitions_revoked(revoked)

    @cached_property
    def _before_revoke(self) -> list[Callable[[Set[TP]], None]]:
        return []

    def assigned_partitions(self) -> set[TP]:
        """The partitions this worker reads now."""
        return set(self.consumer.assignment())

    def highwater(self, tp: TP) -> int:
        """The offset after the last record of `tp` the consumer has seen."""
        return self.consumer.highwater(tp)

    async def log_end_offsets(self, tps: Set[TP]) -> Mapping[TP, int]:
        """The offset after the last record of each of `tps` now, asked of the broker
        (aiokafka's `end_offsets`): `highwater` is as of the partition's last fetch, and the
        fetcher asks again only once the records it fetched are handed out."""
        return await self.consumer.highwaters(*tps) if tps else {}

    async def pause_partitions(self, pause: Set[TP], resume: Set[TP]) -> None:
        """Stop fetching `pause` and fetch `resume` again, losing nothing already fetched
        (`Consumer.pause_fetching`)."""
        await self.wall_consumer.pause_fetching(pause, resume)

    @property
    def wall_consumer(self) -> Consumer:
        """The consumer, typed as ours (pause_fetching, positions)."""
        return cast(Consumer, self.consumer)

    @cached_property
    def start_offsets(self) -> dict[TP, int]:
        """Where reading each assigned partition started, at the last rebalance."""
        return {}


class Worker(FaustWorker):
    """Faust's worker, calling `on_ready()` once it is ready (after Faust's own "Ready")."""

    def __init__(self, app: AppT, *services: Service, on_ready: Callable[[], None],
                 **options: object) -> None:
        super().__init__(app, *services, **options)  # type: ignore[arg-type]
        self.on_ready = on_ready

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        self.on_ready()


class CrashCounter(logging.Handler):
    """Calls `on_crash(logger name)` for every service crash mode reports."""

    def __init__(self, on_crash: Callable[[str], None]) -> None:
        super().__init__(logging.ERROR)
        self.on_crash = on_crash

    def emit(self, record: logging.LogRecord) -> None:
        # mode's CompositeLogger puts the service's name before the message template.
        if isinstance(record.msg, str) and record.msg.endswith("Crashed reason=%r"):
            self.on_crash(record.name)
