"""Legitimate customers that look automated: the hard negatives for the behaviour detectors.

A batch job is machine-regular, fast and uses one template, but its answers are short and its
prompts all have one shape; an office is many accounts on one range with one client, but they
belong to one organisation.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from streams.tooling.simulation.benign import benign_prompt
from streams.tooling.simulation.common import (
    MINUTE_MS,
    Event,
    hex_id,
    ip_in,
    random_network,
    usage_event,
)

TICKET_TEMPLATE = ("Classify this support ticket into exactly one of: billing, bug, account, "
                   "feature request. Reply with the label only. Ticket: {ticket}")
TICKET_OPENINGS = (
    "Hi, I was charged twice for", "The export button does nothing when I use",
    "How do I change the email on", "Please add dark mode to", "I can't log in to",
    "Why did my invoice go up for", "Crash report attached for", "Could you support SSO in",
    "Refund request for", "The mobile app freezes on",
)
TICKET_SUBJECTS = (
    "my team plan", "the dashboard", "the March invoice", "the API settings page",
    "the iOS app", "our enterprise workspace", "the CSV importer", "the billing portal",
    "my old account", "the reports tab", "the Android widget", "the admin console",
)
LABELS = ("billing", "bug", "account", "feature request")


def batch_customer(rng: random.Random, start_ms: int, end_ms: int,
                   index: int = 0) -> Iterator[Event]:
    """One account classifying support tickets every 1.0 to 1.2 s for the whole span: one
    template, one address, one client, one key, answers of a few tokens."""
    account = f"acct-batch-{index:02d}-{hex_id(rng, 4)}"
    org = f"org-helpdesk-{hex_id(rng, 4)}"
    key = f"key-{account}-prod"
    ip = ip_in(rng)
    agent = "ticket-router/3.4.1 python-sdk/1.42.0"
    ts = start_ms + rng.randint(0, 5_000)
    while ts < end_ms:
        ticket = (f"{rng.choice(TICKET_OPENINGS)} {rng.choice(TICKET_SUBJECTS)} "
                  f"(ticket #{rng.randint(10_000, 99_999)})")
        yield usage_event(rng, ts, account, key, ip, agent,
                          TICKET_TEMPLATE.format(ticket=ticket), org=org, model="gpt-mini",
                          completion_tokens=rng.randint(1, 5),
                          latency_ms=round(rng.uniform(180, 320), 1), temperature=0)
        ts += rng.randint(1_000, 1_200)


def office(rng: random.Random, start_ms: int, end_ms: int, accounts: int = 25,
           index: int = 0) -> list[Event]:
    """One company's staff behind one NAT, all using the company's internal assistant: many
    accounts, one range, one user agent, one organisation, each at a person's rate."""
    network = random_network(rng)
    org = f"org-office-{index:02d}-{hex_id(rng, 4)}"
    agent = "acme-internal-assistant/2.3 python-sdk/1.42.0"
    staff = [f"acct-office-{index:02d}-{n:03d}" for n in range(accounts)]
    ips = [ip_in(rng, network) for _ in range(3)]
    events: list[tuple[int, int, Event]] = []
    for account in staff:
        ts = start_ms + rng.randint(0, 10 * MINUTE_MS)
        mean_gap = rng.uniform(60_000, 180_000)
        while ts < end_ms:
            events.append((ts, len(events), usage_event(
                rng, ts, account, f"key-{account}", rng.choice(ips), agent, benign_prompt(rng),
                org=org, completion_tokens=rng.randint(30, 700))))
            ts += 3_000 + int(rng.expovariate(1 / mean_gap))
    events.sort()
    return [event for _, _, event in events]
