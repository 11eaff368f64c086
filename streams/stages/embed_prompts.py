"""Embed prompts within the model's budget, match them against the jailbreak bank, and send
the vectors on to the campaign stage (one partition: it links across the whole window)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from detectors.events import UsageEvent
from detectors.jailbreak import JailbreakSprayDetector
from detectors.policy import Policy
from detectors.redaction import redacted_sample
from detectors.windows import ActivityCounter
from streams.embedding.embedder import EmbeddedPrompt, PromptEmbedder
from streams.embedding.loader import load_encoder
from streams.runtime.driver import Emit, Stage, StateStore
from streams.runtime.messages import EventRecord, JailbreakMatch, PromptVector, Record, vector_bytes
from streams.runtime.publish import emit_alert
from streams.runtime.rules import Housekeeping, build, retune
from streams.settings import Settings

log = logging.getLogger(__name__)


def prompt_vector(event: UsageEvent, embedded: EmbeddedPrompt, activity: int,
                  key_first_seen_ms: int) -> PromptVector:
    assert event.account_id is not None and event.prompt is not None
    narrative = embedded.narrative
    return PromptVector(
        event_id=event.event_id, ts_ms=event.ts_ms, account_id=event.account_id,
        api_key_id=event.api_key_id, ip=event.ip, user_agent=event.user_agent or "",
        sample=redacted_sample(event.prompt),
        # Near duplicates share the key of the text whose vector they reuse: a claim reworded
        # by a word or two still counts as the same payload.
        text_key=embedded.plan.reuse_key or embedded.plan.key,
        space=embedded.space, vector=vector_bytes(embedded.vector),
        # The campaign stage is keyed by bucket and sees only part of an account's traffic:
        # how much the account sent in all tells it how concentrated the account is.
        account_prompts=activity,
        # Fresh keys are a coordination signal; this stage sees every key of its accounts.
        key_first_seen_ms=key_first_seen_ms,
        wrapper_key=narrative.wrapper_key if narrative.payload else "",
        wrapper=redacted_sample(narrative.wrapper) if narrative.payload else "",
        language=embedded.language, disguised=embedded.disguised,
        intent=embedded.intent.kind if embedded.intent is not None else "")


class EmbedPrompts(Stage):
    """Blocking batch step: the model (`prepare`); then per record: windows, vectors out."""

    name = "embed_prompts"
    reads = (EventRecord,)
    tables = ("state-jailbreak", "state-key-first-seen", "state-prompt-activity",
              "state-prompt-recent-ids")

    def __init__(self, policy: Policy, state: StateStore, embedder: PromptEmbedder) -> None:
        self.policy = policy
        self.embedder = embedder
        self.jailbreak = build(JailbreakSprayDetector, policy.rules.jailbreak)
        self.jailbreak.accounts = state.table("state-jailbreak")
        # Per account, in a table: after a rebalance or a restart the counts go on, and the
        # campaign stage's concentration (cluster points / account prompts) stays true.
        # The accounts' recent event ids too, so that a prompt redelivered after a restart
        # elsewhere is not counted twice.
        self.activity = ActivityCounter(policy.campaigns.window_seconds * 1000,
                                        bins=state.table("state-prompt-activity"),
                                        recent_ids=state.table("state-prompt-recent-ids"))
        self.key_first_seen = state.table("state-key-first-seen")
        self.housekeeper = Housekeeping(self.jailbreak, self.activity)

    @classmethod
    def configured(cls, policy: Policy, state: StateStore, settings: Settings
                   ) -> EmbedPrompts:
        """With the model the settings name, loaded (and drift-checked) here."""
        embedder = PromptEmbedder(
            load_encoder(settings.embedding_model, settings.embed_device,
                         settings.embed_precision, settings.embed_backend),
            settings.cache_dir, settings.jailbreak_patterns_file, policy.embedding,
            every_novel_prompt=settings.embed_device != "cpu")
        log.info("embedder_ready model=%s", settings.embedding_model)
        return cls(policy, state, embedder)

    def reconfigure(self, policy: Policy) -> None:
        self.policy = policy
        retune(self.jailbreak, policy.rules.jailbreak)

    def prepare(self, records: Sequence[Record]) -> Sequence[Any]:
        events = [record.event for record in records]  # type: ignore[attr-defined]
        embedded = self.embedder.embed(
            [e.prompt or "" for e in events], [e.account_id or "" for e in events],
            [bool(e.moderation and e.moderation.flagged) for e in events])
        return list(zip(events, embedded, strict=True))

    def process(self, item: Any, emit: Emit, now_ms: int) -> None:
        event, embedded = item
        assert event.account_id is not None
        count = self.activity.observe(event.account_id, event.ts_ms, event.event_id)
        first_seen = self.key_first_seen.get(event.api_key_id)
        if first_seen is None or event.ts_ms < first_seen:
            self.key_first_seen[event.api_key_id] = first_seen = event.ts_ms
        rule = self.policy.rules.jailbreak
        match = embedded.jailbreak_match
        if match is not None and match[1] < rule.similarity_threshold:
            match = None
        emit("misuse.prompt-vectors", embedded.partition_key,
             prompt_vector(event, embedded, count, first_seen))
        if rule.enabled:
            for alert in self.jailbreak.observe(event, match):
                emit_alert(emit, alert, rule)
        if match is not None:
            pattern, similarity = match
            emit("misuse.jailbreak-matches", pattern.id, JailbreakMatch(
                event, float(similarity), pattern.id, pattern.category, pattern.text))

    def after(self, emit: Emit, latest_event_ms: int) -> None:
        self.housekeeper.run(latest_event_ms)
        if self.embedder.reload_patterns():
            log.info("jailbreak_patterns_reloaded path=%s", self.embedder.patterns_file)
