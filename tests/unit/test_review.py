"""Analysts' decisions are applied only when signed by the analyst they name."""

import dataclasses
import uuid
from collections import Counter

import pytest
from pydantic import SecretStr

from detectors.policy import Policy
from detectors.risk import Signal
from streams.runtime import clock
from streams.runtime.driver import MemoryState, StageDriver
from streams.runtime.messages import (
    FeedbackRecord,
    SignalRecord,
    encode_batch,
    feedback_batch,
    records_in,
)
from streams.runtime.outbox import Outbox
from streams.runtime.review import FORGED_RULE, sign, verified
from streams.runtime.sealing import DEVELOPMENT_RING as RING  # a local stack's keys
from streams.stages.score_risk import RiskStage

NOW_MS = clock.now_ms()
KEYS = {"alice": SecretStr("alice-secret"), "bob": SecretStr("bob-secret")}


def decision(**changes) -> FeedbackRecord:
    record = FeedbackRecord(account_id="acct-1", decision="allowlisted", analyst="alice",
                            ts_ms=NOW_MS, until_ms=NOW_MS + 86_400_000, note="checked",
                            decision_id=uuid.uuid4().hex)
    return dataclasses.replace(record, **changes)


def test_a_signed_decision_verifies_and_any_change_to_it_does_not():
    signed = sign(decision(), KEYS["alice"])
    assert verified(signed, KEYS)
    for change in ({"account_id": "acct-2"}, {"decision": "cleared"}, {"until_ms": None},
                   {"analyst": "bob"}, {"note": "other"}, {"ts_ms": NOW_MS + 1}):
        assert not verified(dataclasses.replace(signed, **change), KEYS), change
    assert not verified(decision(), KEYS)  # unsigned
    assert not verified(sign(decision(analyst="mallory"), SecretStr("guess")), KEYS)
    assert not verified(sign(decision(), KEYS["bob"]), KEYS)  # bob signing as alice


def risk_stage() -> tuple[StageDriver, MemoryState]:
    """The risk stage with KEYS as the worker's review keys."""
    state = MemoryState()
    return StageDriver(RiskStage(Policy(), state, review_keys=KEYS), Outbox(lambda _: 1, RING),
                       value=lambda m: m, policy=Policy(), state=state), state


def test_the_risk_stage_applies_a_signed_decision_and_refuses_a_forged_one():
    driver, state = risk_stage()
    strong = SignalRecord(Signal("acct-1", "jailbreak", "jailbreak.spray", 1.0, NOW_MS - 5000,
                                 "alert-1", "evidence"))
    driver.run([encode_batch(SignalRecord.TYPE, [strong], RING)], NOW_MS)
    statuses = state.table("state-account-status")
    assert statuses["acct-1"].status.status == "flagged"

    forged = decision()  # a plain producer's record: unsigned
    result = driver.run([feedback_batch([forged])], NOW_MS)
    assert statuses["acct-1"].status.status == "flagged"  # not allowlisted
    assert len(result.dead_letters) == 1 and "unverified" in result.dead_letters[0].reason
    topics = Counter(e.topic for e in result.envelopes)
    assert topics["misuse.alerts"] == 1
    alerts = [r.alert for e in result.envelopes if e.topic == "misuse.alerts"
              for r in records_in(e.value, RING)]
    assert alerts[0].rule_id == FORGED_RULE and alerts[0].entity.id == "acct-1"

    result = driver.run([feedback_batch([sign(forged, KEYS["alice"])])],
                        NOW_MS)
    assert not result.dead_letters
    assert statuses["acct-1"].status.status == "allowlisted"


def test_strong_new_evidence_on_an_allowlisted_account_asks_for_a_review():
    driver, state = risk_stage()
    allowlisting = sign(decision(ts_ms=NOW_MS - 60_000), KEYS["alice"])
    driver.run([feedback_batch([allowlisting])], NOW_MS)
    strong = [SignalRecord(Signal("acct-1", kind, f"{kind}.x", 1.0, NOW_MS - 1000 + i,
                                  f"alert-{i}", "evidence"))
              for i, kind in enumerate(("jailbreak", "credential_stuffing"))]
    result = driver.run([encode_batch(SignalRecord.TYPE, strong, RING)], NOW_MS)
    alerts = [r.alert for e in result.envelopes if e.topic == "misuse.alerts"
              for r in records_in(e.value, RING)]
    assert {a.rule_id for a in alerts} == {"review.allowlisted_account_evidence"}
    assert len({a.alert_id for a in alerts}) == 1  # one per allowlisting, updated
    assert state.table("state-account-status")["acct-1"].status.status == "allowlisted"


