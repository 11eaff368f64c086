"""Per-IP and per-range detectors over the events keyed by network range."""

from __future__ import annotations

from typing import Any

from detectors.credential_stuffing import CredentialStuffingDetector
from detectors.policy import Policy
from detectors.sybil import SybilDetector
from streams.runtime.driver import Emit, Stage, StateStore
from streams.runtime.messages import EventRecord
from streams.runtime.publish import emit_alert
from streams.runtime.rules import Housekeeping, build, retune


class NetworkAbuse(Stage):
    name = "detect_network_abuse"
    reads = (EventRecord,)
    tables = ("state-credential-stuffing", "state-sybil")
    in_event_time_order = True

    def __init__(self, policy: Policy, state: StateStore) -> None:
        self.policy = policy
        self.stuffing = build(CredentialStuffingDetector, policy.rules.credential_stuffing)
        self.sybil = build(SybilDetector, policy.rules.sybil)
        self.stuffing.ranges, self.sybil.ranges = map(state.table, self.tables)
        self.housekeeper = Housekeeping(self.stuffing, self.sybil)

    def reconfigure(self, policy: Policy) -> None:
        self.policy = policy
        retune(self.stuffing, policy.rules.credential_stuffing)
        retune(self.sybil, policy.rules.sybil)

    def process(self, item: Any, emit: Emit, now_ms: int) -> None:
        event, rules = item.event, self.policy.rules
        if rules.credential_stuffing.enabled:
            for alert in self.stuffing.observe(event):
                emit_alert(emit, alert, rules.credential_stuffing)
        if rules.sybil.enabled and event.account_id is not None:
            for alert in self.sybil.observe(event):
                emit_alert(emit, alert, rules.sybil)

    def after(self, emit: Emit, latest_event_ms: int) -> None:
        self.housekeeper.run(latest_event_ms)
