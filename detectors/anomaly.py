"""Population anomaly: accounts whose behaviour stands out from everyone else's.

A supporting signal only. Being unusual is not misuse (the biggest customers are all outliers),
so the model produces Signals for the risk scorer, which lets them count only next to a primary
detector; it never raises an Alert of its own.

Features are kept per account with exponential decay (half-life `half_life_ms`), so they follow
recent behaviour with constant-size state. The forest is refitted every `refit_every_ms` on the
accounts this worker sees: partitions are assigned by account hash, so each worker's accounts
are a random sample of the population and a local fit is a fair one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field

import numpy as np
from sklearn.ensemble import IsolationForest

from detectors.events import UsageEvent
from detectors.network import network_range
from detectors.risk import Signal
from detectors.windows import drop_idle

RULE_ID = "anomaly.population_outlier"
DETECTOR = "anomaly"
FEATURES = ("requests_per_minute", "error_ratio", "distinct_ips", "distinct_networks",
            "mean_prompt_tokens", "mean_completion_tokens", "interval_cv", "moderation_share")
MINUTE_MS = 60_000
# Spread floor in log space, so that a feature on which the population is constant (everyone
# at zero errors) still gives a readable z-score for the one account that is not.
_MIN_SPREAD = 0.05


def _remember(last_seen: dict[str, int], key: str, ts_ms: int, horizon_ms: int,
              cap: int) -> None:
    previous = last_seen.pop(key, None)
    last_seen[key] = ts_ms if previous is None else max(previous, ts_ms)
    while last_seen:
        oldest = next(iter(last_seen))
        if len(last_seen) <= cap and last_seen[oldest] >= horizon_ms:
            break
        del last_seen[oldest]


@dataclass
class AccountFeatures:
    """Decayed running statistics of one account; `vector()` gives the feature values."""

    half_life_ms: int = 3_600_000
    max_distinct: int = 1000
    first_ms: int | None = None
    latest_ms: int = 0
    requests: float = 0.0
    errors: float = 0.0
    flagged: float = 0.0
    prompt_tokens: float = 0.0
    prompt_count: float = 0.0
    completion_tokens: float = 0.0
    completion_count: float = 0.0
    gap_mean: float = 0.0
    gap_var: float = 0.0
    gaps: int = 0
    ips: dict[str, int] = field(default_factory=dict)
    networks: dict[str, int] = field(default_factory=dict)
    # Only recent ids: redelivery after a restart replays the last moments, and a bounded set
    # keeps the state constant-size (an older duplicate would only nudge decayed averages).
    recent_ids: dict[str, None] = field(default_factory=dict)

    def observe(self, event: UsageEvent, gap_rate: float = 0.1) -> bool:
        """Learn from one event; False for a recently seen event id."""
        if event.event_id in self.recent_ids:
            return False
        self.recent_ids[event.event_id] = None
        if len(self.recent_ids) > 512:
            del self.recent_ids[next(iter(self.recent_ids))]
        ts = event.ts_ms
        if self.first_ms is None:
            self.first_ms = self.latest_ms = ts
        elif ts > self.latest_ms:
            self._decay(ts - self.latest_ms)
            self._learn_gap(ts - self.latest_ms, gap_rate)
            self.latest_ms = ts
        self.first_ms = min(self.first_ms, ts)
        weight = 2.0 ** (-(self.latest_ms - ts) / self.half_life_ms)
        self.requests += weight
        self.errors += weight * (event.status >= 400)
        self.flagged += weight * bool(event.moderation and event.moderation.flagged)
        if event.prompt_tokens is not None:
            self.prompt_tokens += weight * event.prompt_tokens
            self.prompt_count += weight
        if event.completion_tokens is not None:
            self.completion_tokens += weight * event.completion_tokens
            self.completion_count += weight
        horizon = self.latest_ms - self.half_life_ms
        _remember(self.ips, event.ip, ts, horizon, self.max_distinct)
        _remember(self.networks, network_range(event.ip), ts, horizon, self.max_distinct)
        return True

    def _decay(self, elapsed_ms: int) -> None:
        factor = 2.0 ** (-elapsed_ms / self.half_life_ms)
        self.requests *= factor
        self.errors *= factor
        self.flagged *= factor
        self.prompt_tokens *= factor
        self.prompt_count *= factor
        self.completion_tokens *= factor
        self.completion_count *= factor

    def _learn_gap(self, gap_ms: int, rate: float) -> None:
        if self.gaps == 0:
            self.gap_mean = float(gap_ms)
        else:
            delta = gap_ms - self.gap_mean
            self.gap_mean += rate * delta
            self.gap_var = (1 - rate) * (self.gap_var + rate * delta * delta)
        self.gaps += 1

    def vector(self) -> dict[str, float]:
        if self.first_ms is None:
            return dict.fromkeys(FEATURES, 0.0)
        # Decayed counts approach rate x mean lifetime; a young account has had less time.
        lifetime_ms = self.half_life_ms / math.log(2)
        span_ms = min(lifetime_ms, self.latest_ms - self.first_ms + MINUTE_MS)
        requests = max(self.requests, 1e-9)
        regular = self.gaps >= 3 and self.gap_mean > 0
        return {
            "requests_per_minute": self.requests * MINUTE_MS / span_ms,
            "error_ratio": self.errors / requests,
            "distinct_ips": float(len(self.ips)),
            "distinct_networks": float(len(self.networks)),
            "mean_prompt_tokens": (self.prompt_tokens / self.prompt_count
                                   if self.prompt_count else 0.0),
            "mean_completion_tokens": (self.completion_tokens / self.completion_count
                                       if self.completion_count else 0.0),
            # 1.0 (Poisson-like) until there are enough gaps to say otherwise.
            "interval_cv": math.sqrt(self.gap_var) / self.gap_mean if regular else 1.0,
            "moderation_share": self.flagged / requests,
        }


@dataclass(frozen=True, slots=True)
class AnomalyScore:
    account_id: str
    score: float  # the isolation forest's anomaly score, in (0, 1]; about 0.5 is ordinary
    outlier: bool  # beyond the score that the `contamination` share of accounts exceeds
    reasons: tuple[str, ...]
    features: Mapping[str, float]
    ts_ms: int  # the account's latest event
    model_fitted_ms: int


class PopulationAnomalyModel:
    """Per-account features (`self.accounts`) and an IsolationForest over them."""

    def __init__(self, refit_every_ms: int = 900_000, min_accounts: int = 50,
                 contamination: float = 0.01, seed: int = 0, n_estimators: int = 100,
                 half_life_ms: int = 3_600_000, active_within_ms: int = 3_600_000,
                 top_features: int = 3) -> None:
        if not 0 < contamination <= 0.5:
            raise ValueError("contamination must be in (0, 0.5]")
        self.refit_every_ms = refit_every_ms
        self.min_accounts = min_accounts
        self.contamination = contamination
        self.seed = seed
        self.n_estimators = n_estimators
        self.half_life_ms = half_life_ms
        self.active_within_ms = active_within_ms
        self.top_features = top_features
        self.accounts: MutableMapping[str, AccountFeatures] = {}
        self.forest: IsolationForest | None = None
        self.fitted_ms: int | None = None
        self.last_attempt_ms: int | None = None
        self.center = np.zeros(len(FEATURES))
        self.spread = np.ones(len(FEATURES))

    def observe(self, event: UsageEvent) -> None:
        if event.account_id is None:
            return
        features = self.accounts.get(event.account_id) or AccountFeatures(self.half_life_ms)
        if features.observe(event):
            self.accounts[event.account_id] = features

    def maybe_refit(self, now_ms: int) -> bool:
        """Refit at the first call in each `refit_every_ms` bucket of event time, as of the
        bucket's start, when enough accounts were active recently; return whether a new model
        is in place (fitted at `last_attempt_ms`). Called before each event is learnt from, in
        event-time order, the fit sees exactly the events before the bucket: the same model
        however the input was batched or interleaved."""
        now_ms = now_ms // self.refit_every_ms * self.refit_every_ms
        if self.last_attempt_ms is not None and now_ms <= self.last_attempt_ms:
            return False
        self.last_attempt_ms = now_ms
        active = self._active(now_ms)
        if len(active) < self.min_accounts:
            return False
        matrix = self._matrix(active)
        forest = IsolationForest(n_estimators=self.n_estimators,
                                 max_samples=min(256, len(active)),
                                 contamination=self.contamination, random_state=self.seed)
        forest.fit(matrix)
        self.forest, self.fitted_ms = forest, now_ms
        self.center = np.median(matrix, axis=0)
        self.spread = np.maximum(matrix.std(axis=0), _MIN_SPREAD)
        return True

    def score(self, account_id: str) -> AnomalyScore | None:
        """The account's score under the current model; None before the first fit or for an
        account never seen."""
        scores = self.scores([account_id])
        return scores[0] if scores else None

    def scores(self, account_ids: Iterable[str]) -> list[AnomalyScore]:
        """Scores for many accounts in one pass over the forest (unknown ones left out)."""
        known = [a for a in account_ids if a in self.accounts]
        if self.forest is None or self.fitted_ms is None or not known:
            return []
        matrix = self._matrix(known)
        raw = -self.forest.score_samples(matrix)
        threshold = -float(self.forest.offset_)
        z = (matrix - self.center) / self.spread
        return [self._result(account, float(raw[i]), float(raw[i]) > threshold, z[i])
                for i, account in enumerate(known)]

    def outliers(self, now_ms: int) -> list[AnomalyScore]:
        """The recently active accounts the current model calls outliers, most anomalous first."""
        found = [s for s in self.scores(self._active(now_ms)) if s.outlier]
        return sorted(found, key=lambda s: (-s.score, s.account_id))

    def forget_idle(self, now_ms: int, idle_ms: int = 24 * 3_600_000) -> int:
        return drop_idle(self.accounts, lambda f: f.latest_ms, now_ms - idle_ms)

    def _active(self, now_ms: int) -> list[str]:
        return sorted(a for a, f in self.accounts.items()
                      if f.latest_ms >= now_ms - self.active_within_ms)

    def _matrix(self, account_ids: list[str]) -> np.ndarray:
        # log1p: rates, counts and token sizes span orders of magnitude; ratios stay ordered.
        rows = [[self.accounts[a].vector()[name] for name in FEATURES] for a in account_ids]
        return np.log1p(np.maximum(np.asarray(rows, dtype=np.float64), 0.0))

    def _result(self, account_id: str, score: float, outlier: bool,
                z: np.ndarray) -> AnomalyScore:
        assert self.fitted_ms is not None
        features = self.accounts[account_id].vector()
        order = sorted(range(len(FEATURES)), key=lambda i: -abs(float(z[i])))
        chosen = [i for i in order[: self.top_features] if abs(float(z[i])) >= 1.0] or order[:1]
        reasons = tuple(
            f"{FEATURES[i]} = {features[FEATURES[i]]:.3g} "
            f"({'above' if z[i] > 0 else 'below'} the population, z={float(z[i]):+.1f})"
            for i in chosen)
        return AnomalyScore(account_id, min(1.0, max(0.0, score)), outlier, reasons,
                            {k: round(v, 4) for k, v in features.items()},
                            self.accounts[account_id].latest_ms, self.fitted_ms)


def to_signal(score: AnomalyScore, ts_ms: int | None = None) -> Signal:
    """The supporting signal for the risk scorer; strength is the anomaly score itself."""
    return Signal(
        account_id=score.account_id, detector=DETECTOR, rule_id=RULE_ID, strength=score.score,
        ts_ms=score.ts_ms if ts_ms is None else ts_ms, alert_id=None,
        reason="unusual among all accounts: " + "; ".join(score.reasons),
        evidence_link=None)
