"""The traffic simulator: deterministic, valid, time-ordered traffic whose labelled misuse the
behaviour detectors catch and whose benign crowds they leave alone."""

from __future__ import annotations

import ipaddress
import itertools
import statistics
from collections import Counter, defaultdict
from functools import cache
from typing import Any

import pytest

from detectors.credential_stuffing import CredentialStuffingDetector
from detectors.events import UsageEvent, event_from_dict
from detectors.jailbreak import JailbreakSprayDetector, Pattern
from detectors.leaked_key import LeakedKeyDetector
from detectors.network import network_range
from detectors.scraping import ScrapingDetector, prompt_shape
from detectors.sybil import SybilDetector
from streams.tooling.simulation import (
    CLAIMS,
    PRESETS,
    SCENARIOS,
    Traffic,
    TrafficSimulator,
    iter_simulate,
    plan_simulation,
    preset_options,
    simulate,
)
from streams.tooling.simulation.benign import COVER_LETTER_TEMPLATE, SENTIMENT_TEMPLATE
from streams.tooling.simulation.prompt_attacks import JAILBREAK_PREAMBLES

START = 1_790_000_000_000
MINUTE = 60_000
RULES = {"credential_stuffing", "leaked_key", "jailbreak", "scraping", "sybil", "campaign"}
# Scenarios without labels, and how their accounts are named.
BENIGN_PREFIXES = {"template_crowd": ("acct-r", "acct-l"), "batch_customer": ("acct-batch",),
                   "viral_topic": ("acct-v",), "popular_wrapper": ("acct-w",),
                   "office": ("acct-office",)}


@cache
def preset(name: str, seed: int = 7) -> Traffic:
    return simulate(seed, START, **preset_options(name))


@cache
def parsed(name: str) -> tuple[UsageEvent, ...]:
    traffic = preset(name)
    end = START + PRESETS[name]["duration_s"] * 1000
    return tuple(event_from_dict(e, now_ms=end + 86_400_000) for e in traffic.events)


def by_account(traffic: Traffic) -> dict[str, list[dict[str, Any]]]:
    accounts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in traffic.events:
        if event["account_id"] is not None:
            accounts[event["account_id"]].append(event)
    return accounts


def labelled(traffic: Traffic, rule: str, kind: str | None = None) -> set[str]:
    return {label.entity_id for label in traffic.labels
            if label.rule == rule and (kind is None or label.entity_kind == kind)}


def interval_cv(timestamps: list[int]) -> float:
    gaps = [b - a for a, b in itertools.pairwise(timestamps)]
    return statistics.pstdev(gaps) / statistics.fmean(gaps)


# Determinism, order and validity.

def test_same_seed_and_start_give_identical_traffic() -> None:
    options = preset_options("full") | {"benign_accounts": 30, "template_crowd_accounts": 100}
    first = simulate(3, START, **options)
    second = simulate(3, START, **options)
    assert first.events == second.events
    assert first.labels == second.labels
    other = simulate(4, START, **options)
    assert other.events != first.events


