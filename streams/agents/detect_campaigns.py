"""Streaming clusters of prompt vectors, linked into campaigns (`detectors/campaign_tracker.py`);
a linked group becomes a campaign only on evidence of coordination. One document and one alert
per campaign, updated as it grows."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.types import StreamT

from detectors.campaign_tracker import CampaignTracker
from detectors.campaigns import campaign_alert
from detectors.clustering import ClusterPoint
from streams import clock, codec
from streams.app import app
from streams.broker import read_back
from streams.policy import current_policy
from streams.publish import publish_alert, publish_document
from streams.settings import get_settings
from streams.sinks.documents import campaign_document
from streams.topics import prompt_vectors_topic

log = logging.getLogger(__name__)


def add_record(tracker: CampaignTracker, record: dict[str, Any]) -> None:
    tracker.add(ClusterPoint(
        event_id=record["event_id"], ts_ms=int(record["ts"]),
        vector=codec.decode_vector(record["vector"]), account_id=record["account_id"],
        api_key_id=record["api_key_id"], ip=record["ip"], user_agent=record["user_agent"],
        prompt_sample=record["sample"], text_key=record["text_key"],
        wrapper_key=record.get("wrapper_key", ""), wrapper_sample=record.get("wrapper", "")),
        record["space"], int(record["account_prompts"]), int(record["key_first_seen"]))


def rebuild(tracker: CampaignTracker) -> int:
    """Clusters live in memory: at start, replay the window's vectors that this stage had
    already processed, and judge them once without reporting (they were reported before the
    restart), so campaigns keep their ids and only changes are reported from here on. Blocking:
    call it off the event loop."""
    settings = get_settings()
    since_ms = clock.now_ms() - tracker.policy.campaigns.window_seconds * 1000
    points = 0
    for value in read_back(settings, prompt_vectors_topic.get_topic_name(), settings.app_id,
                           since_ms):
        add_record(tracker, codec.loads(value))
        points += 1
    tracker.judge_all()
    tracker.merged.clear()
    return points


@app.agent(prompt_vectors_topic)
async def detect_campaigns(stream: StreamT) -> None:
    tracker = CampaignTracker(current_policy())
    points = await asyncio.get_running_loop().run_in_executor(None, rebuild, tracker)
    log.info("campaigns_rebuilt points=%d campaigns=%d", points, len(tracker.emitted))
    # In a replay, event time runs far ahead of the wall clock: judging on event time alone
    # would spend the stage judging. Between idle moments, at most every few wall seconds.
    pacing = clock.Every(5.0)
    async for values in stream.take(500, within=1.0):
        if (latest := current_policy()) is not tracker.policy:
            tracker.reconfigure(latest)
        for value in values:
            add_record(tracker, codec.loads(value))
        idle = len(values) < 500
        if not tracker.due(idle) or not (idle or pacing.due()):
            continue
        rule = tracker.policy.rules.campaign
        findings = tracker.judge_all()
        if not rule.enabled:
            continue
        for finding in findings:
            log.info("campaign id=%s accounts=%d size=%d score=%.2f", finding.campaign_id,
                     len(finding.accounts), finding.size, finding.score)
            await publish_document("campaigns", finding.campaign_id, campaign_document(
                finding, tracker.history[finding.campaign_id]))
            await publish_alert(campaign_alert(finding, rule.severity), rule)
        for absorbed, survivor in tracker.merged:
            await publish_document("campaigns", absorbed, {
                "misuse": {"status": "merged", "merged_into": survivor}})
        tracker.merged.clear()
