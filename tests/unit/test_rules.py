from detectors.credential_stuffing import CredentialStuffingDetector
from detectors.policy import CredentialStuffingPolicy
from streams.rules import Housekeeping, build, retune


def test_detectors_are_built_and_retuned_from_their_policy():
    detector = build(CredentialStuffingDetector,
                     CredentialStuffingPolicy(window_seconds=60, min_distinct_keys=7))
    assert detector.window_ms == 60_000 and detector.min_distinct_keys == 7
    detector.ranges["198.51.100.0/24"] = "state"  # type: ignore[assignment]
    retune(detector, CredentialStuffingPolicy(window_seconds=120, min_distinct_keys=9))
    assert detector.window_ms == 120_000 and detector.min_distinct_keys == 9
    assert detector.ranges == {"198.51.100.0/24": "state"}  # the windows' state is kept


def test_housekeeping_runs_at_most_once_per_period_and_only_with_an_event_time():
    calls = []

    class Detector:
        def forget_idle(self, now_ms: int) -> int:
            calls.append(now_ms)
            return 0

    housekeeping = Housekeeping(Detector(), Detector(), every_seconds=3600)
    housekeeping.pacing._last -= 7200  # the period has passed
    housekeeping.run(0)
    assert calls == []
    housekeeping.run(5_000)
    housekeeping.run(6_000)
    assert calls == [5_000, 5_000]
