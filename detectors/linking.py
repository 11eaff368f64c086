"""Clusters of one operation, linked into one candidate campaign.

An operation's prompts land in several clusters: one per wrapper family whose payload could not
be cut out, one per rewording of the claim, some in the model's vector space and some in the
static one. What ties them together is who posts them: the same accounts, far beyond what
chance predicts for clusters of those sizes. Two clusters are linked when the accounts they
share would be very unlikely if their members had been drawn independently from the window's
active accounts (a hypergeometric tail, corrected for the number of pairs tried, since heavy
users touch many clusters and some pairs overlap by luck), and those shared accounts are either
most of the smaller cluster or carry the same narrative (centres close in one vector space).
Linked clusters are judged as one campaign.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detectors.clustering import ClusterSummary
from detectors.tails import hypergeometric_sf


@dataclass(frozen=True, slots=True)
class ClusterLinker:
    """`min_shared_accounts`: accounts two clusters must share; `max_p`: the chance of sharing
    that many among N active accounts, times the pairs tried, above which a pair is luck;
    `min_overlap`: shared share of the smaller cluster's accounts that links on accounts
    alone; `narrative_similarity`: centre cosine (same space) that links with fewer shared."""

    min_shared_accounts: int = 3
    max_p: float = 1e-4
    min_overlap: float = 0.5
    narrative_similarity: float = 0.7
    # An account spread over more clusters than this (a batch job, a heavy user) says nothing
    # about which of them belong together, and would cost pairs quadratic in its spread.
    max_clusters_per_account: int = 50

    def groups(self, clusters: Sequence[ClusterSummary],
               active_accounts: int) -> list[tuple[ClusterSummary, ...]]:
        """The clusters partitioned into linked groups (single linkage), oldest first."""
        ordered = sorted(clusters, key=lambda s: (s.first_seen_ms, s.cluster_id))
        parent = list(range(len(ordered)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        accounts = [s.accounts for s in ordered]
        owners: dict[str, list[int]] = {}
        for index, members in enumerate(accounts):
            for account in members:
                owners.setdefault(account, []).append(index)
        shared: dict[tuple[int, int], int] = {}
        for indices in owners.values():
            if len(indices) > self.max_clusters_per_account:
                continue
            for n, i in enumerate(indices):
                for j in indices[n + 1:]:
                    shared[i, j] = shared.get((i, j), 0) + 1
        candidates = sorted((pair, n) for pair, n in shared.items()
                            if n >= self.min_shared_accounts)
        population = max(active_accounts, *(len(a) for a in accounts), 1)
        for (i, j), count in candidates:
            if root(i) == root(j):
                continue  # linked already, through other pairs
            overlap = count / min(len(accounts[i]), len(accounts[j]))
            if overlap < self.min_overlap and not self._same_narrative(ordered[i], ordered[j]):
                continue
            # P(at least `count` shared) if j's members were drawn at random from everyone:
            # asked last, the dearest test (most pairs fail the one above).
            luck = hypergeometric_sf(count - 1, population, len(accounts[i]), len(accounts[j]))
            if luck * len(candidates) <= self.max_p:
                parent[root(j)] = root(i)
        groups: dict[int, list[ClusterSummary]] = {}
        for index, snapshot in enumerate(ordered):
            groups.setdefault(root(index), []).append(snapshot)
        return [tuple(group) for group in groups.values()]

    def _same_narrative(self, a: ClusterSummary, b: ClusterSummary) -> bool:
        if a.space != b.space:
            return False
        similarity = float(np.asarray(a.centroid, dtype=np.float64)
                           @ np.asarray(b.centroid, dtype=np.float64))
        return similarity >= self.narrative_similarity
