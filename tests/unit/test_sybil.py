from detectors.events import UsageEvent
from detectors.sybil import RULE_ID, SybilDetector

T0 = 1_790_000_000_000
MINUTE = 60_000
FARM_UA = "python-requests/2.31.0"


def request(ts, account, ip="203.0.113.7", ua=FARM_UA, org=None, event_id=None):
    return UsageEvent(
        event_id=event_id or f"{account}-{ts}", ts_ms=ts, account_id=account, api_key_id=account,
        ip=ip, endpoint="/v1/chat/completions", status=200, user_agent=ua, org_id=org,
    )


def traffic(accounts, per_minute=3, minutes=10, ip=lambda i: f"203.0.113.{i % 200 + 1}",
            ua=lambda i: FARM_UA, org=lambda i: None, start=T0):
    """Each account sends `per_minute` requests a minute, the accounts interleaved in time."""
    events = []
    step = MINUTE // (per_minute * len(accounts))
    tick = 0
    for _minute in range(minutes):
        for _k in range(per_minute):
            for i, account in enumerate(accounts):
                events.append(request(start + tick * step, account, ip(i), ua(i), org(i)))
                tick += 1
    return events


def run(detector, events):
    return [alert for event in events for alert in detector.observe(event)]


def test_thirty_accounts_one_range_one_client_each_low_rate_fire():
    detector = SybilDetector(min_accounts=20, max_account_rate_per_minute=10)
    sybils = [f"sybil-{i:02d}" for i in range(30)]
    alerts = run(detector, traffic(sybils))
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.rule_id == RULE_ID
    assert alert.entity.kind == "network" and alert.entity.id == "203.0.113.0/24"
    assert set(alert.accounts) == set(sybils)
    assert alert.evidence["accounts"] == list(alert.accounts)
    assert alert.evidence["user_agent"] == FARM_UA
    assert alert.evidence["peak_account_requests_per_minute"] <= 10
    assert alert.incident_start_ms == T0 // 600_000 * 600_000  # the window bucket of its start


def test_a_growing_farm_keeps_its_id_and_resends_on_doubling():
    detector = SybilDetector(min_accounts=10)
    farm = traffic([f"sybil-{i:02d}" for i in range(12)], minutes=6)
    grown = traffic([f"sybil-{i:02d}" for i in range(30)], minutes=3, start=T0 + 6 * MINUTE)
    alerts = run(detector, farm + grown)
    assert [a.evidence["low_rate_accounts"] for a in alerts] == [12, 24]
    assert len({a.alert_id for a in alerts}) == 1


def test_university_range_with_many_clients_does_not_fire():
    detector = SybilDetector(min_accounts=20)
    students = [f"student-{i:03d}" for i in range(100)]
    browsers = [f"Mozilla/5.0 (X11; Linux) Firefox/{100 + i}" for i in range(25)]
    assert run(detector, traffic(students, per_minute=2, ua=lambda i: browsers[i % 25])) == []


def test_a_popular_client_among_a_large_crowd_does_not_fire():
    """30 students share the most common browser build, but the range has 200 accounts."""
    detector = SybilDetector(min_accounts=20, min_agent_share=0.6)
    students = [f"student-{i:03d}" for i in range(200)]
    chrome = "Mozilla/5.0 (Windows NT 10.0) Chrome/126.0"
    agents = [chrome if i % 7 == 0 or i < 2 else f"Mozilla/5.0 Build/{i}" for i in range(200)]
    assert sum(a == chrome for a in agents) >= 30
    assert run(detector, traffic(students, per_minute=1, ua=lambda i: agents[i])) == []


def test_one_company_team_sharing_an_sdk_does_not_fire():
    detector = SybilDetector(min_accounts=20)
    team = [f"acme-dev-{i}" for i in range(30)]
    assert run(detector, traffic(team, org=lambda i: "org-acme")) == []


def test_heavy_accounts_are_not_hiding_under_the_rate_limits():
    detector = SybilDetector(min_accounts=20, max_account_rate_per_minute=10)
    heavy = [f"heavy-{i}" for i in range(25)]
    assert run(detector, traffic(heavy, per_minute=20)) == []


def test_accounts_spread_over_many_ranges_are_not_one_range():
    detector = SybilDetector(min_accounts=20)
    spread = [f"acct-{i}" for i in range(30)]
    assert run(detector, traffic(spread, ip=lambda i: f"198.18.{i}.9")) == []


def test_redelivered_requests_change_nothing():
    events = traffic([f"sybil-{i:02d}" for i in range(30)], per_minute=4)
    once = run(SybilDetector(max_account_rate_per_minute=5), events)
    twice = run(SybilDetector(max_account_rate_per_minute=5),
                [e for event in events for e in (event, event)])
    assert once and [a.to_dict() for a in twice] == [a.to_dict() for a in once]


def test_unauthenticated_requests_are_ignored():
    detector = SybilDetector(min_accounts=5)
    events = [UsageEvent(event_id=f"e{i}", ts_ms=T0 + i, account_id=None, api_key_id=f"k{i}",
                         ip="203.0.113.9", endpoint="/v1/models", status=401, user_agent=FARM_UA)
              for i in range(20)]
    assert run(detector, events) == []
    assert detector.ranges == {}