def test_start_time_only_shifts_nothing_but_time() -> None:
    one = simulate(3, START, 1800, 20)
    later = simulate(3, START + 3_600_000, 1800, 20)
    assert [e["ts"] - START for e in one.events] == [e["ts"] - START - 3_600_000
                                                      for e in later.events]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_events_are_sorted_valid_unique_and_within_the_span(name: str) -> None:
    traffic = preset(name)
    stamps = [e["ts"] for e in traffic.events]
    assert stamps == sorted(stamps)
    end = START + PRESETS[name]["duration_s"] * 1000
    assert stamps[0] >= START and stamps[-1] < end
    assert len({e["event_id"] for e in traffic.events}) == len(traffic.events)
    assert len(parsed(name)) == len(traffic.events)  # event_from_dict accepted every one


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_each_preset_labels_each_of_its_scenarios(name: str) -> None:
    traffic = preset(name)
    scenarios = PRESETS[name]["scenarios"]
    rules = {label.rule for label in traffic.labels}
    assert rules == {s for s in scenarios if s not in BENIGN_PREFIXES}  # attacks: rule = name
    accounts = by_account(traffic)
    for scenario in scenarios:
        for prefix in BENIGN_PREFIXES.get(scenario, ()):
            assert any(a.startswith(prefix) for a in accounts), (scenario, prefix)
    assert any(a.startswith("acct-0") for a in accounts)  # the benign crowd always runs


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_labels_are_well_formed_and_name_entities_in_the_traffic(name: str) -> None:
    traffic = preset(name)
    end = START + PRESETS[name]["duration_s"] * 1000
    seen: dict[str, set[str]] = {"account": set(), "api_key": set(), "ip": set(),
                                 "network": set()}
    for event in traffic.events:
        seen["account"].add(event["account_id"])
        seen["api_key"].add(event["api_key_id"])
        seen["ip"].add(event["ip"])
        seen["network"].add(network_range(event["ip"]))
    assert len(set(traffic.labels)) == len(traffic.labels)
    for label in traffic.labels:
        assert label.rule in RULES
        assert label.entity_id in seen[label.entity_kind], label
        assert START <= label.start_ms < end
        assert set(label.to_dict()) == {"scenario", "rule", "entity_kind", "entity_id",
                                        "start_ms"}
        if label.rule == "campaign":
            assert label.entity_kind == "account"
            assert label.scenario.startswith("campaign:")
        else:
            assert label.scenario == label.rule


# The original API.

def test_the_original_call_still_gives_benign_traffic_and_one_stuffing_attack() -> None:
    traffic = simulate(seed=11, start_ms=START, duration_s=1800, benign_accounts=40,
                       stuffing_attacks=1)
    assert len(traffic.labels) == 1
    label = traffic.labels[0]
    assert (label.rule, label.entity_kind) == ("credential_stuffing", "ip")
    assert sum(1 for e in traffic.events if e["ip"] == label.entity_id) == 300
    assert len({e["account_id"] for e in traffic.events if e["account_id"]}) > 40


def test_simulator_methods_keep_their_signatures() -> None:
    simulator = TrafficSimulator(5, START)
    events, labels = simulator.credential_stuffing(attempts=60, offset_ms=0, rotate_ips=True)
    assert len(events) == 60 and labels[0].entity_kind == "network"
    benign = list(simulator.benign_accounts(20, 1_800_000))
    assert [e["ts"] for e in benign] == sorted(e["ts"] for e in benign)
    assert {e["account_id"] for e in benign if e["account_id"]} <= {
        f"acct-{i:05d}" for i in range(20)}


def test_presets_scale_and_bad_names_are_refused() -> None:
    base, big = preset_options("full"), preset_options("full", scale=4)
    assert big["benign_accounts"] == 4 * base["benign_accounts"]
    assert big["duration_s"] > base["duration_s"]
    assert big["campaigns"] == 2 * base["campaigns"]
    assert big["stuffing_attacks"] == 2 * base["stuffing_attacks"]
    assert set(PRESETS["full"]["scenarios"]) == set(SCENARIOS)
    with pytest.raises(ValueError):
        preset_options("everything")
    with pytest.raises(ValueError):
        simulate(1, START, 600, 5, scenarios=("credential_stuffing", "ddos"))


def test_iter_simulate_is_lazy_at_a_large_scale() -> None:
    # The preset is millions of events; only the first thousand are made.
    events = list(itertools.islice(iter_simulate(7, START, **preset_options("full", 100)),
                                   1000))
    assert len(events) == 1000
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert events[-1]["ts"] - START < 10 * MINUTE


def test_plan_gives_labels_before_any_event() -> None:
    plan = plan_simulation(7, START, **preset_options("attacks"))
    assert {label.rule for label in plan.labels} == {
        "credential_stuffing", "leaked_key", "jailbreak", "scraping", "sybil"}
    assert next(plan.events)["ts"] >= START


# Campaigns and the crowds that must not look like one.

