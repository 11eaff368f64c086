"""The act stage's pure ledgers: the hourly cap, the circuit breaker, the approval queue and
page grouping."""

from detectors.actions import (
    HOUR_MS,
    QUEUE_BREAKER,
    QUEUE_CAP,
    SEND,
    AutomationLedger,
    PageLedger,
    severity_at_least,
)
from detectors.policy import Automation

T0 = 1_700_000_000_000 // HOUR_MS * HOUR_MS  # the start of an hour


def automation(**changes) -> Automation:
    return Automation(**{"suspension_enabled": True, "dry_run": False,
                         "max_suspensions_per_hour": 3, "breaker_multiple": 3.0,
                         "breaker_min_suspensions": 6, "breaker_baseline_hours": 24,
                         **changes})


def test_the_cap_holds_within_an_hour_and_frees_as_the_hour_slides():
    ledger, policy = AutomationLedger(), automation()
    verdicts = [ledger.admit(f"r{i}", T0 + i * 60_000, policy)[0] for i in range(5)]
    assert verdicts == [SEND, SEND, SEND, QUEUE_CAP, QUEUE_CAP]
    assert ledger.admit("r5", T0 + HOUR_MS + 1, policy)[0] == SEND  # r0 left the hour


def test_a_request_read_again_after_a_restart_gets_its_verdict_again_and_counts_once():
    ledger, policy = AutomationLedger(), automation()
    verdicts = [ledger.admit(f"r{i}", T0 + i, policy)[0] for i in range(4)]
    replayed = [ledger.admit(f"r{i}", T0 + 100 + i, policy)[0] for i in range(4)]
    assert replayed == verdicts == [SEND, SEND, SEND, QUEUE_CAP]
    assert len(ledger.asked_ms) == 4 and ledger.breaker_open_since_ms is None


def test_the_breaker_trips_on_a_surge_over_the_usual_rate_and_holds_until_resumed():
    ledger, policy = AutomationLedger(), automation(max_suspensions_per_hour=100)
    # A usual rate of 2 an hour over the past day...
    for hour in range(24):
        for i in range(2):
            assert ledger.admit(f"h{hour}-{i}", T0 + hour * HOUR_MS + i, policy) == (SEND, False)
    # ...then 7 in one hour: over 3 x 2 and over the minimum of 6 at the 7th.
    now = T0 + 24 * HOUR_MS
    verdicts = [ledger.admit(f"now-{i}", now + i, policy) for i in range(8)]
    assert [v for v, _ in verdicts[:6]] == [SEND] * 6
    assert verdicts[6] == (QUEUE_BREAKER, True)  # tripped: page on-call once
    assert verdicts[7] == (QUEUE_BREAKER, False)
    ledger.resume()
    assert ledger.admit("later", now + 2 * HOUR_MS, policy)[0] == SEND


def test_a_surge_across_the_top_of_an_hour_is_one_surge():
    """Three asked for just before a clock hour and two just after: five in the last hour."""
    ledger = AutomationLedger()
    policy = automation(max_suspensions_per_hour=100, breaker_min_suspensions=4,
                        breaker_multiple=2.0)
    top = T0 + HOUR_MS
    verdicts = [ledger.admit(f"r{i}", top + offset, policy)
                for i, offset in enumerate((-60_000, -40_000, -20_000, 20_000, 40_000))]
    assert [v for v, _ in verdicts[:3]] == [SEND] * 3
    assert verdicts[3] == (QUEUE_BREAKER, True) and verdicts[4] == (QUEUE_BREAKER, False)


def test_a_quiet_baseline_does_not_trip_below_the_minimum():
    ledger, policy = AutomationLedger(), automation(max_suspensions_per_hour=100)
    assert all(ledger.admit(f"r{i}", T0 + i, policy) == (SEND, False) for i in range(5))


def test_the_queue_keeps_one_request_per_account_until_taken():
    ledger = AutomationLedger()
    ledger.queue("acct-1", {"ts_ms": 1})
    ledger.queue("acct-1", {"ts_ms": 2})  # the newer request replaces the older
    assert ledger.take("acct-1") == {"ts_ms": 2}
    assert ledger.take("acct-1") is None


def test_bookkeeping_is_bounded():
    ledger, policy = AutomationLedger(), automation(max_suspensions_per_hour=1000)
    for hour in range(200):
        ledger.admit(f"r{hour}", T0 + hour * HOUR_MS, policy)
        ledger.suspended[f"acct-{hour}"] = T0 + hour * HOUR_MS
    assert len(ledger.asked_ms) <= 25 and len(ledger.sent_ms) == 1
    ledger.forget_before(T0 + 100 * 24 * HOUR_MS, 24)
    assert not ledger.suspended and not ledger.asked_ms


def test_a_group_pages_once_per_window_and_the_rate_limit_counts_what_it_held_back():
    pages = PageLedger()
    window = HOUR_MS
    assert pages.trigger("campaign:c1", {"id": 1}, T0, window, 2) == (True, 0)
    # 300 accounts of one campaign: their alerts share the group, one page.
    assert not any(pages.trigger("campaign:c1", {"id": i}, T0 + i, window, 2)[0]
                   for i in range(2, 300))
    assert pages.trigger("rule:account:a", {"id": "a"}, T0 + 1000, window, 2) == (True, 0)
    assert pages.trigger("rule:account:b", {"id": "b"}, T0 + 2000, window, 2) == (False, 0)
    assert pages.trigger("rule:account:c", {"id": "c"}, T0 + HOUR_MS + 1, window, 2) == (True, 1)
    assert pages.resolve("campaign:c1") == {"id": 1}
    assert pages.resolve("campaign:c1") is None


def test_severity_order():
    assert severity_at_least("critical", "high") and severity_at_least("high", "high")
    assert not severity_at_least("medium", "high") and not severity_at_least("bogus", "low")
