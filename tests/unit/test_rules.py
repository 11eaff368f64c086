import pytest
import yaml

from detectors.credential_stuffing import CredentialStuffingDetector
from detectors.policy import (
    AnomalyPolicy,
    CredentialStuffingPolicy,
    PolicyError,
    policy_from_dict,
)
from detectors.sybil import SybilDetector
from streams.runtime.driver import MemoryState
from streams.runtime.rules import Housekeeping, build, retune
from streams.settings import REPO_ROOT
from streams.stages.detect_network_abuse import NetworkAbuse
from streams.stages.detect_pattern_spread import PatternSpread
from streams.stages.ingest import Ingest


def test_detectors_are_built_and_retuned_from_their_policy():
    detector = build(CredentialStuffingDetector,
                     CredentialStuffingPolicy(window_seconds=60, min_distinct_keys=7))
    assert detector.window_ms == 60_000 and detector.min_distinct_keys == 7
    detector.ranges["198.51.100.0/24"] = "state"  # type: ignore[assignment]
    retune(detector, CredentialStuffingPolicy(window_seconds=120, min_distinct_keys=9))
    assert detector.window_ms == 120_000 and detector.min_distinct_keys == 9
    assert detector.ranges == {"198.51.100.0/24": "state"}  # the windows' state is kept


def test_a_policy_field_the_detector_does_not_take_is_refused_not_dropped():
    """Built or retuned from a section with a field it does not know, a detector would keep
    its default for it: both refuse, naming the field."""
    with pytest.raises(TypeError, match="SybilDetector takes no min_distinct_keys"):
        build(SybilDetector, CredentialStuffingPolicy())
    with pytest.raises(TypeError, match="min_distinct_keys"):
        retune(SybilDetector(), CredentialStuffingPolicy())


def test_the_supporting_anomaly_signal_has_no_severity_to_set():
    """It never alerts: a severity other than low would be a setting that changes nothing."""
    assert "severity" not in AnomalyPolicy().detector_params()
    shipped = yaml.safe_load((REPO_ROOT / "ops" / "policy.yaml").read_text())
    shipped["rules"]["anomaly"]["severity"] = "high"
    with pytest.raises(PolicyError, match="severity"):
        policy_from_dict(shipped)


def test_every_stage_builds_and_retunes_its_detectors_from_the_shipped_policy():
    policy = policy_from_dict(yaml.safe_load((REPO_ROOT / "ops" / "policy.yaml").read_text()))
    for stage in (Ingest, NetworkAbuse, PatternSpread):
        stage(policy, MemoryState()).reconfigure(policy)


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
