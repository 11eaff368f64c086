"""Sliding event-time windows per entity, shared by the behaviour detectors."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class SlidingWindow(Generic[T]):
    """Items of the last `length_ms` of event time, newest last.

    Event ids already in the window are refused, so a replayed or redelivered event is not
    counted twice (Kafka delivers at least once). Items older than the window are refused too:
    the window only moves forward in event time.
    """

    length_ms: int
    items: deque[tuple[int, str, T]] = field(default_factory=deque)
    event_ids: set[str] = field(default_factory=set)
    latest_ms: int = 0

    def add(self, ts_ms: int, event_id: str, item: T,
            on_evict: Callable[[T], None] | None = None) -> bool:
        """Add an item; return False (and change nothing) for a duplicate or too-late event."""
        if event_id in self.event_ids or ts_ms < self.latest_ms - self.length_ms:
            return False
        self.items.append((ts_ms, event_id, item))
        self.event_ids.add(event_id)
        self.latest_ms = max(self.latest_ms, ts_ms)
        horizon = self.latest_ms - self.length_ms
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
