"""Automated attacks on accounts and keys: credential stuffing, a leaked key, a sybil farm.

Each builder decides its entities (and so its labels) first and returns its events sorted by
event time; all are small next to the benign crowds, so they are built eagerly.
"""

from __future__ import annotations

import random

from streams.tooling.simulation.benign import benign_prompt
from streams.tooling.simulation.common import (
    MINUTE_MS,
    Event,
    Label,
    cidr,
    event_id,
    hex_id,
    in_time_order,
    ip_in,
    random_network,
    usage_event,
)

LEAK_MS = 10 * MINUTE_MS
# The leaked-key detector compares a key with its own history: 3 windows of 10 min at least.
LEAK_HISTORY_MS = 32 * MINUTE_MS
LEAK_AGENTS = (
    "curl/8.5.0", "python-requests/2.31.0", "node-fetch/3.3.2", "PostmanRuntime/7.39.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/125.0.0.0 Safari/537.36", "openai-proxy/0.4.2", "Go-http-client/2.0",
    "insomnia/2023.5.8",
)
SYBIL_AGENTS = (
    "okhttp/3.14.9 WrapperBot/0.7",
    "Mozilla/5.0 (X11; Linux x86_64; rv:91.0) Gecko/20100101 Firefox/91.0 AcctRunner/1.2",
    "axios/0.21.1 farm-runner/0.3",
    "Dalvik/2.1.0 (Linux; U; Android 7.1.2; SM-G955N Build/NRD90M) freegpt-helper/2.0",
)


def credential_stuffing(rng: random.Random, start_ms: int, attempts: int,
                        rotate_ips: bool = False) -> tuple[list[Event], list[Label]]:
    """One IP (or a /24 of them) trying leaked or guessed keys, a few of which work."""
    network = random_network(rng)
    fixed_ip = ip_in(rng, network)
    ts = start_ms
    events = []
    for _ in range(attempts):
        ip = ip_in(rng, network) if rotate_ips else fixed_ip
        works = rng.random() < 0.03
        events.append({
            "event_id": event_id(rng), "ts": ts,
            "account_id": f"acct-victim-{rng.randint(0, 999):03d}" if works else None,
            "api_key_id": f"key-guess-{rng.getrandbits(48):012x}", "ip": ip,
            "user_agent": "python-requests/2.32.3", "endpoint": "/v1/models",
            "status": 200 if works else 401, "latency_ms": round(rng.uniform(5, 40), 1),
        })
        ts += rng.randint(150, 1_500)
    entity = ("network", cidr(network)) if rotate_ips else ("ip", fixed_ip)
    return events, [Label("credential_stuffing", "credential_stuffing", *entity, start_ms)]


def leaked_key(rng: random.Random, start_ms: int, end_ms: int,
               index: int = 0) -> tuple[list[Event], list[Label]]:
    """A service key used from one server for most of the span, then from many networks and
    clients at once for about ten minutes: somebody published it.

    The leak comes after at least LEAK_HISTORY_MS of history when the span allows it; when it
    does not, the leak is spread wider (>= 44 networks), which the detector catches without a
    baseline.
    """
    account = f"acct-svc-{index:02d}-{hex_id(rng, 4)}"
    org = f"org-svc-{hex_id(rng, 4)}"
    key = f"key-{account}-server"
    home_ip = ip_in(rng)
    home_agent = rng.choice(("python-sdk/1.40.2", "node-sdk/4.71.0", "go-client/0.9.1"))
    latest = end_ms - LEAK_MS - MINUTE_MS
    earliest = start_ms + LEAK_HISTORY_MS + 5 * MINUTE_MS
    if latest >= earliest:
        leak_at = rng.randint(earliest, latest)
    else:
        leak_at = max(start_ms + (end_ms - start_ms) // 3, min(latest, earliest))
    has_history = leak_at - start_ms >= LEAK_HISTORY_MS
    networks = [random_network(rng) for _ in range(
        rng.randint(16, 24) if has_history else rng.randint(44, 52))]

    events = []
    ts = start_ms + rng.randint(0, MINUTE_MS)
    while ts < end_ms:
        events.append(usage_event(rng, ts, account, key, home_ip, home_agent, benign_prompt(rng),
                                  org=org, completion_tokens=rng.randint(40, 600)))
        ts += rng.randint(60_000, 150_000)

    leak_end = min(end_ms, leak_at + LEAK_MS)
    agents = rng.sample(LEAK_AGENTS, rng.randint(4, 7))
    leak: list[Event] = []
    for position, network in enumerate(networks):
        ips = [ip_in(rng, network) for _ in range(rng.randint(1, 3))]
        agent = rng.choice(agents)
        # The first few networks arrive within a minute, the rest spread over the leak.
        first = leak_at + (rng.randint(0, MINUTE_MS) if position < 4
                           else rng.randint(0, max(1, leak_end - leak_at - 1)))
        for _ in range(rng.randint(3, 9)):
            ts = first + rng.randint(0, 3 * MINUTE_MS)
            if ts < leak_end:
                leak.append(usage_event(
                    rng, ts, account, key, rng.choice(ips), agent, benign_prompt(rng), org=org,
                    model=rng.choice(("gpt-large", "gpt-large", "gpt-small")),
                    completion_tokens=rng.randint(50, 900)))
    leak_start = min(event["ts"] for event in leak)
    return (in_time_order(events + leak),
            [Label("leaked_key", "leaked_key", "api_key", key, leak_start)])


def sybil_farm(rng: random.Random, start_ms: int, end_ms: int, accounts: int = 30,
               index: int = 0) -> tuple[list[Event], list[Label]]:
    """`accounts` fresh accounts on one /24 with one unusual client, each sending a few
    ordinary requests a minute: together far over what one account may do."""
    network = random_network(rng)
    ips = [ip_in(rng, network) for _ in range(rng.randint(2, 6))]
    agent = rng.choice(SYBIL_AGENTS)
    farm = hex_id(rng, 4)
    events: list[Event] = []
    labels: list[Label] = []
    for n in range(accounts):
        account = f"acct-s{farm}-{n:03d}"
        key = f"key-{hex_id(rng, 16)}"
        org = f"org-{hex_id(rng, 6)}"  # sign-ups on the free tier: one organisation each
        ts = start_ms + rng.randint(0, 3 * MINUTE_MS)
        labels.append(Label("sybil", "sybil", "account", account, ts))
        while ts < end_ms:
            events.append(usage_event(rng, ts, account, key, rng.choice(ips), agent,
                                      benign_prompt(rng), org=org, model="gpt-small",
                                      completion_tokens=rng.randint(60, 700)))
            ts += rng.randint(12_000, 50_000)
    in_time_order(events)
    labels.sort(key=lambda label: (label.start_ms, label.entity_id))
    network_label = Label("sybil", "sybil", "network", cidr(network), events[0]["ts"])
    return events, [network_label, *labels]

