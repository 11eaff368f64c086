"""What a stage sends during one batch, grouped into one Kafka message per partition.

A record's partition is chosen exactly as Kafka's default partitioner would for a keyed send
(murmur2 of the key, modulo the topic's partitions), so per-key state downstream sees every
record of its key on one partition, as it would with one message per record. The records of a
(topic, partition, type) group are then encoded as batches (`streams/runtime/messages.py`) of at
most `max_records` records and `max_bytes` bytes, under the broker's default message size limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiokafka.partitioner import murmur2

from streams.runtime.messages import Record, encode_batch
from streams.runtime.sealing import KeyRing

MAX_RECORDS = 1000
MAX_BYTES = 900 * 1024  # the broker refuses messages over 1 MiB by default


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a keyed message (the Java client's, and aiokafka's)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Envelope:
    """One Kafka message to send: a batch for one partition of one topic."""

    topic: str
    partition: int
    value: bytes
    records: int


@dataclass
class Outbox:
    """`partitions`: how many partitions a topic has (it is asked once per topic); `ring`:
    the worker's keys, which seal every batch."""

    partitions: Callable[[str], int]
    ring: KeyRing
    max_records: int = MAX_RECORDS
    max_bytes: int = MAX_BYTES
    _groups: dict[tuple[str, int, str], list[Record]] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def put(self, topic: str, key: str | bytes, record: Record) -> None:
        raw_key = key.encode("utf-8") if isinstance(key, str) else key
        count = self._counts.get(topic)
        if count is None:
            count = self._counts[topic] = self.partitions(topic)
        group = (topic, partition_for(raw_key, count), record.TYPE)
        self._groups.setdefault(group, []).append(record)

    def __len__(self) -> int:
        return sum(len(records) for records in self._groups.values())

    def drain(self) -> Iterator[Envelope]:
        """Every batch put since the last drain, encoded; the outbox is empty afterwards."""
        groups, self._groups = self._groups, {}
        for (topic, partition, record_type), records in sorted(groups.items()):
            yield from self._encoded(topic, partition, record_type, records)

    def _encoded(self, topic: str, partition: int, record_type: str,
                 records: list[Record]) -> Iterator[Envelope]:
        for start in range(0, len(records), self.max_records):
            chunk = records[start:start + self.max_records]
            value = encode_batch(record_type, chunk, self.ring)
            if len(value) > self.max_bytes and len(chunk) > 1:
                half = len(chunk) // 2
                yield from self._encoded(topic, partition, record_type, chunk[:half])
                yield from self._encoded(topic, partition, record_type, chunk[half:])
            else:
                yield Envelope(topic, partition, value, len(chunk))
