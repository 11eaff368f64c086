"""Faust's own app, consumer and messages for unit tests of what stands on the wall: the
worker's app class built (never started), and records delivered as Faust's consumer hands
them to a stream. No broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from aiokafka.structs import ConsumerRecord
from faust.events import Event
from faust.types import TP, EventT

from streams.runtime.faust_wall import App

TOPIC = "wall-input"
TP0 = TP(TOPIC, 0)


def wall_app(data_dir: Path, topics: Iterable[str] = (TOPIC,)) -> App:
    """The worker's app class, built (never started) as create_app builds it, reading `topics`
    with acknowledgements on, as an agent's topic is once subscribed."""
    app = App("wall-test", broker="kafka://127.0.0.1:9092", store="rocksdb://",
              datadir=str(data_dir), web_enabled=False)
    for topic in topics:
        app.topics.add(app.topic(topic, key_type=bytes, value_type=bytes))
    asyncio.run(app.topics._update_indices())  # what the subscription does
    assert all(app.topics.acks_enabled_for(topic) for topic in topics)
    return app


def delivered(app: App, offsets: Iterable[int], partition: int = 0, topic: str = TOPIC
              ) -> list[EventT]:
    """Records of `topic` as Faust's consumer turns them into messages and hands them to one
    stream: tracked as unacknowledged, one reference each (the conductor's, per stream)."""
    consumer = app.consumer
    events: list[EventT] = []
    for offset in offsets:
        record = ConsumerRecord(topic, partition, offset, 0, 0, b"k", b"v", None, 1, 1, [])
        message = consumer._to_message(TP(topic, partition), record)
        consumer.track_message(message)
        message.incref()
        events.append(Event(app, message.key, message.value, message.headers, message))
    return events
