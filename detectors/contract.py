"""What a detector is, for the stages that run it and the one conformance test that holds every
detector to it (tests/unit/test_conformance.py).

A detector is built from its policy section (`streams/runtime/rules.py` `build`: every field
of the section is a constructor parameter of the same name, none dropped) and retuned from it
in place (`retune`), its per-entity state living in a mapping the stage gives it (a state
table, encoded by `detectors/state_codec.py`). It observes events in event time and returns
the alerts they complete; `forget_idle` drops the entities idle past its window and says how
many it dropped.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from detectors.alerts import Alert
from detectors.events import UsageEvent
from detectors.jailbreak import Match


@runtime_checkable
class Forgetting(Protocol):
    """What housekeeping needs of a detector: to drop what has been idle."""

    def forget_idle(self, now_ms: int) -> int: ...


@runtime_checkable
class Detector(Forgetting, Protocol):
    def observe(self, event: UsageEvent) -> list[Alert]: ...


@runtime_checkable
class MatchDetector(Forgetting, Protocol):
    """A detector of prompts the embedding stage matched against the jailbreak bank: it
    observes each event with its best match (or None)."""

    def observe(self, event: UsageEvent, match: Match | None) -> list[Alert]: ...