def test_campaign_members_push_one_narrative_in_paraphrases() -> None:
    traffic = preset("campaign")
    accounts = by_account(traffic)
    members = labelled(traffic, "campaign")
    assert len(members) >= 12
    (scenario,) = {label.scenario for label in traffic.labels}
    claim = next(c for c in CLAIMS if scenario == f"campaign:{c.id}")
    all_prompts: set[str] = set()
    for member in members:
        prompts = [e["prompt"] for e in accounts[member]]
        on_narrative = [p for p in prompts if claim.mentions(p)]
        assert len(on_narrative) >= 0.7 * len(prompts), member
        all_prompts.update(on_narrative)
    narrative = sum(claim.mentions(e["prompt"]) for m in members for e in accounts[m])
    assert len(all_prompts) > 0.9 * narrative  # paraphrases, not one text copied
    assert sum(len(accounts[m]) for m in members) > narrative  # and a little filler
    # Nobody outside the campaign talks about the claim.
    assert not any(claim.mentions(e.get("prompt", "")) for a, events in accounts.items()
                   if a not in members for e in events)


def test_campaign_members_share_ranges_agents_fresh_keys_and_minutes() -> None:
    traffic = preset("campaign")
    accounts = by_account(traffic)
    members = labelled(traffic, "campaign")
    events = [e for m in members for e in accounts[m]]
    assert 2 <= len({network_range(e["ip"]) for e in events}) <= 3
    assert len({e["user_agent"] for e in events}) <= 2
    first_use: dict[str, int] = {}
    for event in traffic.events:
        first_use.setdefault(event["api_key_id"], event["ts"])
    for member in members:
        keys = {e["api_key_id"] for e in accounts[member]}
        assert all(first_use[k] == accounts[member][0]["ts"] for k in keys)
    # Bursts: several two-minute spans in which most members post.
    minutes: dict[int, set[str]] = defaultdict(set)
    for event in events:
        minute = event["ts"] // MINUTE
        minutes[minute].add(event["account_id"])
        minutes[minute - 1].add(event["account_id"])  # spans of two minutes
    bursts = {m for m, who in minutes.items() if len(who) >= 0.6 * len(members)}
    assert len({m // 3 for m in bursts}) >= 3


def test_template_crowds_are_many_independent_accounts_doing_other_things_too() -> None:
    traffic = preset("campaign")
    accounts = by_account(traffic)
    for template in (SENTIMENT_TEMPLATE, COVER_LETTER_TEMPLATE):
        head = template.split("{")[0]
        users = {a for a, events in accounts.items()
                 if any(e.get("prompt", "").startswith(head) for e in events)}
        assert len(users) >= 100
        assert not users & labelled(traffic, "campaign")
        others = sum(any(not e["prompt"].startswith(head) for e in accounts[a]) for a in users)
        assert others >= 0.9 * len(users)
        assert len({network_range(accounts[a][0]["ip"]) for a in users}) >= 0.95 * len(users)
        assert len({accounts[a][0]["user_agent"] for a in users}) >= 5
        # Independent pacing: no burst, the busiest minute is near the average one.
        per_minute = Counter(e["ts"] // MINUTE for a in users for e in accounts[a]
                             if e["prompt"].startswith(head))
        assert max(per_minute.values()) <= 3 * statistics.fmean(per_minute.values())


# Automated misuse: the shape of each scenario, then the detectors on the whole mix.

def test_batch_customer_is_machine_regular_short_and_one_of_everything() -> None:
    traffic = preset("attacks")
    (account,) = [a for a in by_account(traffic) if a.startswith("acct-batch")]
    events = by_account(traffic)[account]
    assert interval_cv([e["ts"] for e in events]) < 0.1
    gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(events)]
    assert min(gaps) >= 1_000 and max(gaps) <= 1_200
    assert events[-1]["ts"] - events[0]["ts"] > 0.99 * PRESETS["attacks"]["duration_s"] * 1000
    for field in ("ip", "user_agent", "api_key_id"):
        assert len({e[field] for e in events}) == 1
    assert {e["prompt"].split(" Ticket: ")[0] for e in events} == {
        events[0]["prompt"].split(" Ticket: ")[0]}
    assert all(1 <= e["completion_tokens"] <= 5 for e in events)


def test_batch_customer_alone_alerts_no_detector() -> None:
    events, labels = TrafficSimulator(2, START).batch_customer(duration_ms=1_800_000)
    assert labels == []
    scraping, jailbreak = ScrapingDetector(), JailbreakSprayDetector()
    for raw in events:
        event = event_from_dict(raw, now_ms=START + 86_400_000)
        assert scraping.observe(event) == []
        assert jailbreak.observe(event, None) == []


def test_attack_scenarios_have_their_shapes() -> None:
    traffic = preset("attacks")
    accounts = by_account(traffic)
    (key,) = labelled(traffic, "leaked_key")
    (leak,) = [label for label in traffic.labels if label.rule == "leaked_key"]
    uses = [e for e in traffic.events if e["api_key_id"] == key]
    before = [e for e in uses if e["ts"] < leak.start_ms]
    during = [e for e in uses if leak.start_ms <= e["ts"] < leak.start_ms + 10 * MINUTE]
    assert len({network_range(e["ip"]) for e in before}) == 1
    assert before[-1]["ts"] - before[0]["ts"] >= 30 * MINUTE
    assert len({network_range(e["ip"]) for e in during}) >= 15
    assert len({e["user_agent"] for e in during}) >= 3

    for account in labelled(traffic, "jailbreak"):
        events = accounts[account]
        assert interval_cv([e["ts"] for e in events]) < 0.15
        assert all(e["prompt"].startswith(JAILBREAK_PREAMBLES) for e in events)
        assert any(e["moderation"]["flagged"] for e in events)

    (scraper,) = labelled(traffic, "scraping")
    events = accounts[scraper]
    per_minute = Counter(e["ts"] // MINUTE for e in events)
    assert sum(n >= 25 for n in per_minute.values()) >= 10
    assert all(800 <= e["completion_tokens"] <= 2000 for e in events)
    assert sum(e.get("max_tokens") == 4096 for e in events) > 0.5 * len(events)
    assert len({prompt_shape(e["prompt"]) for e in events}) > 0.7 * len(events)

    (network,) = labelled(traffic, "sybil", "network")
    farm = labelled(traffic, "sybil", "account")
    assert len(farm) >= 25
    events = [e for a in farm for e in accounts[a]]
    assert all(ipaddress.ip_address(e["ip"]) in ipaddress.ip_network(network) for e in events)
    assert len({e["user_agent"] for e in events}) == 1
    assert max(Counter((e["account_id"], e["ts"] // MINUTE) for e in events).values()) <= 10


def test_behaviour_detectors_catch_the_labelled_attacks_and_nothing_else() -> None:
    traffic = preset("attacks")
    jailbreak_match = (Pattern("override-ignore-previous", "instruction_override", "-"), 0.9)
    detectors: dict[str, Any] = {"credential_stuffing": CredentialStuffingDetector(),
                                 "leaked_key": LeakedKeyDetector(),
                                 "scraping": ScrapingDetector(), "sybil": SybilDetector()}
    jailbreak = JailbreakSprayDetector()
    alerted: dict[str, set[str]] = defaultdict(set)
    for event in parsed("attacks"):
        for rule, detector in detectors.items():
            alerted[rule].update(alert.entity.id for alert in detector.observe(event))
        # Stands in for the embedding match the streams layer would pass.
        match = jailbreak_match if (event.prompt or "").startswith(JAILBREAK_PREAMBLES) else None
        alerted["jailbreak"].update(a.entity.id for a in jailbreak.observe(event, match))
    assert alerted["credential_stuffing"] == labelled(traffic, "credential_stuffing")
    assert alerted["leaked_key"] == labelled(traffic, "leaked_key")
    assert alerted["scraping"] == labelled(traffic, "scraping")
    assert alerted["jailbreak"] == labelled(traffic, "jailbreak")
    # The farm's range, and not the office's: one organisation behind one NAT.
    assert alerted["sybil"] == labelled(traffic, "sybil", "network")
