"""Leaked API keys: one key suddenly used from many more networks and clients than its own
history says it ever is.

The comparison is against the key's own baseline, not a global threshold, because what is
normal differs by orders of magnitude between keys: a large company's key used from a few
offices all day is normal, the same spread on a key that lived on one server is a leak.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field

from detectors.alerts import Alert, Entity
from detectors.events import UsageEvent
from detectors.incidents import Incident
from detectors.network import network_range
from detectors.windows import drop_idle

RULE_ID = "leaked_key.network_spread"
DEFAULT_SEVERITY = "high"


def _touch(last_seen: dict[str, int], key: str, ts_ms: int, cap: int) -> None:
    """Record `key` as seen at `ts_ms`, keeping the dict ordered by update (oldest first)."""
    previous = last_seen.pop(key, None)
    last_seen[key] = ts_ms if previous is None else max(previous, ts_ms)
    while len(last_seen) > cap:
        del last_seen[next(iter(last_seen))]


def _expire(last_seen: dict[str, int], horizon_ms: int) -> None:
    # Ordered by update, so expired entries sit at the front: pruning is amortised O(1).
    while last_seen:
        oldest = next(iter(last_seen))
        if last_seen[oldest] >= horizon_ms:
            return
        del last_seen[oldest]


@dataclass
class KeyState:
    """What one key's history and current window look like; plain data (detectors/state_codec)."""

    latest_ms: int = 0
    account_id: str | None = None
    # Distinct values seen in the sliding window, value -> last seen (event time). Sets of
    # distinct values rather than a list of events: redelivered events change nothing, and
    # the state grows with the key's spread, not with its request rate.
    networks: dict[str, int] = field(default_factory=dict)
    ips: dict[str, int] = field(default_factory=dict)
    user_agents: dict[str, int] = field(default_factory=dict)
    # Tumbling buckets of one window length feed the slowly moving baseline.
    bucket_start_ms: int | None = None
    bucket_networks: set[str] = field(default_factory=set)
    bucket_user_agents: set[str] = field(default_factory=set)
    baseline_networks: float = 0.0
    baseline_user_agents: float = 0.0
    history_windows: int = 0
    incident: Incident = field(default_factory=Incident)


@dataclass(frozen=True, slots=True)
class _Spread:
    networks: int
    ips: int
    user_agents: int
    network_threshold: float
    user_agent_threshold: float | None
    user_agents_jumped: bool


