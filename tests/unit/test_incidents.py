from detectors.incidents import Incident, anchor_ms
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


def test_the_anchor_is_the_bucket_of_the_run_start_or_of_a_window_before_the_condition_held():
    # A fresh run: the bucket it started in, whichever of its first events came first.
    assert {anchor_ms(run_start, 1_300_000, WINDOW)
            for run_start in range(1_200_000, 1_800_000, 7_000)} == {1_200_000}
    # A busy entity, active for hours: the same for any moment in a bucket the condition
    # first held at, whichever event made it hold.
    assert {anchor_ms(0, held, WINDOW) for held in range(3_000_000, 3_600_000, 7_000)} == {
        2_400_000}


def test_an_incident_after_a_closed_one_never_takes_its_start():
    incident = Incident()
    assert incident.report(1_000, 10, 5_000)
    incident.close_if_quiet(5_000 + WINDOW + 1, WINDOW)
    assert not incident.is_open and incident.closed_ms == 5_000 + WINDOW
    assert incident.report(1_000, 10, 900_000)  # the same run, so the same anchor
    assert incident.start_ms == 5_000 + WINDOW
