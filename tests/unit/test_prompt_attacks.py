"""The current-style sprayers and the toxicity classifier, and what the spray detector makes of
them without any pattern bank (no model here: every match is None)."""

import random
from collections import Counter

import pytest

from detectors.events import event_from_dict
from detectors.jailbreak import JailbreakSprayDetector
from detectors.policy import JailbreakPolicy
from streams.runtime.rules import build
from streams.tooling.simulation.prompt_attacks import (
    SPRAYER_KINDS,
    attack_pool,
    current_sprayers,
    toxicity_classifier,
)

T0 = 1_790_000_000_000
HOUR = 3_600_000


def alerted(events) -> set[str]:
    detector = build(JailbreakSprayDetector, JailbreakPolicy())
    return {alert.entity.id for e in events
            for alert in detector.observe(event_from_dict(e, e["ts"]), None)}


def test_sprayers_are_labelled_deterministic_and_in_time_order():
    kinds = len(SPRAYER_KINDS)
    traffic = current_sprayers(random.Random(3), T0, T0 + 2 * HOUR, "dev", count=kinds)
    again = current_sprayers(random.Random(3), T0, T0 + 2 * HOUR, "dev", count=kinds)
    assert traffic.events == again.events
    assert [label.scenario for label in traffic.labels] == [f"jailbreak:{k}"
                                                           for k in SPRAYER_KINDS]
    assert {label.rule for label in traffic.labels} == {"jailbreak"}
    assert all(label.entity_kind == "account" for label in traffic.labels)
    times = [e["ts"] for e in traffic.events]
    assert times == sorted(times) and times[0] >= T0 and times[-1] < T0 + 2 * HOUR
    per_account = Counter(e["account_id"] for e in traffic.events)
    assert all(per_account[label.entity_id] >= 4 for label in traffic.labels)
    for label in traffic.labels:
        first = min(e["ts"] for e in traffic.events if e["account_id"] == label.entity_id)
        assert label.start_ms == first


@pytest.mark.parametrize("split", ["dev", "test"])
def test_sprayers_draw_from_their_half_only(split):
    own = {a["text"] for a in attack_pool() if a["method"] == "pair" and a["half"] == split}
    other = {a["text"] for a in attack_pool() if a["method"] == "pair" and a["half"] != split}
    traffic = current_sprayers(random.Random(5), T0, T0 + HOUR, split, count=1)  # pair
    prompts = {e["prompt"] for e in traffic.events}
    assert prompts <= own and not prompts & other


def test_fast_sprayers_send_dozens_within_minutes_mostly_flagged():
    traffic = current_sprayers(random.Random(8), T0, T0 + HOUR, "test", count=3)
    for label in traffic.labels:
        mine = [e for e in traffic.events if e["account_id"] == label.entity_id]
        assert len(mine) >= 30
        assert max(e["ts"] for e in mine) - min(e["ts"] for e in mine) <= 10 * 60_000
        assert sum(e["moderation"]["flagged"] for e in mine) >= 0.3 * len(mine)


@pytest.mark.parametrize("split", ["dev", "test"])
def test_fast_sprayers_are_found_without_the_bank(split):
    traffic = current_sprayers(random.Random(11), T0, T0 + HOUR, split, count=3)
    assert {label.entity_id for label in traffic.labels} <= alerted(traffic.events)


def test_many_shot_sprayers_are_found_by_their_flagged_faux_dialogues():
    """8-20 long prompts within 10-25 minutes: too few for the count rule; the decayed rule
    sees them because a flagged many-shot prompt is a jailbreak signal. A run with only four
    or five flagged can stay under it: 20 of 20 found on the development half when this was
    written."""
    found = 0
    for seed in range(10):
        traffic = current_sprayers(random.Random(seed), T0, T0 + HOUR, "dev", count=4)
        many_shot = traffic.labels[3]
        assert many_shot.scenario == "jailbreak:many_shot"
        found += many_shot.entity_id in alerted(traffic.events)
    assert found >= 8


def test_multi_turn_escalation_is_found_by_its_flags_when_automated():
    """An attacker model escalating conversation after conversation: no prompt of it is a
    jailbreak on its own, but dozens of flagged turns within minutes are (the count rule).
    The slowest runs stay under it: 16 of 20 on the development half when this was written."""
    found = 0
    for seed in range(10):
        traffic = current_sprayers(random.Random(seed), T0, T0 + HOUR, "dev", count=5)
        crescendo = traffic.labels[4]
        assert crescendo.scenario == "jailbreak:crescendo"
        mine = [e for e in traffic.events if e["account_id"] == crescendo.entity_id]
        assert len({e["prompt"] for e in mine}) > 10 and len(mine) >= 40
        found += crescendo.entity_id in alerted(mine)
    assert found >= 7


def test_a_slow_sprayer_is_found_over_hours():
    found = 0
    for seed in range(4):
        traffic = current_sprayers(random.Random(seed), T0, T0 + 8 * HOUR, "dev",
                                   count=len(SPRAYER_KINDS))
        slow = traffic.labels[-1]
        assert slow.scenario == "jailbreak:slow"
        mine = [e for e in traffic.events if e["account_id"] == slow.entity_id]
        assert len(mine) >= 20
        found += slow.entity_id in alerted(mine)
    assert found >= 2  # without the bank, from flags and suffixes alone


def test_the_toxicity_classifier_is_not_a_sprayer():
    traffic = toxicity_classifier(random.Random(2), T0, T0 + HOUR)
    assert traffic.labels == []
    flagged = sum(e["moderation"]["flagged"] for e in traffic.events)
    assert len(traffic.events) > 1500 and flagged > 400
    assert alerted(traffic.events) == set()
