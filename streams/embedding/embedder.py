"""Vectors for a batch of prompts within the model's budget.

The full model encodes only ~90 prompts/s on two cores, so each prompt is covered by the
cheapest representation that serves: an exact or near duplicate reuses a vector; a novel
prompt gets the model when it asks for content to publish (campaigns are made of those), when
its account is under suspicion, or as a per-account sample; every other prompt gets the static
embedding distilled from the same model (~100x cheaper). Static and model vectors live in
different spaces, so each vector carries its space and is clustered with its own kind.

A prompt that hands over a payload ("Write a tweet saying that <claim>") is represented for the
campaign stage by its payload, which gets the model when the prompt qualifies; its whole text
then gets only the static vector, which serves the jailbreak tripwire. So splitting prompts
costs no extra model time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from detectors.embedding import (
    EmbeddingPlanner,
    HyperplaneLSH,
    Plan,
    StaticEmbedder,
    VectorCache,
)
from detectors.intent import Intent, IntentClassifier, prototypes
from detectors.jailbreak import Match, PatternBank, PatternBankError, patterns_from_dict
from detectors.language import UNDETERMINED, language_of
from detectors.narrative import Narrative, split_narrative
from detectors.policy import Embedding
from detectors.text import disguise_marks, readable
from streams.embedding.model import Encoder, static_embedder
from streams.runtime import metrics

FULL, STATIC = "full", "static"
# Whether a payload's intent asks for content to publish; None: the planner's marker words say.
GENERATION: dict[str, bool | None] = {"publish": True, "verify": False, "jailbreak": False,
                                      "other": None}

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EmbeddedPrompt:
    """The vector of the prompt's narrative (its payload, or the whole prompt), the plan that
    produced it, and the whole prompt's best jailbreak match."""

    vector: np.ndarray
    space: str
    plan: Plan
    bucket: int
    jailbreak_match: Match | None
    narrative: Narrative
    # What the prompt wants done with its payload (None: it has none), and the language of
    # the payload when the model embedded it (the campaign stage lists a campaign's languages).
    intent: Intent | None = None
    language: str = UNDETERMINED
    # Dressed to evade matching (look-alike letters, invisible characters, letters spaced
    # apart): rare in ordinary prompts, so evidence of an operation in itself.
    disguised: bool = False

    @property
    def partition_key(self) -> str:
        return f"{self.space}:{self.bucket}"


