"""Validate every usage event; dead-letter what is invalid, forward what is valid."""

from __future__ import annotations

import logging

from faust.types import EventT, StreamT

from detectors.events import InvalidEventError, UsageEvent, parse_usage_event
from detectors.network import network_range
from streams import clock, codec
from streams.app import app
from streams.settings import get_settings
from streams.topics import deadletter_topic, network_events_topic, usage_topic

log = logging.getLogger(__name__)
_settings = get_settings()


async def send_to_deadletter(event: EventT, reason: str) -> None:
    """Keep the original bytes untouched and say why, where they came from, in headers."""
    message = event.message
    log.warning("dead_letter topic=%s partition=%s offset=%s reason=%r",
                message.topic, message.partition, message.offset, reason)
    await deadletter_topic.send(
        key=message.key, value=message.value,
        headers={
            "misuse.reason": reason.encode("utf-8"),
            "misuse.source.topic": message.topic.encode("utf-8"),
            "misuse.source.partition": str(message.partition).encode(),
            "misuse.source.offset": str(message.offset).encode(),
            "misuse.rejected_at_ms": str(clock.now_ms()).encode(),
        },
    )


def without_prompt(event: UsageEvent) -> bytes:
    record = event.to_dict()
    record.pop("prompt", None)
    return codec.dumps(record)


@app.agent(usage_topic)
async def ingest(stream: StreamT) -> None:
    skew_ms = _settings.max_future_skew_seconds * 1000
    # take_events (not take): the dead-letter path needs each message's partition and offset.
    async for batch in stream.take_events(500, within=0.2):  # type: ignore[attr-defined]
        now = clock.now_ms()
        for event in batch:
            try:
                usage = parse_usage_event(event.message.value, now, skew_ms)
            except InvalidEventError as exc:
                await send_to_deadletter(event, str(exc))
                continue
            await network_events_topic.send(
                key=network_range(usage.ip).encode(), value=without_prompt(usage))
