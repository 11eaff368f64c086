"""One jailbreak pattern sprayed across many accounts (each sending only a few prompts)."""

from __future__ import annotations

from faust.types import StreamT

from detectors.events import event_from_dict
from detectors.jailbreak import Pattern, PatternSpreadDetector
from streams import clock, codec
from streams.app import app
from streams.policy import current_policy
from streams.publish import publish_alert
from streams.rules import Housekeeping, build, retune
from streams.state import TableState, state_table, use_event
from streams.topics import jailbreak_matches_topic

pattern_spread_table = state_table("state-pattern-spread")


@app.agent(jailbreak_matches_topic)
async def detect_pattern_spread(stream: StreamT) -> None:
    policy = current_policy()
    detector = build(PatternSpreadDetector, policy.rules.jailbreak_spread)
    state = TableState(pattern_spread_table)
    detector.patterns = state
    housekeeping = Housekeeping(detector)
    async for batch in stream.take_events(100, within=1.0):  # type: ignore[attr-defined]
        if (latest := current_policy()) is not policy:
            policy = latest
            retune(detector, policy.rules.jailbreak_spread)
        rule = policy.rules.jailbreak_spread
        now = clock.now_ms()
        latest_ms = 0
        for message in batch:
            use_event(message)
            record = codec.loads(message.value)
            event = event_from_dict(record["event"], now_ms=now)
            latest_ms = max(latest_ms, event.ts_ms)
            match = (Pattern(**record["pattern"]), float(record["similarity"]))
            if rule.enabled:
                for alert in detector.observe(event, match):
                    await publish_alert(alert, rule)
        housekeeping.run(latest_ms)
        state.flush()
