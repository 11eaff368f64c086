"""Validate every usage event; dead-letter what is invalid; run the per-account behaviour
detectors (api.usage is keyed by account); fan valid events out to the other stages."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from detectors.anomaly import PopulationAnomalyModel, to_signal
from detectors.events import InvalidEventError, parse_usage_event
from detectors.leaked_key import LeakedKeyDetector
from detectors.network import network_range
from detectors.policy import Policy
from detectors.redaction import redact, redact_agent, redact_values
from detectors.scraping import ScrapingDetector
from streams.runtime import clock
from streams.runtime.driver import Emit, Stage, StateStore
from streams.runtime.messages import EventRecord, MessageError, Record
from streams.runtime.publish import emit_alert, emit_signal
from streams.runtime.rules import Housekeeping, build, retune
from streams.runtime.sealing import KeyRing
from streams.settings import Settings

# How far in the future an event's time may be (clock skew) before it is refused: the
# settings' default, for a stage built without them (tests, tools).
DEFAULT_FUTURE_SKEW_MS = 86_400_000


class Ingest(Stage):
    name = "ingest"
    tables = ("state-scraping", "state-leaked-key")
    in_event_time_order = True

    def __init__(self, policy: Policy, state: StateStore,
                 max_future_skew_ms: int = DEFAULT_FUTURE_SKEW_MS) -> None:
        rules = policy.rules
        self.policy = policy
        self.skew_ms = max_future_skew_ms
        self.scraping = build(ScrapingDetector, rules.scraping)
        self.leaked_key = build(LeakedKeyDetector, rules.leaked_key)
        self.anomaly = build(PopulationAnomalyModel, rules.anomaly)
        # The anomaly model's per-account features stay in memory: a supporting signal that
        # relearns within an hour is not worth a changelog write per account per batch.
        self.scraping.accounts, self.leaked_key.keys = map(state.table, self.tables)
        self.housekeeper = Housekeeping(self.scraping, self.leaked_key, self.anomaly)

    @classmethod
    def configured(cls, policy: Policy, state: StateStore, settings: Settings) -> Ingest:
        return cls(policy, state, settings.max_future_skew_seconds * 1000)

    def decode(self, raw: bytes | None, ring: KeyRing) -> list[Record]:
        """The input is the API's own JSON, one event per message (not sealed: the gateway
        writes it): an invalid one is a dead letter with the validation's reason."""
        if raw is None:
            raise MessageError("empty message (null value)")
        try:
            return [EventRecord(parse_usage_event(raw, clock.now_ms(), self.skew_ms))]
        except InvalidEventError as exc:
            raise MessageError(str(exc)) from None

    def reconfigure(self, policy: Policy) -> None:
        self.policy = policy
        retune(self.scraping, policy.rules.scraping)
        retune(self.leaked_key, policy.rules.leaked_key)
        retune(self.anomaly, policy.rules.anomaly)

    def process(self, item: Any, emit: Emit, now_ms: int) -> None:
        event = item.event
        # Nothing leaves this stage unredacted: the prompt (below), the client's user agent and
        # any field the schema does not know.
        event = replace(event, user_agent=event.user_agent and redact_agent(event.user_agent),
                        extra=redact_values(event.extra) if event.extra else event.extra)
        rules = self.policy.rules
        if rules.scraping.enabled:
            for alert in self.scraping.observe(event):
                emit_alert(emit, alert, rules.scraping)
        if rules.leaked_key.enabled:
            for alert in self.leaked_key.observe(event):
                emit_alert(emit, alert, rules.leaked_key)
        if rules.anomaly.enabled and event.account_id is not None:
            self.refit_anomaly_model(emit, event.ts_ms)
            self.anomaly.observe(event)
        emit("misuse.events.by-network", network_range(event.ip),
             EventRecord(replace(event, prompt=None)))
        if event.prompt and event.account_id is not None:
            emit("misuse.prompts", event.account_id,
                 EventRecord(replace(event, prompt=redact(event.prompt))))

    def refit_anomaly_model(self, emit: Emit, event_ms: int) -> None:
        """Before an event is learnt from (see `maybe_refit`): the outliers of a new model are
        signals, dated at its fit."""
        if self.anomaly.maybe_refit(event_ms) and not self.policy.rules.anomaly.shadow:
            fitted_ms = self.anomaly.last_attempt_ms or event_ms
            for score in self.anomaly.outliers(fitted_ms):
                emit_signal(emit, to_signal(score, fitted_ms))

    def after(self, emit: Emit, latest_event_ms: int) -> None:
        self.housekeeper.run(latest_event_ms)
