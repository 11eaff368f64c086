"""Streaming clusters of prompt vectors, linked into campaigns (`detectors/campaign_tracker.py`);
a linked group becomes a campaign only on evidence of coordination. One document and one alert
per campaign, updated as it grows."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from detectors.campaign_tracker import CampaignTracker
from detectors.campaigns import RULE_ID as CAMPAIGN_RULE
from detectors.campaigns import CampaignFinding, campaign_alert
from detectors.clustering import ClusterPoint
from detectors.policy import Policy
from streams.runtime import clock, metrics
from streams.runtime.broker import read_back
from streams.runtime.driver import Emit, Stage, StateStore
from streams.runtime.messages import (
    AlertRecord,
    MessageError,
    PromptVector,
    decode_batch,
    records_of,
    vector_from,
)
from streams.runtime.publish import emit_alert, emit_document, emit_page_resolve
from streams.settings import Settings
from streams.sinks.documents import campaign_document

log = logging.getLogger(__name__)
SKIPPED_INTENTS = frozenset({"verify", "jailbreak"})


def point_of(record: PromptVector) -> ClusterPoint:
    return ClusterPoint(
        event_id=record.event_id, ts_ms=record.ts_ms, vector=vector_from(record.vector),
        account_id=record.account_id, api_key_id=record.api_key_id, ip=record.ip,
        user_agent=record.user_agent, prompt_sample=record.sample, text_key=record.text_key,
        wrapper_key=record.wrapper_key, wrapper_sample=record.wrapper,
        language=record.language, disguised=record.disguised, intent=record.intent)


def add_vector(tracker: CampaignTracker, record: PromptVector) -> None:
    """A vector processed before a restart, added at once (the rebuild judges them all)."""
    tracker.add(point_of(record), record.space, record.account_prompts,
                record.key_first_seen_ms)


def vectors_read_back(settings: Settings, window_seconds: int) -> Iterator[PromptVector]:
    """The window's vectors that this stage had already processed before a restart, read back
    from its input topic up to the committed offsets."""
    since_ms, ring = clock.now_ms() - window_seconds * 1000, settings.internal_keys
    for value in read_back(settings, settings.topic("misuse.prompt-vectors"), settings.app_id,
                           since_ms):
        try:
            yield from records_of(decode_batch(value, ring), PromptVector)
        except MessageError:
            continue  # dead-lettered when it was first read


def campaigns_read_back(settings: Settings, window_seconds: int
                        ) -> Iterator[tuple[str, tuple[str, ...], int]]:
    """The campaigns this stage reported in the window before a restart (id, core accounts,
    first seen), from their alerts: every alert published, committed downstream or not."""
    since_ms, ring = clock.now_ms() - window_seconds * 1000, settings.internal_keys
    for value in read_back(settings, settings.topic("misuse.alerts"), settings.app_id,
                           since_ms, to_end=True):
        try:
            alerts = [record.alert for record in records_of(decode_batch(value, ring),
                                                            AlertRecord)]
        except MessageError:
            continue
        for alert in alerts:
            if alert.rule_id == CAMPAIGN_RULE:
                yield alert.entity.id, alert.accounts, alert.incident_start_ms


class DetectCampaigns(Stage):
    name = "detect_campaigns"
    reads = (PromptVector,)

    def __init__(self, policy: Policy, state: StateStore,
                 history: Iterable[PromptVector] = (),
                 reported: Iterable[tuple[str, tuple[str, ...], int]] = ()) -> None:
        """Clusters live in memory: `history` (the vectors processed before a restart) is
        added and judged once, and the campaigns `reported` before (id, accounts, first seen)
        keep their ids when found again. What that judging finds is reported again with the
        first batch: the stage may have moved here from a worker that had not judged its last
        points yet (a rebalance, a crash), and documents and alerts keep their ids, so
        reporting a campaign twice only overwrites it."""
        self.tracker = CampaignTracker(policy)
        for campaign_id, accounts, first_seen_ms in reported:
            self.tracker.remember(campaign_id, accounts, first_seen_ms)
        points = 0
        for record in history:
            add_vector(self.tracker, record)
            points += 1
        self.restored_findings = self.tracker.judge_all()
        log.info("campaigns_rebuilt points=%d campaigns=%d", points, len(self.tracker.emitted))
        self.batch_records = 0  # records since the last batch end or tick
        self.tick_records = 0  # records since the last tick

    @classmethod
    def restored(cls, policy: Policy, state: StateStore, settings: Settings
                 ) -> DetectCampaigns:
        window = policy.campaigns.window_seconds
        return cls(policy, state, vectors_read_back(settings, window),
                   campaigns_read_back(settings, window))

    def reconfigure(self, policy: Policy) -> None:
        self.tracker.reconfigure(policy)

    def process(self, item: Any, emit: Emit, now_ms: int) -> None:
        self.batch_records += 1  # input, skipped or not: the stream is not quiet
        self.tick_records += 1
        # Campaigns are made of content requests. A claim quoted to be checked, classified or
        # translated neither makes one nor dilutes one (a fact-checking desk quoting an
        # operation's claim must not hide it); a jailbreak preamble is the spray rules'
        # business. (The intent comes from the wrapper's model vector alone: the same after
        # a restart.)
        if self.restored_findings:  # before anything judged since: it is older
            self._report(emit, self._take_restored(), self.tracker.latest_ms)
        if item.intent in SKIPPED_INTENTS:
            metrics.campaign_points_skipped.labels(f"{item.intent}_intent").inc()
            return
        # Judged in rounds of event time, never at batch ends or wall-clock moments: a replay
        # finds what live traffic finds, and two replays find the same.
        self._report(emit, self.tracker.offer(point_of(item), item.space, item.account_prompts,
                                              item.key_first_seen_ms), self.tracker.latest_ms)

    def after(self, emit: Emit, latest_event_ms: int) -> None:
        """At a batch end, and at every tick (`tick_seconds`). Once a whole tick has passed
        without input, the points still held are judged: the input went quiet, and no later
        point will close their round."""
        findings = self._take_restored()
        if not self.batch_records:  # a tick
            if not self.tick_records:
                findings += self.tracker.flush()
            self.tick_records = 0
        self.batch_records = 0
        self._report(emit, findings, latest_event_ms)

    def _take_restored(self) -> list[CampaignFinding]:
        """What the rebuild found, once: reported with the first record or batch end after a
        restart, before any later judging (a report of it after a newer one would put the
        campaign's document back to its size before the restart, and it stays there until
        the campaign changes again)."""
        findings, self.restored_findings = self.restored_findings, []
        return findings

    def pending(self) -> int:
        return self.tracker.pending

    def _report(self, emit: Emit, findings: list[CampaignFinding], latest_event_ms: int) -> None:
        tracker = self.tracker
        rule = tracker.policy.rules.campaign
        if not rule.enabled:
            tracker.merged.clear()
            tracker.withdrawn.clear()
            return
        for finding in findings:
            log.info("campaign id=%s accounts=%d size=%d score=%.2f", finding.campaign_id,
                     len(finding.accounts), finding.size, finding.score)
            emit_document(emit, "campaigns", finding.campaign_id, campaign_document(
                finding, tracker.history[finding.campaign_id]))
            emit_alert(emit, campaign_alert(finding, rule.severity), rule)
        for absorbed, survivor in tracker.merged:
            emit_document(emit, "campaigns", absorbed,
                          {"misuse": {"status": "merged", "merged_into": survivor}})
        tracker.merged.clear()
        for withdrawn in tracker.withdrawn:
            log.info("campaign_withdrawn id=%s", withdrawn)
            emit_document(emit, "campaigns", withdrawn, {"misuse": {"status": "withdrawn"}})
            emit_page_resolve(emit, f"campaign:{withdrawn}", latest_event_ms)
        tracker.withdrawn.clear()
