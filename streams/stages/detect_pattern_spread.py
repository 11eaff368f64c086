"""One jailbreak pattern sprayed across many accounts (each sending only a few prompts)."""

from __future__ import annotations

from typing import Any

from detectors.jailbreak import Pattern, PatternSpreadDetector
from detectors.policy import Policy
from streams.runtime.driver import Emit, Stage, StateStore
from streams.runtime.messages import JailbreakMatch
from streams.runtime.publish import emit_alert
from streams.runtime.rules import Housekeeping, build, retune


class PatternSpread(Stage):
    name = "detect_pattern_spread"
    reads = (JailbreakMatch,)
    tables = ("state-pattern-spread",)
    in_event_time_order = True

    def __init__(self, policy: Policy, state: StateStore) -> None:
        self.policy = policy
        self.detector = build(PatternSpreadDetector, policy.rules.jailbreak_spread)
        self.detector.patterns = state.table("state-pattern-spread")
        self.housekeeper = Housekeeping(self.detector)

    def reconfigure(self, policy: Policy) -> None:
        self.policy = policy
        retune(self.detector, policy.rules.jailbreak_spread)

    def process(self, item: Any, emit: Emit, now_ms: int) -> None:
        rule = self.policy.rules.jailbreak_spread
        if not rule.enabled:
            return
        pattern = Pattern(item.pattern_id, item.pattern_category, item.pattern_text)
        for alert in self.detector.observe(item.event, (pattern, item.similarity)):
            emit_alert(emit, alert, rule)

    def after(self, emit: Emit, latest_event_ms: int) -> None:
        self.housekeeper.run(latest_event_ms)
