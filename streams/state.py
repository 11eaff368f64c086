"""Detector state in Faust tables (RocksDB, recovered from the changelog topic), write-behind.

Detectors keep per-entity state in a mutable mapping and write every changed state back. Giving
them a table directly would pickle and send one changelog message per event per detector; this
mapping keeps the working set in memory and writes each changed entity once per batch, before
the batch is acknowledged, so a restarted worker resumes from the last acknowledged batch.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from faust.streams import current_event
from faust.types import EventT, StreamT, TableT

from streams.app import app

# Every state of this worker: they live as long as their agents, i.e. the process.
_live: list[TableState] = []


def state_table(name: str) -> TableT:
    """A table of per-entity detector state. Pickle, not JSON: the states hold sets, deques
    and counters; the changelog topic is internal and read only by this app."""
    table = app.Table(name, key_type=str)
    # Faust derives serializers from the value type (JSON for anything but a Record) and
    # builds the changelog topic with them at once: set pickle, then build the topic again
    # (the store is created later, on first use, and picks the serializer up by itself).
    table.value_serializer = "pickle"  # type: ignore[attr-defined]
    table.changelog_topic = table._new_changelog_topic()  # type: ignore[attr-defined]
    return table


class TableState(MutableMapping[str, Any]):
    def __init__(self, table: TableT) -> None:
        self.table = table
        self.cache: dict[str, Any] = {}
        # The event that last changed each key: its partition is the key's changelog partition.
        self.dirty: dict[str, EventT | None] = {}
        _live.append(self)

    def __getitem__(self, key: str) -> Any:
        try:
            return self.cache[key]
        except KeyError:
            value = self.table[key]
            self.cache[key] = value
            return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.cache[key] = value
        self.dirty[key] = current_event()

    def __delitem__(self, key: str) -> None:
        in_table = key in self.table
        if self.cache.pop(key, None) is None and not in_table:
            raise KeyError(key)
        self.dirty[key] = current_event()

    def __iter__(self) -> Iterator[str]:
        return iter(set(self.cache) | set(self.table.keys()))

    def __len__(self) -> int:
        return len(set(self.cache) | set(self.table.keys()))

    def flush(self, stream: StreamT) -> None:
        for key, event in self.dirty.items():
            if event is None:
                continue  # changed outside a stream (unit tests): nothing to persist
            stream._set_current_event(event)  # type: ignore[attr-defined]
            if key in self.cache:
                self.table[key] = self.cache[key]
            elif key in self.table:
                del self.table[key]
        self.dirty.clear()

    def forget_cache(self) -> None:
        """After a rebalance: the table is the truth for whatever partitions we now own."""
        self.cache.clear()
        self.dirty.clear()


async def forget_caches(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
    for state in _live:
        state.forget_cache()


app.on_partitions_revoked.connect(forget_caches)  # type: ignore[arg-type]
