"""Validate every usage event; dead-letter what is invalid; run the per-account behaviour
detectors (api.usage is keyed by account); fan valid events out to the other stages."""

from __future__ import annotations

import logging

from faust.types import EventT, StreamT

from detectors.anomaly import PopulationAnomalyModel, to_signal
from detectors.events import InvalidEventError, UsageEvent, parse_usage_event
from detectors.leaked_key import LeakedKeyDetector
from detectors.network import network_range
from detectors.policy import Policy
from detectors.redaction import redact
from detectors.scraping import ScrapingDetector
from streams import clock, codec
from streams.app import app
from streams.policy import current_policy
from streams.publish import publish_alert, publish_signal
from streams.rules import Housekeeping, build, retune
from streams.settings import get_settings
from streams.state import TableState, state_table, use_event
from streams.topics import deadletter_topic, network_events_topic, prompts_topic, usage_topic

log = logging.getLogger(__name__)
_settings = get_settings()

scraping_table = state_table("state-scraping")
leaked_key_table = state_table("state-leaked-key")


async def send_to_deadletter(event: EventT, reason: str) -> None:
    """Keep the original bytes untouched and say why, and where they came from, in headers."""
    message = event.message
    log.warning("dead_letter topic=%s partition=%s offset=%s reason=%r",
                message.topic, message.partition, message.offset, reason)
    await deadletter_topic.send(
        key=message.key, value=message.value,
        headers={
            "misuse.reason": reason.encode("utf-8"),
            "misuse.source.topic": message.topic.encode("utf-8"),
            "misuse.source.partition": str(message.partition).encode(),
            "misuse.source.offset": str(message.offset).encode(),
            "misuse.rejected_at_ms": str(clock.now_ms()).encode(),
        },
    )


class AccountBehaviour:
    """The per-account detectors of one worker, their state in tables."""

    def __init__(self, policy: Policy) -> None:
        rules = policy.rules
        self.policy = policy
        self.scraping = build(ScrapingDetector, rules.scraping)
        self.leaked_key = build(LeakedKeyDetector, rules.leaked_key)
        self.anomaly = build(PopulationAnomalyModel, rules.anomaly)
        # The anomaly model's per-account features stay in memory: a supporting signal that
        # relearns within an hour is not worth a changelog write per account per batch.
        self.states = [TableState(scraping_table), TableState(leaked_key_table)]
        self.scraping.accounts, self.leaked_key.keys = self.states
        self.housekeeping = Housekeeping(self.scraping, self.leaked_key, self.anomaly)

    def retune(self, policy: Policy) -> None:
        if policy is not self.policy:
            self.policy = policy
            retune(self.scraping, policy.rules.scraping)
            retune(self.leaked_key, policy.rules.leaked_key)
            retune(self.anomaly, policy.rules.anomaly)

    async def observe(self, event: UsageEvent) -> None:
        rules = self.policy.rules
        if rules.scraping.enabled:
            for alert in self.scraping.observe(event):
                await publish_alert(alert, rules.scraping)
        if rules.leaked_key.enabled:
            for alert in self.leaked_key.observe(event):
                await publish_alert(alert, rules.leaked_key)
        if rules.anomaly.enabled and event.account_id is not None:
            self.anomaly.observe(event)

    async def after_batch(self, latest_ms: int) -> None:
        rule = self.policy.rules.anomaly
        if rule.enabled and self.anomaly.maybe_refit(latest_ms) and not rule.shadow:
            for score in self.anomaly.outliers(latest_ms):
                await publish_signal(to_signal(score, latest_ms))
        self.housekeeping.run(latest_ms)
        for state in self.states:
            state.flush()


def network_record(event: UsageEvent) -> bytes:
    record = event.to_dict()
    record.pop("prompt", None)
    return codec.dumps(record)


def prompt_record(event: UsageEvent) -> bytes:
    record = event.to_dict()
    record["prompt"] = redact(record["prompt"])
    return codec.dumps(record)


@app.agent(usage_topic)
async def ingest(stream: StreamT) -> None:
    skew_ms = _settings.max_future_skew_seconds * 1000
    behaviour = AccountBehaviour(current_policy())
    # take_events (not take): the dead-letter path needs each message's partition and offset.
    async for batch in stream.take_events(500, within=0.2):  # type: ignore[attr-defined]
        behaviour.retune(current_policy())
        now = clock.now_ms()
        latest_ms = 0
        for event in batch:
            try:
                usage = parse_usage_event(event.message.value, now, skew_ms)
            except InvalidEventError as exc:
                await send_to_deadletter(event, str(exc))
                continue
            use_event(event)
            latest_ms = max(latest_ms, usage.ts_ms)
            await behaviour.observe(usage)
            await network_events_topic.send(key=network_range(usage.ip).encode(),
                                            value=network_record(usage))
            if usage.prompt and usage.account_id is not None:
                await prompts_topic.send(key=usage.account_id.encode(),
                                         value=prompt_record(usage))
        await behaviour.after_batch(latest_ms)

