"""Scraping and model distillation: an account harvesting the model's answers, a sustained
high rate of diverse prompts that ask for long completions.

Each of the three conditions alone describes a legitimate customer: batch jobs run at a
steady high rate for hours, chat products send diverse prompts, writing tools ask for long
answers. Only together do they look like someone building a training set. The batch customer
in particular fills one template ("Classify the sentiment of this review: ...") whose filled-in
text varies but whose shape does not, and its completions are short.

"Diverse" has two forms. A harvest of free-form questions has a distinct shape for almost
every prompt. A harvest of public instruction datasets (T0/P3/FLAN style) does not: its
prompts are filled into a few dozen templates ("Answer the following question: ...", "Read the
text and answer: ...") and so share shapes, but it spans many templates, none dominant. A
product fills one template, or a few, however varied the filled-in text.
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
from detectors.text import canonical
from detectors.windows import SlidingWindow, drop_idle

RULE_ID = "scraping.distillation"
DEFAULT_SEVERITY = "medium"
MINUTE_MS = 60_000
_NON_WORD = re.compile(r"[^\w\s]+")
_DIGITS = re.compile(r"\d+")
_HEAD_CHARS = 600


def prompt_shape(prompt: str, words: int = 6) -> str:
    """A cheap template key: a hash of the first `words` normalised words (canonical text,
    no punctuation, digits folded). Prompts filled into one template share it, however its
    opening is disguised."""
    # The opening is enough: a template's fixed words come first.
    text = _DIGITS.sub("0", _NON_WORD.sub(" ", canonical(prompt[:_HEAD_CHARS])))
    head = " ".join(text.split()[:words])
    # A hash, not the words: the state must not hold prompt text.
    return hashlib.blake2b(head.encode("utf-8"), digest_size=6).hexdigest()


@dataclass(frozen=True, slots=True)
class _Request:
    minute: int
    shape: str | None
    template: str | None
    completion_tokens: int | None
    asks_max: bool


@dataclass
class ScrapingState:
    """Running totals over the window's requests, kept in step with evictions."""

    window: SlidingWindow[_Request]
    per_minute: Counter[int] = field(default_factory=Counter)
    shapes: Counter[str] = field(default_factory=Counter)
    # Template shapes (the prompt's opening words), kept in step with `shapes`: both hold one
    # entry per distinct key in the window, so the state stays the size of the window.
    templates: Counter[str] = field(default_factory=Counter)
    # How many template shapes have each count, and the largest count: the most common
    # template's size without a scan of `templates` per event (counts move by one at a time).
    template_sizes: Counter[int] = field(default_factory=Counter)
    top_template: int = 0
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
        if request.template is not None:
            self._count_template(request.template, sign)
        if request.completion_tokens is not None:
            self.completion_sum += sign * request.completion_tokens
            self.completion_count += sign
        self.asks_max += sign * request.asks_max

    def forget(self, request: _Request) -> None:
        self.count(request, -1)

    def _count_template(self, template: str, sign: int) -> None:
        before = self.templates[template]
        after = before + sign
        if before > 0:
            self.template_sizes[before] -= 1
            if self.template_sizes[before] <= 0:
                del self.template_sizes[before]
        if after > 0:
            self.templates[template] = after
            self.template_sizes[after] += 1
        else:
            del self.templates[template]
        if after > self.top_template:
            self.top_template = after
        elif before == self.top_template and before not in self.template_sizes:
            self.top_template = after if after > 0 else max(self.template_sizes, default=0)


@dataclass(frozen=True, slots=True)
class _Measures:
    requests: int
    active_minutes: int
    peak_per_minute: int
    diversity: float
    distinct_shapes: int
    distinct_templates: int
    top_template_share: float
    mean_completion: float
    max_share: float


