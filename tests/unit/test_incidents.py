from detectors.incidents import Incident
from detectors.state_codec import decode_state, encode_state

WINDOW = 600_000


def test_opening_reports_and_fixes_the_start():
    incident = Incident()
    assert not incident.is_open
    assert incident.report(1_000, 10, 5_000)
    assert incident.is_open
    assert (incident.start_ms, incident.last_ms, incident.reported) == (1_000, 5_000, 10)


def test_reports_again_only_when_the_size_doubles_and_keeps_the_start():
    incident = Incident()
    assert incident.report(1_000, 10, 5_000)
    assert not incident.report(2_000, 19, 6_000)
    assert incident.last_ms == 6_000  # still held, though nothing was reported
    assert incident.reported == 10
    assert incident.report(3_000, 20, 7_000)
    assert (incident.start_ms, incident.reported) == (1_000, 20)
    assert not incident.is_news(39)
    assert incident.is_news(40)


def test_a_callable_start_is_called_only_on_opening():
    calls: list[int] = []

    def start() -> int:
        calls.append(1)
        return 1_000

    incident = Incident()
    assert incident.report(start, 10, 5_000)
    assert not incident.report(start, 11, 6_000)
    assert incident.report(start, 30, 7_000)
    assert incident.start_ms == 1_000
    assert len(calls) == 1


def test_closes_after_a_whole_quiet_window_and_reopens_with_a_new_start():
    incident = Incident()
    incident.report(1_000, 10, 5_000)
    incident.hold(8_000)
    incident.close_if_quiet(8_000 + WINDOW, WINDOW)
    assert incident.is_open  # exactly one window is not more than one
    incident.close_if_quiet(8_001 + WINDOW, WINDOW)
    assert not incident.is_open
    assert incident.is_news(1)  # a closed incident reports whatever its size
    assert incident.report(700_000, 5, 710_000)
    assert (incident.start_ms, incident.reported) == (700_000, 5)


def test_close_is_idempotent_and_the_incident_survives_the_state_table():
    incident = Incident()
    incident.close()
    assert not incident.is_open
    incident.report(1_000, 3, 2_000)
    restored = decode_state(encode_state(incident))
    assert restored == incident


def test_repeats_that_are_not_news_are_counted_into_the_open_alert():
    incident = Incident()
    assert incident.report(1_000, 10, 5_000)
    assert not any(incident.report(1_000, 11 + n, 6_000 + n) for n in range(5))
    assert incident.repeats == 5  # suppressed into the open alert
    assert incident.report(1_000, 20, 7_000) and incident.repeats == 5  # the update says so
    incident.close()
    assert incident.report(9_000, 10, 9_000) and incident.repeats == 0  # a new incident