class PromptEmbedder:
    def __init__(self, encoder: Encoder, cache_dir: Path, patterns_file: Path,
                 policy: Embedding, every_novel_prompt: bool = False) -> None:
        """`every_novel_prompt`: the model is cheap (a GPU), so every novel prompt gets it."""
        self.encoder = encoder
        self.static: StaticEmbedder = static_embedder(encoder, cache_dir)
        self.jailbreak_tripwire = policy.jailbreak_tripwire
        # On a GPU the model is cheap: every novel prompt gets it.
        self.planner = EmbeddingPlanner(
            sample_every_n=1 if every_novel_prompt else policy.sample_every_n,
            max_words=policy.max_words)
        dim = self.static.dim
        self.lsh = {FULL: HyperplaneLSH(dim, policy.lsh_bits, seed=1),
                    STATIC: HyperplaneLSH(dim, policy.lsh_bits, seed=2)}
        publish, verify, jailbreak = (encoder.encode(list(texts)) for texts in prototypes())
        self.intents = IntentClassifier(publish, verify, jailbreak)
        # Wrappers repeat (an operation has a few dozen, a template one): each is embedded once.
        self.wrapper_vectors = VectorCache(max_entries=50_000)
        self.patterns_file = patterns_file
        self.banks: dict[str, PatternBank] = {}
        self._patterns_mtime = -1.0
        self._refused, self._refused_mtime = "", -1.0  # the last reload refused, and why
        self.reload_patterns()

    def reload_patterns(self) -> bool:
        """The jailbreak bank is re-read and re-embedded when its file changes. At start an
        invalid file stops the worker; later it is refused like an invalid policy: logged, and
        the bank in force stays until the file changes again."""
        try:
            mtime = self.patterns_file.stat().st_mtime
            if mtime in (self._patterns_mtime, self._refused_mtime):
                return False
            patterns = patterns_from_dict(yaml.safe_load(self.patterns_file.read_text()))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, PatternBankError) as exc:
            if self._patterns_mtime < 0:
                raise PatternBankError(f"jailbreak patterns {self.patterns_file}: {exc}") \
                    from None
            if str(exc) != self._refused:
                log.error("jailbreak_patterns_reload_refused path=%s error=%r",
                          self.patterns_file, str(exc))
            self._refused = str(exc)
            if not isinstance(exc, OSError):
                self._refused_mtime = mtime  # not read again until the file changes
            return False
        self._refused, self._refused_mtime = "", -1.0
        texts = [pattern.text for pattern in patterns]
        self.banks = {FULL: PatternBank(patterns, self.encode_full(texts)),
                      STATIC: PatternBank(patterns, self.encode_static(texts))}
        self._patterns_mtime = mtime
        return True

    def encode_full(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.static.dim), dtype=np.float32)
        return self.encoder.encode(texts)

    def encode_static(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.static.dim), dtype=np.float32)
        for row, ids in enumerate(self.encoder.token_ids(texts)):
            out[row] = self.static.embed_ids(ids)
        return out

    def _encode(self, plans: list[Plan], full: bool) -> tuple[list[Plan], np.ndarray]:
        """Encode each distinct text once and remember its vector; returns what was encoded."""
        todo = list({plan.key: plan for plan in plans}.values())
        encode = self.encode_full if full else self.encode_static
        vectors = encode([plan.normalised for plan in todo])
        for plan, vector in zip(todo, vectors, strict=True):
            self.planner.remember(plan.key, plan.signature, vector, full=full)
        return todo, vectors

    def embed(self, prompts: list[str], accounts: list[str],
              suspicious: list[bool]) -> list[EmbeddedPrompt]:
        """Blocking (the model runs here): call it off the event loop. Each prompt gets the
        vector it would get were the prompts embedded one by one, in order: however they are
        batched, a duplicate reuses what was embedded before it, not an upgrade made later in
        the same batch (two replays of one file batched otherwise gave different vectors)."""
        # Split what the prompt reads as: a disguise (look-alike letters, invisible characters)
        # must not hide the words that hand a claim over.
        narratives = [split_narrative(readable(p)) for p in prompts]
        intents = self._intents(narratives)
        plans: list[Plan] = []
        payload_plans: list[Plan | None] = []
        sources: list[tuple[Source, Source | None]] = []
        for prompt, account, flagged, narrative, intent in zip(
                prompts, accounts, suspicious, narratives, intents, strict=True):
            plan = self.planner.plan(prompt, account, flagged, model=narrative.payload is None)
            source = self._source(plan)
            # A payload handed over for publishing gets the model (campaigns are made of
            # those), whatever language asks for it; one quoted to be checked does not.
            payload_plan = None if narrative.payload is None or intent is None else \
                self.planner.plan(narrative.payload, account, flagged, request=prompt,
                                  generation=GENERATION[intent.kind])
            plans.append(plan)
            payload_plans.append(payload_plan)
            sources.append((source, self._source(payload_plan) if payload_plan else None))
        static_plans, static_vectors = self._encode(
            [plan for plan in plans + payload_plans if plan and plan.kind == "static"],
            full=False)
        # The static vector is a tripwire: a prompt that already resembles a known jailbreak
        # in the cheap space is confirmed with the model, whatever the planner said.
        matches = self.banks[STATIC].best_matches(static_vectors)
        escalated = [plan for plan, match in zip(static_plans, matches, strict=True)
                     if match is not None and match[1] >= self.jailbreak_tripwire]
        for_model = [plan for plan in plans + payload_plans if plan and plan.kind == "full"]
        metrics.embedding_pending_prompts.set(len({p.key for p in for_model + escalated}))
        try:
            full_plans, full_vectors = self._encode(for_model + escalated, full=True)
        finally:
            metrics.embedding_pending_prompts.set(0)
        count_paths(plans, payload_plans, {plan.key for plan in escalated})
        batch = BatchVectors(
            dict(zip((p.key for p in full_plans), full_vectors, strict=True)),
            dict(zip((p.key for p in static_plans), static_vectors, strict=True)),
            {plan.key for plan in escalated}, self.encode_static)
        out = []
        for prompt, plan, payload_plan, narrative, intent, (source, payload_source) in zip(
                prompts, plans, payload_plans, narratives, intents, sources, strict=True):
            vector, space = batch.vector(source)
            # A jailbreak match is the model's: the static space only decides whether to ask
            # it (the tripwire above), and ordinary prompts sit close to everything there.
            jailbreak_match = self.banks[FULL].best_match(vector) if space == FULL else None
            language = UNDETERMINED
            if payload_plan is not None and payload_source is not None:
                plan = payload_plan
                vector, space = batch.vector(payload_source)
                if space == FULL:  # of the canonical text: a disguise is no language
                    language = language_of(payload_plan.normalised)
            out.append(EmbeddedPrompt(vector, space, plan, self.lsh[space].bucket(vector),
                                      jailbreak_match, narrative, intent, language,
                                      disguise_marks(prompt).disguised))
        return out

    def _source(self, plan: Plan) -> Source:
        """Where the plan's vector comes from, as of now (its turn in the batch): a vector
        cached before the batch, or one this batch computes, by key and space."""
        if plan.kind in ("full", "static"):
            return Source(plan.key, plan.normalised, plan.kind == "full")
        key = plan.reuse_key or plan.key
        full = bool(self.planner.quality(key))
        entry = self.planner.cache.lookup(key)
        if entry is not None and entry[1] == full:
            return Source(key, plan.normalised, full, entry[0])
        return Source(key, plan.normalised, full)  # coming in this batch

    def _intents(self, narratives: list[Narrative]) -> list[Intent | None]:
        """The intent of each prompt that hands over a payload, from its wrapper's vector."""
        wanted = {n.wrapper_key: n.wrapper for n in narratives
                  if n.payload is not None and n.wrapper_key not in self.wrapper_vectors}
        if wanted:
            for key, vector in zip(wanted, self.encode_full(list(wanted.values())),
                                   strict=True):
                self.wrapper_vectors.put(key, vector)
        vectors: dict[str, np.ndarray] = {}
        for narrative in narratives:
            vector = self.wrapper_vectors.get(narrative.wrapper_key) \
                if narrative.payload is not None else None
            if vector is not None:
                vectors[narrative.wrapper_key] = vector
        classified = dict(zip(vectors, self.intents.classify(
            np.stack(list(vectors.values())) if vectors
            else np.zeros((0, self.static.dim), dtype=np.float32)), strict=True))
        return [classified.get(n.wrapper_key) if n.payload is not None else None
                for n in narratives]


