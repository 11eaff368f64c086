"""Every stage in one process, wired by the topics they read, with state in plain dicts: the
worker's stages and wire format without Kafka, for stage tests and profiles.

Messages go between stages as the encoded batches the worker would send (so encoding, decoding
and dead-lettering are exercised); the topics no stage reads (alerts, documents, actions, dead
letters) are collected for the caller. Partitions are kept apart as in the worker, since a
stage's state and the order it sees records in are per partition.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detectors.policy import Policy
from streams.runtime.alignment import InputOrder
from streams.runtime.driver import MemoryState, Prepared, StageDriver, StageSpec
from streams.runtime.messages import Record, records_in
from streams.runtime.outbox import Outbox
from streams.settings import get_settings


@dataclass
class Collected:
    """What left the stages: decoded records per topic no stage reads, and dead letters."""

    records: dict[str, list[Record]] = field(default_factory=lambda: defaultdict(list))
    dead_letters: list[tuple[str, str]] = field(default_factory=list)  # (topic, reason)
    processed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))  # per stage


class InProcessPipeline:
    def __init__(self, specs: Sequence[StageSpec], policy: Policy,
                 now_ms: Callable[[], int] | None = None, batch_size: int = 500,
                 workers: int = 1) -> None:
        """`workers`: instances of every stage, as in that many worker processes sharing the
        partitions (partition p goes to instance p mod workers)."""
        self.policy, self.batch_size, self.workers = policy, batch_size, workers
        self.now_ms = now_ms or (lambda: 0)
        settings = get_settings()
        partitions = settings.partitions  # the worker's rule, one partition for vectors
        self.drivers: dict[str, list[StageDriver[bytes]]] = {}
        self.readers: dict[str, list[str]] = defaultdict(list)
        for spec in specs:
            self.drivers[spec.stage.name] = []
            for _ in range(workers):
                state = MemoryState()
                self.drivers[spec.stage.name].append(StageDriver(
                    spec.stage.configured(policy, state, settings),
                    Outbox(partitions, settings.internal_keys),
                    value=lambda message: message, policy=policy, state=state))
            for topic in spec.reads:
                self.readers[topic].append(spec.stage.name)
        self.ticking = [spec.stage.name for spec in specs if spec.tick_seconds]
        # Stages read in event-time order in the worker are here too: the same holding back,
        # with no wall clock (nothing is held for too long in a pipeline that never stalls).
        self.ordered = {spec.stage.name: [InputOrder[int, Any].within(
            int(spec.align_seconds * 1000), max_hold_seconds=float("inf"))
            for _ in range(workers)] for spec in specs if spec.align_seconds}
        self.ordered_topic = {spec.stage.name: spec.reads[0] for spec in specs}
        self.enqueued: dict[tuple[str, int], int] = defaultdict(int)  # messages per partition
        self.read: dict[tuple[str, int], int] = defaultdict(int)  # of them taken in a batch
        self.collected = Collected()

    def run(self, topic: str, messages: Iterable[bytes] | Mapping[int, Iterable[bytes]],
            interleave: random.Random | None = None) -> Collected:
        """Feed raw messages to `topic` in batches and run every stage until nothing is left
        in flight, then tick the stages that tick (as the worker's timers would once the input
        pauses), until that too leaves nothing in flight. Returns everything collected.

        `messages`: for partition 0, or by partition. `interleave`: take the next batch from a
        partition of any topic chosen at random, of a random size, as a worker's fetches might
        (each partition stays in order); by default the oldest in flight, whole batches."""
        pending: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        by_partition = messages if isinstance(messages, Mapping) else {0: messages}
        for partition, values in by_partition.items():
            self._enqueue(pending, topic, partition, values)
        while pending:
            while pending:
                if interleave is None:
                    (topic, partition), queue = next(iter(pending.items()))
                    size = self.batch_size
                else:
                    topic, partition = interleave.choice(sorted(pending))
                    queue = pending[(topic, partition)]
                    size = interleave.randint(1, self.batch_size)
                batch, rest = queue[:size], queue[size:]
                self.read[(topic, partition)] += len(batch)
                if rest:
                    pending[(topic, partition)] = rest
                else:
                    del pending[(topic, partition)]
                for name in self.readers[topic]:
                    self._run(name, partition, topic, batch, pending)
            # Twice: a stage that ticks sees a whole tick without input only at the second
            # (the campaign stage then judges the points it still holds).
            for name in [*self.ticking, *self.ticking, *self.ordered]:
                for partition in range(self.workers):
                    self._run(name, partition, "", [], pending)
        return self.collected

    def _enqueue(self, pending: dict[tuple[str, int], list[bytes]], topic: str, partition: int,
                 values: Iterable[bytes]) -> None:
        queue = pending[(topic, partition)]
        before = len(queue)
        queue.extend(values)
        self.enqueued[(topic, partition)] += len(queue) - before

    def _run(self, name: str, partition: int, topic: str, batch: list[bytes],
             pending: dict[tuple[str, int], list[bytes]]) -> None:
        began = time.perf_counter()
        driver = self.drivers[name][partition % self.workers]
        if name in self.ordered:
            prepared = driver.prepare_step(
                self._in_order(name, partition, batch, driver.decode(batch)))
            result = driver.finish(prepared, self.now_ms(), self.policy)
        else:
            result = driver.run(batch, self.now_ms(), self.policy)
        self.collected.seconds[name] += time.perf_counter() - began
        self.collected.processed[name] += result.records
        self.collected.dead_letters += [(topic, d.reason) for d in result.dead_letters]
        for envelope in result.envelopes:
            if envelope.topic in self.readers:
                self._enqueue(pending, envelope.topic, envelope.partition, [envelope.value])
            else:
                self.collected.records[envelope.topic] += records_in(envelope.value,
                                                                     driver.outbox.ring)

    def _in_order(self, name: str, partition: int, batch: list[bytes],
                  prepared: Prepared[bytes]) -> Prepared[bytes]:
        """Hold and release as the worker's aligned input does (`streams/runtime/stage_agent.py`);
        a message's offset is its place in its partition."""
        order, topic = self.ordered[name][partition % self.workers], self.ordered_topic[name]
        first = self.read[(topic, partition)] - len(batch)
        offsets = {id(message): first + index for index, message in enumerate(batch)}
        for offset in offsets.values():  # dead letters too: read, they hold nothing back
            order.alignment.read(partition, offset)
        for message, items in prepared.messages:
            order.take_records(partition, offsets[id(message)], items, message, 0.0)
        mine = [p for (t, p) in self.enqueued
                if t == topic and p % self.workers == partition % self.workers]
        released = order.release(mine, lambda p: 0, lambda p: self.enqueued[(topic, p)], 0.0)
        return Prepared(released, prepared.dead_letters)

    def stage(self, name: str) -> object:
        return self.drivers[name][0].stage

