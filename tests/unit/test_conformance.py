"""What every stateful detector promises the stage that runs it: its state survives the state
table (the codec), a policy reload keeps the state and applies the new thresholds, and idle
entities are forgotten after their window and not before."""

import inspect

import pytest

from detectors.contract import Detector, MatchDetector
from detectors.state_codec import decode_state, encode_state, to_plain
from streams.runtime.rules import retune
from tests.unit.stateful import STATEFUL, Stateful

by_name = pytest.mark.parametrize("kind", STATEFUL, ids=lambda kind: kind.name)


@by_name
def test_it_is_a_detector_built_from_its_policy_section(kind: Stateful):
    """The contract's shape (`detectors/contract.py`): observe with or without the embedding
    stage's match, forget_idle; and every field of its section taken (none dropped)."""
    detector = kind.build()
    assert isinstance(detector, MatchDetector if kind.match is not None else Detector)
    taken = set(inspect.signature(kind.cls).parameters)
    assert set(kind.rule.detector_params()) <= taken


def alerts_of(kind: Stateful, detector, events) -> list[dict]:
    return [alert.to_dict() for alert in kind.feed(detector, events)]


@by_name
def test_state_round_trips_and_the_detector_carries_on_identically(kind: Stateful):
    original = kind.build()
    kind.feed(original, kind.before)
    stored = {key: decode_state(encode_state(state))
              for key, state in kind.state_of(original).items()}
    assert stored == kind.state_of(original)
    restored = kind.build()
    setattr(restored, kind.states, stored)
    expected = alerts_of(kind, original, kind.after)
    assert expected
    assert alerts_of(kind, restored, kind.after) == expected
    assert to_plain(kind.state_of(restored)) == to_plain(kind.state_of(original))


@by_name
def test_retune_keeps_the_state_and_applies_the_new_thresholds(kind: Stateful):
    detector = kind.build(kind.strict)
    kind.feed(detector, kind.before)
    states = getattr(detector, kind.states)
    before = to_plain(dict(states))
    retune(detector, kind.rule)
    assert getattr(detector, kind.states) is states and to_plain(dict(states)) == before
    fresh = kind.build()
    params = [name for name in kind.rule.detector_params() if hasattr(fresh, name)]
    assert params and all(getattr(detector, n) == getattr(fresh, n) for n in params)
    strict = kind.build(kind.strict)
    kind.feed(strict, kind.before)
    assert kind.feed(strict, kind.after) == []
    alerts = kind.feed(detector, kind.after)
    assert alerts
    # The alerts count what the windows held before the reload.
    assert all(a.window_start_ms < kind.after[0].ts_ms for a in alerts)


@by_name
def test_forget_idle_drops_an_entity_once_idle_for_longer_than_its_window(kind: Stateful):
    detector = kind.build()
    kind.feed(detector, kind.before)
    states = getattr(detector, kind.states)
    entities = len(states)
    last_seen = max(event.ts_ms for event in kind.before)
    idle_ms = kind.idle_ms(detector)
    assert entities == 1
    assert detector.forget_idle(last_seen + idle_ms) == 0 and len(states) == entities
    assert detector.forget_idle(last_seen + idle_ms + 1) == entities and len(states) == 0
