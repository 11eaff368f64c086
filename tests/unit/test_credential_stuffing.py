from detectors.credential_stuffing import CredentialStuffingDetector
from detectors.events import UsageEvent

T0 = 1_790_000_000_000


def attempt(i, ip="198.51.100.9", key=None, status=401, ts=None, event_id=None):
    return UsageEvent(
        event_id=event_id or f"e-{ip}-{i}", ts_ms=T0 + i * 1000 if ts is None else ts,
        account_id=None if status == 401 else "acct-1", api_key_id=key or f"guess-{i}",
        ip=ip, endpoint="/v1/models", status=status,
    )


def run(detector, events):
    return [alert for event in events for alert in detector.observe(event)]


def test_many_unknown_keys_from_one_ip_fire_once_with_evidence():
    detector = CredentialStuffingDetector(window_ms=300_000, min_distinct_keys=20)
    alerts = run(detector, [attempt(i) for i in range(25)])
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.entity.kind == "ip" and alert.entity.id == "198.51.100.9"
    assert alert.evidence["distinct_failed_keys"] == 20
    assert alert.incident_start_ms == T0 // 300_000 * 300_000  # the window bucket of its start


def test_growing_incident_keeps_its_id_and_resends_on_doubling():
    detector = CredentialStuffingDetector(window_ms=300_000, min_distinct_keys=10)
    alerts = run(detector, [attempt(i) for i in range(45)])
    assert [a.evidence["failures"] for a in alerts] == [10, 20, 40]
    assert len({a.alert_id for a in alerts}) == 1


def test_rotating_addresses_in_a_range_are_one_network_incident():
    detector = CredentialStuffingDetector(window_ms=300_000, min_distinct_keys=20)
    alerts = run(detector, [attempt(i, ip=f"198.51.100.{i % 50 + 1}") for i in range(30)])
    assert len(alerts) == 1
    assert alerts[0].entity.kind == "network" and alerts[0].entity.id == "198.51.100.0/24"


def test_keys_spread_over_a_long_time_do_not_fire():
    detector = CredentialStuffingDetector(window_ms=60_000, min_distinct_keys=20)
    assert run(detector, [attempt(i, ts=T0 + i * 10_000) for i in range(100)]) == []


def test_mostly_successful_traffic_does_not_fire():
    """A busy office behind one NAT: many keys, nearly all of them valid."""
    detector = CredentialStuffingDetector(window_ms=300_000, min_distinct_keys=20)
    events = []
    for i in range(200):
        failed = i % 8 == 0
        events.append(attempt(i, key=f"key-{i % 40}", status=401 if failed else 200))
    assert run(detector, events) == []


def test_redelivered_events_are_not_counted_twice():
    detector = CredentialStuffingDetector(window_ms=300_000, min_distinct_keys=20)
    events = [attempt(i) for i in range(15)]
    assert run(detector, events + events) == []


def test_a_quiet_window_ends_the_incident():
    detector = CredentialStuffingDetector(window_ms=60_000, min_distinct_keys=5)
    first = run(detector, [attempt(i) for i in range(6)])
    later = run(detector, [attempt(i, ts=T0 + 600_000 + i * 1000, event_id=f"late-{i}")
                           for i in range(6)])
    assert len(first) == 1 and len(later) == 1
    assert first[0].alert_id != later[0].alert_id


def test_idle_ranges_are_forgotten_and_state_is_written_back():
    writes = []

    class Recording(dict):
        def __setitem__(self, key, value):
            writes.append(key)
            super().__setitem__(key, value)

    detector = CredentialStuffingDetector(window_ms=60_000, min_distinct_keys=5)
    detector.ranges = Recording()
    run(detector, [attempt(i) for i in range(3)])
    assert writes == ["198.51.100.0/24"] * 3
    assert detector.forget_idle(T0 + 10_000) == 0
    assert detector.forget_idle(T0 + 200_000) == 1 and not detector.ranges
