"""Per-IP and per-range detectors over the events keyed by network range."""

from __future__ import annotations

from faust.types import StreamT

from detectors.credential_stuffing import CredentialStuffingDetector
from detectors.events import event_from_dict
from detectors.sybil import SybilDetector
from streams import clock, codec
from streams.app import app
from streams.policy import current_policy
from streams.publish import publish_alert
from streams.rules import Housekeeping, build, retune
from streams.state import TableState, state_table, use_event
from streams.topics import network_events_topic

stuffing_table = state_table("state-credential-stuffing")
sybil_table = state_table("state-sybil")


@app.agent(network_events_topic)
async def detect_network_abuse(stream: StreamT) -> None:
    policy = current_policy()
    stuffing = build(CredentialStuffingDetector, policy.rules.credential_stuffing)
    sybil = build(SybilDetector, policy.rules.sybil)
    states = [TableState(stuffing_table), TableState(sybil_table)]
    stuffing.ranges, sybil.ranges = states
    housekeeping = Housekeeping(stuffing, sybil)
    async for batch in stream.take_events(500, within=0.2):  # type: ignore[attr-defined]
        if (latest := current_policy()) is not policy:
            policy = latest
            retune(stuffing, policy.rules.credential_stuffing)
            retune(sybil, policy.rules.sybil)
        rules = policy.rules
        now = clock.now_ms()
        latest_ms = 0
        for message in batch:
            use_event(message)
            event = event_from_dict(codec.loads(message.value), now_ms=now)
            latest_ms = max(latest_ms, event.ts_ms)
            if rules.credential_stuffing.enabled:
                for alert in stuffing.observe(event):
                    await publish_alert(alert, rules.credential_stuffing)
            if rules.sybil.enabled and event.account_id is not None:
                for alert in sybil.observe(event):
                    await publish_alert(alert, rules.sybil)
        housekeeping.run(latest_ms)
        for state in states:
            state.flush()
