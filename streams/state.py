"""Detector state in Faust tables (RocksDB, recovered from the changelog topic), write-behind.

Detectors keep per-entity state in a mutable mapping and write every changed state back. Giving
them a table directly would pickle and send one changelog message per event per detector; this
mapping keeps the working set in memory and writes each changed entity once per batch, before
the batch is acknowledged, so a restarted worker resumes from the last acknowledged batch.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, MutableMapping
from typing import Any

from faust.streams import _current_event, current_event
from faust.types import AppT, EventT, TableT


def use_event(event: EventT) -> None:
    """Make `event` the current event of this task, as Faust's tables expect of a write.

    Only the context variable (what faust.current_event() reads), never the stream's own
    current_event attribute: Stream.take_events reads that attribute from its background task
    to know which event it buffered, and changing it from an agent's body loses events.
    """
    _current_event.set(weakref.ref(event))


def state_table(app: AppT, name: str) -> TableT:
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
        # The event that last read or changed each key. Faust's store is per partition and
        # looks a key up in the partition of the current event, so a changed key must be
        # written back under that event: its partition is the key's changelog partition.
        self.origin: dict[str, EventT | None] = {}
        self.dirty: set[str] = set()
        self._scanned = False

    def __getitem__(self, key: str) -> Any:
        try:
            return self.cache[key]
        except KeyError:
            value = self.table[key]
            self.cache[key] = value
            self.origin[key] = current_event()
            return value

    def __setitem__(self, key: str, value: Any) -> None:
        self.cache[key] = value
        self.origin[key] = current_event()
        self.dirty.add(key)

    def __delitem__(self, key: str) -> None:
        if key not in self.cache:
            self[key]  # loads it, or raises KeyError
        del self.cache[key]
        self.dirty.add(key)

    def __iter__(self) -> Iterator[str]:
        """Every key this worker holds. The first time, keys only in the table are loaded with
        their values (the store cannot look them up outside their partition's events); after
        that the cache holds them all, as every new key comes through __setitem__."""
        if not self._scanned:
            for key, value in list(self.table.items()):
                if key not in self.cache:
                    self.cache[key] = value
                    self.origin.setdefault(key, None)
            self._scanned = True
        return iter(list(self.cache))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def flush(self) -> None:
        for key in self.dirty:
            event = self.origin.get(key)
            if event is None:
                # Loaded by iteration, never touched by an event of its partition: leave the
                # table as it is (an idle key the detector dropped stays until next used).
                continue
            use_event(event)
            if key in self.cache:
                self.table[key] = self.cache[key]
            else:
                self.table.pop(key, None)
                self.origin.pop(key, None)
        self.dirty.clear()

    def forget_cache(self) -> None:
        """After a rebalance: the table is the truth for whatever partitions we now own."""
        self.cache.clear()
        self.origin.clear()
        self.dirty.clear()
        self._scanned = False


class FaustState:
    """A stage's `StateStore` in the worker: its tables, declared on the app before it starts
    (Faust subscribes to their changelogs at start), each behind a write-behind `TableState`."""

    def __init__(self, app: AppT, names: tuple[str, ...]) -> None:
        self.states = {name: TableState(state_table(app, name)) for name in names}
        # After a rebalance the tables are the truth for whatever partitions we now own.
        app.on_partitions_revoked.connect(self.forget_caches)  # type: ignore[arg-type]

    def table(self, name: str) -> TableState:
        return self.states[name]

    def flush(self) -> None:
        for state in self.states.values():
            state.flush()

    async def forget_caches(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        for state in self.states.values():
            state.forget_cache()
