"""Simulated usage traffic: benign crowds with human pacing, plus labelled misuse.

Deterministic for a seed and a start time (no clock, no I/O), so tests, the demo and
`misuse eval` can replay the same traffic. Events are dicts in the DESIGN.md usage-event
schema (`ts` in epoch millis, extra fields such as `max_tokens` kept as they are), in event-time
order, all within [start_ms, start_ms + duration_s * 1000).

Scenarios (`SCENARIOS`; benign accounts always run):

- credential_stuffing: one IP or a rotating /24 failing authentication with guessed keys.
- campaign: throwaway accounts pushing one invented claim, in one of three styles per campaign
  (`campaign_styles`): "wrappers" (many persona and format wrappers, synchronised bursts from
  2-3 /24s with 1-2 shared user agents and fresh keys), "template" (one wrapper for the whole
  operation) and "proxies" (a new address per request, ordinary clients, human pace, ordinary
  use mixed in).
- template_crowd (benign): two crowds of independent accounts filling one public template
  each among their other prompts.
- viral_topic (benign): ordinary accounts asking about one news topic in their own words.
- popular_wrapper (benign): ordinary accounts using one popular wrapper ("Write a tweet saying
  that ...") with many different payloads.
- batch_customer (benign): one account classifying tickets every 1.0-1.2 s, short answers.
- office (benign): one organisation's staff on one /24 with one internal client.
- leaked_key: a service key with history on one server, then used from >= 16 networks.
- jailbreak: accounts spraying jailbreak preambles at a machine-regular interval.
- scraping: one account harvesting long answers at 30-45 a minute to diverse questions, or
  (`scraping_style="dataset"`) at 60-80 a minute to prompts filled into dataset templates.
- sybil: a farm of >= 25 accounts on one /24 with one unusual client, each under the limits.

Labels: one `Label` per misusing entity, written by `misuse simulate` as JSON lines
(`Label.to_dict()`):

    {"scenario": "campaign:fluoride-plot", "rule": "campaign", "entity_kind": "account",
     "entity_id": "acct-3f09a1c2", "start_ms": 1790000123456}

- `rule` is the detector family that should catch it: credential_stuffing, leaked_key,
  jailbreak, scraping, sybil or campaign.
- `scenario` is the rule's name, except for campaigns: `campaign:<claim id>`, one label per
  member account, so members of one operation share a scenario.
- `entity_kind` is account, api_key, ip or network (a /24 as CIDR text); a sybil farm is
  labelled by each account and by its network.
- `start_ms` is when that entity's misuse started, in event time (a campaign member's first
  narrative post, a leaked key's first use from outside).

Benign accounts, template crowds, the viral topic, the popular wrapper, the batch customer and
the office carry no label: any alert on them is a false positive.

Every pool of wordings (claims, wrappers, benign templates, viral topics, dataset templates)
is split into a development half and a test half (`split`, `split_pool`): tune on traffic from
`split="dev"`, measure on `split="test"`; "all" draws from both.

Presets (`PRESETS`, scaled by `preset_options(name, scale)`): "stuffing" (the original mix),
"campaign" (benign + template crowds + one campaign), "attacks" (benign + batch customer +
office + every automated attack) and "full" (everything). `iter_simulate` yields the events
lazily, merging per-scenario generators, so millions of events need not sit in memory.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from streams.tooling.simulation import attacks, benign, customers, prompt_attacks
from streams.tooling.simulation.benign import TASKS, TOPICS
from streams.tooling.simulation.campaigns import CLAIMS, Claim
from streams.tooling.simulation.campaigns import campaign as campaign_scenario
from streams.tooling.simulation.common import (
    ENDPOINTS,
    MINUTE_MS,
    MODELS,
    SPLITS,
    USER_AGENTS,
    Event,
    Label,
    Split,
    Traffic,
    event_ts,
    split_pool,
)
from streams.tooling.simulation.prompt_attacks import ScrapingStyle

__all__ = [
    "CLAIMS", "ENDPOINTS", "MODELS", "PRESETS", "SCENARIOS", "SPLITS", "TASKS", "TOPICS",
    "USER_AGENTS", "Claim", "Label", "Simulation", "Split", "Traffic", "TrafficSimulator",
    "iter_simulate", "plan_simulation", "preset_options", "simulate",
]

SCENARIOS = ("credential_stuffing", "campaign", "template_crowd", "viral_topic",
             "popular_wrapper", "batch_customer", "office", "leaked_key", "jailbreak", "scraping",
             "sybil")
# Four public templates, split like every pool: two crowds in each half.
TEMPLATE_CROWDS = (("sentiment", "acct-r"), ("cover_letter", "acct-l"),
                   ("product_description", "acct-p"), ("email_summary", "acct-e"))

PRESETS: dict[str, dict[str, Any]] = {
    "stuffing": {"duration_s": 1800, "benign_accounts": 300, "stuffing_attacks": 1,
                 "scenarios": ("credential_stuffing",)},
    "campaign": {"duration_s": 3600, "benign_accounts": 300, "stuffing_attacks": 0,
                 "scenarios": ("template_crowd", "campaign"), "campaigns": 1,
                 "campaign_accounts": 12, "template_crowd_accounts": 120},
    "attacks": {"duration_s": 3600, "benign_accounts": 300, "stuffing_attacks": 2,
                "scenarios": ("batch_customer", "office", "credential_stuffing", "leaked_key",
                              "jailbreak", "scraping", "sybil")},
    "full": {"duration_s": 3600, "benign_accounts": 300, "stuffing_attacks": 2,
             "scenarios": SCENARIOS, "campaigns": 3, "campaign_accounts": 12,
             "campaign_styles": ("wrappers", "template", "proxies"),
             "template_crowd_accounts": 120, "scraping_style": "dataset"},
}
# Counts of attacks and special customers, multiplied by round(sqrt(scale)) in a scaled preset.
_COUNTED = ("stuffing_attacks", "campaigns", "batch_customers", "leaked_keys",
            "jailbreak_accounts", "scraping_accounts", "sybil_farms")
_DEFAULT_COUNTS = {"stuffing_attacks": 1, "campaigns": 1, "batch_customers": 1, "leaked_keys": 1,
                   "jailbreak_accounts": 2, "scraping_accounts": 1, "sybil_farms": 1}


def preset_options(name: str, scale: float = 1.0) -> dict[str, Any]:
    """Keyword arguments for `simulate` / `iter_simulate`: the preset, scaled.

    Benign accounts grow with `scale` (template crowds too, never below 100 accounts), the
    duration by one preset duration per factor 10 (x3 at scale 100, never below the preset's),
    and the number of attacks of each kind with round(sqrt(scale)). "stuffing" gives about 4
    thousand events at scale 1; "full" about 24 thousand at scale 1, 360 thousand at 10 and
    5 million at 100.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    if scale <= 0:
        raise ValueError("scale must be > 0")
    options = dict(PRESETS[name])
    multiple = max(1, round(math.sqrt(scale)))
    options["duration_s"] = round(options["duration_s"] * (1 + math.log10(max(1.0, scale))))
    options["benign_accounts"] = max(1, round(options["benign_accounts"] * scale))
    if "template_crowd_accounts" in options:
        options["template_crowd_accounts"] = max(
            100, round(options["template_crowd_accounts"] * scale))
    for count in _COUNTED:
        options[count] = options.get(count, _DEFAULT_COUNTS[count]) * multiple
    return options


@dataclass
class Simulation:
    """The labels (known up front) and the events, a single-use iterator in time order."""

    labels: list[Label]
    events: Iterator[Event]


def _rng(seed: int, scenario: str, index: int = 0) -> random.Random:
    # One generator per scenario instance, seeded by name: adding a scenario to a mix leaves
    # every other scenario's traffic as it was, and lazily merged streams stay deterministic.
    return random.Random(f"{seed}/{scenario}/{index}")


def plan_simulation(seed: int, start_ms: int, duration_s: int, benign_accounts: int,
                    stuffing_attacks: int = 1, *,
                    scenarios: Sequence[str] = ("credential_stuffing",), campaigns: int = 1,
                    campaign_accounts: int = 12, campaign_styles: Sequence[str] = ("wrappers",),
                    split: Split = "all", scraping_style: ScrapingStyle = "diverse",
                    viral_accounts: int = 40, popular_wrapper_accounts: int = 40,
                    template_crowd_accounts: int = 120,
                    batch_customers: int = 1, office_accounts: int = 25, leaked_keys: int = 1,
                    jailbreak_accounts: int = 2, scraping_accounts: int = 1,
                    sybil_farms: int = 1, sybil_accounts: int = 30) -> Simulation:
    """Decide every scenario's entities and labels; the events come lazily from the result."""
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: "
                         f"{', '.join(SCENARIOS)}")
    if campaign_accounts < 2 or sybil_accounts < 1:
        raise ValueError("a campaign needs at least 2 accounts and a farm at least 1")
    end_ms = start_ms + duration_s * 1000
    span = end_ms - start_ms
    streams: list[Iterable[Event]] = [
        benign.crowd(_rng(seed, "benign"), start_ms, end_ms, benign_accounts)]
    labels: list[Label] = []

    def add(result: tuple[list[Event], list[Label]]) -> None:
        streams.append(result[0])
        labels.extend(result[1])

    wanted = set(scenarios)
    if "credential_stuffing" in wanted:
        for n in range(stuffing_attacks):
            rng = _rng(seed, "credential_stuffing", n)
            add(attacks.credential_stuffing(rng, start_ms + rng.randint(0, max(1, span // 2)),
                                            attempts=300, rotate_ips=n % 2 == 1))
    if "campaign" in wanted:
        claims = split_pool(CLAIMS, split)
        for n in range(campaigns):
            claim = claims[n % len(claims)]
            claim_id = claim.id if n < len(claims) else f"{claim.id}-{n // len(claims) + 1}"
            add(campaign_scenario(_rng(seed, "campaign", n), start_ms, end_ms, claim,
                                  campaign_accounts, claim_id,
                                  style=campaign_styles[n % len(campaign_styles)], split=split))
    if "template_crowd" in wanted:
        for template, prefix in split_pool(TEMPLATE_CROWDS, split)[:2]:
            streams.append(benign.crowd(
                _rng(seed, f"template_crowd/{template}"), start_ms, end_ms,
                template_crowd_accounts, prefix=prefix, org_size=1, template=template,
                human_share=0.5))
    if "viral_topic" in wanted:
        topic = split_pool(benign.VIRAL_TOPICS, split)[seed % 3]
        streams.append(benign.crowd(
            _rng(seed, "viral_topic"), start_ms, end_ms, viral_accounts, prefix="acct-v",
            template=lambda rng: benign.viral_question(rng, (topic,)),
            template_share=(0.1, 0.25)))
    if "popular_wrapper" in wanted:
        wrappers = split_pool(benign.POPULAR_WRAPPERS, split)
        streams.append(benign.crowd(
            _rng(seed, "popular_wrapper"), start_ms, end_ms, popular_wrapper_accounts,
            prefix="acct-w", template=lambda rng: benign.wrapped_statement(rng, wrappers),
            template_share=(0.2, 0.5)))
    if "batch_customer" in wanted:
        for n in range(batch_customers):
            streams.append(customers.batch_customer(_rng(seed, "batch_customer", n), start_ms,
                                                    end_ms, n))
    if "office" in wanted:
        streams.append(customers.office(_rng(seed, "office"), start_ms, end_ms,
                                        office_accounts))
    if "leaked_key" in wanted:
        for n in range(leaked_keys):
            add(attacks.leaked_key(_rng(seed, "leaked_key", n), start_ms, end_ms, n))
    if "jailbreak" in wanted and jailbreak_accounts > 0:
        add(prompt_attacks.jailbreak_spray(_rng(seed, "jailbreak"), start_ms, end_ms,
                                           jailbreak_accounts))
    if "scraping" in wanted:
        for n in range(scraping_accounts):
            add(prompt_attacks.scraping(_rng(seed, "scraping", n), start_ms, end_ms,
                                        style=scraping_style, split=split))
    if "sybil" in wanted:
        for n in range(sybil_farms):
            rng = _rng(seed, "sybil", n)
            run = min(rng.randint(25, 40) * MINUTE_MS, span)
            farm_start = start_ms + rng.randint(0, max(1, span - run))
            add(attacks.sybil_farm(rng, farm_start, farm_start + run, sybil_accounts, n))
    merged = heapq.merge(*streams, key=event_ts)
    return Simulation(labels, itertools.takewhile(lambda e: e["ts"] < end_ms, merged))



def iter_simulate(seed: int, start_ms: int, duration_s: int, benign_accounts: int,
                  stuffing_attacks: int = 1, **options: Any) -> Iterator[Event]:
    """The events of `simulate`, lazily and in time order (options as `plan_simulation`)."""
    return plan_simulation(seed, start_ms, duration_s, benign_accounts, stuffing_attacks,
                           **options).events


def simulate(seed: int, start_ms: int, duration_s: int, benign_accounts: int,
             stuffing_attacks: int = 1, **options: Any) -> Traffic:
    """The whole mix as lists: e.g. `simulate(7, start, **preset_options("full"))`, or the
    original `simulate(seed, start, duration_s, benign_accounts, stuffing_attacks=1)`."""
    plan = plan_simulation(seed, start_ms, duration_s, benign_accounts, stuffing_attacks,
                           **options)
    return Traffic(list(plan.events), plan.labels)


class TrafficSimulator:
    """The scenarios one at a time, for tests and experiments: each method returns its events
    (sorted by time) and labels. Every call draws from the simulator's own seeded generator."""

    def __init__(self, seed: int, start_ms: int) -> None:
        self.rng = random.Random(seed)
        self.start_ms = start_ms

    def _fork(self) -> random.Random:
        return random.Random(self.rng.getrandbits(64))

    def _span(self, offset_ms: int, duration_ms: int) -> tuple[int, int]:
        return self.start_ms + offset_ms, self.start_ms + offset_ms + duration_ms

    def benign_accounts(self, count: int, duration_ms: int) -> Iterator[Event]:
        """People and apps at their own pace, the odd error and mistyped key; time order."""
        return benign.crowd(self._fork(), *self._span(0, duration_ms), count)

    def credential_stuffing(self, attempts: int, offset_ms: int, rotate_ips: bool = False,
                            ) -> tuple[list[Event], list[Label]]:
        """One IP (or a /24 of them) trying leaked or guessed keys, a few of which work."""
        return attacks.credential_stuffing(self.rng, self.start_ms + offset_ms, attempts,
                                           rotate_ips)

    def campaign(self, accounts: int = 12, duration_ms: int = 3_600_000, offset_ms: int = 0,
                 claim: Claim | None = None) -> tuple[list[Event], list[Label]]:
        return campaign_scenario(self._fork(), *self._span(offset_ms, duration_ms),
                                         claim or CLAIMS[0], accounts)

    def template_crowd(self, accounts: int = 120, duration_ms: int = 3_600_000,
                       template: str = "sentiment") -> tuple[list[Event], list[Label]]:
        prefix = dict(TEMPLATE_CROWDS)[template]
        return list(benign.crowd(self._fork(), *self._span(0, duration_ms), accounts,
                                 prefix=prefix, org_size=1, template=template,
                                 human_share=0.5)), []

    def batch_customer(self, duration_ms: int = 3_600_000, offset_ms: int = 0,
                       ) -> tuple[list[Event], list[Label]]:
        return list(customers.batch_customer(self._fork(),
                                             *self._span(offset_ms, duration_ms))), []

    def office(self, accounts: int = 25, duration_ms: int = 3_600_000,
               ) -> tuple[list[Event], list[Label]]:
        return customers.office(self._fork(), *self._span(0, duration_ms), accounts), []

    def leaked_key(self, duration_ms: int = 3_600_000, offset_ms: int = 0,
                   ) -> tuple[list[Event], list[Label]]:
        return attacks.leaked_key(self._fork(), *self._span(offset_ms, duration_ms))

    def jailbreak_spray(self, accounts: int = 2, duration_ms: int = 1_800_000,
                        offset_ms: int = 0) -> tuple[list[Event], list[Label]]:
        return prompt_attacks.jailbreak_spray(self._fork(), *self._span(offset_ms, duration_ms),
                                              accounts)

    def scraping(self, duration_ms: int = 1_800_000, offset_ms: int = 0,
                 ) -> tuple[list[Event], list[Label]]:
        return prompt_attacks.scraping(self._fork(), *self._span(offset_ms, duration_ms))

    def sybil(self, accounts: int = 30, duration_ms: int = 1_800_000, offset_ms: int = 0,
              ) -> tuple[list[Event], list[Label]]:
        return attacks.sybil_farm(self._fork(), *self._span(offset_ms, duration_ms), accounts)
