"""The embedder gives each prompt the vector it would get were the prompts embedded one by one,
in order, however they are batched: two replays of one file batch them otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.embedding import EmbeddingPlanner
from detectors.policy import Policy
from streams.embedding.embedder import EmbeddedPrompt, PromptEmbedder
from streams.embedding.loader import load_encoder
from streams.settings import Settings

QUESTION = "the quarterly revenue table for the finance team has three missing rows"


def accounts_by_sampling() -> tuple[str, str]:
    """An account the per-account sample passes over for QUESTION, and one it picks."""
    planner = EmbeddingPlanner(sample_every_n=Policy().embedding.sample_every_n)
    kinds = {f"acct-{n}": planner.plan(QUESTION, f"acct-{n}").kind for n in range(200)}
    return (next(a for a, kind in kinds.items() if kind == "static"),
            next(a for a, kind in kinds.items() if kind == "full"))


@pytest.fixture(scope="module")
def new_embedder():  # type: ignore[no-untyped-def]
    settings = Settings()
    encoder = load_encoder(settings.embedding_model, "cpu", "auto", "auto")

    def make() -> PromptEmbedder:
        return PromptEmbedder(encoder, settings.cache_dir, settings.jailbreak_patterns_file,
                              Policy().embedding)
    return make


def summary(embedded: list[EmbeddedPrompt]) -> list[tuple[str, str]]:
    return [(e.space, e.plan.kind) for e in embedded]


def test_a_copy_upgraded_later_in_the_batch_leaves_the_earlier_prompt_as_it_was(
        new_embedder) -> None:  # type: ignore[no-untyped-def]
    """The second account's sample upgrades the question to the model; the first asked
    before it, and keeps the static vector it got, batched with it or not."""
    passed_over, sampled = accounts_by_sampling()
    prompts, accounts = [QUESTION, QUESTION, QUESTION], [passed_over, sampled, passed_over]
    one_by_one = new_embedder()
    alone = [one_by_one.embed([p], [a], [False])[0] for p, a in zip(prompts, accounts,
                                                                     strict=True)]
    batched = new_embedder().embed(prompts, accounts, [False] * 3)
    assert summary(alone) == [("static", "static"), ("full", "full"), ("full", "exact")]
    assert summary(batched) == summary(alone)
    for single, together in zip(alone, batched, strict=True):
        assert np.dot(single.vector, together.vector) > 0.9999


def test_only_the_model_matches_a_jailbreak(new_embedder) -> None:  # type: ignore[no-untyped-def]
    """A prompt left with its static vector is no jailbreak match however close it lies to a
    pattern in the static space, where ordinary prompts sit close to everything (337 benign
    accounts flagged on the realtext test half when static matches counted); a prompt close
    to a known jailbreak there goes to the model, whose match counts."""
    settings = Settings()
    passed_over, _ = accounts_by_sampling()
    never = PromptEmbedder(load_encoder(settings.embedding_model, "cpu", "auto", "auto"),
                           settings.cache_dir, settings.jailbreak_patterns_file,
                           Policy().embedding.model_copy(update={"jailbreak_tripwire": 1.0}))
    embedder = new_embedder()
    pattern = embedder.banks["full"].patterns[0]
    [static] = never.embed([pattern.text], [passed_over], [False])
    assert static.space == "static" and static.jailbreak_match is None
    [confirmed] = embedder.embed([pattern.text], [passed_over], [False])
    assert confirmed.space == "full" and confirmed.jailbreak_match is not None
    assert confirmed.jailbreak_match[1] > 0.9
