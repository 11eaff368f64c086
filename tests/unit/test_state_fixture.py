"""State written by an earlier worker must stay readable, and the detectors must carry on from
it: tests/data/state-v*.msgpack hold what each state table held (written by `python -m
tests.unit.stateful` at that format version) and are never rewritten. A later format version
reads them through `_upgrade`; a new state type gets its sample in a new fixture file."""

import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest

from detectors.accounts import next_status
from detectors.risk import RiskScorer
from detectors.state_codec import STATE_TYPES, decode_state
from tests.unit.stateful import FIXTURE, MINUTE, STATEFUL, T0, Stateful, read_fixture

FIXTURES = sorted(FIXTURE.parent.glob("state-v*.msgpack"))


def decoded(path: Path = FIXTURE) -> dict[str, dict[str, Any]]:
    return {table: {key: decode_state(raw) for key, raw in values.items()}
            for table, values in read_fixture(path).items()}


def tags(plain: Any) -> set[str]:
    if isinstance(plain, list):
        return set().union(*map(tags, plain))
    if isinstance(plain, dict):
        found = {plain["$"]} if "$" in plain else set()
        return found.union(*map(tags, plain.values()))
    return set()


def test_every_fixture_loads_and_together_they_hold_every_state_type():
    assert FIXTURE in FIXTURES
    seen: set[str] = set()
    for path in FIXTURES:
        decoded(path)
        for values in read_fixture(path).values():
            for raw in values.values():
                seen |= tags(msgpack.unpackb(zlib.decompress(raw), raw=False)["state"])
    assert set(STATE_TYPES) <= seen


@pytest.mark.parametrize("kind", STATEFUL, ids=lambda kind: kind.name)
def test_a_detector_carries_on_its_stored_incident(kind: Stateful):
    stored = decoded()[kind.table]
    detector = kind.build()
    setattr(detector, kind.states, stored)
    starts = {state.incident.start_ms for state in stored.values()}
    alerts = kind.feed(detector, kind.after)
    assert alerts and {a.incident_start_ms for a in alerts} <= starts
    assert all(a.window_start_ms < kind.after[0].ts_ms for a in alerts)  # the stored window


def test_risk_and_account_records_carry_on():
    tables = decoded()
    scorer = RiskScorer()
    scorer.accounts = tables["state-risk"]
    assessment = scorer.assess("acct-1", T0 + 10 * MINUTE)
    assert set(assessment.alert_ids) == {"alert-0", "alert-1"}
    assert set(assessment.detectors) == {"jailbreak", "sybil"}
    flagged, cleared = (tables["state-account-status"][a] for a in ("acct-1", "acct-2"))
    assert flagged.status.status == "flagged" and flagged.first_flagged_ms == T0
    assert flagged.history[0]["detectors"] == ["jailbreak"]
    assert cleared.status.cleared_at_ms == T0
    # The analyst's clearing still holds: only evidence newer than it counts.
    change = next_status(cleared.status, assessment, T0 + 10 * MINUTE)
    assert change is not None
    assert change.evidence_since_ms == T0 and change.detectors == ("sybil",)
    change = next_status(flagged.status, assessment, T0 + 10 * MINUTE)
    assert change is not None and change.status == "suspended"


def test_activity_and_first_seen_carry_on():
    tables = decoded()
    assert tables["activity"]["embed_prompts"].observe("acct-1", T0 + 5 * MINUTE) == 31
    assert tables["state-key-first-seen"] == {"key-1": T0}


def test_the_act_stage_carries_on_its_stored_ledgers():
    from detectors.actions import QUEUE_CAP, SEND
    from detectors.policy import Automation
    from tests.unit.stateful import ACT_FIXTURE

    ledgers = decoded(ACT_FIXTURE)["state-act"]
    automation, pages = ledgers["automation"], ledgers["pages"]
    policy = Automation(max_suspensions_per_hour=2)
    # One suspension sent at T0 is remembered: one more fits in that hour, then the cap.
    assert automation.admit("r1", T0 + MINUTE, policy)[0] == SEND
    assert automation.admit("r2", T0 + 2 * MINUTE, policy)[0] == QUEUE_CAP
    assert automation.take("acct-2") == {"account_id": "acct-2", "ts_ms": T0}
    assert pages.resolve("campaign:c1") == {"dedup_key": "alert-1"}