@dataclass(frozen=True)
class Source:
    """A prompt's vector: `vector` when it was cached before its batch, else the batch's own
    vector of `key`, from the model when `full`. `text`: the prompt's own normalised text."""

    key: str
    text: str
    full: bool
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class BatchVectors:
    """The vectors one batch computed, by key: from the model (planned, or escalated by the
    jailbreak tripwire) and static."""

    full: dict[str, np.ndarray]
    static: dict[str, np.ndarray]
    escalated: set[str]
    embed_static: Callable[[list[str]], np.ndarray]

    def vector(self, source: Source) -> tuple[np.ndarray, str]:
        if source.vector is not None:
            return source.vector, FULL if source.full else STATIC
        if (source.full or source.key in self.escalated) and source.key in self.full:
            return self.full[source.key], FULL
        if source.key in self.static:
            return self.static[source.key], STATIC
        # Planned in an earlier batch and evicted since (the planner's pending list is
        # bounded): the prompt's own text, statically.
        return self.embed_static([source.text])[0], STATIC


def count_paths(plans: list[Plan], payload_plans: list[Plan | None], escalated: set[str]
                ) -> None:
    """One count per prompt, for the representation the campaign stage gets: its payload's
    plan when it has one. A static plan the jailbreak tripwire escalated went to the model."""
    for plan, payload_plan in zip(plans, payload_plans, strict=True):
        chosen = payload_plan or plan
        path = metrics.EMBEDDING_PATHS[chosen.kind]
        if chosen.kind == "static" and chosen.key in escalated:
            path = metrics.EMBEDDING_PATHS["full"]
        metrics.embedding_path.labels(path).inc()
