"""Real-text evaluation traffic: the corpus excerpt loads and stays small, the dev and test
halves share no text, and the traffic is deterministic, valid, time-ordered and fully labelled."""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter, defaultdict
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from detectors.events import MAX_PROMPT_BYTES, event_from_dict
from streams.tooling.simulation.common import Split, Traffic
from streams.tooling.simulation.realtext import (
    DATA_DIR,
    POOLS,
    CorpusMissingError,
    load_corpus,
    read_pool,
    realtext_populations,
    realtext_traffic,
    reword,
)

START = 1_790_000_000_000
HOUR_MS = 3_600_000
CAMPAIGNS = ("campaign_wrappers", "campaign_proxies", "campaign_slow")
PERSONAL = re.compile(r"[\w.+-]+@[\w-]+\.[a-z]{2,}|\+?\d[\d\s().-]{8,}\d|https?://")


@cache
def populations(split: Split = "test", seed: int = 7) -> dict[str, Traffic]:
    return realtext_populations(seed, START, split)


@cache
def traffic(split: Split = "test", seed: int = 7) -> Traffic:
    return realtext_traffic(seed, START, split)


def by_account(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    accounts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if event["account_id"] is not None:
            accounts[event["account_id"]].append(event)
    return accounts


# The corpus.

def test_corpus_files_load_and_stay_under_five_megabytes() -> None:
    sizes = {name: (DATA_DIR / f"{name}.jsonl").stat().st_size for name in POOLS}
    assert sum(sizes.values()) < 5 * 1024 * 1024
    for name in POOLS:
        items = read_pool(name)
        assert items and all(item["id"] and item.get("text", item.get("template"))
                             for item in items), name
        assert len({item["id"] for item in items}) == len(items), f"{name}: duplicate ids"


@pytest.mark.parametrize("split", ["dev", "test"])
def test_each_half_is_big_enough(split: Split) -> None:
    corpus = load_corpus(split)
    assert len(corpus.claims) >= 20
    assert len(corpus.instructions) >= 300
    assert len(corpus.templates) >= 20
    assert len(corpus.jailbreaks) >= 15
    assert len(corpus.dataset_prompts) >= 150
    assert len(corpus.statements) >= 100
    assert len(corpus.wrappers) >= 8 and len(corpus.viral_questions) >= 15


def test_corpus_has_no_personal_data_and_fits_an_event() -> None:
    for name in POOLS:
        for item in read_pool(name):
            text = item.get("text") or item["template"]
            assert not PERSONAL.search(text), f"{item['id']}: {text[:80]!r}"
            assert len(text.encode()) < MAX_PROMPT_BYTES // 8
    assert max(len(item["text"]) for item in read_pool("jailbreaks")) <= 1500


def test_dev_and_test_halves_share_no_claim_wrapper_or_template() -> None:
    dev, test = load_corpus("dev"), load_corpus("test")
    assert not {c.id for c in dev.claims} & {c.id for c in test.claims}
    assert not {c.text for c in dev.claims} & {c.text for c in test.claims}
    assert not set(dev.wrappers) & set(test.wrappers)
    assert not set(dev.popular_wrappers) & set(test.popular_wrappers)
    assert not {t.id for t in dev.templates} & {t.id for t in test.templates}
    assert not set(dev.jailbreaks) & set(test.jailbreaks)
    assert not set(dev.dataset_templates) & set(test.dataset_templates)
    assert not set(dev.dataset_prompts) & set(test.dataset_prompts)
    assert not set(dev.viral_questions) & set(test.viral_questions)
    assert not set(dev.instructions) & set(test.instructions)


def test_a_missing_corpus_file_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(CorpusMissingError, match=r"build_corpus\.py"):
        read_pool("claims", tmp_path)


# The traffic as a whole.

def test_same_seed_gives_identical_traffic_and_another_seed_does_not() -> None:
    again = realtext_traffic(7, START, "test")
    assert again.events == traffic().events
    assert again.labels == traffic().labels
    assert realtext_traffic(8, START, "test").events != traffic().events


@pytest.mark.parametrize("split", ["dev", "test"])
def test_both_splits_give_an_hour_of_traffic_in_the_expected_range(split: Split) -> None:
    result = traffic(split)
    assert 12_000 <= len(result.events) <= 18_000
    assert {label.rule for label in result.labels} == {
        "campaign", "scraping", "jailbreak", "credential_stuffing", "leaked_key"}
    assert all(START <= event["ts"] < START + HOUR_MS for event in result.events)
    stamps = [event["ts"] for event in result.events]
    assert stamps == sorted(stamps)


def test_every_event_validates_against_the_schema() -> None:
    events = traffic().events
    for raw in events:
        event = event_from_dict(raw, now_ms=START + 86_400_000)
        assert event.prompt is None or len(event.prompt.encode()) <= MAX_PROMPT_BYTES
    assert len({raw["event_id"] for raw in events}) == len(events)


def test_campaigns_use_claims_of_their_own_split_only() -> None:
    splits: tuple[tuple[Split, Split], ...] = (("dev", "test"), ("test", "dev"))
    for split, other in splits:
        own = {claim.id for claim in load_corpus(split).claims}
        foreign = load_corpus(other).claims
        scenarios = {label.scenario for label in traffic(split).labels
                     if label.rule == "campaign"}
        assert len(scenarios) == 3
        assert {scenario.removeprefix("campaign:") for scenario in scenarios} <= own
        prompts = [event["prompt"] for name in CAMPAIGNS
                   for event in populations(split)[name].events]
        assert not any(claim.text in prompt for claim in foreign for prompt in prompts)


# Labels.

@pytest.mark.parametrize("name, size", [("campaign_wrappers", 25), ("campaign_proxies", 12),
                                        ("campaign_slow", 10)])
def test_every_campaign_member_is_labelled_from_its_first_post(name: str, size: int) -> None:
    population = populations()[name]
    instructions = set(load_corpus("test").instructions)
    labels = {label.entity_id: label for label in population.labels}
    members = by_account(population.events)
    assert set(members) == set(labels) and len(labels) == size
    assert len({label.scenario for label in labels.values()}) == 1
    for account, events in members.items():
        label = labels[account]
        assert (label.rule, label.entity_kind) == ("campaign", "account")
        assert label.start_ms in {e["ts"] for e in events}
        # Only ordinary prompts come before the first post of the narrative.
        assert all(e["prompt"] in instructions for e in events if e["ts"] < label.start_ms)


def test_campaign_members_use_fresh_keys_and_appear_nowhere_else() -> None:
    pops = populations()
    campaign_keys = {e["api_key_id"] for name in CAMPAIGNS for e in pops[name].events}
    campaign_accounts = {e["account_id"] for name in CAMPAIGNS for e in pops[name].events}
    for name, population in pops.items():
        if name not in CAMPAIGNS:
            assert not {e["api_key_id"] for e in population.events} & campaign_keys, name
            assert not {e["account_id"] for e in population.events} & campaign_accounts, name


def test_wrapper_campaign_shape() -> None:
    population = populations()["campaign_wrappers"]
    corpus = load_corpus("test")
    claim = next(c for c in corpus.claims
                 if population.labels[0].scenario == f"campaign:{c.id}")
    networks = {event["ip"].rsplit(".", 1)[0] for event in population.events}
    assert len(networks) == 3
    assert len({event["user_agent"] for event in population.events}) <= 3
    for events in by_account(population.events).values():
        on_claim = [e for e in events if claim.inline()[1:] in e["prompt"]]
        assert len(events) - len(on_claim) <= 0.2 * len(events)
        assert 8 <= len(on_claim) <= 20
    used = {wrapper for e in population.events for wrapper in corpus.wrappers
            if e["prompt"] == wrapper.format(claim=claim.text, inline=claim.inline())}
    assert len(used) >= 6


def test_proxy_campaign_never_reuses_an_address_and_mixes_in_ordinary_prompts() -> None:
    population = populations()["campaign_proxies"]
    ips = [event["ip"] for event in population.events]
    assert len(set(ips)) == len(ips)
    assert len({ip.rsplit(".", 1)[0] for ip in ips}) == len(ips)
    instructions = set(load_corpus("test").instructions)
    for events in by_account(population.events).values():
        ordinary = sum(event["prompt"] in instructions for event in events)
        assert 0.2 <= ordinary / len(events) <= 0.55


def test_slow_campaign_rewords_its_claim() -> None:
    population = populations()["campaign_slow"]
    claim = next(c for c in load_corpus("test").claims
                 if population.labels[0].scenario == f"campaign:{c.id}")
    for events in by_account(population.events).values():
        assert 4 <= len(events) <= 6
    prompts = [event["prompt"] for event in population.events]
    assert len(set(prompts)) >= 0.6 * len(prompts)
    verbatim = [prompt for prompt in prompts if claim.inline()[1:] in prompt]
    assert len(verbatim) <= 0.8 * len(prompts)


def test_reword_keeps_the_claim_recognisable() -> None:
    claim = load_corpus("test").claims[0]
    rng = random.Random(1)
    words = set(claim.inline().lower().split())
    for _ in range(50):
        assert len(words & set(reword(rng, claim).lower().split())) >= len(words) // 2


def test_attacks_are_labelled_on_the_entities_their_rules_watch() -> None:
    result = traffic()
    kinds = Counter((label.rule, label.entity_kind) for label in result.labels)
    assert kinds[("credential_stuffing", "ip")] == 2
    assert kinds[("leaked_key", "api_key")] == 1
    assert kinds[("jailbreak", "account")] == 8
    assert kinds[("scraping", "account")] == 1
    accounts = by_account(result.events)
    for label in result.labels:
        if label.entity_kind == "account":
            assert label.entity_id in accounts


def test_jailbreak_sprayers_send_corpus_preambles_at_a_regular_interval() -> None:
    jailbreaks = set(load_corpus("test").jailbreaks)
    for events in by_account(populations()["jailbreak_sprayers"].events).values():
        assert all(event["prompt"] in jailbreaks for event in events)
        gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(events)]
        assert max(gaps) <= 1.12 * min(gaps)


