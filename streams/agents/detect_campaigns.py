"""Streaming clusters of prompt vectors, linked into campaigns (`detectors/campaign_tracker.py`);
a linked group becomes a campaign only on evidence of coordination. One document and one alert
per campaign, updated as it grows."""

from __future__ import annotations

import logging
from typing import Any

from detectors.campaign_tracker import CampaignTracker
from detectors.campaigns import campaign_alert
from detectors.clustering import ClusterPoint
from detectors.policy import Policy
from streams import clock
from streams.broker import read_back
from streams.messages import MessageError, PromptVector, decode_batch, records_of, vector_from
from streams.publish import emit_alert, emit_document
from streams.runtime import Emit, Stage
from streams.settings import get_settings
from streams.sinks.documents import campaign_document

log = logging.getLogger(__name__)


def add_vector(tracker: CampaignTracker, record: PromptVector) -> None:
    tracker.add(ClusterPoint(
        event_id=record.event_id, ts_ms=record.ts, vector=vector_from(record.vector),
        account_id=record.account_id, api_key_id=record.api_key_id, ip=record.ip,
        user_agent=record.user_agent, prompt_sample=record.sample, text_key=record.text_key,
        wrapper_key=record.wrapper_key, wrapper_sample=record.wrapper),
        record.space, record.account_prompts, record.key_first_seen)


def rebuild(tracker: CampaignTracker) -> int:
    """Clusters live in memory: at start, replay the window's vectors that this stage had
    already processed, and judge them once without reporting (they were reported before the
    restart), so campaigns keep their ids and only changes are reported from here on."""
    settings = get_settings()
    since_ms = clock.now_ms() - tracker.policy.campaigns.window_seconds * 1000
    points = 0
    for value in read_back(settings, settings.topic("misuse.prompt-vectors"), settings.app_id,
                           since_ms):
        try:
            records = records_of(decode_batch(value), PromptVector)
        except MessageError:
            continue  # dead-lettered when it was first read
        for record in records:
            add_vector(tracker, record)
            points += 1
    tracker.judge_all()
    tracker.merged.clear()
    return points


class DetectCampaigns(Stage):
    name = "detect_campaigns"
    reads = (PromptVector,)

    def __init__(self, policy: Policy) -> None:
        self.tracker = CampaignTracker(policy)
        points = rebuild(self.tracker)
        log.info("campaigns_rebuilt points=%d campaigns=%d", points, len(self.tracker.emitted))
        # In a replay, event time runs far ahead of the wall clock: judging on event time
        # alone would spend the stage judging. Between idle moments, every few wall seconds.
        self.pacing = clock.Every(5.0)
        self.batch_records = 0

    def reconfigure(self, policy: Policy) -> None:
        self.tracker.reconfigure(policy)

    def process(self, item: Any, emit: Emit, now_ms: int) -> None:
        add_vector(self.tracker, item)
        self.batch_records += 1

    def after(self, emit: Emit, latest_event_ms: int) -> None:
        idle, self.batch_records = self.batch_records < 500, 0
        tracker = self.tracker
        if not tracker.due(idle) or not (idle or self.pacing.due()):
            return
        rule = tracker.policy.rules.campaign
        findings = tracker.judge_all()
        if not rule.enabled:
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
