"""What every scenario shares: labels, addresses, ids and the usage event dict."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

Event = dict[str, Any]
Split = Literal["dev", "test", "all"]
SPLITS: tuple[Split, ...] = ("dev", "test", "all")
T = TypeVar("T")
MINUTE_MS = 60_000

ENDPOINTS = ("/v1/chat/completions", "/v1/chat/completions", "/v1/completions", "/v1/embeddings")
MODELS = ("gpt-large", "gpt-small", "gpt-small", "gpt-mini")
USER_AGENTS = (
    "python-sdk/1.42.0", "python-sdk/1.40.2", "node-sdk/4.71.0", "curl/8.5.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 Safari/605.1.15",
    "langchain/0.3.1 python-sdk/1.42.0", "go-client/0.9.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "node-sdk/4.68.1", "python-sdk/1.35.7", "java-client/2.3.0", "llamaindex/0.10.50",
)
Network = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class Label:
    """One misusing entity: the scenario, what it is (account, api_key, ip, network) and when
    its misuse started, in event time."""

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
    events: list[Event] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)


def split_pool(pool: Sequence[T], split: Split) -> tuple[T, ...]:
    """The development half (even positions) or the test half (odd positions) of a pool of
    claims, wrappers or templates; "all" is the whole pool.

    Thresholds are tuned on traffic drawn from the development half only; `misuse eval` on
    traffic from the test half then measures how well detection generalises to wordings it was
    never tuned on. Alternating positions keeps both halves as varied as the pool."""
    if split == "all":
        return tuple(pool)
    if split not in ("dev", "test"):
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    half = tuple(pool[0 if split == "dev" else 1::2])
    if not half:
        raise ValueError(f"the pool is too small to split: {len(pool)} item(s)")
    return half


def event_ts(event: Event) -> int:
    ts: int = event["ts"]
    return ts


def in_time_order(events: list[Event]) -> list[Event]:
    events.sort(key=event_ts)
    return events


def random_network(rng: random.Random) -> Network:
    return rng.randint(11, 199), rng.randint(0, 255), rng.randint(0, 255)


def ip_in(rng: random.Random, network: Network | None = None) -> str:
    a, b, c = network or random_network(rng)
    return f"{a}.{b}.{c}.{rng.randint(1, 254)}"


def cidr(network: Network) -> str:
    return f"{network[0]}.{network[1]}.{network[2]}.0/24"


def event_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def hex_id(rng: random.Random, digits: int = 8) -> str:
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


def tokens(rng: random.Random, prompt: str) -> int:
    """Roughly what a tokenizer makes of the prompt, plus a system prompt's worth."""
    return len(prompt.split()) * 4 // 3 + rng.randint(8, 60)


def usage_event(rng: random.Random, ts: int, account: str | None, key: str, ip: str,
                agent: str, prompt: str | None, *, org: str | None = None,
                endpoint: str = "/v1/chat/completions", model: str = "gpt-small",
                status: int = 200, completion_tokens: int | None = None,
                latency_ms: float | None = None, moderation: dict[str, Any] | None = None,
                **extra: Any) -> Event:
    event: Event = {"event_id": event_id(rng), "ts": ts, "account_id": account}
    if org is not None:
        event["org_id"] = org
    event |= {"api_key_id": key, "ip": ip, "user_agent": agent, "endpoint": endpoint,
              "model": model, "status": status}
    if prompt is not None:
        event["prompt"] = prompt
        event["prompt_tokens"] = tokens(rng, prompt)
    if completion_tokens is not None:
        event["completion_tokens"] = completion_tokens
    event["latency_ms"] = latency_ms if latency_ms is not None else round(
        rng.uniform(150, 900) + 12 * (completion_tokens or 0) ** 0.8, 1)
    if moderation is not None:
        event["moderation"] = moderation
    event.update(extra)
    return event


def quiet_moderation(rng: random.Random) -> dict[str, Any]:
    return {"flagged": False, "categories": {
        name: round(rng.uniform(0.0, 0.08), 3) for name in ("violence", "illicit", "harassment")}}

