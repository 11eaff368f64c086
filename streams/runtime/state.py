"""Detector state in Faust tables (RocksDB, recovered from the changelog topic), write-behind.

Detectors keep per-entity state in a mutable mapping and write every changed state back. Giving
them a table directly would encode and send one changelog message per event per detector; this
mapping keeps the working set in memory and writes each changed entity once per batch, before
the batch is acknowledged, so a restarted worker resumes from the last acknowledged batch.

The tables hold bytes: each value is encoded by the state codec (`detectors/state_codec.py`),
plain versioned data that only builds the state types it knows, never arbitrary objects, and
sealed with the worker's key for its table and key (`streams/runtime/sealing.py`): a value
written to a changelog by anyone else (or before the worker sealed its state) is never loaded;
it is skipped like an unreadable one, counted, and raises a security alert.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator, MutableMapping
from typing import Any

from faust.types import AppT, EventT, TableT

from detectors.state_codec import StateCodecError, decode_state, encode_state
from streams.runtime.faust_wall import current_event, recovering_table, write_table
from streams.runtime.metrics import state_unreadable
from streams.runtime.sealing import KeyRing, UnsealedError

log = logging.getLogger(__name__)

UNREADABLE = object()  # what TableState._decoded returns for bytes the codec refuses


def state_table(app: AppT, name: str) -> TableT:
    """A table of per-entity detector state, as codec bytes. Faust derives the raw value
    serializer from `value_type=bytes`, for the store and the changelog topic alike; keys go
    to the changelog as JSON strings."""
    return recovering_table(app, name, key_type=str, value_type=bytes,
                            on_undecodable=_skip_undecodable)


def _skip_undecodable(table: TableT, event: EventT, reason: str) -> None:
    """A changelog record whose key Faust cannot read (not a JSON string) is left out of the
    recovered table: no entity of ours can have that key, and waiting for it would keep the
    worker from ever becoming ready."""
    message = event.message
    state_unreadable.labels(table.name).inc()
    log.error("state_unreadable table=%s partition=%d offset=%d key=%s reason=%s: skipped",
              table.name, message.partition, message.offset, ascii(message.key)[:80],
              " ".join(reason.split()))


class TableState(MutableMapping[str, Any]):
    def __init__(self, table: TableT, ring: KeyRing) -> None:
        self.table, self.ring = table, ring
        self.cache: dict[str, Any] = {}
        # The event that last read or changed each key. Faust's store is per partition and
        # looks a key up in the partition of the current event, so a changed key must be
        # written back under that event: its partition is the key's changelog partition.
        self.origin: dict[str, EventT | None] = {}
        self.dirty: set[str] = set()
        self._scanned = False
        self.unreadable: set[str] = set()  # reported already
        self.unverified: list[tuple[str, str]] = []  # (key, why), for security alerts

    def __getitem__(self, key: str) -> Any:
        try:
            return self.cache[key]
        except KeyError:
            value = self._decoded(key, self.table[key])
            if value is UNREADABLE:
                raise KeyError(key) from None
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
            for key, raw in list(self.table.items()):
                if key not in self.cache:
                    value = self._decoded(key, raw)
                    if value is UNREADABLE:
                        continue
                    self.cache[key] = value
                    self.origin.setdefault(key, None)
            self._scanned = True
        return iter(list(self.cache))

    def _decoded(self, key: str, raw: bytes) -> Any:
        """The state in `raw`, or UNREADABLE when it cannot be read (written by a newer worker,
        or by a worker from before the codec): the entity starts afresh, which loses at most
        one window of evidence, rather than stopping the stage on every event of that entity.
        Reported once per key, however often it is looked up before it is written again."""
        try:
            return decode_state(self.ring.open(raw, self.context(key)))
        except (StateCodecError, UnsealedError) as exc:
            if key not in self.unreadable and isinstance(exc, UnsealedError):
                self.unverified.append((key, str(exc)))
            if key not in self.unreadable:
                self.unreadable.add(key)
                state_unreadable.labels(self.table.name).inc()
                log.error("state_unreadable table=%s key=%s reason=%s", self.table.name, key,
                          " ".join(str(exc).split()))
            return UNREADABLE

    def context(self, key: str) -> bytes:
        """What a value's MAC binds it to: its table and key."""
        return f"{self.table.name}\0{key}".encode()

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def flush(self) -> list[Awaitable[Any]]:
        """Write every changed key to the store and its changelog partition; returns the
        changelog sends, which the caller awaits before acknowledging the batch: Faust's own
        flush before a commit gives up after 0.1 s without a delivery, and an offset
        committed ahead of its state loses that state when the partition moves."""
        sent: list[Awaitable[Any]] = []
        for key in self.dirty:
            event = self.origin.get(key)
            if event is None:
                # Loaded by iteration, never touched by an event of its partition: leave the
                # table as it is (an idle key the detector dropped stays until next used).
                continue
            raw = (self.ring.seal(encode_state(self.cache[key]), self.context(key))
                   if key in self.cache else None)
            sent.append(write_table(self.table, event, key, raw))
            if raw is None:
                self.origin.pop(key, None)
        self.dirty.clear()
        return sent

    def forget_cache(self) -> None:
        """After a rebalance: the table is the truth for whatever partitions we now own."""
        self.cache.clear()
        self.origin.clear()
        self.dirty.clear()
        self._scanned = False


class FaustState:
    """A stage's `StateStore` in the worker: its tables, declared on the app before it starts
    (Faust subscribes to their changelogs at start), each behind a write-behind `TableState`."""

    def __init__(self, app: AppT, names: tuple[str, ...], ring: KeyRing) -> None:
        self.states = {name: TableState(state_table(app, name), ring) for name in names}
        self.pending: list[Awaitable[Any]] = []
        # After a rebalance the tables are the truth for whatever partitions we now own.
        app.on_partitions_revoked.connect(self.forget_caches)  # type: ignore[arg-type]

    def table(self, name: str) -> TableState:
        return self.states[name]

    def flush(self) -> None:
        for state in self.states.values():
            self.pending.extend(state.flush())

    def unverified(self) -> list[tuple[str, str, str]]:
        """(table, key, why) of every value refused for its MAC since the last call."""
        found = []
        for state in self.states.values():
            found += [(state.table.name, key, why) for key, why in state.unverified]
            state.unverified.clear()
        return found

    async def delivered(self) -> None:
        """Wait until the changelog has every write flushed so far."""
        pending, self.pending = self.pending, []
        await asyncio.gather(*pending)

    async def forget_caches(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        for state in self.states.values():
            state.forget_cache()
