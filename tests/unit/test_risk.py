import math

import pytest

from detectors.alerts import Alert, Entity
from detectors.risk import RiskScorer, Signal, signals_from_alert

T0 = 1_790_000_000_000
HOUR = 3_600_000
WEIGHTS = {"jailbreak": 1.0, "sybil": 1.0, "scraping": 0.5, "anomaly": 1.0}


def signal(detector, ts, strength=1.0, alert_id=None, account="acct-1", rule=None):
    return Signal(account, detector, rule or f"{detector}.rule", strength, ts, alert_id,
                  f"{detector} saw something", alert_id)


def scorer(prune_below=0.01, max_contributions=50):
    return RiskScorer(half_life_ms=HOUR, weights=WEIGHTS, flag_threshold=0.5,
                      suspend_threshold=0.8, suspend_min_detectors=2, prune_below=prune_below,
                      max_contributions=max_contributions)


def test_a_signal_decays_by_half_each_half_life():
    risk = scorer()
    now = risk.add(signal("jailbreak", T0, strength=0.8, alert_id="a1"))
    assert now.score == pytest.approx(1 - math.exp(-0.8))
    later = risk.assess("acct-1", T0 + HOUR)
    assert later.score == pytest.approx(1 - math.exp(-0.4))
    assert later.contributions[0].weight == pytest.approx(0.4)
    much_later = risk.assess("acct-1", T0 + 3 * HOUR)
    assert much_later.score == pytest.approx(1 - math.exp(-0.1))


def test_detectors_combine_and_two_independent_ones_can_suspend():
    risk = scorer()
    first = risk.add(signal("jailbreak", T0, alert_id="a1"))
    assert first.decision == "flag"
    both = risk.add(signal("sybil", T0 + HOUR, alert_id="s1"))
    # The jailbreak signal has halved by then: 1 - e^-1.5 = 0.78, under the 0.8 threshold.
    assert both.score == pytest.approx(1 - math.exp(-(0.5 + 1.0)))
    assert both.decision == "flag"
    stronger = risk.add(signal("sybil", T0 + HOUR, alert_id="s2"))
    assert stronger.score >= 0.8 and stronger.decision == "suspend"
    assert stronger.detectors == ("jailbreak", "sybil")
    assert set(stronger.alert_ids) == {"a1", "s1", "s2"}


def test_one_detector_alone_never_suspends_however_high():
    risk = scorer()
    for i in range(5):
        assessment = risk.add(signal("jailbreak", T0 + i, alert_id=f"a{i}"))
    assert assessment.score > 0.99
    assert assessment.decision == "flag"
    assert any("independent" in reason for reason in assessment.reasons)


def test_supporting_signals_alone_never_flag_and_at_most_double_the_evidence():
    risk = scorer()
    alone = risk.add(signal("anomaly", T0, strength=1.0))
    assert alone.decision == "none" and alone.score == 0.0
    assert alone.contributions and alone.contributions[0].supporting
    with_primary = risk.add(signal("scraping", T0, strength=0.6, alert_id="sc1"))
    assert with_primary.score == pytest.approx(1 - math.exp(-2 * 0.5 * 0.6))
    assert with_primary.detectors == ("scraping",)


def test_a_resent_growing_alert_replaces_its_earlier_contribution():
    risk = scorer()
    risk.add(signal("jailbreak", T0, strength=0.5, alert_id="a1"))
    grown = risk.add(signal("jailbreak", T0 + 60_000, strength=0.9, alert_id="a1"))
    assert len(grown.contributions) == 1 and grown.contributions[0].strength == 0.9
    stale = risk.add(signal("jailbreak", T0, strength=0.5, alert_id="a1"))  # redelivered
    assert len(stale.contributions) == 1 and stale.contributions[0].strength == 0.9
    assert stale.score == pytest.approx(grown.score)


def test_running_measurements_without_alert_ids_replace_each_other():
    risk = scorer()
    risk.add(signal("jailbreak", T0, alert_id="a1"))
    for i in range(10):
        assessment = risk.add(signal("anomaly", T0 + i * 1000, strength=0.7))
    assert sum(1 for c in assessment.contributions if c.detector == "anomaly") == 1


def test_old_contributions_are_pruned_and_empty_accounts_forgotten():
    risk = scorer(prune_below=0.01)
    risk.add(signal("jailbreak", T0, alert_id="a1"))
    risk.add(signal("sybil", T0, alert_id="s1", account="acct-2"))
    assert set(risk.accounts) == {"acct-1", "acct-2"}
    assert risk.prune(T0 + 8 * HOUR) == 2  # 2^-8 < 0.01
    assert risk.accounts == {}
    assert risk.assess("acct-1", T0 + 8 * HOUR).decision == "none"


def test_state_is_bounded_by_max_contributions():
    risk = scorer(max_contributions=5)
    for i in range(20):
        assessment = risk.add(signal("scraping", T0 + i * 1000, alert_id=f"sc{i}"))
    assert len(assessment.contributions) == 5
    assert len(risk.accounts["acct-1"].signals) == 5
    assert {c.alert_id for c in assessment.contributions} == {f"sc{i}" for i in range(15, 20)}


def test_only_since_keeps_newer_evidence():
    risk = scorer()
    risk.add(signal("jailbreak", T0, alert_id="a1"))
    assessment = risk.add(signal("sybil", T0 + HOUR, strength=0.3, alert_id="s1"))
    newer = assessment.only_since(T0)
    assert [c.alert_id for c in newer.contributions] == ["s1"]
    assert newer.score == pytest.approx(1 - math.exp(-0.3))
    assert newer.decision == "none"


def test_signals_from_an_alert_name_every_account_and_link_the_alert():
    alert = Alert(rule_id="sybil.shared_client", severity="medium", score=0.7,
                  entity=Entity("network", "203.0.113.0/24"), incident_start_ms=T0,
                  window_start_ms=T0, window_end_ms=T0 + 600_000, reasons=("30 accounts",),
                  accounts=("a", "b"))
    signals = signals_from_alert(alert)
    assert [s.account_id for s in signals] == ["a", "b"]
    assert {(s.detector, s.strength, s.ts_ms) for s in signals} == {("sybil", 0.7, T0 + 600_000)}
    assert all(s.alert_id == s.evidence_link == alert.alert_id for s in signals)
    assert Signal.from_dict(signals[0].to_dict()) == signals[0]


def test_a_signal_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError):
        signal("jailbreak", T0, strength=1.5)
