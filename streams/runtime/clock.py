"""The one place the worker reads the wall clock, so detectors never do."""

from __future__ import annotations

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def monotonic_s() -> float:
    return time.monotonic()


class Every:
    """Gates periodic housekeeping (pruning idle state) to once per `seconds` of wall time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last = monotonic_s()

    def due(self) -> bool:
        now = monotonic_s()
        if now - self._last < self.seconds:
            return False
        self._last = now
        return True