def test_closing_an_alert_as_a_false_positive_stops_it_feeding_risk():
    driver, state = risk_stage()
    strong = [SignalRecord(Signal("acct-1", detector, f"{detector}.x", 1.0, NOW_MS - 5000,
                                  f"alert-{detector}", "evidence"))
              for detector in ("jailbreak", "scraping")]
    driver.run([encode_batch(SignalRecord.TYPE, strong, RING)], NOW_MS)
    risk = state.table("state-risk")
    assert set(risk["acct-1"].signals) == {"alert-jailbreak", "alert-scraping"}

    closed = sign(decision(decision="closed", alert_id="alert-jailbreak", until_ms=None,
                           close_reason="false_positive", page_group="jailbreak.x:account:a"),
                  KEYS["alice"])
    result = driver.run([feedback_batch([closed])], NOW_MS)
    assert not result.dead_letters
    assert set(risk["acct-1"].signals) == {"alert-scraping"}
    outputs = [r for e in result.envelopes for r in records_in(e.value, RING)]
    assert any(getattr(r, "action", None) == "resolve" for r in outputs)  # its page resolves
    # The growing incident's next update is ignored too.
    driver.run([encode_batch(SignalRecord.TYPE, strong[:1], RING)], NOW_MS)
    assert set(risk["acct-1"].signals) == {"alert-scraping"}
    # A closing without a known reason is refused.
    bad = sign(decision(decision="closed", alert_id="alert-scraping", close_reason="meh"),
               KEYS["alice"])
    assert driver.run([feedback_batch([bad])], NOW_MS).dead_letters


def refused_reason(result) -> str:
    [dead] = result.dead_letters
    alerts = [r.alert for e in result.envelopes if e.topic == "misuse.alerts"
              for r in records_in(e.value, RING)]
    assert [a.rule_id for a in alerts] == [FORGED_RULE]  # every refusal is a security alert
    return dead.reason


def test_a_genuine_decision_applies_once_and_its_replay_is_refused():
    """The probe's replay: a signed clearing, taken off the topic and written back after new
    evidence flagged the account again, clears nothing the second time."""
    driver, state = risk_stage()
    statuses = state.table("state-account-status")
    old = SignalRecord(Signal("acct-1", "jailbreak", "jailbreak.spray", 1.0, NOW_MS - 60_000,
                              "alert-old", "evidence"))
    driver.run([encode_batch(SignalRecord.TYPE, [old], RING)], NOW_MS)
    cleared = feedback_batch([sign(decision(
        decision="cleared", until_ms=None, ts_ms=NOW_MS - 30_000), KEYS["alice"])])
    first = driver.run([cleared], NOW_MS)
    assert not first.dead_letters and statuses["acct-1"].status.status == "cleared"
    new = SignalRecord(Signal("acct-1", "jailbreak", "jailbreak.spray", 1.0, NOW_MS - 1000,
                              "alert-new", "evidence"))
    driver.run([encode_batch(SignalRecord.TYPE, [new], RING)], NOW_MS)
    assert statuses["acct-1"].status.status == "flagged"

    replay = driver.run([cleared], NOW_MS + 1000)
    assert "was applied already: a replay" in refused_reason(replay)
    assert statuses["acct-1"].status.status == "flagged"
    assert not [e for e in replay.envelopes if e.topic != "misuse.alerts"]  # no audit, action


@pytest.mark.parametrize(("change", "why"), [
    ({"ts_ms": NOW_MS - 61 * 60_000}, "made 61 minutes ago, over the 60-minute limit"),
    ({"ts_ms": NOW_MS + 61 * 60_000}, "dated 61 minutes ahead"),
    ({"decision_id": ""}, "carries no decision id"),
])
def test_a_stale_future_or_anonymous_decision_is_refused(change, why):
    driver, state = risk_stage()
    record = sign(decision(**change), KEYS["alice"])
    result = driver.run([feedback_batch([record])], NOW_MS)
    assert why in refused_reason(result)
    assert "acct-1" not in state.table("state-account-status")


def test_every_decision_has_an_audit_record_of_its_own_and_stale_ids_are_forgotten():
    driver, state = risk_stage()
    # Two analysts clear the account in the same millisecond: two decisions, two records.
    twice = [sign(decision(decision="cleared", until_ms=None, analyst=analyst), KEYS[analyst])
             for analyst in ("alice", "bob")]
    result = driver.run([feedback_batch(twice)], NOW_MS)
    documents = [r for e in result.envelopes for r in records_in(e.value, RING)
                 if getattr(r, "index", None) == "actions"]
    assert len({d.id for d in documents}) == 2
    applied = state.table("state-risk-decisions")
    assert set(applied) == {r.decision_id for r in twice}

    stage = driver.stage
    stage.decisions.forget_stale(NOW_MS + 61 * 60_000)
    assert not applied
