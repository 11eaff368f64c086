"""The campaign stage's logic: prompt vectors in, campaign findings out.

Points are clustered per vector space (model or static); every judging round expires and
refines the clusters, links clusters that share their accounts far beyond chance or carry one
narrative (`detectors/linking.py`), and judges each linked group that has changed since it was
last judged. A campaign keeps its id and first-seen time as it grows and links more clusters,
so its document and alert are updated in place; when two reported campaigns turn out to be one,
the younger is reported as merged into the older; one that the evidence has stopped supporting
for `withdraw_after_seconds` of event time is withdrawn.

Judging runs in rounds of event time (`offer`): a round's points are added in (time, event id)
order and judged together once the input has passed the round's end by a lateness allowance,
so the same traffic gives the same campaigns however it was batched, interleaved or paced.

Pure: time is the event time of the points, and nothing here reads a clock or does I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, NamedTuple

from detectors.campaigns import CampaignFinding, CampaignJudge, KeyHistory
from detectors.clustering import ClusterPoint, OnlineClusterer, census
from detectors.linking import ClusterLinker
from detectors.policy import Policy

MAX_HISTORY = 500
STATIC = "static"


class Offered(NamedTuple):
    """A point held until its judging round closes, with what `CampaignTracker.add` takes."""

    point: ClusterPoint
    space: str
    account_prompts: int
    key_first_seen_ms: int


class CampaignTracker:
    def __init__(self, policy: Policy) -> None:
        self.spaces: dict[str, OnlineClusterer] = {}
        self.judge = CampaignJudge()
        self.linker = ClusterLinker()
        self.reconfigure(policy)
        # account -> (prompts in the window over every stage partition, last event time)
        self.activity: dict[str, tuple[int, int]] = {}
        # key -> (first seen, last seen): the population that freshness is measured against
        self.keys: dict[str, tuple[int, int]] = {}
        self.latest_ms = 0
        self.judged_ms = 0
        self.unjudged = 0  # points added since the last judging round, whatever their time
        self.held: list[Offered] = []  # offered, waiting for their round to close
        self.round_end_ms = 0  # the end (event time) of the round points are gathered for
        # linked group (its clusters) -> (its size, the campaign it was found to be, if any)
        self.judged: dict[tuple[str, ...], tuple[int, str | None]] = {}
        self.campaign_of: dict[str, str] = {}  # cluster id -> the campaign it was reported in
        self.first_seen: dict[str, int] = {}  # campaign id -> first seen, fixed at first report
        self.emitted: dict[str, tuple[int, int]] = {}
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.merged: list[tuple[str, str]] = []  # (absorbed campaign, surviving campaign)
        self.withdrawn: list[str] = []  # reported campaigns the evidence no longer supports
        # reported campaign -> event time of the first judging round that found no support for
        # it, while it is held down (still reported, not yet withdrawn)
        self.unsupported_since: dict[str, int] = {}
        # Campaigns reported before a restart (id -> core accounts, first seen), not found yet
        # since: a group found again is named after the one it shares its accounts with.
        self.known: dict[str, tuple[frozenset[str], int]] = {}

    def remember(self, campaign_id: str, accounts: Iterable[str], first_seen_ms: int) -> None:
        """A campaign reported before a restart. Clusters are rebuilt from the window's points
        judged all at once, not round by round as they came, so a group can now reach further
        back (a cluster of the operation's earliest posts that joined it after its first
        report) and its anchor, hence its id, would change: found again, it keeps this id."""
        self.known[campaign_id] = (frozenset(accounts), first_seen_ms)
        # Reported, as far as its document says: not found again, it is held down and then
        # withdrawn like any reported campaign the window stops supporting, rather than left
        # standing in the analysts' view with nothing behind it.
        self.emitted.setdefault(campaign_id, (0, 0))
        self.first_seen.setdefault(campaign_id, first_seen_ms)

    def reconfigure(self, policy: Policy) -> None:
        """New thresholds from a reloaded policy; clusters and bookkeeping stay."""
        self.policy = policy
        windows, rule = policy.campaigns, policy.rules.campaign
        self.withdraw_after_ms = rule.withdraw_after_seconds * 1000
        self.judge = CampaignJudge(
            min_accounts=rule.min_accounts, min_narrowness=rule.min_narrowness,
            min_cohesion=rule.min_cohesion,
            min_concentration=rule.min_concentration, min_coordination=rule.min_coordination,
            min_participation_prompts=rule.min_participation_prompts,
            min_participation=rule.min_participation,
            min_participation_coordination=rule.min_participation_coordination,
            min_participation_concentration=rule.min_participation_concentration,
            min_score=rule.min_score, max_population_share=rule.max_population_share,
            space_min_narrowness={STATIC: windows.static_min_narrowness},
            coarse_spaces=(STATIC,))
        self.linker = ClusterLinker(max_p=windows.link_max_p,
                                    min_overlap=windows.link_min_overlap,
                                    narrative_similarity=windows.link_similarity)
        for space, clusterer in self.spaces.items():
            clusterer.window_ms = windows.window_seconds * 1000
            clusterer.similarity_threshold = self._similarity(space)
            clusterer.merge_threshold = max(clusterer.similarity_threshold, 0.85)
        self.judged = {}

    def add(self, point: ClusterPoint, space: str, account_prompts: int,
            key_first_seen_ms: int) -> None:
        """One embedded prompt. `account_prompts`: the account's prompts in the window over
        all partitions (this stage sees only its buckets); `key_first_seen_ms`: when the key
        was first seen by the embedding stage, which sees every key of its accounts."""
        clusterer = self.spaces.get(space)
        if clusterer is None:
            similarity = self._similarity(space)
            clusterer = self.spaces[space] = OnlineClusterer(
                self.policy.campaigns.window_seconds * 1000, similarity_threshold=similarity,
                merge_threshold=max(similarity, 0.85), space=space)
        self.activity[point.account_id] = (account_prompts, point.ts_ms)
        first, _ = self.keys.get(point.api_key_id, (key_first_seen_ms, 0))
        self.keys[point.api_key_id] = (min(first, key_first_seen_ms), point.ts_ms)
        self.latest_ms = max(self.latest_ms, point.ts_ms)
        # Event time is judged from the first point on (not from the epoch).
        self.judged_ms = self.judged_ms or point.ts_ms
        self.unjudged += 1
        clusterer.add(point)

    def offer(self, point: ClusterPoint, space: str, account_prompts: int,
              key_first_seen_ms: int) -> list[CampaignFinding]:
        """One embedded prompt, held for its judging round; returns what the rounds it closes
        found. Rounds end on multiples of `judge_every_seconds` of event time. A round closes
        when a point lies `judge_lateness_seconds` past its end: its points, late ones from
        earlier rounds too, are added in (time, event id) order and the window is judged.
        Judging at idle moments or every few wall seconds, as the stage did, made two replays
        of one file find different members: clustering is online, so the order points are
        added in and the moments judged both shape what is found."""
        every_ms = self.policy.campaigns.judge_every_seconds * 1000
        lateness_ms = self.policy.campaigns.judge_lateness_seconds * 1000
        findings: list[CampaignFinding] = []
        if not self.round_end_ms:  # the first point, or the first since a restart's rebuild
            self.round_end_ms = (max(self.latest_ms, point.ts_ms) // every_ms + 1) * every_ms
        while point.ts_ms >= self.round_end_ms + lateness_ms:
            findings += self._close_round(self.round_end_ms)
            # Rounds without points are skipped, not judged one by one.
            earliest = min((h.point.ts_ms for h in self.held), default=point.ts_ms)
            self.round_end_ms = max(self.round_end_ms + every_ms,
                                    (earliest // every_ms + 1) * every_ms)
        self.held.append(Offered(point, space, account_prompts, key_first_seen_ms))
        return findings

    def flush(self) -> list[CampaignFinding]:
        """Every held point, judged now: the input has gone quiet (the end of a replay, or a
        pause in live traffic), and no later point will close their round."""
        return self._close_round(None)

    @property
    def pending(self) -> int:
        """Points offered or added that no judging round has covered yet."""
        return self.unjudged + len(self.held)

    def _close_round(self, end_ms: int | None) -> list[CampaignFinding]:
        due = [h for h in self.held if end_ms is None or h.point.ts_ms < end_ms]
        self.held = [h for h in self.held if end_ms is not None and h.point.ts_ms >= end_ms]
        for offered in sorted(due, key=lambda h: (h.point.ts_ms, h.point.event_id)):
            self.add(*offered)
        return self.judge_all() if self.unjudged else []

    def judge_all(self) -> list[CampaignFinding]:
        """Expire, refine (merge, split), link, then judge every linked group that changed."""
        self.judged_ms = self.latest_ms
        self.unjudged = 0
        self._expire()
        summaries = [clusterer.summary(cluster_id) for clusterer in self.spaces.values()
                     for cluster_id in clusterer.cluster_ids(min_accounts=2)]
        groups = self.linker.groups(summaries, active_accounts=len(self.activity))
        activity = {account: n for account, (n, _) in self.activity.items()}
        history = KeyHistory.of({key: first for key, (first, _) in self.keys.items()})
        window_census = None
        judged: dict[tuple[str, ...], tuple[int, str | None]] = {}
        findings = []
        for group in groups:
            if len(frozenset().union(*(s.accounts for s in group))) < self.judge.min_accounts:
                continue
            # Judging is the stage's dearest step: a group that has not changed since it was
            # last judged gets the same verdict.
            signature = tuple(sorted(s.cluster_id for s in group))
            size = sum(s.size for s in group)
            verdict = self.judged.get(signature)
            if verdict is not None and verdict[0] == size:
                judged[signature] = verdict
                continue
            if not self.judge.may_find(self.spaces[s.space].account_posts(s.cluster_id)
                                       for s in group):
                judged[signature] = (size, None)
                continue
            window_census = window_census or census(self.spaces.values())
            snapshots = [self.spaces[s.space].snapshot(s.cluster_id) for s in group]
            finding = self.judge.judge(snapshots, activity, key_first_seen_ms=history,
                                       census=window_census)
            if finding is None:
                judged[signature] = (size, None)
                continue
            finding = self._named(finding, signature)
            judged[signature] = (size, finding.campaign_id)
            if self._changed(finding):
                findings.append(finding)
        self.judged = judged
        # A reported campaign that no group of the window supports any more (reported on early,
        # thin evidence, or its group fell apart) is withdrawn rather than left standing; found
        # again later, it is reported again under its id. (One whose clusters all expired is
        # simply over: `_expire` has dropped it.) But an operation's evidence dips between its
        # posts (its accounts' ordinary work lowers their shares until the next burst; a split
        # cluster waits for the points that rejoin it), and withdrawing on the first round
        # without support resolved the pages of campaigns that were still running. So it is
        # withdrawn only once unsupported for `withdraw_after_ms` of event time, which does not
        # depend on how often the window was judged; until then it stays reported as it was.
        standing = {campaign for _, campaign in judged.values() if campaign}
        for campaign in standing:
            self.unsupported_since.pop(campaign, None)
        for campaign in sorted(set(self.emitted) - standing):
            since = self.unsupported_since.setdefault(campaign, self.latest_ms)
            if self.latest_ms - since >= self.withdraw_after_ms:
                del self.emitted[campaign], self.unsupported_since[campaign]
                self.known.pop(campaign, None)
                self.withdrawn.append(campaign)
        return findings

    def _similarity(self, space: str) -> float:
        windows = self.policy.campaigns
        return windows.static_similarity if space == STATIC else windows.full_similarity

    def _expire(self) -> None:
        for clusterer in self.spaces.values():
            clusterer.expire(self.latest_ms)
            for absorbed, survivor in clusterer.refine().merged:
                campaign = self.campaign_of.pop(absorbed, None)
                if campaign is not None:
                    self.campaign_of.setdefault(survivor, campaign)
        horizon = self.latest_ms - self.policy.campaigns.window_seconds * 1000
        self.activity = {a: v for a, v in self.activity.items() if v[1] >= horizon}
        self.keys = {k: v for k, v in self.keys.items() if v[1] >= horizon}
        self.campaign_of = {c: campaign for c, campaign in self.campaign_of.items()
                            if any(c in clusterer for clusterer in self.spaces.values())}
        live = set(self.campaign_of.values()) | set(self.known)
        for bookkeeping in (self.emitted, self.first_seen, self.history,
                            self.unsupported_since):
            for campaign in [c for c in bookkeeping if c not in live]:
                del bookkeeping[campaign]

    def _named(self, finding: CampaignFinding, clusters: tuple[str, ...]) -> CampaignFinding:
        """The finding under its campaign's lasting id: the oldest campaign already reported
        for any of its clusters, else its oldest cluster's id. Other reported campaigns it
        now spans are merged into it."""
        reported = sorted({self.campaign_of[c] for c in clusters if c in self.campaign_of},
                          key=lambda c: (self.first_seen[c], c))
        campaign_id = reported[0] if reported else self._known_as(finding)
        self.first_seen.setdefault(campaign_id, finding.first_seen_ms)
        for other in reported[1:]:
            self.merged.append((other, campaign_id))
            self.emitted.pop(other, None)
            self.unsupported_since.pop(other, None)
        for cluster_id in clusters:
            self.campaign_of[cluster_id] = campaign_id
        return dataclasses.replace(finding, campaign_id=campaign_id,
                                   first_seen_ms=self.first_seen[campaign_id])

    def _known_as(self, finding: CampaignFinding) -> str:
        """The id of the campaign reported before a restart that shares most of the finding's
        accounts (at least half of the smaller group; the oldest of several), else its own."""
        accounts = set(finding.accounts)
        matches = [(first_seen, campaign) for campaign, (known, first_seen) in self.known.items()
                   if 2 * len(accounts & known) >= min(len(accounts), len(known))]
        if not matches:
            return finding.campaign_id
        first_seen, campaign = min(matches)
        del self.known[campaign]
        self.first_seen[campaign] = first_seen
        return campaign

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
