"""Streaming clusters of prompt vectors per LSH bucket; a cluster becomes a campaign only on
evidence of coordination. One document and one alert per campaign, updated as it grows."""

from __future__ import annotations

import logging
from typing import Any

from faust.types import StreamT

from detectors.campaigns import CampaignFinding, CampaignJudge, campaign_alert
from detectors.clustering import ClusterPoint, OnlineClusterer
from detectors.policy import Policy
from streams import clock, codec
from streams.app import app
from streams.embedder import FULL, STATIC
from streams.policy import current_policy
from streams.publish import publish_alert, publish_document
from streams.rules import build
from streams.sinks.documents import campaign_document
from streams.topics import prompt_vectors_topic

log = logging.getLogger(__name__)
MAX_HISTORY = 500


class CampaignSpace:
    """The clusters of one vector space (model or static) and the judge for them."""

    def __init__(self, policy: Policy, space: str) -> None:
        windows = policy.campaigns
        similarity = windows.full_similarity if space == FULL else windows.static_similarity
        self.clusterer = OnlineClusterer(windows.window_seconds * 1000,
                                         similarity_threshold=similarity,
                                         merge_threshold=max(similarity, 0.85))
        judge_rule = policy.rules.campaign
        if space == STATIC:
            judge_rule = judge_rule.model_copy(
                update={"min_narrowness": windows.static_min_narrowness})
        self.judge = build(CampaignJudge, judge_rule)
        self.judged_sizes: dict[str, int] = {}


class CampaignTracker:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.spaces = {space: CampaignSpace(policy, space) for space in (FULL, STATIC)}
        self.activity: dict[str, int] = {}
        self.key_first_seen: dict[str, int] = {}
        self.latest_ms = 0
        self.judged_ms = 0
        self.emitted: dict[str, tuple[int, int]] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.merged: list[tuple[str, str]] = []  # (absorbed campaign, surviving cluster)

    def add(self, record: dict[str, Any]) -> None:
        space = self.spaces[record["space"]]
        self.activity[record["account_id"]] = int(record["account_prompts"])
        self.key_first_seen[record["api_key_id"]] = int(record["key_first_seen"])
        self.latest_ms = max(self.latest_ms, int(record["ts"]))
        space.clusterer.add(ClusterPoint(
            event_id=record["event_id"], ts_ms=int(record["ts"]),
            vector=codec.decode_vector(record["vector"]), account_id=record["account_id"],
            api_key_id=record["api_key_id"], ip=record["ip"], user_agent=record["user_agent"],
            prompt_sample=record["sample"], text_key=record["text_key"]))

    def due(self, idle: bool) -> bool:
        every_ms = self.policy.campaigns.judge_every_seconds * 1000
        return self.latest_ms - self.judged_ms >= every_ms or (idle and
                                                               self.latest_ms > self.judged_ms)

    def judge(self) -> list[CampaignFinding]:
        """Expire, refine (merge, split), then judge every cluster with enough accounts."""
        self.judged_ms = self.latest_ms
        findings = []
        for space in self.spaces.values():
            space.clusterer.expire(self.latest_ms)
            for absorbed, survivor in space.clusterer.refine().merged:
                if absorbed in self.emitted:
                    self.merged.append((absorbed, survivor))
            candidates = space.clusterer.cluster_ids(min_accounts=space.judge.min_accounts)
            # Judging is the stage's dearest step: a cluster that has not changed since it was
            # last judged gets the same verdict.
            sizes = {cluster_id: space.clusterer.size(cluster_id) for cluster_id in candidates}
            changed = [c for c in candidates if space.judged_sizes.get(c) != sizes[c]]
            space.judged_sizes = sizes
            census = space.clusterer.census() if changed else None
            for cluster_id in changed:
                finding = space.judge.judge(space.clusterer.snapshot(cluster_id), self.activity,
                                            key_first_seen_ms=self.key_first_seen,
                                            census=census)
                if finding is not None and self._changed(finding):
                    findings.append(finding)
        return findings

    def _changed(self, finding: CampaignFinding) -> bool:
        shape = (finding.size, len(finding.accounts))
        if self.emitted.get(finding.campaign_id) == shape:
            return False
        self.emitted[finding.campaign_id] = shape
        history = self.history.setdefault(finding.campaign_id, [])
        history.append({"ts": finding.last_seen_ms, "size": finding.size,
                        "accounts": len(finding.accounts)})
        del history[:-MAX_HISTORY]
        return True


@app.agent(prompt_vectors_topic)
async def detect_campaigns(stream: StreamT) -> None:
    tracker = CampaignTracker(current_policy())
    # In a replay, event time runs far ahead of the wall clock: judging on event time alone
    # would spend the stage judging. Between idle moments, at most every few wall seconds.
    pacing = clock.Every(5.0)
    async for values in stream.take(500, within=1.0):
        tracker.policy = current_policy()
        for value in values:
            tracker.add(codec.loads(value))
        idle = len(values) < 500
        if not tracker.due(idle) or not (idle or pacing.due()):
            continue
        rule = tracker.policy.rules.campaign
        findings = tracker.judge()
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
