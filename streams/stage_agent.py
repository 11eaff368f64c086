"""The Faust side of the stage runtime: every stage runs in an agent with this one loop.

The loop feeds batches of Kafka messages to the stage's `StageDriver` (`streams/runtime.py`,
which holds the contract), runs the stage's pure batch step off the event loop when the stage
says it blocks (the embedding model), dead-letters what the driver refused with its reason and
origin, and sends each output batch to its partition. A stage is built off the event loop too
(loading a model, rebuilding clusters).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from faust.types import EventT, StreamT, TopicT

from detectors.policy import Policy
from streams import clock
from streams.app import app
from streams.outbox import Outbox
from streams.policy import current_policy
from streams.runtime import Stage, StageDriver
from streams.settings import get_settings
from streams.state import use_event

log = logging.getLogger(__name__)
_topics: dict[str, TopicT] = {}


def topic(name: str) -> TopicT:
    """The topic of a logical name ("misuse.alerts"), with this worker's prefix."""
    if name not in _topics:
        _topics[name] = app.topic(get_settings().topic(name), key_type=bytes,
                                  value_type=bytes)
    return _topics[name]


async def dead_letter(event: EventT, reason: str) -> None:
    """Keep the original bytes untouched and say why, and where they came from, in headers."""
    message = event.message
    log.warning("dead_letter topic=%s partition=%s offset=%s reason=%r",
                message.topic, message.partition, message.offset, reason[:300])
    await topic("misuse.deadletter").send(
        key=message.key, value=message.value,
        headers={
            "misuse.reason": reason.encode("utf-8"),
            "misuse.source.topic": message.topic.encode("utf-8"),
            "misuse.source.partition": str(message.partition).encode(),
            "misuse.source.offset": str(message.offset).encode(),
            "misuse.rejected_at_ms": str(clock.now_ms()).encode(),
        },
    )


def register_stage(name: str, reads: Sequence[str], make_stage: Callable[[Policy], Stage], *,
                   batch_size: int = 500, within: float = 0.5, blocking: bool = False) -> None:
    """An agent named `name` running the stage built by `make_stage` over the topics `reads`
    (logical names). `blocking`: the stage's batch step is run in a thread."""
    settings = get_settings()
    source = app.topic(*(settings.topic(n) for n in reads), key_type=bytes, value_type=bytes)

    async def run_stage(stream: StreamT) -> None:
        loop = asyncio.get_running_loop()
        policy = current_policy()
        stage = await loop.run_in_executor(None, make_stage, policy)
        driver: StageDriver[EventT] = StageDriver(
            stage, Outbox(partitions=lambda _: settings.topic_partitions),
            value=lambda event: event.message.value, activate=use_event, policy=policy)
        log.info("stage_ready stage=%s reads=%s", name, ",".join(reads))
        async for events in stream.take_events(batch_size, within=within):  # type: ignore[attr-defined]
            prepared = (await loop.run_in_executor(None, driver.prepare, events) if blocking
                        else driver.prepare(events))
            result = driver.finish(prepared, clock.now_ms(), current_policy())
            for dead in result.dead_letters:
                await dead_letter(dead.message, dead.reason)
            for envelope in result.envelopes:
                await topic(envelope.topic).send(value=envelope.value,
                                                 partition=envelope.partition)

    run_stage.__name__ = run_stage.__qualname__ = name
    app.agent(source, name=name)(run_stage)
