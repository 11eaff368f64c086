import pytest

from detectors.accounts import AccountStatus, next_status
from detectors.risk import RiskScorer, Signal

T0 = 1_790_000_000_000
HOUR = 3_600_000
DAY = 24 * HOUR


def assess(*signals, now=None):
    """A real assessment from the risk scorer (flag at 0.5, suspend at 0.8 with 2 detectors)."""
    risk = RiskScorer(half_life_ms=DAY, weights={"jailbreak": 1.0, "sybil": 1.0},
                      flag_threshold=0.5, suspend_threshold=0.8)
    for detector, ts, alert_id in signals:
        risk.add(Signal("acct-1", detector, f"{detector}.rule", 1.0, ts, alert_id, "why"))
    return risk.assess("acct-1", now or max(ts for _, ts, _ in signals))


FLAG = (("jailbreak", T0, "a1"),)
SUSPEND = (("jailbreak", T0, "a1"), ("sybil", T0, "s1"), ("sybil", T0, "s2"))


def test_a_new_account_is_flagged_or_suspended_as_the_assessment_says():
    flagged = next_status(None, assess(*FLAG), T0)
    assert flagged is not None and flagged.status == "flagged"
    assert not flagged.request_suspension and flagged.previous is None
    assert flagged.alert_ids == ("a1",) and flagged.detectors == ("jailbreak",)
    suspended = next_status(None, assess(*SUSPEND), T0)
    assert suspended is not None and suspended.status == "suspended"
    assert suspended.request_suspension


def test_nothing_happens_below_the_flag_threshold():
    weak = RiskScorer(weights={"jailbreak": 0.2}).add(
        Signal("acct-1", "jailbreak", "jailbreak.spray", 0.5, T0, "a1", "why"))
    assert weak.decision == "none"
    assert next_status(None, weak, T0) is None


def test_a_flagged_account_is_escalated_but_not_reflagged():
    current = AccountStatus("flagged", "worker", since_ms=T0)
    assert next_status(current, assess(*FLAG), T0) is None
    change = next_status(current, assess(*SUSPEND), T0)
    assert change is not None and change.status == "suspended" and change.previous == "flagged"
    assert change.apply(current).status == "suspended"


def test_a_suspended_account_is_left_to_the_analysts():
    current = AccountStatus("suspended", "worker", since_ms=T0)
    assert next_status(current, assess(*SUSPEND), T0 + HOUR) is None


def test_an_allowlisted_account_is_never_flagged_while_the_allowlisting_lasts():
    forever = AccountStatus("allowlisted", "analyst")
    assert next_status(forever, assess(*SUSPEND), T0) is None
    until = AccountStatus("allowlisted", "analyst", allowlisted_until_ms=T0 + DAY)
    assert next_status(until, assess(*SUSPEND), T0 + HOUR) is None


def test_after_the_allowlisting_ends_only_later_evidence_counts():
    ended = AccountStatus("allowlisted", "analyst", allowlisted_until_ms=T0 + HOUR)
    old = assess(*SUSPEND, now=T0 + 2 * HOUR)
    assert next_status(ended, old, T0 + 2 * HOUR) is None
    fresh = assess(*SUSPEND, ("jailbreak", T0 + 2 * HOUR, "a2"))
    change = next_status(ended, fresh, T0 + 2 * HOUR)
    assert change is not None and change.status == "flagged"
    assert change.alert_ids == ("a2",) and change.evidence_since_ms == T0 + HOUR


def test_a_cleared_account_is_flagged_again_only_by_new_evidence():
    cleared = AccountStatus("cleared", "analyst", cleared_at_ms=T0 + HOUR)
    assert next_status(cleared, assess(*SUSPEND, now=T0 + 2 * HOUR), T0 + 2 * HOUR) is None
    renewed = assess(*SUSPEND, ("jailbreak", T0 + 3 * HOUR, "a9"))
    change = next_status(cleared, renewed, T0 + 3 * HOUR)
    assert change is not None and change.status == "flagged" and change.previous == "cleared"
    assert change.alert_ids == ("a9",)
    assert any("analyst review" in reason for reason in change.reasons)
    again = change.apply(cleared)
    assert again.cleared_at_ms == T0 + HOUR and again.set_by == "worker"
    # Escalating the re-flagged account still ignores what the analyst already cleared.
    assert next_status(again, assess(*SUSPEND, ("jailbreak", T0 + 3 * HOUR, "a9")),
                       T0 + 3 * HOUR) is None


def test_an_analyst_flag_may_be_escalated_by_the_worker():
    current = AccountStatus("flagged", "analyst", since_ms=T0)
    change = next_status(current, assess(*SUSPEND), T0)
    assert change is not None and change.status == "suspended"


@pytest.mark.parametrize(("status", "set_by", "cleared_at"), [
    ("cleared", "worker", T0), ("allowlisted", "worker", None), ("cleared", "analyst", None),
    ("deleted", "analyst", None), ("flagged", "robot", None),
])
def test_invalid_statuses_are_refused(status, set_by, cleared_at):
    with pytest.raises(ValueError):
        AccountStatus(status, set_by, cleared_at_ms=cleared_at)
