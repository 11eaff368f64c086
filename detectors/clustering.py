"""Streaming clustering of prompt vectors over a sliding event-time window.

Each point joins the nearest cluster centre when it is close enough, or founds a cluster. A
cluster keeps exact counts (events, accounts, keys, addresses, user agents, texts) in time bins
of `bin_ms`, so expiry drops whole bins and memory follows the number of distinct entities, not
of events; it keeps only its `max_members` most recent points in full (vectors, samples), which
is what `refine` and the campaign judge look at.

Cluster ids come from the founding point's event id, so replaying the same events gives the same
ids; a merge keeps the older id. Which clusters exist when depends on when they were refined
(merged, split), which depends on batching; so each cluster also keeps its anchor, its earliest
point, and a campaign is named after the earliest anchor of its clusters: the operation's first
post, whichever clusters it went through.
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from sklearn.cluster import AgglomerativeClustering, KMeans
from sklearn.metrics import silhouette_score

from detectors.network import network_range

_Identity = tuple[str, str, str, str]  # account, api key, ip, user agent
T = TypeVar("T")
# Cosine distance below which two members are copies of one text (float noise apart).
_COPY_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True, eq=False)
class ClusterPoint:
    """One embedded prompt. `vector` is unit-norm; `prompt_sample` is already redacted;
    `user_agent` is "" when the event had none."""

    event_id: str
    ts_ms: int
    vector: np.ndarray
    account_id: str
    api_key_id: str
    ip: str
    user_agent: str
    prompt_sample: str
    text_key: str
    # The wrapper the payload came in ("Write a tweet saying that {}"), redacted, and its key;
    # empty when the prompt is its own narrative.
    wrapper_key: str = ""
    wrapper_sample: str = ""
    language: str = "und"  # of the payload, when the model embedded it
    disguised: bool = False  # look-alike letters, invisible characters, letters spaced apart
    intent: str = ""  # what the wrapper asks for ("publish", "other"); "" with no payload


@dataclass(frozen=True, slots=True, eq=False)
class ClusterSnapshot:
    """What the campaign judge sees of one cluster. Counts are exact for the window (to bin
    granularity); `members` are the most recent points only."""

    cluster_id: str
    first_seen_ms: int
    last_seen_ms: int
    size: int
    window_ms: int
    bin_ms: int
    centroid: np.ndarray
    accounts: Mapping[str, int]
    account_bins: Mapping[str, frozenset[int]]
    account_keys: Mapping[str, frozenset[str]]
    account_ips: Mapping[str, frozenset[str]]
    account_user_agents: Mapping[str, frozenset[str]]
    text_accounts: Mapping[str, int]
    account_texts: Mapping[str, frozenset[str]]
    members: tuple[ClusterPoint, ...]
    anchor: tuple[int, str]  # the earliest point ever counted: (event time, event id)
    space: str = ""


def merge_snapshots(snapshots: Sequence[ClusterSnapshot]) -> ClusterSnapshot:
    """One snapshot of linked clusters, named after the oldest: counts add up, per-account sets
    unite. The centroid is the size-weighted mean, meaningful only within one vector space."""
    if len(snapshots) == 1:
        return snapshots[0]
    ordered = sorted(snapshots, key=lambda s: (s.first_seen_ms, s.cluster_id))
    first = ordered[0]
    accounts: Counter[str] = Counter()
    texts: Counter[str] = Counter()
    for snapshot in ordered:
        accounts.update(snapshot.accounts)
        texts.update(snapshot.text_accounts)
    centroid = sum((s.size * np.asarray(s.centroid, dtype=np.float64) for s in ordered
                    if s.space == first.space), np.zeros(len(first.centroid)))
    return ClusterSnapshot(
        cluster_id=first.cluster_id, first_seen_ms=first.first_seen_ms,
        last_seen_ms=max(s.last_seen_ms for s in ordered), size=sum(s.size for s in ordered),
        window_ms=first.window_ms, bin_ms=first.bin_ms,
        centroid=_unit(centroid).astype(np.float32), accounts=dict(accounts),
        account_bins=_united(s.account_bins for s in ordered),
        account_keys=_united(s.account_keys for s in ordered),
        account_ips=_united(s.account_ips for s in ordered),
        account_user_agents=_united(s.account_user_agents for s in ordered),
        text_accounts=dict(texts), account_texts=_united(s.account_texts for s in ordered),
        members=tuple(p for s in ordered for p in s.members), space=first.space,
        anchor=min(s.anchor for s in ordered))


@dataclass(frozen=True, slots=True, eq=False)
class ClusterSummary:
    """The little of a cluster that linking needs: who posts in it and where its centre is."""

    cluster_id: str
    first_seen_ms: int
    space: str
    size: int
    accounts: frozenset[str]
    centroid: np.ndarray


@dataclass(frozen=True, slots=True)
class Census:
    """Window-wide counts over every cluster of this clusterer: how common a text, a network
    range or a user agent is, so that sharing it can be judged against chance."""

    account_events: Mapping[str, int]
    text_accounts: Mapping[str, int]
    network_accounts: Mapping[str, int]
    user_agent_accounts: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class RefineResult:
    merged: tuple[tuple[str, str], ...] = ()  # (absorbed id, surviving id)
    split: tuple[tuple[str, str], ...] = ()  # (parent id, new id)


def cluster_id_for(event_id: str) -> str:
    return "cl-" + hashlib.blake2b(event_id.encode("utf-8"), digest_size=8).hexdigest()


def campaign_id_for(snapshot: ClusterSnapshot) -> str:
    """A linked group's name: its anchor's, the same however its points were clustered."""
    return cluster_id_for(snapshot.anchor[1])


@dataclass
class _Tally:
    """Exact counts of a set of points: of one time bin, or of a whole cluster."""

    count: int = 0
    vector_sum: np.ndarray | None = None
    identities: Counter[_Identity] = field(default_factory=Counter)
    texts: Counter[tuple[str, str]] = field(default_factory=Counter)  # text key, account

    def add(self, point: ClusterPoint, vector: np.ndarray, sign: int = 1) -> None:
        if self.vector_sum is None:
            self.vector_sum = np.zeros(vector.shape, dtype=np.float64)
        self.count += sign
        self.vector_sum += sign * vector
        identity = (point.account_id, point.api_key_id, point.ip, point.user_agent)
        text = (point.text_key, point.account_id)
        self.identities[identity] += sign
        self.texts[text] += sign
        if self.identities[identity] <= 0:
            del self.identities[identity]
        if self.texts[text] <= 0:
            del self.texts[text]

    def update(self, other: _Tally, sign: int = 1) -> None:
        if other.vector_sum is not None:
            if self.vector_sum is None:
                self.vector_sum = np.zeros_like(other.vector_sum)
            self.vector_sum += sign * other.vector_sum
        self.count += sign * other.count
        if sign > 0:
            self.identities.update(other.identities)
            self.texts.update(other.texts)
        else:
            self.identities.subtract(other.identities)
            self.texts.subtract(other.texts)
            self.identities = +self.identities
            self.texts = +self.texts


@dataclass
class _Cluster:
    cluster_id: str
    # The founding point's time. It never moves (not on expiry, not for a straggler older than
    # the founder), which keeps the campaign's alert id stable.
    first_seen_ms: int
    last_seen_ms: int
    recent: deque[ClusterPoint]
    # The earliest point ever counted (event time, event id): unlike the founder, the same
    # whatever order the points came in. Kept past expiry, like `first_seen_ms`.
    anchor: tuple[int, str]
    total: _Tally = field(default_factory=_Tally)
    bins: dict[int, _Tally] = field(default_factory=dict)
    row: int = -1
    added: int = 0  # points ever added: a split is re-checked after enough new ones
    checked_at: int = 0

    def centroid(self) -> np.ndarray:
        assert self.total.vector_sum is not None
        return _unit(self.total.vector_sum)

    def add(self, point: ClusterPoint, vector: np.ndarray, index: int, sign: int = 1) -> None:
        """Count (sign 1) or un-count (sign -1) one point, in the bin `index`."""
        bin_ = self.bins.setdefault(index, _Tally())
        bin_.add(point, vector, sign)
        self.total.add(point, vector, sign)
        if sign > 0:
            self.last_seen_ms = max(self.last_seen_ms, point.ts_ms)
            self.anchor = min(self.anchor, (point.ts_ms, point.event_id))
            self.added += 1
        if bin_.count <= 0:
            del self.bins[index]

    def drop_bin(self, index: int) -> None:
        self.total.update(self.bins.pop(index), sign=-1)

    def absorb(self, other: _Cluster, max_members: int) -> None:
        for index, theirs in other.bins.items():
            self.bins.setdefault(index, _Tally()).update(theirs)
        self.total.update(other.total)
        self.last_seen_ms = max(self.last_seen_ms, other.last_seen_ms)
        self.anchor = min(self.anchor, other.anchor)
        self.added += other.added
        merged = sorted([*self.recent, *other.recent], key=lambda p: (p.ts_ms, p.event_id))
        self.recent = deque(merged[-max_members:], maxlen=max_members)


class OnlineClusterer:
    """Leader clustering by cosine to cluster centres, with periodic `refine` (merge and split).

    `similarity_threshold` decides when a point joins a cluster; `merge_threshold` (higher, so a
    split is never undone by the next merge) when two clusters' centres are the same narrative.
    Beyond `max_clusters` the stalest tenth is evicted, singletons first.
    """

    def __init__(self, window_ms: int, similarity_threshold: float = 0.75, space: str = "",
                 max_clusters: int = 5_000, max_members: int = 200, bin_ms: int = 60_000,
                 merge_threshold: float = 0.85, merge_candidates: int = 1_000,
                 split_min_members: int = 20, split_min_part: int = 5,
                 split_min_silhouette: float = 0.3) -> None:
        if merge_threshold < similarity_threshold:
            raise ValueError("merge_threshold must not be below similarity_threshold")
        self.window_ms = window_ms
        self.similarity_threshold = similarity_threshold
        self.space = space
        self.max_clusters = max_clusters
        self.max_members = max_members
        self.bin_ms = bin_ms
        self.merge_threshold = merge_threshold
        self.merge_candidates = merge_candidates
        self.split_min_members = split_min_members
        self.split_min_part = split_min_part
        self.split_min_silhouette = split_min_silhouette
        self._clusters: dict[str, _Cluster] = {}
        self._matrix: np.ndarray | None = None
        self._row_ids: list[str] = []
        self._seen: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._redirects: dict[str, tuple[str, int]] = {}
        self._horizon_ms = 0

    def add(self, point: ClusterPoint) -> str | None:
        """The id of the point's cluster; a redelivered event gets its first answer and changes
        nothing; None for an event older than the window already expired."""
        seen = self._seen.get(point.event_id)
        if seen is not None:
            return self._resolve(seen[1])
        index = point.ts_ms // self.bin_ms
        if (index + 1) * self.bin_ms <= self._horizon_ms:
            return None
        vector = _unit(np.asarray(point.vector, dtype=np.float64))
        cluster = self._nearest(vector)
        if cluster is None:
            cluster = self._found(point)
        cluster.add(point, vector, index)
        cluster.recent.append(point)
        self._set_row(cluster)
        self._seen[point.event_id] = (point.ts_ms, cluster.cluster_id)
        return cluster.cluster_id

    def expire(self, now_ms: int) -> tuple[str, ...]:
        """Forget what is older than the window; return the ids of clusters that emptied."""
        horizon = now_ms - self.window_ms
        if horizon <= self._horizon_ms:
            return ()
        self._horizon_ms = horizon
        removed = []
        for cluster in list(self._clusters.values()):
            old = [i for i in cluster.bins if (i + 1) * self.bin_ms <= horizon]
            if not old:
                continue
            for index in old:
                cluster.drop_bin(index)
            cluster.recent = deque(
                (p for p in cluster.recent if p.ts_ms // self.bin_ms in cluster.bins),
                maxlen=self.max_members)
            if cluster.total.count <= 0:
                self._remove(cluster.cluster_id)
                removed.append(cluster.cluster_id)
            else:
                self._set_row(cluster)
        while self._seen:
            ts_ms, _ = next(iter(self._seen.values()))
            if (ts_ms // self.bin_ms + 1) * self.bin_ms > horizon:
                break
            self._seen.popitem(last=False)
        self._redirects = {k: v for k, v in self._redirects.items()
                           if (v[1] // self.bin_ms + 1) * self.bin_ms > horizon}
        return tuple(removed)

    def refine(self) -> RefineResult:
        """Merge clusters whose centres are close (older id survives), then split clusters whose
        recent members form two well-separated groups (the bigger part keeps the id)."""
        merged = self._merge()
        absorbed_into = {survivor for _, survivor in merged}
        split = []
        for cluster in list(self._clusters.values()):
            if cluster.cluster_id not in absorbed_into:
                child = self._split(cluster)
                if child is not None:
                    split.append((cluster.cluster_id, child))
        return RefineResult(tuple(merged), tuple(split))

    def cluster_of(self, event_id: str) -> str | None:
        seen = self._seen.get(event_id)
        return self._resolve(seen[1]) if seen else None

    def size(self, cluster_id: str) -> int:
        """Points in the cluster's window: cheap, to skip judging a cluster that has not grown."""
        return self._clusters[self._resolve(cluster_id)].total.count

    def cluster_ids(self, min_accounts: int = 1) -> list[str]:
        return [cid for cid, c in self._clusters.items()
                if len({identity[0] for identity in c.total.identities}) >= min_accounts]

    def summary(self, cluster_id: str) -> ClusterSummary:
        cluster = self._clusters[self._resolve(cluster_id)]
        return ClusterSummary(cluster.cluster_id, cluster.first_seen_ms, self.space,
                              cluster.total.count,
                              frozenset(identity[0] for identity in cluster.total.identities),
                              cluster.centroid())

    def account_posts(self, cluster_id: str) -> Counter[str]:
        """Points per account in the cluster's window: cheap, to skip judging a cluster that
        cannot be a campaign."""
        posts: Counter[str] = Counter()
        cluster = self._clusters[self._resolve(cluster_id)]
        for (account, _, _, _), n in cluster.total.identities.items():
            posts[account] += n
        return posts

    def snapshot(self, cluster_id: str) -> ClusterSnapshot:
        cluster = self._clusters[self._resolve(cluster_id)]
        accounts: Counter[str] = Counter()
        keys: dict[str, set[str]] = {}
        ips: dict[str, set[str]] = {}
        agents: dict[str, set[str]] = {}
        for (account, key, ip, agent), n in cluster.total.identities.items():
            accounts[account] += n
            keys.setdefault(account, set()).add(key)
            ips.setdefault(account, set()).add(ip)
            if agent:
                agents.setdefault(account, set()).add(agent)
        bins: dict[str, set[int]] = {}
        for index, bin_ in cluster.bins.items():
            for identity in bin_.identities:
                bins.setdefault(identity[0], set()).add(index)
        texts: Counter[str] = Counter(text for text, _ in cluster.total.texts)
        account_texts: dict[str, set[str]] = {}
        for text, account in cluster.total.texts:
            account_texts.setdefault(account, set()).add(text)
        return ClusterSnapshot(
            cluster_id=cluster.cluster_id, first_seen_ms=cluster.first_seen_ms,
            last_seen_ms=cluster.last_seen_ms, size=cluster.total.count, window_ms=self.window_ms,
            bin_ms=self.bin_ms, centroid=cluster.centroid().astype(np.float32),
            accounts=dict(accounts), account_bins=_frozen(bins), account_keys=_frozen(keys),
            account_ips=_frozen(ips), account_user_agents=_frozen(agents),
            text_accounts=dict(texts), account_texts=_frozen(account_texts),
            members=tuple(cluster.recent), space=self.space, anchor=cluster.anchor,
        )

    def census(self) -> Census:
        return census([self])

    def __len__(self) -> int:
        return len(self._clusters)

    def __contains__(self, cluster_id: object) -> bool:
        return cluster_id in self._clusters

    def _resolve(self, cluster_id: str) -> str:
        while cluster_id in self._redirects:
            cluster_id = self._redirects[cluster_id][0]
        return cluster_id

    def _nearest(self, vector: np.ndarray) -> _Cluster | None:
        if self._matrix is None or not self._row_ids:
            return None
        similarities = self._matrix[:len(self._row_ids)] @ vector.astype(np.float32)
        best = int(np.argmax(similarities))
        if similarities[best] < self.similarity_threshold:
            return None
        return self._clusters[self._row_ids[best]]

    def _found(self, point: ClusterPoint, evict: bool = True, parent: str = "") -> _Cluster:
        if evict and len(self._clusters) >= self.max_clusters:
            self._evict()
        cluster_id = cluster_id_for(point.event_id)
        if cluster_id in self._clusters:  # a part split off with its parent's founder
            cluster_id = cluster_id_for(f"{parent}/{point.event_id}")
        self._redirects.pop(cluster_id, None)
        cluster = _Cluster(cluster_id, point.ts_ms, point.ts_ms,
                           deque(maxlen=self.max_members), (point.ts_ms, point.event_id))
        self._clusters[cluster_id] = cluster
        return cluster

    def _evict(self) -> None:
        clusters = list(self._clusters.values())
        order = sorted(clusters, key=lambda c: (c.total.count > 1, c.last_seen_ms, c.cluster_id))
        for cluster in order[:max(1, len(clusters) // 10)]:
            self._remove(cluster.cluster_id)

    def _set_row(self, cluster: _Cluster) -> None:
        centroid = cluster.centroid().astype(np.float32)
        if cluster.row < 0:
            if self._matrix is None:
                self._matrix = np.zeros((64, centroid.shape[0]), dtype=np.float32)
            elif len(self._row_ids) == self._matrix.shape[0]:
                self._matrix = np.concatenate([self._matrix, np.zeros_like(self._matrix)])
            cluster.row = len(self._row_ids)
            self._row_ids.append(cluster.cluster_id)
        assert self._matrix is not None
        self._matrix[cluster.row] = centroid

    def _remove(self, cluster_id: str) -> _Cluster:
        cluster = self._clusters.pop(cluster_id)
        if cluster.row >= 0:
            assert self._matrix is not None
            last = len(self._row_ids) - 1
            if cluster.row != last:
                moved = self._clusters[self._row_ids[last]]
                self._matrix[cluster.row] = self._matrix[last]
                self._row_ids[cluster.row] = moved.cluster_id
                moved.row = cluster.row
            self._row_ids.pop()
        return cluster

    def _merge(self) -> list[tuple[str, str]]:
        candidates = sorted((c for c in self._clusters.values() if c.total.count > 1),
                            key=lambda c: (-c.total.count, c.cluster_id))[:self.merge_candidates]
        if len(candidates) < 2:
            return []
        centroids = np.stack([c.centroid() for c in candidates])
        labels = AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage="complete",
            distance_threshold=1.0 - self.merge_threshold,
        ).fit_predict(centroids)
        groups: dict[int, list[_Cluster]] = {}
        for label, cluster in zip(labels, candidates, strict=True):
            groups.setdefault(int(label), []).append(cluster)
        merged = []
        for group in groups.values():
            if len(group) < 2:
                continue
            group.sort(key=lambda c: (c.first_seen_ms, c.cluster_id))
            survivor = group[0]
            for other in group[1:]:
                self._remove(other.cluster_id)
                survivor.absorb(other, self.max_members)
                self._redirects[other.cluster_id] = (survivor.cluster_id, survivor.last_seen_ms)
                merged.append((other.cluster_id, survivor.cluster_id))
            self._set_row(survivor)
        return merged

    def _split(self, cluster: _Cluster) -> str | None:
        members = list(cluster.recent)
        fresh = cluster.added - cluster.checked_at
        if len(members) < self.split_min_members or \
                (cluster.checked_at and fresh < max(5, len(members) // 4)):
            return None
        cluster.checked_at = cluster.added
        vectors = np.stack([_unit(np.asarray(p.vector, dtype=np.float64)) for p in members])
        # Seeding with two far-apart members finds two real groups in one run, deterministically.
        first = int(np.argmin(vectors @ _unit(vectors.sum(axis=0))))
        second = int(np.argmin(vectors @ vectors[first]))
        # Copies of one text share a vector, up to float noise (a text encoded in another
        # batch differs in its last bits): if even the farthest member is such a copy, there
        # is nothing to split, and KMeans would find one distinct cluster and warn.
        if float(vectors[first] @ vectors[second]) > 1.0 - _COPY_TOLERANCE:
            return None
        labels = KMeans(n_clusters=2, init=vectors[[first, second]], n_init=1,
                        random_state=0).fit_predict(vectors)
        sizes = np.bincount(labels, minlength=2)
        if sizes.min() < self.split_min_part:
            return None
        centres = [_unit(vectors[labels == k].sum(axis=0)) for k in (0, 1)]
        if float(centres[0] @ centres[1]) >= self.similarity_threshold:
            return None
        if silhouette_score(vectors, labels, metric="cosine") < self.split_min_silhouette:
            return None
        minority = int(np.argmin(sizes)) if sizes[0] != sizes[1] else 1
        moving = [p for p, label in zip(members, labels, strict=True) if label == minority]
        founder = min(moving, key=lambda p: (p.ts_ms, p.event_id))
        child = self._found(founder, evict=False, parent=cluster.cluster_id)
        child.first_seen_ms = founder.ts_ms
        moved_ids = {p.event_id for p in moving}
        for point in moving:
            vector = _unit(np.asarray(point.vector, dtype=np.float64))
            cluster.add(point, vector, point.ts_ms // self.bin_ms, sign=-1)
            child.add(point, vector, point.ts_ms // self.bin_ms)
            child.recent.append(point)
            if point.event_id in self._seen:
                self._seen[point.event_id] = (point.ts_ms, child.cluster_id)
        cluster.recent = deque((p for p in members if p.event_id not in moved_ids),
                               maxlen=self.max_members)
        if cluster.anchor[1] in moved_ids:  # its earliest point went: the earliest it keeps
            cluster.anchor = min((p.ts_ms, p.event_id) for p in cluster.recent)
        child.checked_at = child.added
        self._set_row(cluster)
        self._set_row(child)
        return child.cluster_id


def census(clusterers: Iterable[OnlineClusterer]) -> Census:
    """Window-wide popularity over every cluster of the given clusterers (vector spaces): an
    account counted in two spaces is one account."""
    events: Counter[str] = Counter()
    texts: dict[str, set[str]] = {}
    networks: dict[str, set[str]] = {}
    agents: dict[str, set[str]] = {}
    for clusterer in clusterers:
        for cluster in clusterer._clusters.values():
            for (account, _, ip, agent), n in cluster.total.identities.items():
                events[account] += n
                networks.setdefault(network_range(ip), set()).add(account)
                if agent:
                    agents.setdefault(agent, set()).add(account)
            for text, account in cluster.total.texts:
                texts.setdefault(text, set()).add(account)
    return Census(dict(events), _sizes(texts), _sizes(networks), _sizes(agents))


def _united(maps: Iterable[Mapping[str, frozenset[T]]]) -> dict[str, frozenset[T]]:
    out: dict[str, set[T]] = {}
    for mapping in maps:
        for key, values in mapping.items():
            out.setdefault(key, set()).update(values)
    return _frozen(out)


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0.0 else vector


def _frozen(sets: Mapping[str, set[T]]) -> dict[str, frozenset[T]]:
    return {k: frozenset(v) for k, v in sets.items()}


def _sizes(sets: Mapping[str, set[str]]) -> dict[str, int]:
    return {k: len(v) for k, v in sets.items()}
