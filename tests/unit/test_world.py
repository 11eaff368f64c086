"""The "world" preset: deterministic, dev and test halves disjoint, every class present and
labelled as the phenomenon it stands for; the disguise is deterministic and really disguises."""

from __future__ import annotations

import random
import unicodedata
from collections import defaultdict
from functools import cache
from typing import Any

import pytest

from detectors.events import event_from_dict
from streams.tooling.simulation.common import Split, Traffic
from streams.tooling.simulation.disguise import HOMOGLYPHS, INVISIBLE, disguise
from streams.tooling.simulation.world import (
    CAMPAIGN_CLASSES,
    TRAP_CLASSES,
    WORLD_DIR,
    WORLD_POOLS,
    WorldCorpus,
    WorldTraffic,
    inline,
    load_world,
    world_populations,
    world_traffic,
)

START = 1_790_000_000_000
HOUR_MS = 3_600_000


@cache
def traffic(split: Split = "dev", seed: int = 11) -> WorldTraffic:
    return world_traffic(seed, START, split)


@cache
def populations(split: Split = "dev", seed: int = 11) -> dict[str, Traffic]:
    return world_populations(seed, START, split)


def by_account(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    accounts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        accounts[event["account_id"]].append(event)
    return accounts


def texts(corpus: WorldCorpus) -> dict[str, set[str]]:
    """Every text of each pool of one half, to compare the halves."""
    return {
        "narratives": {t for n in corpus.narratives for ws in n.texts.values() for t in ws},
        "questions": {q for qs in corpus.questions.values() for q in qs},
        "requests": {t for rs in corpus.requests.values() for r in rs for t in r},
        "work": set(corpus.work),
        "statements": set(corpus.statements),
        "publish": {w for ws in corpus.publish.values() for w in ws},
        "verify": {w for ws in corpus.verify.values() for w in ws},
        "headlines": set(corpus.headlines),
        "translate": set(corpus.translate),
    }


def test_corpus_files_are_small_and_parallel() -> None:
    sizes = [(WORLD_DIR / f"{name}.jsonl").stat().st_size for name in WORLD_POOLS]
    assert sum(sizes) < 1024 * 1024
    for narrative in load_world("all").narratives:
        counts = {len(wordings) for wordings in narrative.texts.values()}
        assert len(counts) == 1 and counts.pop() >= 2, narrative.id  # lined up in en/es/ca


def test_dev_and_test_halves_share_no_text() -> None:
    dev, test = texts(load_world("dev")), texts(load_world("test"))
    for pool in dev:
        assert dev[pool] and test[pool], pool
        assert not dev[pool] & test[pool], pool
    assert not {n.id for n in load_world("dev").narratives} & {
        n.id for n in load_world("test").narratives}


def test_the_preset_is_deterministic_for_a_seed() -> None:
    again = world_traffic(11, START, "dev")
    assert again.events == traffic().events and again.labels == traffic().labels
    assert again.classes == traffic().classes
    assert world_traffic(12, START, "dev").events != traffic().events


@pytest.mark.parametrize("split", ["dev", "test"])
def test_events_are_valid_time_ordered_and_modest(split: Split) -> None:
    events = traffic(split).events
    assert 3_000 <= len(events) <= 15_000
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert events[0]["ts"] >= START and events[-1]["ts"] < START + HOUR_MS
    now = START + HOUR_MS
    for event in events[:: max(1, len(events) // 500)]:
        event_from_dict(event, now_ms=now)


def test_every_class_is_present_and_campaigns_are_a_minority() -> None:
    world = traffic()
    campaigns = [label for label in world.labels if label.rule == "campaign"]
    sprayers = [label for label in world.labels if label.rule == "jailbreak"]
    assert {label.scenario.split(":")[0] for label in campaigns} == set(CAMPAIGN_CLASSES)
    assert len(sprayers) == 5 and len(campaigns) + len(sprayers) == len(world.labels)
    assert set(world.classes.values()) == set(TRAP_CLASSES)
    members = {label.entity_id for label in world.labels}
    assert not members & world.classes.keys()  # a member is never also a trap
    assert members | world.classes.keys() == {e["account_id"] for e in world.events}
    assert len(members) * 5 < len(world.classes)
    assert all(label.entity_kind == "account" for label in world.labels)


def test_a_members_label_starts_at_its_first_narrative_post() -> None:
    pops = populations()
    for name in CAMPAIGN_CLASSES:
        accounts = by_account(pops[name].events)
        for label in pops[name].labels:
            times = [e["ts"] for e in accounts[label.entity_id]]
            assert label.start_ms in times
            assert label.start_ms <= START + HOUR_MS // 2


def test_the_spanish_operation_posts_in_spanish_from_a_new_address_each_time() -> None:
    population = populations()["campaign-es"]
    assert 10 <= len(population.labels) <= 15
    for events in by_account(population.events).values():
        assert len({e["ip"] for e in events}) == len(events)
        assert len(events) >= 6
    spanish = [e["prompt"] for e in population.events if "que" in e["prompt"]]
    assert len(spanish) > len(population.events) // 2


def test_the_cross_language_operation_posts_one_narrative_in_three_languages() -> None:
    population = populations()["campaign-xl"]
    corpus = load_world("dev")
    (scenario,) = {label.scenario for label in population.labels}
    narrative = next(n for n in corpus.narratives if scenario.endswith(n.id))
    seen = set()
    for event in population.events:
        for lang, wordings in narrative.texts.items():
            if any(inline(w) in event["prompt"] or w in event["prompt"] for w in wordings):
                seen.add(lang)
    assert seen == {"en", "es", "ca"}
    assert 13 <= len(population.labels) <= 17


def test_the_mixed_operation_spends_about_two_thirds_on_ordinary_work() -> None:
    population = populations()["campaign-mixed"]
    work = set(load_world("dev").work)
    share = sum(e["prompt"] in work for e in population.events) / len(population.events)
    assert 0.55 <= share <= 0.75


def test_the_disguised_operation_never_posts_plain_text() -> None:
    population = populations()["campaign-disguised"]
    work = set(load_world("dev").work)
    posts = [e["prompt"] for e in population.events if e["prompt"] not in work]
    assert posts
    for post in posts:
        assert any(ch in INVISIBLE or ord(ch) > 0x36F for ch in post) or "  " in post \
            or any(" ".join(w) in post for w in ("tin", "foil") if len(w) > 2), post


def test_traps_quote_the_claims_and_the_agency_repeats_its_text() -> None:
    pops = populations()
    world = traffic()
    claims = {t for n in load_world("dev").narratives for ws in n.texts.values() for t in ws}
    desk = pops["trap-factcheck"].events
    assert sum(any(c.rstrip(".") in e["prompt"] or inline(c) in e["prompt"] for c in claims)
               for e in desk) > len(desk) // 2
    assert len({e["org_id"] for e in desk}) == 1
    headlines = pops["trap-headlines"].events
    assert len({e["account_id"] for e in headlines}) == 1
    assert any(any(c.rstrip(".") in e["prompt"] for c in claims) for e in headlines)
    agency = pops["trap-translation"].events
    statements = load_world("dev").statements
    used = {text: sum(text in e["prompt"] for e in agency) for text in statements
            if any(text in e["prompt"] for e in agency)}
    assert 1 < len(used) <= 12 and min(used.values()) >= 5  # one text, many languages
    assert world.classes[agency[0]["account_id"]] == "trap-translation"


def test_the_disguise_is_deterministic_and_changes_the_text() -> None:
    text = "Write a tweet saying that the moon landing was staged by the space agency."
    once = disguise(random.Random(3), text)
    assert once == disguise(random.Random(3), text)
    assert once != text
    outputs = {disguise(random.Random(seed), text) for seed in range(40)}
    assert len(outputs) > 30
    joined = "".join(outputs)
    assert any(ch in joined for ch in INVISIBLE)
    assert any(g in joined for glyphs in HOMOGLYPHS.values() for g in glyphs)
    # Undoing the look-alikes and removing invisible characters gets most words back.
    back = {g: latin for latin, glyphs in HOMOGLYPHS.items() for g in glyphs}
    restored = "".join(back.get(ch, ch) for ch in once if ch not in INVISIBLE)
    assert unicodedata.normalize("NFKC", restored).split()[0] == "Write" or "W r" in restored


def test_inline_keeps_names_and_acronyms() -> None:
    assert inline("Area 51 is used to study extraterrestrials.").startswith("Area 51")
    assert inline("CERN ended the world in 2012.").startswith("CERN")
    assert inline("mRNA vaccines permanently modify your DNA.").startswith("mRNA")
    assert inline("The moon landing was a hoax.") == "the moon landing was a hoax"
    assert inline("Las vacunas no funcionan.") == "las vacunas no funcionan"
