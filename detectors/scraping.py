"""Scraping and model distillation: an account harvesting the model's answers, a sustained
high rate of highly diverse prompts that ask for long completions.

Each of the three conditions alone describes a legitimate customer: batch jobs run at a
steady high rate for hours, chat products send diverse prompts, writing tools ask for long
answers. Only together do they look like someone building a training set. The batch customer
in particular fills one template ("Classify the sentiment of this review: ...") whose filled-in
text varies but whose shape does not, and its completions are short.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

from detectors.alerts import Alert, Entity
from detectors.events import UsageEvent
from detectors.incidents import Incident
from detectors.windows import SlidingWindow, drop_idle

RULE_ID = "scraping.distillation"
DEFAULT_SEVERITY = "medium"
MINUTE_MS = 60_000
_NON_WORD = re.compile(r"[^\w\s]+")
_DIGITS = re.compile(r"\d+")


def prompt_shape(prompt: str, words: int = 6) -> str:
    """A cheap template key: a hash of the first `words` normalised words (lower case, no
    punctuation, digits folded). Prompts filled into one template share it."""
    text = _DIGITS.sub("0", _NON_WORD.sub(" ", prompt.lower()))
    head = " ".join(text.split()[:words])
    # A hash, not the words: the state must not hold prompt text.
    return hashlib.blake2b(head.encode("utf-8"), digest_size=6).hexdigest()


@dataclass(frozen=True, slots=True)
class _Request:
    minute: int
    shape: str | None
    completion_tokens: int | None
    asks_max: bool


@dataclass
class ScrapingState:
    """Running totals over the window's requests, kept in step with evictions."""

    window: SlidingWindow[_Request]
    per_minute: Counter[int] = field(default_factory=Counter)
    shapes: Counter[str] = field(default_factory=Counter)
    known_shapes: int = 0
    completion_sum: int = 0
    completion_count: int = 0
    asks_max: int = 0
    incident: Incident = field(default_factory=Incident)

    def count(self, request: _Request, sign: int) -> None:
        self.per_minute[request.minute] += sign
        if self.per_minute[request.minute] <= 0:
            del self.per_minute[request.minute]
        if request.shape is not None:
            self.known_shapes += sign
            self.shapes[request.shape] += sign
            if self.shapes[request.shape] <= 0:
                del self.shapes[request.shape]
        if request.completion_tokens is not None:
            self.completion_sum += sign * request.completion_tokens
            self.completion_count += sign
        self.asks_max += sign * request.asks_max

    def forget(self, request: _Request) -> None:
        self.count(request, -1)


@dataclass(frozen=True, slots=True)
class _Measures:
    requests: int
    active_minutes: int
    peak_per_minute: int
    diversity: float
    distinct_shapes: int
    mean_completion: float
    max_share: float


