"""Embed prompts within the model's budget, match them against the jailbreak bank, and send
the vectors on keyed by LSH bucket so that similar prompts meet on one partition."""

from __future__ import annotations

import asyncio
import logging

from faust.types import StreamT

from detectors.events import UsageEvent, event_from_dict
from detectors.jailbreak import JailbreakSprayDetector
from detectors.redaction import redacted_sample
from detectors.windows import ActivityCounter
from streams import clock, codec
from streams.app import app
from streams.embedder import EmbeddedPrompt, PromptEmbedder
from streams.policy import current_policy
from streams.publish import publish_alert
from streams.rules import Housekeeping, build, retune
from streams.settings import get_settings
from streams.state import TableState, state_table, use_event
from streams.topics import jailbreak_matches_topic, prompt_vectors_topic, prompts_topic

log = logging.getLogger(__name__)
_settings = get_settings()

jailbreak_table = state_table("state-jailbreak")
key_first_seen_table = state_table("state-key-first-seen")


def vector_record(event: UsageEvent, embedded: EmbeddedPrompt, activity: int,
                  key_first_seen_ms: int) -> bytes:
    assert event.account_id is not None and event.prompt is not None
    return codec.dumps({
        "event_id": event.event_id, "ts": event.ts_ms, "account_id": event.account_id,
        "api_key_id": event.api_key_id, "ip": event.ip, "user_agent": event.user_agent or "",
        "sample": redacted_sample(event.prompt),
        # Near duplicates share the key of the text whose vector they reuse: a claim reworded
        # by a word or two still counts as the same payload.
        "text_key": embedded.plan.reuse_key or embedded.plan.key,
        "wrapper_key": embedded.narrative.wrapper_key if embedded.narrative.payload else "",
        "wrapper": redacted_sample(embedded.narrative.wrapper)
        if embedded.narrative.payload else "",
        "space": embedded.space, "vector": codec.encode_vector(embedded.vector),
        # The campaign stage is keyed by bucket and sees only part of an account's traffic:
        # how much the account sent in all tells it how concentrated the account is.
        "account_prompts": activity,
        # Fresh keys are a coordination signal; this stage sees every key of its accounts.
        "key_first_seen": key_first_seen_ms,
    })


@app.agent(prompts_topic)
async def embed_prompts(stream: StreamT) -> None:
    policy = current_policy()
    loop = asyncio.get_running_loop()
    embedder = await loop.run_in_executor(None, lambda: PromptEmbedder(
        _settings.embedding_model, _settings.cache_dir, _settings.jailbreak_patterns_file,
        policy.embedding, _settings.embedding_batch_size))
    jailbreak = build(JailbreakSprayDetector, policy.rules.jailbreak)
    jailbreak_state = TableState(jailbreak_table)
    jailbreak.accounts = jailbreak_state
    activity = ActivityCounter(policy.campaigns.window_seconds * 1000)
    key_first_seen = TableState(key_first_seen_table)
    housekeeping = Housekeeping(jailbreak, activity)
    log.info("embedder_ready model=%s", _settings.embedding_model)
    async for batch in stream.take_events(256, within=1.0):  # type: ignore[attr-defined]
        if (latest := current_policy()) is not policy:
            policy = latest
            retune(jailbreak, policy.rules.jailbreak)
        now = clock.now_ms()
        events = [event_from_dict(codec.loads(message.value), now_ms=now) for message in batch]
        suspicious = [bool(e.moderation and e.moderation.flagged) for e in events]
        embedded = await loop.run_in_executor(
            None, embedder.embed, [e.prompt or "" for e in events],
            [e.account_id or "" for e in events], suspicious)
        rule = policy.rules.jailbreak
        for message, event, vector in zip(batch, events, embedded, strict=True):
            use_event(message)
            assert event.account_id is not None
            count = activity.observe(event.account_id, event.ts_ms)
            first_seen = key_first_seen.get(event.api_key_id)
            if first_seen is None or event.ts_ms < first_seen:
                key_first_seen[event.api_key_id] = first_seen = event.ts_ms
            await prompt_vectors_topic.send(key=vector.partition_key.encode(),
                                            value=vector_record(event, vector, count, first_seen))
            match = vector.jailbreak_match
            if match is not None and match[1] < rule.similarity_threshold:
                match = None
            if rule.enabled:
                for alert in jailbreak.observe(event, match):
                    await publish_alert(alert, rule)
            if match is not None:
                pattern, similarity = match
                await jailbreak_matches_topic.send(key=pattern.id.encode(), value=codec.dumps({
                    "event": event.to_dict(), "similarity": similarity,
                    "pattern": {"id": pattern.id, "category": pattern.category,
                                "text": pattern.text}}))
        housekeeping.run(max(event.ts_ms for event in events))
        jailbreak_state.flush()
        key_first_seen.flush()
        if embedder.reload_patterns():
            log.info("jailbreak_patterns_reloaded path=%s", _settings.jailbreak_patterns_file)
