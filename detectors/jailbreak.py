"""Jailbreak spraying: an account firing known jailbreak preambles and harmful requests at the
model, and one jailbreak pattern spreading across many accounts.

Embedding is the caller's job: it embeds each prompt, asks `PatternBank.best_match` and passes
the result to the detectors, so nothing here needs the model.

There are two detectors because there are two partitionings. `JailbreakSprayDetector` is per
account (the usage stream's own key). `PatternSpreadDetector` is per pattern id: a distributed
spray, where each of many accounts sends one or two prompts and stays under any per-account
threshold, is only visible when the matching events are re-keyed by pattern. Folding that view
into the per-account alerts would need every partition to see every other account's matches;
a separate, low-volume stream of matches keyed by pattern id keeps each state on one worker.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter, deque
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

from detectors.alerts import Alert, Entity
from detectors.events import UsageEvent
from detectors.incidents import Incident, anchor_ms
from detectors.prompt_signals import prompt_signals
from detectors.redaction import redacted_sample
from detectors.windows import SlidingWindow, drop_idle

ACCOUNT_RULE_ID = "jailbreak.spray"
PATTERN_RULE_ID = "jailbreak.pattern_spread"
DEFAULT_SEVERITY = "high"
_NEGLIGIBLE_SCORE = 1.0  # decayed evidence under one prompt's worth
_PATTERN_ID = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Pattern:
    """A known jailbreak preamble or harmful-request archetype, as written in the bank."""

    id: str
    category: str
    text: str


Match = tuple[Pattern, float]


class PatternBankError(ValueError):
    """The pattern bank is not valid; the message names the offending entry."""


def patterns_from_dict(data: Any) -> list[Pattern]:
    """Validate a parsed pattern file (`{"patterns": [{id, category, text}, ...]}`)."""
    if not isinstance(data, Mapping):
        raise PatternBankError("the pattern file must be a mapping with a 'patterns' list")
    unknown_top = sorted(set(data) - {"version", "patterns"})
    if unknown_top:
        raise PatternBankError(f"unknown top-level field(s) {', '.join(map(str, unknown_top))}")
    if data.get("version", 1) != 1:
        raise PatternBankError(f"unsupported version {data.get('version')!r} (expected 1)")
    entries = data.get("patterns")
    if not isinstance(entries, list) or not entries:
        raise PatternBankError("'patterns' must be a non-empty list")
    patterns: list[Pattern] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"patterns[{index}]"
        if not isinstance(entry, Mapping):
            raise PatternBankError(f"{where}: must be a mapping with id, category and text")
        if isinstance(entry.get("id"), str):
            where += f" (id {entry['id']!r})"
        unknown = sorted(set(entry) - {"id", "category", "text"})
        if unknown:
            raise PatternBankError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
        for name in ("id", "category", "text"):
            value = entry.get(name)
            if not isinstance(value, str) or not value.strip():
                raise PatternBankError(f"{where}: '{name}' must be a non-empty string")
        if not _PATTERN_ID.match(entry["id"]):
            raise PatternBankError(f"{where}: 'id' must be lower-case letters, digits, '_', "
                                   "'-' or '.', at most 64 characters")
        if entry["id"] in seen:
            raise PatternBankError(f"{where}: duplicate id")
        seen.add(entry["id"])
        patterns.append(Pattern(entry["id"], entry["category"].strip(),
                                " ".join(entry["text"].split())))
    return patterns


class PatternBank:
    """Patterns and their embeddings (one unit-norm row per pattern); matching by cosine."""

    def __init__(self, patterns: Sequence[Pattern], vectors: np.ndarray) -> None:
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(patterns):
            raise ValueError(f"need one vector row per pattern: {len(patterns)} patterns, "
                             f"vectors of shape {matrix.shape}")
        norms = np.linalg.norm(matrix, axis=1)
        if np.any(norms == 0):
            raise ValueError("a pattern vector is all zeros")
        # Normalised again: a bank whose embedder forgot to normalise must still give cosines.
        self.vectors = matrix / norms[:, None]
        self.patterns = tuple(patterns)

    def __len__(self) -> int:
        return len(self.patterns)

    def best_match(self, vector: np.ndarray) -> Match | None:
        """The most similar pattern and its cosine similarity; None for an empty bank or a
        zero vector."""
        matches = self.best_matches(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        return matches[0]

    def best_matches(self, vectors: np.ndarray) -> list[Match | None]:
        """`best_match` for each row, in one matrix product (the embed stage works in batches)."""
        queries = np.asarray(vectors, dtype=np.float32)
        if not self.patterns or queries.shape[0] == 0:
            return [None] * queries.shape[0]
        if queries.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"vectors have dimension {queries.shape[1]}, the bank "
                             f"{self.vectors.shape[1]}")
        norms = np.linalg.norm(queries, axis=1)
        similarities = self.vectors @ queries.T  # patterns x queries
        best = np.argmax(similarities, axis=0)
        out: list[Match | None] = []
        for column, row in enumerate(best):
            if norms[column] == 0:
                out.append(None)
            else:
                cosine = float(similarities[row, column] / norms[column])
                out.append((self.patterns[int(row)], min(1.0, max(-1.0, cosine))))
        return out


# The prompt signals that are jailbreak evidence of their own, as a reason line reads them.
_OWN_SIGNALS = {"suffix": "{n} with an optimised suffix", "disguise": "{n} disguised",
                "many_shot": "{n} many-shot faux dialogues"}


@dataclass(frozen=True, slots=True)
class _Hit:
    ts_ms: int
    pattern_id: str | None
    category: str | None
    similarity: float
    flagged: bool
    moderation_categories: tuple[str, ...]
    # Added later (defaults: state written before them still loads): the prompt's own signals
    # (prompt_signals: "suffix", "disguise", "analysis") and its weight as evidence.
    signals: tuple[str, ...] = ()
    weight: float = 0.0


def _interval_cv(timestamps: Sequence[int]) -> float | None:
    """Coefficient of variation of the gaps between sorted timestamps: near 0 for a script
    on a timer, around 1 for a person (Poisson-like arrivals)."""
    if len(timestamps) < 3:
        return None
    ordered = sorted(timestamps)
    gaps = [b - a for a, b in pairwise(ordered)]
    mean = statistics.fmean(gaps)
    if mean == 0:
        return 0.0  # all at once: no person types that fast
    return statistics.pstdev(gaps) / mean


@dataclass
class AccountJailbreakState:
    window: SlidingWindow[_Hit]
    latest_ms: int = 0
    samples: deque[str] = field(default_factory=lambda: deque(maxlen=3))
    incident: Incident = field(default_factory=Incident)
    # Added later, with defaults so that older stored states load: evidence accumulated over
    # hours, decaying with the policy's half-life (`score` all evidence, `signal_score` the
    # prompts with a jailbreak signal of their own), as of `score_ms`; the hits seen since
    # the state began (`since_ms`), and how many carried each signal.
    score: float = 0.0
    signal_score: float = 0.0
    score_ms: int = 0
    since_ms: int = 0
    hits: int = 0
    signals: Counter[str] = field(default_factory=Counter)

    def decayed(self, now_ms: int, half_life_ms: int) -> tuple[float, float]:
        """(score, signal_score) decayed to `now_ms` (never grown for an earlier time)."""
        factor = 0.5 ** (max(0, now_ms - self.score_ms) / half_life_ms)
        return self.score * factor, self.signal_score * factor

    def add(self, ts_ms: int, weight: float, signal: float, half_life_ms: int) -> None:
        """Add evidence seen at `ts_ms`; a late one counts as much as it has decayed since."""
        if ts_ms >= self.score_ms:
            self.score, self.signal_score = self.decayed(ts_ms, half_life_ms)
            self.score_ms = ts_ms
            self.score += weight
            self.signal_score += signal
        else:
            factor = 0.5 ** ((self.score_ms - ts_ms) / half_life_ms)
            self.score += weight * factor
            self.signal_score += signal * factor


class JailbreakSprayDetector:
    """An account spraying jailbreaks and harmful requests at the model. Evidence is a prompt
    that resembles a known jailbreak (similarity >= threshold), carries a jailbreak signal of
    its own (an optimised suffix, a disguise, or a flagged many-shot faux dialogue:
    `detectors.prompt_signals`), or that upstream
    moderation flagged. Three rules, any of which makes a spray:

    - the bank rule: at least `min_matches` evidence prompts within the window, at least
      `min_pattern_matches` of them pattern matches, arriving machine-regularly (interval CV
      <= max_interval_cv) or mostly flagged (share >= min_flag_share);
    - the count rule: at least `min_flagged_prompts` flagged prompts within the window,
      whatever their share of the account's traffic (an attack loop's dozens a minute);
    - the decayed rule: evidence accumulated over hours, halving every `half_life_ms`,
      reaches `min_decayed_score`, with at least `min_signal_prompts` (decayed) of it from
      prompts that carry a jailbreak signal (a match or a suffix or a disguise), so a slow
      sprayer is found too. A prompt weighs 1 for its signal, 1 more if flagged; flagged
      alone, 0.5.

    Precision: regularity separates a script from a person who tried a famous prompt by hand;
    flags alone never reach the decayed rule (a nurse or a novelist tripping moderation all
    day has no jailbreak signal); and a prompt that asks to classify, moderate, summarise or
    translate the content it carries (a toxicity classifier's batch) is flagged for that
    content: its flag counts for nothing. State is per account (`self.accounts`,
    replaceable by a Faust table); only evidence is stored, so ordinary traffic costs none.
    """

    def __init__(self, window_ms: int = 600_000, similarity_threshold: float = 0.75,
                 min_matches: int = 5, max_interval_cv: float = 0.35,
                 min_flag_share: float = 0.6, min_pattern_matches: int = 1,
                 min_flagged_prompts: int = 20, half_life_ms: int = 7_200_000,
                 min_decayed_score: float = 10.0, min_signal_prompts: float = 3.0,
                 severity: str = DEFAULT_SEVERITY, max_samples: int = 3) -> None:
        self.window_ms = window_ms
        self.similarity_threshold = similarity_threshold
        self.min_matches = min_matches
        self.max_interval_cv = max_interval_cv
        self.min_flag_share = min_flag_share
        self.min_pattern_matches = min_pattern_matches
        self.min_flagged_prompts = min_flagged_prompts
        self.half_life_ms = half_life_ms
        self.min_decayed_score = min_decayed_score
        self.min_signal_prompts = min_signal_prompts
        self.severity = severity
        self.max_samples = max_samples
        self.accounts: MutableMapping[str, AccountJailbreakState] = {}

    @property
    def idle_ms(self) -> int:
        """How long an account's state outlives its last evidence: a window, or four
        half-lives (the score down to 1/16), whichever is longer."""
        return max(self.window_ms, 4 * self.half_life_ms)

    def observe(self, event: UsageEvent, match: Match | None) -> list[Alert]:
        """Learn from one event (with the caller's best pattern match for its prompt; the
        prompt's own signals are read from `event.prompt`)."""
        if event.account_id is None:
            return []
        pattern, similarity = match if match is not None else (None, 0.0)
        if similarity < self.similarity_threshold:
            pattern, similarity = None, 0.0
        moderation = event.moderation
        flagged = moderation is not None and moderation.flagged
        signals = prompt_signals(event.prompt) if event.prompt else None
        # A many-shot faux dialogue is a signal only when flagged: a pasted chat log is not.
        adversarial = signals is not None and (
            signals.adversarial or (signals.many_shot and flagged and not signals.analysis))
        if pattern is None and not flagged and not adversarial:
            return []
        state = self.accounts.get(event.account_id)
        if state is None:
            state = AccountJailbreakState(SlidingWindow(self.window_ms),
                                          samples=deque(maxlen=self.max_samples),
                                          score_ms=event.ts_ms, since_ms=event.ts_ms)
        categories = () if moderation is None else tuple(
            sorted(name for name, score in moderation.categories.items() if score >= 0.5))
        names = (("pattern",) if pattern else ()) + (signals.names if signals else ()) \
            + (("flagged",) if flagged else ())
        signal = 1.0 if pattern is not None or adversarial else 0.0
        analysis = signals is not None and signals.analysis
        weight = signal + (1.0 if flagged and signal else
                           0.5 if flagged and not analysis else 0.0)
        hit = _Hit(event.ts_ms, pattern.id if pattern else None,
                   pattern.category if pattern else None, similarity, flagged, categories,
                   names, weight)
        if not state.window.add(event.ts_ms, event.event_id, hit):
            return []
        state.latest_ms = state.window.latest_ms
        state.since_ms = min(state.since_ms or event.ts_ms, event.ts_ms)
        state.hits += 1
        state.signals.update(names)
        state.add(event.ts_ms, weight, signal, self.half_life_ms)
        if event.prompt:
            state.samples.append(redacted_sample(event.prompt, 160))
        alerts = self._check(event.account_id, state)
        self.accounts[event.account_id] = state
        return alerts

    def forget_idle(self, now_ms: int) -> int:
        """Drop accounts with no evidence for `idle_ms`, or for a window when their evidence
        never came to a prompt's worth (a nurse's one flagged question); return how many."""
        # By then the next evidence would start a new incident anyway.
        def last_seen(state: AccountJailbreakState) -> int:
            if state.score < _NEGLIGIBLE_SCORE:  # as of its last evidence
                return state.latest_ms + self.window_ms - self.idle_ms
            return state.latest_ms
        return drop_idle(self.accounts, last_seen, now_ms - self.idle_ms)

    def _check(self, account_id: str, state: AccountJailbreakState) -> list[Alert]:
        score, signal_score = state.decayed(state.latest_ms, self.half_life_ms)
        # An incident stays open while the decayed evidence still holds, even across quiet
        # windows: a slow sprayer's alert keeps its id.
        if score < self.min_decayed_score or signal_score < self.min_signal_prompts:
            state.incident.close_if_quiet(state.latest_ms, self.window_ms)
        hits = list(state.window)
        rules = self._rules(hits, score, signal_score)
        if not rules:
            return []
        if not state.incident.is_news(state.hits):
            state.incident.hold(state.latest_ms)  # still spraying: keep the incident open
            return []
        start = state.window.start_ms if "decayed" not in rules or len(rules) > 1 \
            else state.since_ms
        if not state.incident.report(start, state.hits, state.latest_ms):
            return []
        return [self._alert(account_id, state, hits, rules, score, signal_score)]

    def _rules(self, hits: list[_Hit], score: float, signal_score: float) -> dict[str, Any]:
        """The rules that hold, with what each measured."""
        rules: dict[str, Any] = {}
        pattern_hits = sum(1 for h in hits if h.pattern_id is not None)
        if len(hits) >= self.min_matches and pattern_hits >= self.min_pattern_matches:
            cv = _interval_cv([h.ts_ms for h in hits])
            flag_share = sum(1 for h in hits if h.flagged) / len(hits)
            regular = cv is not None and cv <= self.max_interval_cv
            if regular or flag_share >= self.min_flag_share:
                rules["bank"] = (cv, flag_share, regular)
        # A flag on an analysis request counts only with a jailbreak signal of its own.
        flagged = sum(1 for h in hits
                      if h.flagged and ("analysis" not in h.signals or h.weight > 1.0))
        if flagged >= self.min_flagged_prompts:
            rules["count"] = flagged
        if score >= self.min_decayed_score and signal_score >= self.min_signal_prompts:
            rules["decayed"] = score
        return rules

    def _alert(self, account_id: str, state: AccountJailbreakState, hits: list[_Hit],
               rules: dict[str, Any], score: float, signal_score: float) -> Alert:
        assert state.incident.start_ms is not None
        patterns = Counter(h.pattern_id for h in hits if h.pattern_id)
        categories = Counter(h.category for h in hits if h.category)
        moderation = Counter(c for h in hits for c in h.moderation_categories)
        pattern_hits = sum(1 for h in hits if h.pattern_id is not None)
        flagged = sum(1 for h in hits if h.flagged)
        cv = _interval_cv([h.ts_ms for h in hits])
        flag_share = flagged / len(hits)
        window_signals = Counter(name for h in hits for name in h.signals)
        reasons = []
        scores = []
        if "bank" in rules:
            _, _, regular = rules["bank"]
            reasons.append(f"{len(hits)} prompts within {self.window_ms // 1000} s matched "
                           f"known jailbreak patterns ({pattern_hits}) or were flagged by "
                           "moderation")
            if regular:
                reasons.append(f"machine-regular timing: interval CV {cv:.2f} "
                               f"<= {self.max_interval_cv}")
            if flag_share >= self.min_flag_share:
                reasons.append(f"{flag_share:.0%} of them flagged by upstream moderation")
            scores.append(0.5 * len(hits) / self.min_matches
                          * (1.0 if regular and flag_share >= self.min_flag_share else 0.7))
        if "count" in rules:
            reasons.append(f"{rules['count']} prompts flagged by upstream moderation within "
                           f"{self.window_ms // 1000} s (>= {self.min_flagged_prompts}), "
                           "whatever their share")
            scores.append(0.6 * rules["count"] / self.min_flagged_prompts)
        if "decayed" in rules:
            reasons.append(f"decayed evidence {score:.1f} >= {self.min_decayed_score} "
                           f"(half-life {self.half_life_ms // 1000} s), {signal_score:.1f} of "
                           "it from prompts with a jailbreak signal (pattern, suffix, "
                           "disguise, many-shot)")
            scores.append(0.6 * score / self.min_decayed_score)
        own = {name: n for name, n in window_signals.items() if name in _OWN_SIGNALS}
        if own:
            reasons.append("prompts carrying their own jailbreak signals: " + ", ".join(
                _OWN_SIGNALS[name].format(n=n) for name, n in sorted(own.items())))
        span_s = max(1, (state.window.latest_ms - state.window.start_ms) // 1000)
        return Alert(
            rule_id=ACCOUNT_RULE_ID, severity=self.severity, score=min(1.0, max(scores)),
            entity=Entity("account", account_id), incident_start_ms=state.incident.start_ms,
            repeats=state.incident.repeats,
            window_start_ms=min(state.window.start_ms, state.incident.start_ms),
            window_end_ms=state.window.latest_ms, reasons=tuple(reasons),
            evidence={
                "rules": sorted(rules),
                "hits": len(hits), "pattern_matches": pattern_hits,
                "moderation_flagged": flagged,
                "flag_share": round(flag_share, 3),
                "interval_cv": None if cv is None else round(cv, 3),
                "mean_interval_s": round(span_s / max(1, len(hits) - 1), 1),
                "max_similarity": round(max(h.similarity for h in hits), 3),
                "decayed_score": round(score, 2),
                "decayed_signal_prompts": round(signal_score, 2),
                "half_life_s": self.half_life_ms // 1000,
                "evidence_prompts_since": state.hits,
                "evidence_since_ms": state.since_ms,
                "signals": dict(sorted(window_signals.items())),
                "signals_since": dict(sorted(state.signals.items())),
                "top_patterns": [p for p, _ in patterns.most_common(5)],
                "categories": dict(categories.most_common(5)),
                "moderation_categories": dict(moderation.most_common(5)),
                "sample_prompts": list(state.samples),
            },
            accounts=(account_id,),
        )


@dataclass(frozen=True, slots=True)
class _Use:
    account_id: str
    similarity: float


@dataclass
class PatternState:
    window: SlidingWindow[_Use]
    accounts: Counter[str] = field(default_factory=Counter)
    latest_ms: int = 0
    incident: Incident = field(default_factory=Incident)

    def forget(self, use: _Use) -> None:
        self.accounts[use.account_id] -= 1
        if self.accounts[use.account_id] <= 0:
            del self.accounts[use.account_id]


class PatternSpreadDetector:
    """Fires once per incident when one pattern is matched by at least `min_accounts` distinct
    accounts within the window, listing the accounts; re-sent when the accounts double.

    State is per pattern id (`self.patterns`); feed it only the matching events, re-keyed by
    pattern id.
    """

    def __init__(self, window_ms: int = 3_600_000, similarity_threshold: float = 0.75,
                 min_accounts: int = 5, severity: str = DEFAULT_SEVERITY,
                 max_listed_accounts: int = 500) -> None:
        self.window_ms = window_ms
        self.similarity_threshold = similarity_threshold
        self.min_accounts = min_accounts
        self.severity = severity
        self.max_listed_accounts = max_listed_accounts
        self.patterns: MutableMapping[str, PatternState] = {}

    def observe(self, event: UsageEvent, match: Match | None) -> list[Alert]:
        if event.account_id is None or match is None or match[1] < self.similarity_threshold:
            return []
        pattern = match[0]
        state = self.patterns.get(pattern.id) or PatternState(SlidingWindow(self.window_ms))
        state.incident.close_if_quiet(event.ts_ms, self.window_ms)
        if not state.window.add(event.ts_ms, event.event_id, _Use(event.account_id, match[1]),
                                state.forget):
            return []
        state.accounts[event.account_id] += 1
        state.latest_ms = state.window.latest_ms
        alerts = self._check(pattern, state)
        self.patterns[pattern.id] = state
        return alerts

    def forget_idle(self, now_ms: int) -> int:
        return drop_idle(self.patterns, lambda s: s.latest_ms, now_ms - self.window_ms)

    def _check(self, pattern: Pattern, state: PatternState) -> list[Alert]:
        distinct = len(state.accounts)
        if distinct < self.min_accounts:
            return []
        start = anchor_ms(state.window.run_start_ms, state.latest_ms, self.window_ms)
        if not state.incident.report(start, distinct, state.latest_ms):
            return []
        assert state.incident.start_ms is not None
        accounts = sorted(state.accounts, key=lambda a: (-state.accounts[a], a))
        listed = tuple(accounts[: self.max_listed_accounts])
        return [Alert(
            rule_id=PATTERN_RULE_ID, severity=self.severity,
            score=min(1.0, distinct / (2 * self.min_accounts)),
            entity=Entity("pattern", pattern.id), incident_start_ms=state.incident.start_ms,
            repeats=state.incident.repeats,
            window_start_ms=state.window.start_ms, window_end_ms=state.window.latest_ms,
            reasons=(f"jailbreak pattern {pattern.id} ({pattern.category}) sent by {distinct} "
                     f"accounts within {self.window_ms // 1000} s",),
            evidence={
                "pattern_id": pattern.id, "category": pattern.category,
                "pattern_text": pattern.text, "distinct_accounts": distinct,
                "matches": len(state.window),
                "max_similarity": round(max(u.similarity for u in state.window), 3),
                "accounts": list(listed),
            },
            accounts=listed,
        )]
