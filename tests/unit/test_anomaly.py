import pickle
import random

import pytest

from detectors.anomaly import (
    DETECTOR,
    FEATURES,
    RULE_ID,
    AccountFeatures,
    PopulationAnomalyModel,
    to_signal,
)
from detectors.events import Moderation, UsageEvent

T0 = 1_790_000_000_000
MINUTE = 60_000


def event(ts, account, ip="192.0.2.10", status=200, prompt_tokens=200, completion_tokens=300,
          flagged=False, event_id=None):
    return UsageEvent(
        event_id=event_id or f"{account}-{ts}", ts_ms=ts, account_id=account, api_key_id="k",
        ip=ip, endpoint="/v1/chat/completions", status=status, prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens, moderation=Moderation(flagged),
    )


def ordinary(account, rng, n=30):
    """A person or small app: irregular gaps, one address, ordinary sizes, rare errors."""
    ts, events = T0, []
    ip = f"192.0.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    for _ in range(n):
        ts += int(rng.expovariate(1 / 40_000)) + 1
        events.append(event(ts, account, ip, status=429 if rng.random() < 0.03 else 200,
                            prompt_tokens=int(rng.gauss(200, 40)),
                            completion_tokens=int(rng.gauss(300, 60))))
    return events


def odd_one(account="odd", n=30):
    """Regular as a clock, from forty networks, mostly failing, tiny prompts."""
    return [event(T0 + i * 2_000, account, f"198.18.{i % 40}.7", status=403 if i % 5 else 200,
                  prompt_tokens=5, completion_tokens=0) for i in range(n)]


def population(seed=11, accounts=60):
    rng = random.Random(seed)
    events = [e for i in range(accounts) for e in ordinary(f"acct-{i:02d}", rng)]
    return sorted(events + odd_one(), key=lambda e: e.ts_ms)


def test_features_follow_the_account():
    features = AccountFeatures(half_life_ms=3_600_000)
    for i in range(30):
        features.observe(event(T0 + i * 30_000, "a", ip=f"198.51.{i % 3}.1",
                               status=500 if i % 10 == 0 else 200, flagged=i % 5 == 0))
    values = features.vector()
    assert set(values) == set(FEATURES)
    assert values["requests_per_minute"] == pytest.approx(2.0, rel=0.25)
    assert values["error_ratio"] == pytest.approx(0.1, abs=0.03)
    assert values["moderation_share"] == pytest.approx(0.2, abs=0.05)
    assert values["distinct_networks"] == 3
    assert values["interval_cv"] < 0.05  # every 30 s exactly
    assert values["mean_completion_tokens"] == pytest.approx(300)


def test_redelivered_event_is_not_counted_again():
    features = AccountFeatures()
    first = event(T0, "a")
    assert features.observe(first)
    before = features.vector()
    assert not features.observe(first)
    assert features.vector() == before


def test_no_model_before_enough_accounts_and_refits_on_schedule():
    model = PopulationAnomalyModel(min_accounts=50, refit_every_ms=15 * MINUTE, n_estimators=30)
    rng = random.Random(5)
    for e in (e for i in range(10) for e in ordinary(f"few-{i}", rng)):
        model.observe(e)
    assert not model.maybe_refit(T0 + 30 * MINUTE)
    assert model.score("few-1") is None
    for e in population():
        model.observe(e)
    assert not model.maybe_refit(T0 + 31 * MINUTE)  # too soon after the last attempt
    assert model.maybe_refit(T0 + 46 * MINUTE)
    assert model.score("never-seen") is None


def test_the_odd_account_stands_out_with_reasons():
    model = PopulationAnomalyModel(min_accounts=50, contamination=0.05, n_estimators=60, seed=3)
    for e in population():
        model.observe(e)
    assert model.maybe_refit(T0 + 30 * MINUTE)
    odd = model.score("odd")
    assert odd is not None
    normal = [s.score for s in model.scores(a for a in model.accounts if a != "odd")]
    assert odd.score > max(normal)
    assert 0.0 <= odd.score <= 1.0 and odd.outlier
    assert odd.reasons and any(name in " ".join(odd.reasons)
                               for name in ("distinct_networks", "error_ratio", "interval_cv"))
    outliers = model.outliers(T0 + 30 * MINUTE)
    assert outliers[0].account_id == "odd"
    assert len(outliers) <= 0.1 * len(model.accounts)


def test_same_seed_same_scores_and_the_model_pickles():
    def fitted():
        model = PopulationAnomalyModel(min_accounts=50, n_estimators=30, seed=9)
        for e in population():
            model.observe(e)
        model.maybe_refit(T0 + 30 * MINUTE)
        return model

    first, second = fitted(), fitted()
    accounts = sorted(first.accounts)
    assert [s.score for s in first.scores(accounts)] == [s.score for s in second.scores(accounts)]
    restored = pickle.loads(pickle.dumps(first))
    assert restored.score("odd") == first.score("odd")


def test_the_signal_is_supporting_evidence_without_an_alert():
    model = PopulationAnomalyModel(min_accounts=50, n_estimators=30)
    for e in population():
        model.observe(e)
    model.maybe_refit(T0 + 30 * MINUTE)
    score = model.score("odd")
    assert score is not None
    signal = to_signal(score, ts_ms=T0 + 30 * MINUTE)
    assert signal.detector == DETECTOR and signal.rule_id == RULE_ID
    assert signal.alert_id is None and signal.strength == score.score
    assert signal.ts_ms == T0 + 30 * MINUTE and score.reasons[0] in signal.reason