class ScrapingDetector:
    """Fires when, within the window, an account sends >= min_rate_per_minute requests in each
    of >= min_active_minutes distinct minutes, its prompts are diverse enough to be a harvest,
    and its completions are long (mean completion tokens >= min_mean_completion_tokens, or
    >= min_max_tokens_share of requests ask for max_tokens at the model's maximum).

    Diverse enough to be a harvest means either of:

    - free-form questions: the share of distinct prompt shapes (first `shape_words` words)
      among the prompts is >= min_shape_diversity;
    - templated datasets: the prompts span >= min_distinct_shapes template shapes (first
      `template_words` words) and the most common one carries <= max_top_shape_share of them.

    The second test is what a harvest of public instruction datasets meets and a product does
    not. A harvest cycles through many templates (~20 in one sitting, each a few per cent of
    its prompts); a product fills one template, or a few with one dominant, however varied the
    filled-in text. The defaults leave room for that: 8 template shapes is more than the
    handful of features a product sends through one account, and a 50% ceiling on the top
    shape means one main template plus any number of occasional others never qualifies.

    Template shapes are shorter than prompt shapes (3 words, not 6) because products often put
    their slot early: "Write a product description for {product}" has the product as its
    sixth word, so its prompt shapes are as many as its products, while its template shape,
    "write a product", is one. The limit of this: a template whose slot is within its first
    three words ("Explain {topic} simply") has no fixed opening, so a product built on it, at a
    sustained rate with long answers, reads as many templates once it fills in 8 or more
    values with none over half its prompts (with many values it already met the first test).
    Three words rather than fewer keeps apart dataset templates that share a first word or two
    ("Write a title for ...", "Write a summary of ...").

    Prompts are optional (callers may opt out of logging): diversity is judged only when at
    least half the window's requests carry a prompt, and otherwise the rule does not fire.
    State is per account (`self.accounts`, replaceable by a Faust table); it holds hashes of
    prompt openings, never prompt text, and only for the requests in the window.
    """

    def __init__(self, window_ms: int = 600_000, min_rate_per_minute: int = 20,
                 min_active_minutes: int = 8, min_shape_diversity: float = 0.7,
                 min_distinct_shapes: int = 8, max_top_shape_share: float = 0.5,
                 min_mean_completion_tokens: int = 600, min_max_tokens_share: float = 0.5,
                 model_max_tokens: Mapping[str, int] | None = None,
                 default_max_tokens: int = 4096, shape_words: int = 6, template_words: int = 3,
                 severity: str = DEFAULT_SEVERITY) -> None:
        self.window_ms = window_ms
        self.min_rate_per_minute = min_rate_per_minute
        self.min_active_minutes = min_active_minutes
        self.min_shape_diversity = min_shape_diversity
        self.min_distinct_shapes = min_distinct_shapes
        self.max_top_shape_share = max_top_shape_share
        self.min_mean_completion_tokens = min_mean_completion_tokens
        self.min_max_tokens_share = min_max_tokens_share
        self.model_max_tokens = dict(model_max_tokens or {})
        self.default_max_tokens = default_max_tokens
        self.shape_words = shape_words
        self.template_words = template_words
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
            prompt_shape(event.prompt, self.template_words) if event.prompt else None,
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
        judged = state.known_shapes > 0 and 2 * state.known_shapes >= requests
        return _Measures(
            requests=requests,
            active_minutes=sum(1 for n in state.per_minute.values()
                               if n >= self.min_rate_per_minute),
            peak_per_minute=max(state.per_minute.values(), default=0),
            diversity=len(state.shapes) / state.known_shapes if judged else 0.0,
            distinct_shapes=len(state.shapes),
            distinct_templates=len(state.templates) if judged else 0,
            top_template_share=state.top_template / state.known_shapes if judged else 1.0,
            mean_completion=(state.completion_sum / state.completion_count
                             if state.completion_count else 0.0),
            max_share=state.asks_max / requests if requests else 0.0,
        )

    def _free_form(self, m: _Measures) -> bool:
        return m.diversity >= self.min_shape_diversity

    def _many_templates(self, m: _Measures) -> bool:
        return (m.distinct_templates >= self.min_distinct_shapes
                and m.top_template_share <= self.max_top_shape_share)

    def _check(self, account_id: str, state: ScrapingState) -> list[Alert]:
        latest = state.window.latest_ms
        state.incident.close_if_quiet(latest, self.window_ms)
        m = self._measure(state)
        long_answers = (m.mean_completion >= self.min_mean_completion_tokens
                        or m.max_share >= self.min_max_tokens_share)
        harvest = self._free_form(m) or self._many_templates(m)
        if m.active_minutes < self.min_active_minutes or not harvest or not long_answers:
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
            f"prompts span {m.distinct_templates} template shapes (first {self.template_words} "
            f"words), the most common {m.top_template_share:.0%} of them"
            + (": many templates, not one product's" if self._many_templates(m) else ""),
        ]
        if m.mean_completion >= self.min_mean_completion_tokens:
            reasons.append(f"mean completion {m.mean_completion:.0f} tokens")
        if m.max_share >= self.min_max_tokens_share:
            reasons.append(f"{m.max_share:.0%} of requests ask for the model's maximum tokens")
        rate_factor = min(1.0, m.requests / (2 * self.min_rate_per_minute * minutes))
        # How diverse, by whichever test was met: the share of distinct prompt shapes, or the
        # share of prompts outside the most common template.
        spread = max(m.diversity if self._free_form(m) else 0.0,
                     1.0 - m.top_template_share if self._many_templates(m) else 0.0)
        return Alert(
            rule_id=RULE_ID, severity=self.severity,
            score=round(min(1.0, 0.5 + 0.5 * rate_factor) * spread, 3),
            entity=Entity("account", account_id), incident_start_ms=state.incident.start_ms,
            repeats=state.incident.repeats,
            window_start_ms=state.window.start_ms, window_end_ms=state.window.latest_ms,
            reasons=tuple(reasons),
            evidence={
                "requests": m.requests, "active_minutes": m.active_minutes,
                "peak_requests_per_minute": m.peak_per_minute,
                "mean_requests_per_minute": round(m.requests / minutes, 1),
                "distinct_prompt_shapes": m.distinct_shapes,
                "prompts_with_text": state.known_shapes,
                "shape_diversity": round(m.diversity, 3),
                "distinct_template_shapes": m.distinct_templates,
                "top_template_shape_share": round(m.top_template_share, 3),
                "diverse_by": "shapes" if self._free_form(m) else "templates",
                "mean_completion_tokens": round(m.mean_completion, 1),
                "completion_tokens_total": state.completion_sum,
                "max_tokens_share": round(m.max_share, 3),
            },
            accounts=(account_id,),
        )