class ScrapingDetector:
    """Fires when, within the window, an account sends >= min_rate_per_minute requests in each
    of >= min_active_minutes distinct minutes, the share of distinct prompt shapes among its
    prompts is >= min_shape_diversity, and its completions are long (mean completion tokens
    >= min_mean_completion_tokens, or >= min_max_tokens_share of requests ask for max_tokens at
    the model's maximum).

    Prompts are optional (callers may opt out of logging): diversity is judged only when at
    least half the window's requests carry a prompt, and otherwise the rule does not fire.
    State is per account (`self.accounts`, replaceable by a Faust table).
    """

    def __init__(self, window_ms: int = 600_000, min_rate_per_minute: int = 20,
                 min_active_minutes: int = 8, min_shape_diversity: float = 0.7,
                 min_mean_completion_tokens: int = 600, min_max_tokens_share: float = 0.5,
                 model_max_tokens: Mapping[str, int] | None = None,
                 default_max_tokens: int = 4096, shape_words: int = 6,
                 severity: str = DEFAULT_SEVERITY) -> None:
        self.window_ms = window_ms
        self.min_rate_per_minute = min_rate_per_minute
        self.min_active_minutes = min_active_minutes
        self.min_shape_diversity = min_shape_diversity
        self.min_mean_completion_tokens = min_mean_completion_tokens
        self.min_max_tokens_share = min_max_tokens_share
        self.model_max_tokens = dict(model_max_tokens or {})
        self.default_max_tokens = default_max_tokens
        self.shape_words = shape_words
        self.severity = severity
        self.accounts: MutableMapping[str, ScrapingState] = {}

    def observe(self, event: UsageEvent) -> list[Alert]:
        """Learn from one event and return the alerts it completes (usually none)."""
        if event.account_id is None:
            return []
        state = self.accounts.get(event.account_id) or ScrapingState(
            SlidingWindow(self.window_ms))
        request = _Request(
            event.ts_ms // MINUTE_MS,
            prompt_shape(event.prompt, self.shape_words) if event.prompt else None,
            event.completion_tokens, self._asks_max(event))
        if not state.window.add(event.ts_ms, event.event_id, request, state.forget):
            return []
        state.count(request, 1)
        alerts = self._check(event.account_id, state)
        self.accounts[event.account_id] = state
        return alerts

    def forget_idle(self, now_ms: int) -> int:
        return drop_idle(self.accounts, lambda s: s.window.latest_ms, now_ms - self.window_ms)

    def _asks_max(self, event: UsageEvent) -> bool:
        requested = event.extra.get("max_tokens")
        if not isinstance(requested, int) or isinstance(requested, bool):
            return False
        limit = self.model_max_tokens.get(event.model or "", self.default_max_tokens)
        return requested >= limit

    def _measure(self, state: ScrapingState) -> _Measures:
        requests = len(state.window)
        diversity = (len(state.shapes) / state.known_shapes
                     if state.known_shapes and 2 * state.known_shapes >= requests else 0.0)
        return _Measures(
            requests=requests,
            active_minutes=sum(1 for n in state.per_minute.values()
                               if n >= self.min_rate_per_minute),
            peak_per_minute=max(state.per_minute.values(), default=0),
            diversity=diversity, distinct_shapes=len(state.shapes),
            mean_completion=(state.completion_sum / state.completion_count
                             if state.completion_count else 0.0),
            max_share=state.asks_max / requests if requests else 0.0,
        )

    def _check(self, account_id: str, state: ScrapingState) -> list[Alert]:
        latest = state.window.latest_ms
        state.incident.close_if_quiet(latest, self.window_ms)
        m = self._measure(state)
        long_answers = (m.mean_completion >= self.min_mean_completion_tokens
                        or m.max_share >= self.min_max_tokens_share)
        if m.active_minutes < self.min_active_minutes or \
                m.diversity < self.min_shape_diversity or not long_answers:
            return []
        if not state.incident.report(state.window.start_ms, m.requests, latest):
            return []
        return [self._alert(account_id, state, m)]

    def _alert(self, account_id: str, state: ScrapingState, m: _Measures) -> Alert:
        assert state.incident.start_ms is not None
        minutes = max(1, self.window_ms // MINUTE_MS)
        reasons = [
            f"{m.requests} requests in {minutes} min, >= {self.min_rate_per_minute}/min in "
            f"{m.active_minutes} distinct minutes",
            f"{m.diversity:.0%} of prompts have distinct shapes ({m.distinct_shapes} shapes)",
        ]
        if m.mean_completion >= self.min_mean_completion_tokens:
            reasons.append(f"mean completion {m.mean_completion:.0f} tokens")
        if m.max_share >= self.min_max_tokens_share:
            reasons.append(f"{m.max_share:.0%} of requests ask for the model's maximum tokens")
        rate_factor = min(1.0, m.requests / (2 * self.min_rate_per_minute * minutes))
        return Alert(
            rule_id=RULE_ID, severity=self.severity,
            score=round(min(1.0, 0.5 + 0.5 * rate_factor) * m.diversity, 3),
            entity=Entity("account", account_id), incident_start_ms=state.incident.start_ms,
            window_start_ms=state.window.start_ms, window_end_ms=state.window.latest_ms,
            reasons=tuple(reasons),
            evidence={
                "requests": m.requests, "active_minutes": m.active_minutes,
                "peak_requests_per_minute": m.peak_per_minute,
                "mean_requests_per_minute": round(m.requests / minutes, 1),
                "distinct_prompt_shapes": m.distinct_shapes,
                "prompts_with_text": state.known_shapes,
                "shape_diversity": round(m.diversity, 3),
                "mean_completion_tokens": round(m.mean_completion, 1),
                "completion_tokens_total": state.completion_sum,
                "max_tokens_share": round(m.max_share, 3),
            },
            accounts=(account_id,),
        )
