from itertools import pairwise

from detectors.events import UsageEvent
from detectors.leaked_key import RULE_ID, LeakedKeyDetector
from detectors.state_codec import decode_state, encode_state

T0 = 1_790_000_000_000
MINUTE = 60_000
HOUR = 60 * MINUTE


def use(ts, ip, ua="acme-backend/1.0", key="key-1", account="acct-1", event_id=None,
        status=200):
    return UsageEvent(
        event_id=event_id or f"{key}-{ip}-{ua}-{ts}", ts_ms=ts, account_id=account,
        api_key_id=key, ip=ip, endpoint="/v1/chat/completions", status=status,
        user_agent=ua,
    )


def run(detector, events):
    return [alert for event in events for alert in detector.observe(event)]


def steady_history(hours=3, ip="203.0.113.5", start=T0):
    """The key's owner: one server, one client, one request a minute."""
    return [use(start + m * MINUTE, ip) for m in range(hours * 60)]


def burst(start, networks=15, per_network=2, agents=5):
    """Someone else got the key: many networks and tools within ten minutes."""
    events = []
    n = networks * per_network
    for i in range(n):
        net = i % networks
        ua = ["curl/8.4.0", "python-requests/2.31", "Go-http-client/1.1", "okhttp/4.12",
              "node-fetch/3.3"][i % agents]
        events.append(use(start + i * (9 * MINUTE // n), f"198.18.{net}.{10 + i % 7}", ua))
    return events


def test_key_from_one_network_for_hours_then_fifteen_networks_fires():
    detector = LeakedKeyDetector()
    assert run(detector, steady_history()) == []
    start = T0 + 3 * HOUR
    owner = [use(start + m * MINUTE, "203.0.113.5") for m in range(10)]
    events = sorted(owner + burst(start), key=lambda e: e.ts_ms)
    alerts = run(detector, events)
    assert alerts, "a key jumping from 1 to 15 networks must fire"
    first = alerts[0]
    assert first.rule_id == RULE_ID
    assert first.entity.kind == "api_key" and first.entity.id == "key-1"
    assert first.accounts == ("acct-1",)
    assert first.evidence["baseline_networks"] < 1.5
    assert first.evidence["distinct_networks"] >= 8
    assert first.evidence["distinct_user_agents"] >= 3
    assert any("baseline" in reason for reason in first.reasons)
    assert start - 10 * MINUTE <= first.incident_start_ms <= start + 10 * MINUTE


def test_growing_spread_keeps_the_alert_id_and_resends_on_doubling():
    detector = LeakedKeyDetector()
    run(detector, steady_history())
    alerts = run(detector, burst(T0 + 3 * HOUR, networks=20, per_network=2))
    counts = [a.evidence["distinct_networks"] for a in alerts]
    assert len(alerts) >= 2
    assert all(b >= 2 * a for a, b in pairwise(counts))
    assert len({a.alert_id for a in alerts}) == 1


def test_company_key_used_steadily_from_three_offices_does_not_fire():
    detector = LeakedKeyDetector()
    offices = ["192.0.2.10", "198.51.100.20", "203.0.113.30"]
    agents = ["acme-backend/1.0", "acme-etl/2.3", "Mozilla/5.0 acme-portal", "curl/8.4.0"]
    events = [use(T0 + i * 30_000, offices[i % 3], agents[i % 4]) for i in range(12 * 120)]
    assert run(detector, events) == []
    state = detector.keys["key-1"]
    assert 2.5 <= state.baseline_networks <= 3.5


def test_key_that_always_spreads_widely_is_judged_against_its_own_history():
    """A mobile app's key: a dozen networks every window is this key's normal."""
    detector = LeakedKeyDetector()
    events = [use(T0 + i * 20_000, f"100.64.{i % 12}.{i % 5 + 1}", f"app/{i % 4}")
              for i in range(6 * 180)]
    assert run(detector, events) == []


def test_new_key_without_history_fires_only_on_very_many_networks():
    few = LeakedKeyDetector()
    assert run(few, burst(T0, networks=15)) == []
    many = LeakedKeyDetector(many_networks=40)
    alerts = run(many, burst(T0, networks=45, per_network=1))
    assert len(alerts) == 1
    assert alerts[0].evidence["history_windows"] == 0
    assert alerts[0].evidence["distinct_networks"] >= 40


def test_same_clients_on_many_networks_need_very_many_networks():
    """Attackers reusing the owner's user agent: no client jump, so networks alone must be
    very many."""
    detector = LeakedKeyDetector(many_networks=40)
    run(detector, steady_history())
    same_agent = burst(T0 + 3 * HOUR, networks=15, agents=1)
    same_agent = [use(e.ts_ms, e.ip) for e in same_agent]
    assert run(detector, same_agent) == []


def test_redelivered_events_change_nothing():
    events = steady_history() + burst(T0 + 3 * HOUR)
    once = run(LeakedKeyDetector(), events)
    twice = run(LeakedKeyDetector(), [e for event in events for e in (event, event)])
    assert [a.alert_id for a in twice] == [a.alert_id for a in once]
    assert [a.evidence for a in twice] == [a.evidence for a in once]


def test_state_survives_the_state_table():
    """The state is what a Faust table stores: a restored copy must carry on identically, with
    its dicts still ordered by last use (expiry pops from the front)."""
    events = steady_history() + burst(T0 + 3 * HOUR, networks=20)
    half = len(events) - 35
    original = LeakedKeyDetector()
    run(original, events[:half])
    restored = LeakedKeyDetector()
    restored.keys = {key: decode_state(encode_state(state))
                     for key, state in original.keys.items()}
    assert [list(s.networks) for s in restored.keys.values()] == \
        [list(s.networks) for s in original.keys.values()]
    expected = run(original, events[half:])
    assert expected
    assert [a.to_dict() for a in run(restored, events[half:])] == \
        [a.to_dict() for a in expected]


def test_a_second_leak_after_a_quiet_period_is_a_new_incident():
    detector = LeakedKeyDetector()
    run(detector, steady_history())
    first = run(detector, burst(T0 + 3 * HOUR))
    calm = [use(T0 + 3 * HOUR + 10 * MINUTE + m * MINUTE, "203.0.113.5") for m in range(60)]
    assert run(detector, calm) == []
    later = run(detector, burst(T0 + 4 * HOUR + 10 * MINUTE))
    assert first and later
    assert first[0].alert_id != later[0].alert_id


def test_rejected_keys_are_not_uses():
    detector = LeakedKeyDetector(many_networks=10)
    events = [use(T0 + i * 1000, f"198.18.{i}.1", status=401, account=None) for i in range(30)]
    assert run(detector, events) == []
    assert "key-1" not in detector.keys
