"""Simulated usage traffic: benign accounts with human pacing, plus labelled misuse.

Deterministic for a seed and a start time, so tests, the demo and `misuse eval` can replay the
same traffic. The labels name the misusing entities (see README, "Labels file").
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ENDPOINTS = ("/v1/chat/completions", "/v1/chat/completions", "/v1/completions", "/v1/embeddings")
MODELS = ("gpt-large", "gpt-small", "gpt-small", "gpt-mini")
USER_AGENTS = (
    "python-sdk/1.42.0", "python-sdk/1.40.2", "node-sdk/4.71.0", "curl/8.5.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "langchain/0.3.1 python-sdk/1.42.0", "go-client/0.9.1",
)
TASKS = (
    "Summarize this article about {topic} in three bullet points.",
    "Explain {topic} to a ten-year-old.",
    "Write a short poem about {topic}.",
    "What are the pros and cons of {topic}?",
    "Draft a polite email to my landlord about {topic}.",
    "Give me a study plan to learn {topic} in four weeks.",
    "Translate into French: 'I would like to know more about {topic}.'",
    "Write a Python function that helps with {topic}.",
    "Compare {topic} with its main alternatives in a table.",
    "List five interview questions about {topic}.",
    "Fix the grammar: 'me and him has been thinking about {topic} alot'",
    "What is the history of {topic}?",
    "Suggest a name for a startup working on {topic}.",
    "Outline a blog post on {topic} for beginners.",
)
TOPICS = (
    "sourdough baking", "kubernetes autoscaling", "the french revolution", "tax deductions",
    "marathon training", "quantum computing", "urban gardening", "rust lifetimes",
    "renewable energy storage", "the stock market", "sleep hygiene", "jazz improvisation",
    "machine learning ethics", "home espresso", "climate adaptation", "medieval castles",
    "SQL window functions", "remote team management", "bird migration", "electric bikes",
    "personal budgeting", "react hooks", "volcanoes", "chess openings", "dog training",
)


@dataclass(frozen=True, slots=True)
class Label:
    """One misusing entity: the scenario, what it is (account, api_key, ip, network, campaign
    member) and when its misuse started, in event time."""

    scenario: str
    rule: str
    entity_kind: str
    entity_id: str
    start_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "rule": self.rule, "entity_kind": self.entity_kind,
                "entity_id": self.entity_id, "start_ms": self.start_ms}


@dataclass
class Traffic:
    events: list[dict[str, Any]] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)


def _ip(rng: random.Random, network: tuple[int, int, int] | None = None) -> str:
    a, b, c = network or (rng.randint(11, 199), rng.randint(0, 255), rng.randint(0, 255))
    return f"{a}.{b}.{c}.{rng.randint(1, 254)}"


def _event_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class TrafficSimulator:
    def __init__(self, seed: int, start_ms: int) -> None:
        self.rng = random.Random(seed)
        self.start_ms = start_ms

    def benign_accounts(self, count: int, duration_ms: int) -> Iterator[dict[str, Any]]:
        """Humans: sessions of a few prompts, exponential pauses, the odd mistyped key."""
        rng = self.rng
        for index in range(count):
            account = f"acct-{index:05d}"
            keys = [f"key-{account}-{k}" for k in range(rng.randint(1, 2))]
            ip = _ip(rng)
            agent = rng.choice(USER_AGENTS)
            ts = self.start_ms + rng.randint(0, duration_ms // 3)
            mean_gap_ms = rng.uniform(20_000, 120_000)
            while ts < self.start_ms + duration_ms:
                status = 200 if rng.random() > 0.01 else rng.choice((400, 429, 401))
                event: dict[str, Any] = {
                    "event_id": _event_id(rng), "ts": ts, "account_id": account,
                    "org_id": f"org-{index // 5:04d}", "api_key_id": rng.choice(keys),
                    "ip": ip, "user_agent": agent, "endpoint": rng.choice(ENDPOINTS),
                    "model": rng.choice(MODELS), "status": status,
                    "prompt": rng.choice(TASKS).format(topic=rng.choice(TOPICS)),
                    "prompt_tokens": rng.randint(12, 400),
                    "completion_tokens": rng.randint(20, 800),
                    "latency_ms": round(rng.uniform(200, 4000), 1),
                }
                if status == 401:
                    event["account_id"] = None
                yield event
                ts += int(rng.expovariate(1 / mean_gap_ms)) + 1_000

    def credential_stuffing(self, attempts: int, offset_ms: int, rotate_ips: bool = False,
                            ) -> tuple[list[dict[str, Any]], list[Label]]:
        """One IP (or a /24 of them) trying leaked or guessed keys, a few of which work."""
        rng = self.rng
        network = (rng.randint(11, 199), rng.randint(0, 255), rng.randint(0, 255))
        fixed_ip = _ip(rng, network)
        start = self.start_ms + offset_ms
        ts = start
        events = []
        for _ in range(attempts):
            ip = _ip(rng, network) if rotate_ips else fixed_ip
            works = rng.random() < 0.03
            events.append({
                "event_id": _event_id(rng), "ts": ts,
                "account_id": f"acct-victim-{rng.randint(0, 999):03d}" if works else None,
                "api_key_id": f"key-guess-{rng.getrandbits(48):012x}", "ip": ip,
                "user_agent": "python-requests/2.32.3", "endpoint": "/v1/models",
                "status": 200 if works else 401, "latency_ms": round(rng.uniform(5, 40), 1),
            })
            ts += rng.randint(150, 1_500)
        entity = ("network", f"{network[0]}.{network[1]}.{network[2]}.0/24") if rotate_ips \
            else ("ip", fixed_ip)
        return events, [Label("credential_stuffing", "credential_stuffing", *entity, start)]


def simulate(seed: int, start_ms: int, duration_s: int, benign_accounts: int,
             stuffing_attacks: int = 1) -> Traffic:
    """The standard mix: benign accounts plus the misuse scenarios, in event-time order."""
    simulator = TrafficSimulator(seed, start_ms)
    duration_ms = duration_s * 1000
    streams: list[list[dict[str, Any]]] = [list(simulator.benign_accounts(benign_accounts,
                                                                          duration_ms))]
    traffic = Traffic()
    for attack in range(stuffing_attacks):
        events, labels = simulator.credential_stuffing(
            attempts=300, offset_ms=simulator.rng.randint(0, max(1, duration_ms // 2)),
            rotate_ips=attack % 2 == 1)
        streams.append(events)
        traffic.labels.extend(labels)
    for stream in streams:
        stream.sort(key=lambda e: e["ts"])
    traffic.events = list(heapq.merge(*streams, key=lambda e: e["ts"]))
    return traffic
