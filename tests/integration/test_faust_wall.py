"""Contract tests of the wall around Faust (`streams/runtime/faust_wall.py`) for the hooks that need
a broker, against the real local Kafka: the worker's app (`create_app`) with its consumer thread
started and partitions of a topic of the test's own assigned to it by hand, where Faust's
rebalance would assign them. Each fails when the Faust or aiokafka behaviour its hook relies
on changes. The hooks that need no broker: tests/unit/test_faust_wall.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.structs import TopicPartition
from faust.types import TP
from kafka import KafkaAdminClient

from streams.runtime.app import create_app
from streams.runtime.broker import connection_options, producer
from streams.runtime.faust_wall import (
    FETCH_MAX_WAIT_MS,
    App,
    ConsumerThread,
    give_up_message,
    hold_message,
)
from streams.settings import Settings
from streams.tooling.runner import isolated_environment
from tests.unit.test_faust_wall import delivered

pytestmark = pytest.mark.integration

RECORDS_PER_PARTITION = 5


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings of a run of its own (topic prefix, consumer group), with its input topic of
    two partitions holding RECORDS_PER_PARTITION records each; the topic is deleted after."""
    settings, _ = isolated_environment("wall", tmp_path)
    topic = settings.topic("wall-input")
    admin = KafkaAdminClient(**connection_options(settings))
    try:
        admin.create_topics({topic: {"num_partitions": 2, "replication_factor": 1}},
                            wait_for_metadata=True)
        send = producer(settings)
        for partition in (0, 1):
            for n in range(RECORDS_PER_PARTITION):
                send.send(topic, value=b"%d" % n, partition=partition)
        send.flush()
        send.close()
        yield settings
    finally:
        admin.delete_topics([topic])
        admin.close()


async def started(app: App, tps: list[TP]) -> ConsumerThread:
    """The app's consumer thread, started, with `tps` assigned to its aiokafka consumer (as
    aiokafka's own partitions, as its group assignment gives them)."""
    thread = app.consumer._thread
    assert isinstance(thread, ConsumerThread)
    await thread.start()
    await thread.call_thread(thread._ensure_consumer().assign,
                             [TopicPartition(tp.topic, tp.partition) for tp in tps])
    return thread


def run(scenario: Any) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, timeout=60))


def test_a_never_committed_partition_rewinds_to_its_beginning(settings: Settings) -> None:
    """Guards ConsumerThread.seek_to_committed: after a rebalance Faust seeks every partition
    back to its committed offset (`perform_seek`), and aiokafka seeks only where an offset
    above 0 was committed, so a partition never committed would keep a fetch position past
    records Faust's flow control dropped, never processed nor committed."""
    topic = settings.topic("wall-input")
    never, committed = TP(topic, 0), TP(topic, 1)

    async def scenario() -> tuple[dict[TP, int | None], dict[TP, int]]:
        app = create_app(settings)
        thread = await started(app, [never, committed])
        try:
            assert await thread.commit({committed: 2})
            consumer = thread._ensure_consumer()
            for tp in (never, committed):  # fetched past, as during a rebalance
                await thread.call_thread(consumer.seek, tp, RECORDS_PER_PARTITION)
            await app.consumer.perform_seek()  # what Faust does once partitions are assigned
            # A partition revoked since it was asked for is left out, not an error.
            return await thread.positions([never, committed, TP(topic, 2)]), \
                dict(app.start_offsets)
        finally:
            await thread.stop()

    positions, starts = run(scenario())
    assert positions == {never: 0, committed: 2}
    assert starts == {never: 0, committed: 2}


def test_the_consumer_fetches_with_the_walls_wait(settings: Settings) -> None:
    """Guards ConsumerThread._create_worker_consumer: aiokafka hands the consumer's
    `_fetch_max_wait_ms` to the fetcher it builds at start, and Faust's 1,500 ms would hold
    every lookup a worker's start makes behind a fetch on the same connection."""
    topic = settings.topic("wall-input")

    async def scenario() -> int:
        app = create_app(settings)
        thread = await started(app, [TP(topic, 0)])
        try:
            return int(thread._ensure_consumer()._fetcher._fetch_max_wait_ms)
        finally:
            await thread.stop()

    assert run(scenario()) == FETCH_MAX_WAIT_MS < 1500


def test_revocation_lets_held_records_go_before_faust_waits_for_them(settings: Settings
                                                                      ) -> None:
    """Guards App.before_revoke and App._on_partitions_revoked (with hold_message and
    give_up_message): when partitions are revoked Faust waits until every record
    read from them is acknowledged (`wait_empty`), which never happens to a record a stage
    holds for event-time order, unless the stage gives it up first. Given up, it is not
    committed: the partition's next owner reads it again."""
    topic = settings.topic("wall-input")
    tp = TP(topic, 0)

    async def scenario() -> tuple[bool, list[tuple[set[TP], bool]], Any, BaseException | None]:
        app = create_app(settings)
        app.topics.add(app.topic(topic, key_type=bytes, value_type=bytes))
        await app.topics._update_indices()  # acknowledgements on, as once subscribed
        thread = await started(app, [tp])
        try:
            consumer = app.consumer
            [event] = delivered(app, [0], topic=topic)
            hold_message(event.message)
            event.ack()  # the batch's end: still held
            calls: list[tuple[set[TP], bool]] = []

            def give_up(revoked: Any) -> None:
                calls.append((set(revoked), event.message in consumer._unacked_messages))
                give_up_message(event.message)

            app.before_revoke(give_up)
            revoking = asyncio.ensure_future(app._on_partitions_revoked({tp}))
            ended, _ = await asyncio.wait({revoking}, timeout=30)
            if not ended:  # Faust's wait ends only when the consumer stops (not cancelled)
                consumer._stopped.set()
                await revoking
            aiokafka_consumer = thread._ensure_consumer()
            return bool(ended), calls, \
                await thread.call_thread(aiokafka_consumer.committed, tp), app.crash_reason
        finally:
            await thread.stop()

    ended, calls, committed, crash = run(scenario())
    assert ended  # within 30 s: Faust's wait did not wait on the held record
    assert calls == [({tp}, True)]  # called once, while Faust still counted it in flight
    assert crash is None
    assert committed is None  # never committed: read again by the next owner


def test_the_log_end_is_asked_of_the_broker_not_taken_from_the_last_fetch(
        settings: Settings) -> None:
    """Guards App.log_end_offsets: the aligned input counts a partition read to its end as
    caught up, and the consumer's highwater is only as new as its last fetch of it. Records
    written after that fetch must show in the log end, or a partition of a stage still being
    written looks caught up and the other partitions' records go past it."""
    topic = settings.topic("wall-input")
    tp = TP(topic, 0)

    async def scenario() -> tuple[int | None, dict[TP, int]]:
        app = create_app(settings)
        thread = await started(app, [tp])
        try:
            fetched = app.highwater(tp)  # nothing fetched yet
            send = producer(settings)
            for n in range(3):
                send.send(topic, value=b"later %d" % n, partition=0)
            send.flush()
            send.close()
            return fetched, dict(await app.log_end_offsets({tp}))
        finally:
            await thread.stop()

    fetched, ends = run(scenario())
    assert not fetched
    assert ends == {tp: RECORDS_PER_PARTITION + 3}
