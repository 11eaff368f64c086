"""The Faust app, built from settings. `streams.agents.build_app` registers every stage on it;
importing a module starts nothing."""

from __future__ import annotations

from collections.abc import Mapping

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, TransportT

from streams.settings import Settings


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
        changelogs = self.consumer.app.tables.changelog_topics  # recovery positions these
        never = [tp for tp, offset in committed.items()
                 if not offset and tp.topic not in changelogs]
        if never:
            consumer = self._ensure_consumer()
            await self.call_thread(consumer.seek_to_beginning, *never)
        return committed


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer


class App(faust.App):
    def _new_transport(self) -> TransportT:
        return Transport(self.conf.broker_consumer, self)  # type: ignore[arg-type]


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
    )

