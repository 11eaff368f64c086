"""The campaign decision: a cluster of similar prompts is a coordinated campaign only on evidence
of coordination, not of popularity.

Thousands of people asking for the same cover letter, or pasting the same public template, make
tight clusters too. What sets a campaign apart is how its accounts behave: they spend most of
their traffic on the narrative, act in the same minutes, come from the same network ranges and
user agents, and use keys created just before. Shared content is down-weighted the way
coordination research down-weights viral items: a text sent by n accounts counts 1/log2(1 + n).

Only "core" accounts are judged and reported: those that spend at least `min_member_share` of
their prompts in the cluster. An ordinary user who once asked about the same topic is not
accused along with the accounts that push it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from detectors.alerts import Alert, Entity
from detectors.clustering import Census, ClusterPoint, ClusterSnapshot
from detectors.network import network_range
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
    timing: float = 0.35
    networks: float = 0.30
    new_keys: float = 0.20
    user_agents: float = 0.15  # weakest: SDK defaults are shared by everyone


class CampaignJudge:
    """Judges cluster snapshots. A campaign needs all of: at least `min_accounts` core accounts,
    content at least `min_narrowness` similar to its centre, core accounts spending on average at
    least `min_concentration` of their prompts on it, coordination at least `min_coordination`,
    and an overall score (0.2 content + 0.3 concentration + 0.5 coordination, content being
    narrowness scaled down by template-ness) of at least `min_score`."""

    def __init__(self, min_accounts: int = 8, min_narrowness: float = 0.8,
                 min_concentration: float = 0.5, min_coordination: float = 0.5,
                 min_score: float = 0.6, min_member_share: float = 0.3,
                 template_jaccard: float = 0.5, new_key_ms: int = 2 * DAY_MS,
                 max_timing_accounts: int = 300, max_text_samples: int = 60,
                 weights: CoordinationWeights | None = None) -> None:
        self.min_accounts = min_accounts
        self.min_narrowness = min_narrowness
        self.min_concentration = min_concentration
        self.min_coordination = min_coordination
        self.min_score = min_score
        self.min_member_share = min_member_share
        self.template_jaccard = template_jaccard
        self.new_key_ms = new_key_ms
        self.max_timing_accounts = max_timing_accounts
        self.max_text_samples = max_text_samples
        self.weights = weights or CoordinationWeights()

    def judge(self, snapshot: ClusterSnapshot, account_activity: Mapping[str, int], *,
              key_first_seen_ms: Mapping[str, int] | None = None,
              census: Census | None = None) -> CampaignFinding | None:
        """The finding when the cluster is a coordinated campaign, else None.

        `account_activity`: prompts each account sent in the window over all clusters (an
        account missing from it counts as sending nothing elsewhere). `key_first_seen_ms`: when
        each API key was first seen. `census`: window-wide popularity of texts, ranges and user
        agents; without it, popularity is measured inside the cluster only.
        """
        return self.assess(snapshot, account_activity, key_first_seen_ms=key_first_seen_ms,
                           census=census).finding

    def assess(self, snapshot: ClusterSnapshot, account_activity: Mapping[str, int], *,
               key_first_seen_ms: Mapping[str, int] | None = None,
               census: Census | None = None) -> CampaignAssessment:
        shares = {account: events / max(account_activity.get(account, events), events)
                  for account, events in snapshot.accounts.items()}
        core = sorted(a for a, share in shares.items() if share >= self.min_member_share)
        core_set = set(core)
        points = [p for p in snapshot.members if p.account_id in core_set]
        if len(points) < 2:
            points = list(snapshot.members)
        vectors = _unit_rows(np.stack([p.vector for p in points])) if points \
            else np.zeros((0, len(snapshot.centroid)))
        centre = _unit(vectors.sum(axis=0)) if len(vectors) else snapshot.centroid
        narrowness = float(np.mean(vectors @ centre)) if len(vectors) else 0.0
        pairwise = _mean_pairwise(vectors)

        originality = self._originality(points, snapshot, census)
        template_share = self._template_share(points)
        popularity = max(template_share, 1.0 - originality)
        content = narrowness * (1.0 - popularity)
        concentration = float(np.mean([shares[a] for a in core])) if core else 0.0

        timing = self._timing_sync(core, snapshot)
        networks, shared_ranges = _link_strength(
            core, {a: {network_range(ip) for ip in snapshot.account_ips.get(a, ())}
                   for a in core},
            census.network_accounts if census else None, snapshot.account_ips, network_range)
        agents, _ = _link_strength(
            core, {a: set(snapshot.account_user_agents.get(a, ())) for a in core},
            census.user_agent_accounts if census else None, snapshot.account_user_agents, None)
        new_keys = self._new_key_share(core, snapshot, key_first_seen_ms)
        w = self.weights
        coordination = (w.timing * timing + w.networks * networks + w.new_keys * new_keys
                        + w.user_agents * agents) / (w.timing + w.networks + w.new_keys
                                                     + w.user_agents)
        score = 0.2 * content + 0.3 * concentration + 0.5 * coordination

        evidence: dict[str, Any] = {
            "core_accounts": len(core), "cluster_accounts": len(snapshot.accounts),
            "cluster_size": snapshot.size, "narrowness": _r(narrowness),
            "pairwise_similarity": _r(pairwise), "originality": _r(originality),
            "template_share": _r(template_share), "popularity": _r(popularity),
            "content": _r(content), "concentration": _r(concentration),
            "timing_sync": _r(timing), "timing_bin_s": snapshot.bin_ms // 1000,
            "shared_networks": _r(networks), "network_ranges": shared_ranges[:20],
            "shared_user_agents": _r(agents), "new_key_share": _r(new_keys),
            "new_keys_known": key_first_seen_ms is not None,
            "coordination": _r(coordination), "score": _r(score),
        }
        failed = tuple(name for name, ok in (
            ("accounts", len(core) >= self.min_accounts),
            ("narrowness", narrowness >= self.min_narrowness),
            ("concentration", concentration >= self.min_concentration),
            ("coordination", coordination >= self.min_coordination),
            ("score", score >= self.min_score),
        ) if not ok)
        reasons = self._reasons(evidence, snapshot)
        finding = None
        if not failed:
            finding = self._finding(snapshot, core, points, centre, _r(score), evidence, reasons)
        return CampaignAssessment(snapshot.cluster_id, evidence, reasons, failed, finding)

    def _originality(self, points: list[ClusterPoint], snapshot: ClusterSnapshot,
                     census: Census | None) -> float:
        if not points:
            return 1.0
        text_accounts = census.text_accounts if census else snapshot.text_accounts
        # Near duplicates reuse one vector, so identical vectors mark copies the text key misses.
        copies: dict[bytes, set[str]] = {}
        for point in snapshot.members:
            copies.setdefault(np.asarray(point.vector).tobytes(), set()).add(point.account_id)
        weights = []
        for point in points:
            users = max(text_accounts.get(point.text_key, 1),
                        len(copies.get(np.asarray(point.vector).tobytes(), ())), 1)
            weights.append(1.0 / math.log2(1.0 + users))
        return float(np.mean(weights))

    def _template_share(self, points: list[ClusterPoint]) -> float:
        """Share of sample pairs (from different accounts) that share most of their words: the
        mark of a template with slots filled in, whereas paraphrases reword the claim."""
        recent = sorted(points, key=lambda p: (p.ts_ms, p.event_id))[-self.max_text_samples:]
        words = [(p.account_id, set(normalise(p.prompt_sample).split())) for p in recent]
        pairs = similar = 0
        for i, (account_i, words_i) in enumerate(words):
            for account_j, words_j in words[i + 1:]:
                if account_i == account_j or not words_i or not words_j:
                    continue
                pairs += 1
                overlap = len(words_i & words_j) / len(words_i | words_j)
                similar += overlap >= self.template_jaccard
        return similar / pairs if pairs else 0.0

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

    def _new_key_share(self, core: list[str], snapshot: ClusterSnapshot,
                       first_seen: Mapping[str, int] | None) -> float:
        if not core or first_seen is None:
            return 0.0
        since = snapshot.first_seen_ms - self.new_key_ms
        new = sum(any(first_seen.get(key, since - 1) >= since
                      for key in snapshot.account_keys.get(account, ()))
                  for account in core)
        return new / len(core)

    def _reasons(self, e: Mapping[str, Any], snapshot: ClusterSnapshot) -> tuple[str, ...]:
        reasons = [
            f"{e['core_accounts']} accounts spend on average {e['concentration']:.0%} of their "
            f"prompts on this narrative ({e['cluster_accounts']} accounts touched it)",
            f"prompts are {e['narrowness']:.2f} similar to the narrative's centre "
            f"({e['popularity']:.0%} of it is shared template or copied text)",
        ]
        if e["timing_sync"] >= 0.3:
            reasons.append(f"the accounts act in the same {e['timing_bin_s']} s windows "
                           f"(synchrony {e['timing_sync']:.2f}, 0 = chance)")
        if e["shared_networks"] >= 0.3:
            reasons.append(f"{e['shared_networks']:.0%} of them share network ranges with each "
                           f"other: {', '.join(e['network_ranges'][:5])}")
        if e["shared_user_agents"] >= 0.3:
            reasons.append(f"{e['shared_user_agents']:.0%} of them share uncommon user agents")
        if e["new_key_share"] >= 0.3:
            reasons.append(f"{e['new_key_share']:.0%} of them use API keys first seen at most "
                           f"{self.new_key_ms // 3_600_000} h before the narrative started")
        reasons.append(f"coordination {e['coordination']:.2f}, campaign score {e['score']:.2f}")
        return tuple(reasons)

    def _finding(self, snapshot: ClusterSnapshot, core: list[str], points: list[ClusterPoint],
                 centre: np.ndarray, score: float, evidence: Mapping[str, Any],
                 reasons: tuple[str, ...]) -> CampaignFinding:
        ranked = sorted(points, key=lambda p: (-float(_unit(np.asarray(p.vector)) @ centre),
                                               p.event_id))
        samples: list[str] = []
        texts: set[str] = set()
        for point in ranked:
            if point.text_key not in texts:
                texts.add(point.text_key)
                samples.append(point.prompt_sample)
        return CampaignFinding(
            campaign_id=snapshot.cluster_id, score=score, accounts=tuple(core),
            api_keys=_union(snapshot.account_keys, core), ips=_union(snapshot.account_ips, core),
            first_seen_ms=snapshot.first_seen_ms, last_seen_ms=snapshot.last_seen_ms,
            size=sum(snapshot.accounts[a] for a in core), sample_prompts=tuple(samples[:5]),
            label_terms=label_terms(samples), evidence=evidence, reasons=reasons,
        )


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
                   transform: Callable[[str], str] | None) -> tuple[float, list[str]]:
    """Mean over core accounts of how exclusively they share an item (range, user agent) with
    other core accounts: core users of the item / all users of it. An SDK's default user agent
    or a mobile carrier's range is shared by many, so sharing it says little."""
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
    shared = sorted((i for i, n in core_users.items() if n >= 2),
                    key=lambda i: (-core_users[i], i))
    return float(np.mean(strengths)), shared


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