def test_distiller_asks_for_long_answers_to_templated_prompts_at_75_a_minute() -> None:
    population = populations()["distiller"]
    events = population.events
    minutes = (events[-1]["ts"] - events[0]["ts"]) / 60_000
    assert 38 <= minutes <= 40 and 70 <= len(events) / minutes <= 80
    assert all(event["max_tokens"] == 4096 for event in events)
    assert all(1_000 <= event["completion_tokens"] <= 4_000 for event in events)
    assert {event["prompt"] for event in events} <= set(load_corpus("test").dataset_prompts)
    assert population.labels[0].start_ms == events[0]["ts"]


def test_benign_populations_carry_no_label() -> None:
    for name in ("template_crowd", "viral_topic", "popular_wrapper", "ordinary", "office",
                 "batch_customers"):
        assert populations()[name].labels == [], name


def test_benign_crowds_use_their_corpus_texts() -> None:
    corpus = load_corpus("test")
    template_prompts = [e["prompt"] for e in populations()["template_crowd"].events
                        if any(e["prompt"].startswith(t.template) for t in corpus.templates)]
    assert len(template_prompts) >= 0.15 * len(populations()["template_crowd"].events)
    viral = [e for e in populations()["viral_topic"].events
             if e["prompt"] in corpus.viral_questions]
    assert len(viral) >= 40 and len({e["account_id"] for e in viral}) >= 30
    wrapper_users = {e["account_id"] for e in populations()["popular_wrapper"].events
                     if e["prompt"] not in corpus.instructions}
    assert len(wrapper_users) >= 35
