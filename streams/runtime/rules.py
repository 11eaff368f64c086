"""Detectors built from the policy, and re-tuned in place when the policy file changes."""

from __future__ import annotations

import inspect
from collections import deque
from typing import Any, TypeVar

from detectors.contract import Forgetting
from detectors.policy import RulePolicy
from streams.runtime import clock
from streams.runtime.clock import Every

T = TypeVar("T")


def _params(cls: type, rule: RulePolicy) -> dict[str, Any]:
    """The rule's detector parameters, every one of which `cls` must take: a policy field no
    detector reads would look like a setting while changing nothing."""
    params = rule.detector_params()
    unknown = sorted(set(params) - set(inspect.signature(cls).parameters))
    if unknown:
        raise TypeError(f"{cls.__name__} takes no {', '.join(unknown)} from its policy "
                        f"section {type(rule).__name__}")
    return params


def build(cls: type[T], rule: RulePolicy, **extra: Any) -> T:
    return cls(**_params(cls, rule), **extra)


def retune(detector: object, rule: RulePolicy) -> None:
    """Detectors keep their constructor parameters as attributes of the same name, so a policy
    reload changes thresholds without losing the state the windows hold."""
    for name, value in _params(type(detector), rule).items():
        setattr(detector, name, value)


class Housekeeping:
    """Drops per-entity state that has been idle (in event time) for longer than its window,
    at most once per `every_seconds` of wall time, so tables stay the size of what is live.

    "Idle" is judged against a watermark that lags `lateness_seconds` of wall time behind the
    newest event time seen. The newest event comes from whichever input partition the consumer
    is furthest along on; an entity's next events may still sit unread in a partition that
    lags in event time (a replay, a backlog, events keyed by another field upstream), and
    dropping its state mid-attack would split one incident into two alerts. Partitions are
    fetched round-robin, so their lag in wall time stays small even when their lag in event
    time is not."""

    def __init__(self, *detectors: Forgetting, every_seconds: float = 60.0,
                 lateness_seconds: float = 60.0) -> None:
        self.detectors = detectors
        self.pacing = Every(every_seconds)
        self.lateness_seconds = lateness_seconds
        self._newest: deque[tuple[float, int]] = deque()  # (wall time, newest event time then)
        self.watermark_ms = 0

    def run(self, latest_event_ms: int, wall_s: float | None = None) -> None:
        wall_s = clock.monotonic_s() if wall_s is None else wall_s
        if latest_event_ms > (self._newest[-1][1] if self._newest else self.watermark_ms):
            self._newest.append((wall_s, latest_event_ms))
        while self._newest and wall_s - self._newest[0][0] >= self.lateness_seconds:
            self.watermark_ms = self._newest.popleft()[1]
        if self.watermark_ms and self.pacing.due():
            for detector in self.detectors:
                detector.forget_idle(self.watermark_ms)
