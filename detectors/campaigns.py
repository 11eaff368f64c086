"""The campaign decision: linked clusters of similar prompts are a coordinated campaign only on
evidence of coordination, not of popularity.

Thousands of people asking for the same cover letter, or pasting the same public template, make
tight clusters too. What sets a campaign apart is how its accounts behave: they spend most of
their traffic on the narrative, reuse the same payloads among themselves and nobody else, act in
the same minutes, and appear together with keys first seen just before. Shared network ranges
and user agents count too, but an operation behind residential proxies has none, so no single
piece of evidence is required: coordination is a noisy-OR of chance-corrected components, each
in the evidence an analyst reads. Content copied by many accounts outside the group is viral or
a public template and is down-weighted the way coordination research down-weights viral items.

Only "core" accounts are judged and reported: those that spend at least `min_member_share` of
their prompts in the linked clusters, and at least `min_member_prompts` prompts (one prompt
says nothing about where an account spends its traffic: early in a stream every account has
sent only one or two). An ordinary user who once asked about the same topic is
not accused along with the accounts that push it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from detectors.alerts import Alert, Entity
from detectors.clustering import (
    Census,
    ClusterPoint,
    ClusterSnapshot,
    campaign_id_for,
    merge_snapshots,
)
from detectors.network import network_range
from detectors.tails import binomial_sf
from detectors.text import normalise

RULE_ID = "campaign.coordinated_narrative"
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class CampaignFinding:
    campaign_id: str
    score: float
    accounts: tuple[str, ...]
    api_keys: tuple[str, ...]
    ips: tuple[str, ...]
    first_seen_ms: int
    last_seen_ms: int
    size: int
    sample_prompts: tuple[str, ...]
    label_terms: tuple[str, ...]
    evidence: Mapping[str, Any]
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CampaignAssessment:
    """The judge's full answer, kept also when the cluster is not a campaign: `failed` names the
    tests it did not pass, so a benchmark or an analyst can see why."""

    cluster_id: str
    evidence: Mapping[str, Any]
    reasons: tuple[str, ...]
    failed: tuple[str, ...]
    finding: CampaignFinding | None


@dataclass(frozen=True, slots=True)
class CoordinationWeights:
    """How far each component alone can carry coordination (noisy-OR): lockstep timing or
    payloads shared only inside the group are strong; shared ranges and user agents are weak,
    since offices, carriers and SDK defaults share them innocently."""

    timing: float = 0.8
    payload_reuse: float = 0.75
    new_keys: float = 0.6
    creation_burst: float = 0.5
    cadence: float = 0.4
    networks: float = 0.5
    user_agents: float = 0.3
    # Posts dressed to evade matching (look-alike letters, invisible characters): rare in what
    # people type (0 of 2,264 corpus prompts), so a group that disguises its posts is hiding.
    disguise: float = 0.7


Clusters = ClusterSnapshot | Sequence[ClusterSnapshot]


class CampaignJudge:
    """Judges linked cluster snapshots. A campaign needs all of: at least `min_accounts` core
    accounts, content at least `min_narrowness` similar to the centre of its cluster (per vector
    space: `space_min_narrowness` overrides it), linked clusters about one thing (cohesion at
    least `min_cohesion`), core accounts spending on average at least
    `min_concentration` of their prompts on it, coordination at least `min_coordination`, and
    an overall score (0.2 content + 0.3 concentration + 0.5 coordination, content being
    narrowness scaled down by outside popularity) of at least `min_score`.

    And the core is at most `max_population_share` of the accounts active in the window, once
    that share allows `min_accounts` at all: an operation is a small minority of a provider's
    users, while a narrative that a large share of everyone active sends is a trend or a
    popular template, whoever sends it. (Without this, a popular prompt whose senders all fall
    into the core counts its copies as payload reuse: judged mid-stream, 309 of 463 active
    accounts of the simulator were once reported as one campaign.)

    And at least `min_model_share` of the core's points are in a space the sentence model made,
    not in one of `coarse_spaces` (the static embedding): an operation asks for content to
    publish, which always gets the model, while static vectors of ordinary prompts sit close
    to everything, and groups judged on them alone were offices and crowds asking varied
    things (every spurious campaign of the evaluations; no true one)."""

    def __init__(self, min_accounts: int = 8, min_narrowness: float = 0.8,
                 min_cohesion: float = 0.7, min_concentration: float = 0.5,
                 min_coordination: float = 0.5,
                 min_score: float = 0.6, min_member_share: float = 0.3,
                 min_member_prompts: int = 2,
                 template_jaccard: float = 0.5, new_key_ms: int = 2 * DAY_MS,
                 burst_ms: int = 3_600_000, max_timing_accounts: int = 300,
                 max_text_samples: int = 60, weights: CoordinationWeights | None = None,
                 space_min_narrowness: Mapping[str, float] | None = None,
                 max_population_share: float = 0.2, coarse_spaces: Iterable[str] = (),
                 min_model_share: float = 0.5, min_participation_prompts: int = 3,
                 min_participation: float = 0.7,
                 min_participation_coordination: float = 0.7,
                 min_participation_concentration: float = 0.2) -> None:
        self.min_accounts = min_accounts
        self.min_participation_concentration = min_participation_concentration
        self.min_participation_prompts = min_participation_prompts
        self.min_participation = min_participation
        self.min_participation_coordination = min_participation_coordination
        self.max_population_share = max_population_share
        self.coarse_spaces = frozenset(coarse_spaces)
        self.min_model_share = min_model_share
        self.min_narrowness = min_narrowness
        self.min_cohesion = min_cohesion
        self.min_concentration = min_concentration
        self.min_coordination = min_coordination
        self.min_score = min_score
        self.min_member_share = min_member_share
        self.min_member_prompts = min_member_prompts
        self.template_jaccard = template_jaccard
        self.new_key_ms = new_key_ms
        self.burst_ms = burst_ms
        self.max_timing_accounts = max_timing_accounts
        self.max_text_samples = max_text_samples
        self.weights = weights or CoordinationWeights()
        self.space_min_narrowness = dict(space_min_narrowness or {})

    def judge(self, clusters: Clusters, account_activity: Mapping[str, int], *,
              key_first_seen_ms: Mapping[str, int] | KeyHistory | None = None,
              census: Census | None = None) -> CampaignFinding | None:
        """The finding when the (linked) clusters are a coordinated campaign, else None.

        `account_activity`: prompts each account sent in the window over all clusters (an
        account missing from it counts as sending nothing elsewhere). `key_first_seen_ms`: when
        each API key was first seen, for every key of the window (the population that freshness
        is measured against). `census`: window-wide popularity of texts, ranges and user
        agents; without it, popularity is measured inside the clusters only.
        """
        return self.assess(clusters, account_activity, key_first_seen_ms=key_first_seen_ms,
                           census=census).finding

    def may_find(self, account_posts: Iterable[Mapping[str, int]]) -> bool:
        """Whether clusters with these prompts per account could be a campaign at all: both
        cores (members, participants) need `min_accounts` accounts posting in them more than
        once. Most groups of a window have too few and fail on accounts whatever else is
        measured: they need not be judged, the campaign stage's dearest step (84 % of the
        groups on the full preset)."""
        posts: Counter[str] = Counter()
        for counts in account_posts:
            posts.update(counts)
        least = min(self.min_member_prompts, self.min_participation_prompts)
        return sum(n >= least for n in posts.values()) >= self.min_accounts

    def assess(self, clusters: Clusters, account_activity: Mapping[str, int], *,
               key_first_seen_ms: Mapping[str, int] | KeyHistory | None = None,
               census: Census | None = None) -> CampaignAssessment:
        parts = (clusters,) if isinstance(clusters, ClusterSnapshot) else tuple(clusters)
        if len(parts) > 1 and _cohesion(parts) < self.min_cohesion:
            # An operation's accounts also share their ordinary work (debugging the same bot),
            # which links those clusters to the narrative's: judge the narrative's clusters.
            parts = _narrative_parts(parts, self.min_cohesion) or parts
        snapshot = merge_snapshots(parts)
        shares = {account: events / max(account_activity.get(account, events), events)
                  for account, events in snapshot.accounts.items()}
        # The core: accounts that spend a share of their prompts on the narrative. Failing
        # that, accounts that post it again and again beside ordinary work (operations debug
        # their bots and translate too), which must then show strong coordination.
        core = sorted(a for a, share in shares.items() if share >= self.min_member_share
                      and snapshot.accounts[a] >= self.min_member_prompts)
        assessment = self._assess_core(parts, snapshot, shares, core, account_activity,
                                       key_first_seen_ms, census)
        if {"accounts", "concentration"} & set(assessment.failed):
            participants = sorted(a for a, n in snapshot.accounts.items()
                                  if n >= self.min_participation_prompts)
            if participants != core:
                second = self._assess_core(parts, snapshot, shares, participants,
                                           account_activity, key_first_seen_ms, census)
                if second.finding is not None:
                    return second
        return assessment

    def _assess_core(self, parts: tuple[ClusterSnapshot, ...], snapshot: ClusterSnapshot,
                     shares: Mapping[str, float], core: list[str],
                     account_activity: Mapping[str, int],
                     key_first_seen_ms: Mapping[str, int] | KeyHistory | None,
                     census: Census | None) -> CampaignAssessment:
        core_set = set(core)
        points = [p for p in snapshot.members if p.account_id in core_set]
        if len(points) < 2:
            points = list(snapshot.members)
        narrowness, floor, pairwise = self._narrowness(parts, core_set)
        cohesion = _cohesion(parts)
        centre = _unit(_unit_rows(np.stack([p.vector for p in points])).sum(axis=0)) \
            if points else snapshot.centroid

        text_users = census.text_accounts if census else snapshot.text_accounts
        core_texts = {a: set(snapshot.account_texts.get(a, ())) for a in core}
        popularity = self._outside_popularity(points, core_texts, text_users)
        template_share = self._template_share(points)
        content = narrowness * (1.0 - popularity)
        concentration = float(np.mean([shares[a] for a in core])) if core else 0.0
        # Participation: the share of the core that posts the narrative repeatedly, whatever
        # else it does. It stands in for concentration when coordination is strong.
        participation = float(np.mean([snapshot.accounts[a] >= self.min_participation_prompts
                                       for a in core])) if core else 0.0
        # What the group's prompts ask for: content to publish is what an operation posts;
        # crowds filling a public template or asking about the news ask other things.
        publishing = sum(p.intent == "publish" for p in points) / max(1, len(points))
        engagement = max(concentration, participation
                         if participation >= self.min_participation and publishing >= 0.5
                         else 0.0)

        components, coordination_evidence = self._coordination(
            core, core_texts, snapshot, census, KeyHistory.of(key_first_seen_ms))
        coordination = 1.0 - math.prod(1.0 - getattr(self.weights, name) * value
                                       for name, value in components.items())
        score = 0.2 * content + 0.3 * engagement + 0.5 * coordination

        evidence: dict[str, Any] = {
            "core_accounts": len(core), "cluster_accounts": len(snapshot.accounts),
            "cluster_size": snapshot.size, "clusters": [p.cluster_id for p in parts][:20],
            "narrowness": _r(narrowness), "narrowness_floor": _r(floor),
            "cohesion": _r(cohesion),
            "pairwise_similarity": _r(pairwise), "popularity": _r(popularity),
            "template_share": _r(template_share),
            "content": _r(content), "concentration": _r(concentration),
            "participation": _r(participation), "publishing_share": _r(publishing),
            # Each member's share of its prompts spent on the narrative: a low one is an
            # account that also does ordinary work.
            "member_shares": {a: _r(shares[a]) for a in core[:50]},
            "mixed_use_members": sum(1 for a in core if shares[a] < 0.5),
            "languages": _languages(points),
            **coordination_evidence, "new_keys_known": key_first_seen_ms is not None,
            "wrappers": _wrappers(points),
            "coordination_components": {k: _r(v) for k, v in components.items()},
            "coordination": _r(coordination), "score": _r(score),
        }
        core_points = [(part.space, sum(1 for p in part.members if p.account_id in core_set))
                       for part in parts]
        model_share = sum(n for space, n in core_points if space not in self.coarse_spaces) \
            / max(1, sum(n for _, n in core_points))
        evidence["model_share"] = _r(model_share)
        population = len(account_activity)
        evidence["population_share"] = _r(len(core) / max(population, len(core), 1))
        share_applies = population * self.max_population_share >= self.min_accounts
        failed = tuple(name for name, ok in (
            ("accounts", len(core) >= self.min_accounts),
            ("population_share", not share_applies
             or len(core) <= self.max_population_share * population),
            ("model_share", model_share >= self.min_model_share),
            ("narrowness", narrowness >= floor),
            ("cohesion", cohesion >= self.min_cohesion),
            ("concentration", concentration >= self.min_concentration
             or (participation >= self.min_participation and publishing >= 0.5
                 and concentration >= self.min_participation_concentration
                 and coordination >= self.min_participation_coordination)),
            ("coordination", coordination >= self.min_coordination),
            ("score", score >= self.min_score),
        ) if not ok)
        reasons = self._reasons(evidence)
        finding = None
        if not failed:
            finding = self._finding(snapshot, core, points, centre, _r(score), evidence, reasons)
        return CampaignAssessment(snapshot.cluster_id, evidence, reasons, failed, finding)

    def _coordination(self, core: list[str], core_texts: Mapping[str, set[str]],
                      snapshot: ClusterSnapshot, census: Census | None,
                      history: KeyHistory | None) -> tuple[dict[str, float], dict[str, Any]]:
        """The chance-corrected coordination components (each 0..1) and their evidence."""
        timing = self._timing_sync(core, snapshot)
        text_users = census.text_accounts if census else snapshot.text_accounts
        reuse, _ = _link_strength(core, core_texts, text_users, snapshot.account_texts, None)
        networks, shared_ranges = _link_strength(
            core, {a: {network_range(ip) for ip in snapshot.account_ips.get(a, ())}
                   for a in core},
            census.network_accounts if census else None, snapshot.account_ips, network_range)
        # The agents mostly the core's own, not an SDK default: what a peer can match on.
        agents, own_agents = _link_strength(
            core, {a: set(snapshot.account_user_agents.get(a, ())) for a in core},
            census.user_agent_accounts if census else None, snapshot.account_user_agents, None,
            min_exclusive=0.5)
        new_keys, new_keys_chance = self._new_keys(core, snapshot, history)
        burst, burst_chance = self._creation_burst(core, snapshot, history)
        cadence = self._cadence(core, snapshot)
        core_set = set(core)
        core_points = [p for p in snapshot.members if p.account_id in core_set]
        disguise = sum(p.disguised for p in core_points) / max(1, len(core_points))
        components = {"timing": timing, "payload_reuse": reuse,
                      "new_keys": _surprise(new_keys, len(core), new_keys_chance),
                      # The densest span was picked among about one per core account.
                      "creation_burst": _surprise(burst, len(core), burst_chance,
                                                  tries=len(core)),
                      "cadence": cadence, "networks": networks, "user_agents": agents,
                      "disguise": disguise}
        evidence = {
            "timing_sync": _r(timing), "timing_bin_s": snapshot.bin_ms // 1000,
            "payload_reuse": _r(reuse),
            "shared_networks": _r(networks), "network_ranges": shared_ranges[:20],
            "shared_user_agents": _r(agents), "user_agents": own_agents[:10],
            "new_key_share": _r(new_keys),
            "new_key_share_population": _r(new_keys_chance),
            "creation_burst": _r(burst), "creation_burst_population": _r(burst_chance),
            "similar_cadence": _r(cadence), "disguise_share": _r(disguise),
        }
        return components, evidence

    def _narrowness(self, parts: Sequence[ClusterSnapshot],
                    core: set[str]) -> tuple[float, float, float]:
        """(narrowness, its floor, mean pairwise similarity), each weighted by the core points
        of every cluster: each cluster is narrow around its own centre and in its own space;
        linked clusters of one narrative (other wrappers, other space) need not be close."""
        totals = np.zeros(3)
        weight = 0
        for part in parts:
            points = [p for p in part.members if p.account_id in core] or list(part.members)
            if not points:
                continue
            vectors = _unit_rows(np.stack([p.vector for p in points]))
            centre = _unit(vectors.sum(axis=0))
            floor = self.space_min_narrowness.get(part.space, self.min_narrowness)
            totals += len(points) * np.array([float(np.mean(vectors @ centre)), floor,
                                              _mean_pairwise(vectors)])
            weight += len(points)
        if not weight:
            return 0.0, self.min_narrowness, 0.0
        narrowness, floor, pairwise = totals / weight
        return float(narrowness), float(floor), float(pairwise)

    def _outside_popularity(self, points: list[ClusterPoint], core_texts: Mapping[str, set[str]],
                            text_users: Mapping[str, int]) -> float:
        """1 - mean over the core's points of 1/log2(2 + accounts outside the core that sent the
        same text): 0 when nobody else sends it, near 1 for a viral text or public template.
        Copies inside the core are coordination (payload reuse), not popularity."""
        if not points:
            return 0.0
        core_users: Counter[str] = Counter(t for texts in core_texts.values() for t in texts)
        weights = [1.0 / math.log2(2.0 + max(0, text_users.get(p.text_key, 1)
                                                - core_users.get(p.text_key, 0)))
                   for p in points]
        return float(1.0 - np.mean(weights))

    def _template_share(self, points: list[ClusterPoint]) -> float:
        """Share of sample pairs (from different accounts) that share most of their words: how
        templated the prompts are. Evidence only: one operation may fill one template."""
        recent = sorted(points, key=lambda p: (p.ts_ms, p.event_id))[-self.max_text_samples:]
        samples = [(p.account_id, _words(p.prompt_sample)) for p in recent]
        samples = [(account, words) for account, words in samples if words]
        if len(samples) < 2:
            return 0.0
        # Every pair's Jaccard at once: word incidence, shared words by a matrix product.
        vocabulary: dict[str, int] = {}
        rows, columns = [], []
        for row, (_, words) in enumerate(samples):
            for word in words:
                rows.append(row)
                columns.append(vocabulary.setdefault(word, len(vocabulary)))
        incidence = np.zeros((len(samples), len(vocabulary)), dtype=np.float64)
        incidence[rows, columns] = 1.0
        shared = incidence @ incidence.T
        sizes = incidence.sum(axis=1)
        accounts = np.array([account for account, _ in samples])
        counted = np.triu(accounts[:, None] != accounts[None, :], k=1)
        pairs = int(counted.sum())
        if not pairs:
            return 0.0
        overlap = shared / (sizes[:, None] + sizes[None, :] - shared)
        return int((overlap[counted] >= self.template_jaccard).sum()) / pairs

    def _timing_sync(self, core: list[str], snapshot: ClusterSnapshot) -> float:
        """How much more the core accounts' active time bins overlap than independent accounts
        with the same activity would: 0 is chance, 1 is lockstep."""
        accounts = sorted(core, key=lambda a: (-snapshot.accounts[a], a))
        accounts = accounts[:self.max_timing_accounts]
        if len(accounts) < 2:
            return 0.0
        columns = sorted({i for a in accounts for i in snapshot.account_bins.get(a, ())})
        column = {index: n for n, index in enumerate(columns)}
        active = np.zeros((len(accounts), len(columns)), dtype=np.float64)
        for row, account in enumerate(accounts):
            for index in snapshot.account_bins.get(account, ()):
                active[row, column[index]] = 1.0
        bins = max(1, math.ceil(snapshot.window_ms / snapshot.bin_ms))
        counts = active.sum(axis=1)
        shared = active @ active.T
        expected = np.outer(counts, counts) / bins
        union = counts[:, None] + counts[None, :]
        upper = np.triu_indices(len(accounts), k=1)
        observed = float(np.mean(shared[upper] / np.maximum(union - shared, 1.0)[upper]))
        chance = float(np.mean(expected[upper] / np.maximum(union - expected, 1e-9)[upper]))
        if chance >= 1.0:
            return 0.0
        return float(np.clip((observed - chance) / (1.0 - chance), 0.0, 1.0))

    def _new_keys(self, core: list[str], snapshot: ClusterSnapshot,
                  history: KeyHistory | None) -> tuple[float, float]:
        """(share of core accounts with a key first seen at most `new_key_ms` before the
        narrative started, the same share among all keys of the window): in production most
        keys are old, in a replay of a short file every key is new and this says nothing."""
        if not core or history is None:
            return 0.0, 0.0
        since = snapshot.first_seen_ms - self.new_key_ms
        new = sum(any(history.first_seen_ms.get(key, since - 1) >= since
                      for key in snapshot.account_keys.get(account, ()))
                  for account in core)
        return new / len(core), history.share_between(since, None)

    def _cadence(self, core: list[str], snapshot: ClusterSnapshot) -> float:
        """How much the core accounts send like one scheduler: regular gaps (1 - coefficient
        of variation: a Poisson stream or a person's sessions score 0) times alike periods
        (1 - spread of the core's log median gaps / the spread over everyone who touched the
        narrative). 0 with fewer than 5 core accounts (or 10 in all) with three or more recent
        prompts."""
        times: dict[str, list[int]] = {}
        for point in snapshot.members:
            times.setdefault(point.account_id, []).append(point.ts_ms)
        gaps = {account: np.diff(np.sort(np.asarray(ts, dtype=np.float64)))
                for account, ts in times.items() if len(ts) >= 3}
        periods = {a: float(np.log(max(1.0, float(np.median(g))))) for a, g in gaps.items()}
        ours = [a for a in core if a in gaps]
        if len(ours) < 5 or len(gaps) < 10:
            return 0.0
        regular = float(np.mean([np.clip(1.0 - float(np.std(gaps[a]))
                                          / max(float(np.mean(gaps[a])), 1.0), 0.0, 1.0)
                                  for a in ours]))
        # Sample spreads (ddof=1): a handful of accounts looks alike by luck otherwise.
        spread = float(np.std(list(periods.values()), ddof=1))
        alike = 1.0 - float(np.std([periods[a] for a in ours], ddof=1)) / max(spread, 1e-9)
        return float(np.clip(regular * alike, 0.0, 1.0))

    def _creation_burst(self, core: list[str], snapshot: ClusterSnapshot,
                        history: KeyHistory | None) -> tuple[float, float]:
        """(largest share of core accounts whose first key appeared within one `burst_ms`
        span, the share of all keys of the window first seen in that span): accounts made
        together for an operation appear together, ordinary sign-ups trickle in."""
        if len(core) < 2 or history is None:
            return 0.0, 0.0
        births = sorted(min((history.first_seen_ms[k] for k in snapshot.account_keys.get(a, ())
                             if k in history.first_seen_ms), default=-1) for a in core)
        births = [b for b in births if b >= 0]
        if len(births) < 2:
            return 0.0, 0.0
        best, best_start, end = 0, births[0], 0
        for start_index, start in enumerate(births):
            while end < len(births) and births[end] < start + self.burst_ms:
                end += 1
            if end - start_index > best:
                best, best_start = end - start_index, start
        return best / len(core), history.share_between(best_start, best_start + self.burst_ms)

    def _reasons(self, e: Mapping[str, Any]) -> tuple[str, ...]:
        reasons = [
            f"{e['core_accounts']} accounts spend on average {e['concentration']:.0%} of their "
            f"prompts on this narrative ({e['cluster_accounts']} accounts touched it, in "
            f"{len(e['clusters'])} linked cluster(s) and {len(e['wrappers'])} wrapper(s))",
            f"prompts are {e['narrowness']:.2f} similar to the narrative's centre "
            f"({e['popularity']:.0%} of it is also sent by accounts outside the group)",
        ]
        parts = e["coordination_components"]
        if parts["payload_reuse"] >= 0.3:
            reasons.append(f"they reuse the same payloads among themselves and hardly anyone "
                           f"else does (reuse {e['payload_reuse']:.2f})")
        if e["timing_sync"] >= 0.3:
            reasons.append(f"the accounts act in the same {e['timing_bin_s']} s windows "
                           f"(synchrony {e['timing_sync']:.2f}, 0 = chance)")
        if parts["cadence"] >= 0.3:
            reasons.append(f"they send at alike cadences (similarity {e['similar_cadence']:.2f}, "
                           f"0 = as varied as everyone else on the narrative)")
        if e["shared_networks"] >= 0.3:
            reasons.append(f"{e['shared_networks']:.0%} of them share network ranges with each "
                           f"other: {', '.join(e['network_ranges'][:5])}")
        if e["shared_user_agents"] >= 0.3:
            reasons.append(f"{e['shared_user_agents']:.0%} of them share uncommon user agents")
        if parts["new_keys"] >= 0.3:
            reasons.append(f"{e['new_key_share']:.0%} of them use API keys first seen at most "
                           f"{self.new_key_ms // 3_600_000} h before the narrative started "
                           f"(against {e['new_key_share_population']:.0%} of all keys)")
        if parts["creation_burst"] >= 0.3:
            reasons.append(f"{e['creation_burst']:.0%} of them appeared within "
                           f"{self.burst_ms // 60_000} min of each other (against "
                           f"{e['creation_burst_population']:.0%} of all keys)")
        if parts["disguise"] >= 0.2:
            reasons.append(f"{e['disguise_share']:.0%} of their posts are disguised (look-alike "
                           "letters, invisible characters, letters spaced apart)")
        if e.get("mixed_use_members"):
            reasons.append(f"{e['mixed_use_members']} of them spend most of their prompts on "
                           "other work beside the narrative")
        if len(e.get("languages", {})) > 1:
            reasons.append(f"the narrative runs in {len(e['languages'])} languages: "
                           f"{', '.join(e['languages'])}")
        reasons.append(f"coordination {e['coordination']:.2f}, campaign score {e['score']:.2f}")
        return tuple(reasons)

    def _finding(self, snapshot: ClusterSnapshot, core: list[str], points: list[ClusterPoint],
                 centre: np.ndarray, score: float, evidence: Mapping[str, Any],
                 reasons: tuple[str, ...]) -> CampaignFinding:
        ranked = sorted(points, key=lambda p: (-float(_unit(np.asarray(p.vector)) @ centre)
                                               if len(p.vector) == len(centre) else 0.0,
                                               p.event_id))
        samples: list[str] = []
        texts: set[str] = set()
        for point in ranked:
            if point.text_key not in texts:
                texts.add(point.text_key)
                samples.append(point.prompt_sample)
        return CampaignFinding(
            campaign_id=campaign_id_for(snapshot), score=score, accounts=tuple(core),
            api_keys=_union(snapshot.account_keys, core), ips=_union(snapshot.account_ips, core),
            first_seen_ms=snapshot.anchor[0], last_seen_ms=snapshot.last_seen_ms,
            size=sum(snapshot.accounts[a] for a in core), sample_prompts=tuple(samples[:5]),
            label_terms=label_terms(samples), evidence=evidence, reasons=reasons,
        )


@dataclass(frozen=True, slots=True)
class KeyHistory:
    """When each API key of the window was first seen, with the times sorted so that the share
    of keys first seen in a span is a binary search."""

    first_seen_ms: Mapping[str, int]
    times: np.ndarray

    @classmethod
    def of(cls, first_seen_ms: Mapping[str, int] | KeyHistory | None) -> KeyHistory | None:
        if first_seen_ms is None or isinstance(first_seen_ms, KeyHistory):
            return first_seen_ms
        return cls(first_seen_ms, np.sort(np.fromiter(first_seen_ms.values(), dtype=np.int64)))

    def share_between(self, start_ms: int, end_ms: int | None) -> float:
        if not len(self.times):
            return 0.0
        lo = int(np.searchsorted(self.times, start_ms, side="left"))
        hi = len(self.times) if end_ms is None else int(np.searchsorted(self.times, end_ms))
        return (hi - lo) / len(self.times)


def label_terms(prompts: Iterable[str], top: int = 5) -> tuple[str, ...]:
    """The `top` terms with the highest summed TF-IDF over the prompts: what the campaign is
    about, for an analyst scanning a list. Empty when the prompts have no usable words."""
    docs = [p for p in prompts if p.strip()]
    if not docs:
        return ()
    vectorizer = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_]{3,}\b")
    try:
        matrix = vectorizer.fit_transform(docs)
    except ValueError:  # nothing left after stop words
        return ()
    weights = np.asarray(matrix.sum(axis=0)).ravel()
    terms = vectorizer.get_feature_names_out()
    order = sorted(range(len(terms)), key=lambda i: (-weights[i], terms[i]))
    return tuple(str(terms[i]) for i in order[:top])


def campaign_alert(finding: CampaignFinding, severity: str, shadow: bool = False) -> Alert:
    """One alert per campaign: the entity is the campaign id and the incident starts when it was
    first seen, so updates as it grows overwrite the same alert."""
    return Alert(
        rule_id=RULE_ID, severity=severity, score=finding.score,
        entity=Entity("campaign", finding.campaign_id),
        incident_start_ms=finding.first_seen_ms, window_start_ms=finding.first_seen_ms,
        window_end_ms=finding.last_seen_ms, reasons=finding.reasons,
        evidence={**finding.evidence, "label_terms": list(finding.label_terms),
                  "sample_prompts": list(finding.sample_prompts),
                  "api_keys": list(finding.api_keys[:100]), "ips": list(finding.ips[:100]),
                  "size": finding.size},
        accounts=finding.accounts, shadow=shadow,
    )


def _link_strength(core: list[str], items: Mapping[str, set[str]],
                   population: Mapping[str, int] | None,
                   cluster_items: Mapping[str, frozenset[str]],
                   transform: Callable[[str], str] | None,
                   min_exclusive: float = 0.0) -> tuple[float, list[str]]:
    """Mean over core accounts of how exclusively they share an item (range, user agent) with
    other core accounts: core users of the item / all users of it. An SDK's default user agent
    or a mobile carrier's range is shared by many, so sharing it says little. Also the items
    two or more core accounts share, those at least `min_exclusive` the core's."""
    if not core:
        return 0.0, []
    core_users: Counter[str] = Counter(item for a in core for item in items[a])
    if population is None:
        local: Counter[str] = Counter()
        for values in cluster_items.values():
            local.update({transform(v) if transform else v for v in values})
        population = local
    strengths = []
    for account in core:
        best = 0.0
        for item in items[account]:
            if core_users[item] >= 2:
                best = max(best, core_users[item] / max(core_users[item],
                                                         population.get(item, 0)))
        strengths.append(best)
    shared = sorted((i for i, n in core_users.items()
                     if n >= 2 and n / max(n, population.get(i, 0)) >= min_exclusive),
                    key=lambda i: (-core_users[i], i))
    return float(np.mean(strengths)), shared


def _narrative_parts(parts: Sequence[ClusterSnapshot], min_similarity: float
                     ) -> tuple[ClusterSnapshot, ...]:
    """The clusters of handed-over payloads (most points cut out of a wrapper) whose centres
    are within `min_similarity` of the largest such cluster: one narrative, without the
    unrelated clusters its accounts' other prompts formed. Empty when no cluster carries
    payloads, so a script sending the same unrelated prompts from every account stays one
    incohesive group."""
    payloads = [p for p in parts if p.members
                and sum(bool(m.wrapper_key) for m in p.members) * 2 >= len(p.members)]
    if not payloads:
        return ()
    main = max(payloads, key=lambda p: (p.size, p.cluster_id))
    centre = _unit(np.asarray(main.centroid, dtype=np.float64))
    return tuple(p for p in payloads if p.space == main.space and float(
        _unit(np.asarray(p.centroid, dtype=np.float64)) @ centre) >= min_similarity)


def _cohesion(parts: Sequence[ClusterSnapshot]) -> float:
    """How much linked clusters are about one thing: the size-weighted cosine of each cluster's
    centre to its space's common centre (1 for a single cluster). One narrative in several
    wrappers stays cohesive; a script sending the same twenty unrelated prompts from every
    account links twenty clusters that are not."""
    total = weight = 0.0
    for space in {p.space for p in parts}:
        members = [p for p in parts if p.space == space]
        centres = _unit_rows(np.stack([np.asarray(p.centroid, dtype=np.float64)
                                       for p in members]))
        sizes = np.array([p.size for p in members], dtype=np.float64)
        common = _unit(sizes @ centres)
        total += float(sizes @ (centres @ common))
        weight += float(sizes.sum())
    return total / weight if weight else 0.0


@lru_cache(maxsize=8192)
def _words(prompt_sample: str) -> frozenset[str]:
    """A sample's canonical words: samples come back in every judging round of their cluster."""
    return frozenset(normalise(prompt_sample).split())


def _surprise(share: float, n: int, chance: float, tries: int = 1,
              certain: float = 6.0) -> float:
    """How unlikely it is that `share` of `n` accounts have a property that a share `chance`
    of the population has: -log10 of the binomial tail (times `tries`, for a best-of-several
    pick), on 0 (as chance predicts) to 1 (a chance of 10**-certain or less). Twelve accounts
    all with fresh keys mean nothing when nine keys in ten are fresh, and a lot when one is."""
    if n == 0 or share <= chance:
        return 0.0
    tail = binomial_sf(round(share * n) - 1, n, min(max(chance, 1e-9), 1.0))
    return float(np.clip(-math.log10(max(min(1.0, tail * tries), 1e-300)) / certain, 0.0, 1.0))


def _wrappers(points: Sequence[ClusterPoint], top: int = 10) -> list[dict[str, Any]]:
    """The wrappers the payloads came in, most used first: how the operation dresses its
    narrative (persona, format, channel)."""
    counts: Counter[str] = Counter()
    samples: dict[str, str] = {}
    for point in points:
        if point.wrapper_key:
            counts[point.wrapper_key] += 1
            samples.setdefault(point.wrapper_key, point.wrapper_sample)
    return [{"wrapper": samples[k], "prompts": n}
            for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]


def _languages(points: Sequence[ClusterPoint]) -> dict[str, int]:
    """Points per payload language, most first: one narrative in several languages is one
    campaign, and its document says which."""
    counts = Counter(p.language for p in points if p.language != "und")
    return dict(counts.most_common())


def _union(sets: Mapping[str, frozenset[str]], accounts: list[str]) -> tuple[str, ...]:
    return tuple(sorted({v for a in accounts for v in sets.get(a, ())}))


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0.0 else vector


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0.0, norms, 1.0)


def _mean_pairwise(vectors: np.ndarray) -> float:
    n = len(vectors)
    if n < 2:
        return 0.0
    total = vectors.sum(axis=0)
    # For unit rows: sum over ordered pairs i != j of cosines = |sum|^2 - n.
    return float((total @ total - n) / (n * (n - 1)))


def _r(value: float) -> float:
    return round(float(value), 3)
