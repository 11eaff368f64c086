"""Detectors built from the policy, and re-tuned in place when the policy file changes."""

from __future__ import annotations

import inspect
from typing import Any, TypeVar

from detectors.policy import RulePolicy
from streams.clock import Every

T = TypeVar("T")


def _accepted(cls: type, rule: RulePolicy) -> dict[str, Any]:
    names = inspect.signature(cls).parameters
    return {k: v for k, v in rule.detector_params().items() if k in names}


def build(cls: type[T], rule: RulePolicy, **extra: Any) -> T:
    return cls(**_accepted(cls, rule), **extra)


def retune(detector: object, rule: RulePolicy) -> None:
    """Detectors keep their constructor parameters as attributes of the same name, so a policy
    reload changes thresholds without losing the state the windows hold."""
    for name, value in _accepted(type(detector), rule).items():
        setattr(detector, name, value)


class Housekeeping:
    """Drops per-entity state that has been idle (in event time) for longer than its window,
    at most once per `every_seconds` of wall time, so tables stay the size of what is live."""

    def __init__(self, *detectors: Any, every_seconds: float = 60.0) -> None:
        self.detectors = detectors
        self.pacing = Every(every_seconds)

    def run(self, latest_event_ms: int) -> None:
        if latest_event_ms and self.pacing.due():
            for detector in self.detectors:
                detector.forget_idle(latest_event_ms)
