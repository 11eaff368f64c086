"""The Faust app, built from settings. `streams.agents.build_app` registers every stage on it;
importing a module starts nothing."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from functools import cached_property
from typing import cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, TransportT
from mode import Service

from streams.settings import Settings

log = logging.getLogger(__name__)

# How often a partition whose commit cannot move is looked at: a hole must be seen twice in a
# row, unchanged (10 s apart), before it is read again.
COMMIT_HOLE_CHECK_SECONDS = 10.0


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with the rewind after a rebalance made whole.

    After a rebalance Faust's flow control drops the records fetched while partitions moved
    and then seeks every partition back to its committed offset. aiokafka seeks only where
    an offset above 0 was committed: a partition whose group has never committed (its first
    records written while the group rebalanced) keeps the fetch position past the dropped
    records, which are then never processed nor committed (an alert lost, and a lag that
    never drains). Those partitions go back to their beginning, as `earliest` means."""

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        app = self.consumer.app
        changelogs = app.tables.changelog_topics  # recovery positions these
        never = [tp for tp, offset in committed.items()
                 if not offset and tp.topic not in changelogs]
        starts = {tp: offset for tp, offset in committed.items() if offset}
        if never:
            consumer = self._ensure_consumer()
            await self.call_thread(consumer.seek_to_beginning, *never)
            starts.update(await self.call_thread(consumer.beginning_offsets, never))
        cast(App, app).start_offsets.update(starts)
        return committed


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
        consumer = self._ensure_consumer()
        return {tp: await consumer.position(tp) for tp in tps}

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


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp: TP) -> int | None:
        """The offset to commit: never past a record not yet acknowledged. Faust's own lets
        one unacknowledged offset at the head be skipped, and any before a partition's first
        commit; harmless while records are acknowledged in order, but ingest holds records
        for event-time order (`streams/alignment.py`) and acknowledges them out of order, and
        a record committed unprocessed is lost on a crash."""
        acked, start = self._acked[tp], self._start(tp)
        if acked and start is not None:
            self._acked_index[tp].difference_update(drop_done(acked, start))
            if acked and not self._gap[tp] and min(acked) != start:
                return None
        return cast(int | None, super()._new_offset(tp))

    async def pause_fetching(self, pause: Set[TP], resume: Set[TP]) -> None:
        """Stop fetching from the partitions `pause`, fetch again from `resume`. In aiokafka,
        not in Faust's set of active partitions: Faust drops the records it has already
        fetched for a partition that leaves that set while it hands them out, and they would
        never be processed nor committed; aiokafka discards only what it has not handed out,
        and fetches it again on resume."""
        await cast(ConsumerThread, self._thread).pause_fetching(pause, resume)

    def commit_holes(self) -> dict[TP, tuple[int, int]]:
        """The partitions whose commit waits on offsets no record in hand holds (`hole`)."""
        in_flight: dict[TP, list[int]] = defaultdict(list)
        for message in list(self._unacked_messages):
            if not message.acked:
                in_flight[message.tp].append(message.offset)
        holes: dict[TP, tuple[int, int]] = {}
        for tp in self.assignment():
            found = hole(self._acked.get(tp, []), self._start(tp), in_flight[tp])
            if found:
                holes[tp] = found
        return holes

    def _start(self, tp: TP) -> int | None:
        """The next offset to commit, once known."""
        start = self._committed_offset.get(tp)
        return cast(App, self.app).start_offsets.get(tp) if start is None else start

    @Service.timer(COMMIT_HOLE_CHECK_SECONDS)
    async def _mend_commit_holes(self) -> None:
        """Read again what a commit waits on and was never delivered, as often as it takes:
        without this the partition's commit would stay put for good. Only a hole of one
        offset that reading again did not fill is skipped: a transaction marker, no record
        (the one gap Faust's own rule lets a commit pass)."""
        holes = self.commit_holes()
        for tp, found in holes.items():
            if self._holes_seen.get(tp) != found:
                continue  # seen once: records on their way may still fill it
            start, first = found
            if first - start == 1 and self._holes_reread.get(tp) == found \
                    and (self._read_offset.get(tp) or 0) >= first:
                log.warning("commit_hole_skipped topic=%s partition=%d offset=%d: read again, "
                            "no record there", tp.topic, tp.partition, start)
                self._gap[tp].addi(start, first)
                continue
            log.warning("commit_hole topic=%s partition=%d offsets=%d-%d: never delivered, "
                        "reading them again", tp.topic, tp.partition, start, first - 1)
            self._holes_reread[tp] = found
            await cast(ConsumerThread, self._thread).seek_back(tp, start)
            self._read_offset[tp] = start if start else None
        self._holes_seen.clear()
        self._holes_seen.update(holes)

    @cached_property
    def _holes_seen(self) -> dict[TP, tuple[int, int]]:
        return {}

    @cached_property
    def _holes_reread(self) -> dict[TP, tuple[int, int]]:
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

    @cached_property
    def start_offsets(self) -> dict[TP, int]:
        """Where reading each assigned partition started, at the last rebalance."""
        return {}


def broker_credentials(settings: Settings) -> faust.SASLCredentials | None:
    if settings.kafka_sasl_mechanism is None:
        return None
    password = settings.kafka_password.get_secret_value() if settings.kafka_password else None
    return faust.SASLCredentials(
        username=settings.kafka_username, password=password,
        mechanism=settings.kafka_sasl_mechanism,
    )


def create_app(settings: Settings) -> faust.App:
    return App(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(settings),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.topic_partitions,
        # Every stage speaks plain JSON bytes and decodes them itself, so that a bad message is
        # a dead letter with a reason instead of a crash inside the serializer.
        key_serializer="raw",
        value_serializer="raw",
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        consumer_auto_offset_reset="earliest",
        # At-least-once delivery with idempotent sinks: exactly-once mode has open bugs.
        processing_guarantee="at_least_once",
        # Every stage sends about as many messages as it reads, plus state changelogs: batch
        # them (Faust's defaults send each message in a request of its own).
        producer_linger=0.01,
        producer_max_batch_size=512 * 1024,
        # Small fetches and a short queue, so that pausing the input partitions that run
        # ahead in event time takes effect within seconds of event time (`streams/alignment`):
        # with a megabyte per partition per fetch and 4,096 records queued, ingest read a
        # backlog half an hour of event time apart between partitions. A message larger than
        # the fetch size is still returned whole.
        consumer_max_fetch_size=16 * 1024,
        stream_buffer_maxsize=200,
    )

