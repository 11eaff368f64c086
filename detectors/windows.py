"""Sliding event-time windows per entity, shared by the behaviour detectors."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
S = TypeVar("S")


@dataclass
class SlidingWindow(Generic[T]):
    """Items of the last `length_ms` of event time, oldest first.

    Event ids already in the window are refused, so a replayed or redelivered event is not
    counted twice (Kafka delivers at least once). An item that arrives out of order takes its
    place in event-time order (ties by event id), so the window holds the same items whatever
    order they came in; one older than the window is refused: the window moves forward only.

    `run_start_ms`: when the current run of activity began, the earliest item since the
    window was last empty (a whole window without an item ends a run). It anchors incidents
    (`detectors/incidents.py`): unlike the window's start, it does not move with each event.
    """

    length_ms: int
    items: deque[tuple[int, str, T]] = field(default_factory=deque)
    event_ids: set[str] = field(default_factory=set)
    latest_ms: int = 0
    run_start_ms: int = 0

    def add(self, ts_ms: int, event_id: str, item: T,
            on_evict: Callable[[T], None] | None = None) -> bool:
        """Add an item; return False (and change nothing) for a duplicate or too-late event."""
        if event_id in self.event_ids or ts_ms < self.latest_ms - self.length_ms:
            return False
        horizon = max(self.latest_ms, ts_ms) - self.length_ms
        if not self.items or self.items[-1][0] < horizon:
            self.run_start_ms = ts_ms  # nothing before it stays: a new run
        else:
            self.run_start_ms = min(self.run_start_ms, ts_ms)
        entry = (ts_ms, event_id, item)
        if not self.items or self.items[-1][:2] <= entry[:2]:
            self.items.append(entry)
        else:  # out of order: usually a few places from the end
            place = len(self.items) - 1
            while place > 0 and self.items[place - 1][:2] > entry[:2]:
                place -= 1
            self.items.insert(place, entry)
        self.event_ids.add(event_id)
        self.latest_ms = max(self.latest_ms, ts_ms)
        while self.items and self.items[0][0] < horizon:
            _, old_id, old = self.items.popleft()
            self.event_ids.discard(old_id)
            if on_evict is not None:
                on_evict(old)
        return True

    @property
    def start_ms(self) -> int:
        return self.items[0][0] if self.items else self.latest_ms

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[T]:
        return (item for _, _, item in self.items)


@dataclass
class ActivityCounter:
    """How many events each entity sent in the last `length_ms` of event time, counted in bins
    so a busy entity costs one counter per bin, not one entry per event.

    The ids of each entity's last `max_recent_ids` events are kept, and an event among them is
    not counted again: Kafka redelivers the last moments after a restart, and each repeat
    would make the entity look busier than it is (for the campaign stage, an account whose
    prompts are less concentrated on the campaign than they are)."""

    length_ms: int
    bin_ms: int = 60_000
    bins: MutableMapping[str, dict[int, int]] = field(default_factory=dict)
    recent_ids: MutableMapping[str, list[str]] = field(default_factory=dict)
    max_recent_ids: int = 256

    def observe(self, entity: str, ts_ms: int, event_id: str | None = None) -> int:
        """Count one event and return the entity's count in the window that ends at ts_ms."""
        bins = self.bins.get(entity, {})
        if event_id is not None:
            recent = self.recent_ids.get(entity, [])
            if event_id in recent:
                return sum(n for b, n in bins.items() if b >= self._oldest_bin(ts_ms))
            self.recent_ids[entity] = [*recent[-(self.max_recent_ids - 1):], event_id]
        current = ts_ms // self.bin_ms
        bins[current] = bins.get(current, 0) + 1
        oldest = self._oldest_bin(ts_ms)
        for stale in [b for b in bins if b < oldest]:
            del bins[stale]
        self.bins[entity] = bins  # written back: `bins` may be a state table
        return sum(bins.values())

    def _oldest_bin(self, ts_ms: int) -> int:
        return (ts_ms - self.length_ms) // self.bin_ms

    def forget_idle(self, now_ms: int) -> int:
        oldest = self._oldest_bin(now_ms)
        idle = [entity for entity, bins in self.bins.items() if max(bins, default=0) < oldest]
        for entity in idle:
            del self.bins[entity]
            self.recent_ids.pop(entity, None)
        return len(idle)


def drop_idle(states: MutableMapping[str, S], last_seen: Callable[[S], int],
              horizon_ms: int) -> int:
    """Remove the entities last seen before `horizon_ms` (event time); return how many. Every
    detector's forget_idle: it keeps per-entity state the size of what is live."""
    idle = [entity for entity, state in states.items() if last_seen(state) < horizon_ms]
    for entity in idle:
        del states[entity]
    return len(idle)