class LeakedKeyDetector:
    """Fires when a key's distinct networks in the window reach max(min_networks, factor x its
    baseline) and its distinct clients jump too (or the networks are very many anyway).

    State is per api_key_id (`self.keys`, which the caller may replace with any mutable
    mapping, e.g. a Faust table: each changed state is written back). The baseline is an EWMA
    of distinct networks / user agents per tumbling window in which the key was used; idle
    windows are skipped, so a key used only during office hours keeps its daytime baseline.
    While an incident is open the baseline learns only slowly, so an attack that lasts is not
    absorbed into "normal" before an analyst has looked at it. A key with too little history
    fires only on the very-many-networks path.
    """

    def __init__(self, window_ms: int = 600_000, min_networks: int = 8, factor: float = 4.0,
                 min_user_agents: int = 3, user_agent_factor: float = 3.0,
                 many_networks: int = 40, baseline_rate: float = 0.1,
                 incident_learning: float = 0.25, min_history_windows: int = 3,
                 max_tracked: int = 10_000, severity: str = DEFAULT_SEVERITY) -> None:
        self.window_ms = window_ms
        self.min_networks = min_networks
        self.factor = factor
        self.min_user_agents = min_user_agents
        self.user_agent_factor = user_agent_factor
        self.many_networks = many_networks
        self.baseline_rate = baseline_rate
        self.incident_learning = incident_learning
        self.min_history_windows = min_history_windows
        self.max_tracked = max_tracked
        self.severity = severity
        self.keys: MutableMapping[str, KeyState] = {}

    def observe(self, event: UsageEvent) -> list[Alert]:
        """Learn from one event and return the alerts it completes (usually none)."""
        if event.is_auth_failure:
            return []  # a rejected key is not a use of it; key enumeration is another detector
        state = self.keys.get(event.api_key_id) or KeyState()
        if event.ts_ms < state.latest_ms - self.window_ms:
            return []  # too late for the window
        alerts = self._learn(state, event)
        self.keys[event.api_key_id] = state
        return alerts

    def forget_idle(self, now_ms: int, idle_ms: int = 14 * 24 * 3600 * 1000) -> int:
        """Drop keys unused for `idle_ms`; return how many. The baseline is the point of the
        state, so the default keeps it for two weeks."""
        return drop_idle(self.keys, lambda s: s.latest_ms, now_ms - idle_ms)

    def _learn(self, state: KeyState, event: UsageEvent) -> list[Alert]:
        self._roll_bucket(state, event.ts_ms)
        network = network_range(event.ip)
        agent = event.user_agent or ""
        state.latest_ms = max(state.latest_ms, event.ts_ms)
        if event.account_id is not None:
            state.account_id = event.account_id
        for last_seen, value in ((state.networks, network), (state.ips, event.ip),
                                 (state.user_agents, agent)):
            _touch(last_seen, value, event.ts_ms, self.max_tracked)
            _expire(last_seen, state.latest_ms - self.window_ms)
        if len(state.bucket_networks) < self.max_tracked:
            state.bucket_networks.add(network)
        if len(state.bucket_user_agents) < self.max_tracked:
            state.bucket_user_agents.add(agent)
        return self._check(event.api_key_id, state)

    def _roll_bucket(self, state: KeyState, ts_ms: int) -> None:
        if state.bucket_start_ms is None:
            state.bucket_start_ms = ts_ms
            return
        if ts_ms < state.bucket_start_ms + self.window_ms:
            return
        rate = self.baseline_rate
        if state.incident.is_open:
            rate *= self.incident_learning
        if state.history_windows == 0:
            state.baseline_networks = float(len(state.bucket_networks))
            state.baseline_user_agents = float(len(state.bucket_user_agents))
        else:
            state.baseline_networks += rate * (len(state.bucket_networks)
                                               - state.baseline_networks)
            state.baseline_user_agents += rate * (len(state.bucket_user_agents)
                                                  - state.baseline_user_agents)
        state.history_windows += 1
        elapsed = (ts_ms - state.bucket_start_ms) // self.window_ms
        state.bucket_start_ms += elapsed * self.window_ms
        state.bucket_networks = set()
        state.bucket_user_agents = set()

    def _spread(self, state: KeyState) -> _Spread:
        networks, agents = len(state.networks), len(state.user_agents)
        if state.history_windows < self.min_history_windows:
            return _Spread(networks, len(state.ips), agents, float(self.many_networks), None,
                           False)
        network_threshold = max(float(self.min_networks),
                                self.factor * state.baseline_networks)
        agent_threshold = max(float(self.min_user_agents),
                              self.user_agent_factor * state.baseline_user_agents)
        return _Spread(networks, len(state.ips), agents, network_threshold, agent_threshold,
                       agents >= agent_threshold)

    def _check(self, key_id: str, state: KeyState) -> list[Alert]:
        # The spread has been normal for a whole window: the incident is over.
        state.incident.close_if_quiet(state.latest_ms, self.window_ms)
        spread = self._spread(state)
        if spread.networks < spread.network_threshold or not (
                spread.user_agents_jumped or spread.networks >= self.many_networks):
            return []
        if not state.incident.report(lambda: min(state.networks.values()), spread.networks,
                                     state.latest_ms):
            return []
        return [self._alert(key_id, state, spread)]

    def _alert(self, key_id: str, state: KeyState, spread: _Spread) -> Alert:
        assert state.incident.start_ms is not None
        has_history = spread.user_agent_threshold is not None
        reasons = [
            f"API key used from {spread.networks} networks within {self.window_ms // 1000} s"
            + (f", against a baseline of {state.baseline_networks:.1f} per window"
               if has_history else " (too little history for a baseline)"),
        ]
        if spread.user_agents_jumped:
            reasons.append(f"{spread.user_agents} distinct clients (user agents), against a "
                           f"baseline of {state.baseline_user_agents:.1f}")
        if spread.networks >= self.many_networks:
            reasons.append(f"at least {self.many_networks} networks at once")
        newest = sorted(state.networks, key=lambda n: state.networks[n], reverse=True)
        agents = sorted(state.user_agents, key=lambda a: state.user_agents[a], reverse=True)
        return Alert(
            rule_id=RULE_ID, severity=self.severity,
            score=min(1.0, spread.networks / (2 * spread.network_threshold)),
            entity=Entity("api_key", key_id), incident_start_ms=state.incident.start_ms,
            repeats=state.incident.repeats,
            window_start_ms=min(state.networks.values()), window_end_ms=state.latest_ms,
            reasons=tuple(reasons),
            evidence={
                "api_key_id": key_id, "account_id": state.account_id,
                "distinct_networks": spread.networks, "distinct_ips": spread.ips,
                "distinct_user_agents": spread.user_agents,
                "baseline_networks": round(state.baseline_networks, 2),
                "baseline_user_agents": round(state.baseline_user_agents, 2),
                "network_threshold": round(spread.network_threshold, 2),
                "history_windows": state.history_windows,
                "sample_networks": newest[:10],
                "sample_user_agents": [a[:200] for a in agents[:5]],
            },
            accounts=(state.account_id,) if state.account_id else (),
        )
