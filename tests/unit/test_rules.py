from detectors.credential_stuffing import CredentialStuffingDetector
from detectors.policy import CredentialStuffingPolicy
from streams.runtime.rules import Housekeeping, build, retune


def test_detectors_are_built_and_retuned_from_their_policy():
    detector = build(CredentialStuffingDetector,
                     CredentialStuffingPolicy(window_seconds=60, min_distinct_keys=7))
    assert detector.window_ms == 60_000 and detector.min_distinct_keys == 7
    detector.ranges["198.51.100.0/24"] = "state"  # type: ignore[assignment]
    retune(detector, CredentialStuffingPolicy(window_seconds=120, min_distinct_keys=9))
    assert detector.window_ms == 120_000 and detector.min_distinct_keys == 9
    assert detector.ranges == {"198.51.100.0/24": "state"}  # the windows' state is kept


class Recorder:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def forget_idle(self, now_ms: int) -> int:
        self.calls.append(now_ms)
        return 0


def test_housekeeping_runs_at_most_once_per_period_and_only_with_an_event_time():
    first, second = Recorder(), Recorder()
    housekeeping = Housekeeping(first, second, every_seconds=3600, lateness_seconds=0)
    housekeeping.pacing._last -= 7200  # the period has passed
    housekeeping.run(0)
    assert first.calls == []
    housekeeping.run(5_000)
    housekeeping.run(6_000)
    assert first.calls == second.calls == [5_000]


def test_housekeeping_forgets_only_up_to_the_event_time_seen_a_lateness_ago():
    # A partition that is ahead in event time must not make a lagging partition's entities
    # look idle: the watermark is the newest event time as it was `lateness_seconds` ago.
    detector = Recorder()
    housekeeping = Housekeeping(detector, every_seconds=0, lateness_seconds=60)
    housekeeping.run(1_000_000, wall_s=0.0)
    housekeeping.run(2_000_000, wall_s=30.0)  # another partition, far ahead in event time
    assert detector.calls == []  # nothing is a minute old yet
    housekeeping.run(2_000_000, wall_s=65.0)
    assert detector.calls == [1_000_000]
    housekeeping.run(0, wall_s=95.0)  # an empty batch still advances the watermark
    assert detector.calls == [1_000_000, 2_000_000]
