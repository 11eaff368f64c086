"""The Faust side of the stage runtime: every stage runs in an agent with this one loop.

The loop feeds batches of Kafka messages to the stage's `StageDriver` (`streams/runtime/driver.py`,
which holds the contract), runs the stage's pure batch step off the event loop when the stage
says it blocks (the embedding model), dead-letters what the driver refused with its reason and
origin, and sends each output batch to its partition. A stage is built off the event loop too
(loading a model, rebuilding clusters). A blocking stage runs off the loop as well: all of it
when it keeps no Faust table (the campaign stage's judging), else its pure batch step (the
embedding model), since Faust's tables are written from the loop only. A stage whose spec
asks for it reads its input in event-time order (`AlignedInput`, `streams/runtime/alignment.py`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Set
from typing import Any, Protocol

from faust.types import TP, AppT, EventT, StreamT, TopicT

from detectors.alerts import Alert
from streams.runtime import clock, metrics
from streams.runtime.alignment import InputOrder
from streams.runtime.driver import Prepared, StageDriver, StageSpec
from streams.runtime.faust_wall import (
    App,
    HeldMessages,
    batches,
    make_event_current,
    stop_worker,
)
from streams.runtime.messages import (
    ALERTS,
    AlertRecord,
    Record,
    UnverifiedRecordError,
    encode_batch,
)
from streams.runtime.outbox import Outbox
from streams.runtime.policy import current_policy
from streams.runtime.sealing import forged_alert
from streams.runtime.state import FaustState
from streams.settings import Settings

log = logging.getLogger(__name__)


class Topics:
    """This worker's topics by logical name ("misuse.alerts"), with its prefix."""

    def __init__(self, app: AppT, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self.by_names: dict[str, TopicT] = {}

    def __call__(self, *names: str) -> TopicT:
        key = ",".join(names)
        if key not in self.by_names:
            self.by_names[key] = self.app.topic(*(self.settings.topic(n) for n in names),
                                               key_type=bytes, value_type=bytes)
        return self.by_names[key]

    async def send(self, stage: str, name: str, value: bytes, partition: int | None = None
                   ) -> Awaitable[Any]:
        """Send on the logical topic `name`, counted for `stage`. Returns the delivery."""
        metrics.stage_events_out.labels(stage, name).inc()
        return await self(name).send(value=value, partition=partition)

    async def send_alert(self, stage: str, alert: Alert) -> Awaitable[Any]:
        """One alert of `stage`'s own (a refused record, say) on misuse.alerts, sealed."""
        return await self.send(stage, ALERTS, encode_batch(AlertRecord.TYPE, [AlertRecord(alert)],
                                                           self.settings.internal_keys))

    async def dead_letter(self, key: bytes | None, value: bytes | None, reason: str,
                          origin: dict[str, str], *, stage: str) -> Awaitable[Any]:
        """Keep the original bytes untouched (but for the head of a message over
        MAX_DEAD_LETTER_VALUE_BYTES) and say why, and where they came from, in headers.
        Returns the delivery, for the caller to await before it acknowledges. Every dead
        letter passes here, so here it is counted, by `stage` and reason class."""
        log.warning("dead_letter stage=%s %s reason=%r", stage,
                    " ".join(f"{k}={v}" for k, v in origin.items()), reason[:300])
        metrics.deadletters.labels(stage, metrics.reason_class(reason)).inc()
        key, value, cut = fit_dead_letter(key, value)
        headers = {f"misuse.source.{k}": v.encode() for k, v in origin.items()}
        return await self("misuse.deadletter").send(key=key, value=value, headers={
            "misuse.reason": reason[:MAX_REASON_CHARS].encode("utf-8"), **headers, **cut,
            "misuse.rejected_at_ms": str(clock.now_ms()).encode()})


# What a dead letter keeps of the message it replaces. The broker takes input messages up to
# 1 MiB, but the worker's producer refuses requests over 1,000,000 bytes: a message near the
# broker's limit, copied whole with its headers, could not be dead-lettered, its batch stopped
# the worker, and every restart read it again (a poison pill). Anything this large is over the
# event size limit anyway, so it could never be replayed as it is; the head of it, its size
# and its hash say what it was.
MAX_DEAD_LETTER_VALUE_BYTES = 768 * 1024
MAX_DEAD_LETTER_KEY_BYTES = 1024
MAX_REASON_CHARS = 2000


def fit_dead_letter(key: bytes | None, value: bytes | None
                    ) -> tuple[bytes | None, bytes | None, dict[str, bytes]]:
    """The key and value a dead letter can carry, and headers saying what was cut, if any."""
    cut: dict[str, bytes] = {}
    for name, raw, limit in (("key", key, MAX_DEAD_LETTER_KEY_BYTES),
                             ("value", value, MAX_DEAD_LETTER_VALUE_BYTES)):
        if raw is not None and len(raw) > limit:
            cut[f"misuse.truncated.{name}_bytes"] = str(len(raw)).encode()
            cut[f"misuse.truncated.{name}_sha256"] = hashlib.sha256(raw).hexdigest().encode()
    if key is not None and len(key) > MAX_DEAD_LETTER_KEY_BYTES:
        key = key[:MAX_DEAD_LETTER_KEY_BYTES]
    if value is not None and len(value) > MAX_DEAD_LETTER_VALUE_BYTES:
        value = value[:MAX_DEAD_LETTER_VALUE_BYTES]
    return key, value, cut


async def dead_letter(topics: Topics, event: EventT, reason: str, *, stage: str
                      ) -> Awaitable[Any]:
    message = event.message
    return await topics.dead_letter(message.key, message.value, reason, {
        "topic": message.topic, "partition": str(message.partition),
        "offset": str(message.offset)}, stage=stage)


async def refuse_unverified(topics: Topics, event: EventT, refused: UnverifiedRecordError,
                            reason: str, *, stage: str) -> list[Awaitable[Any]]:
    """A batch read by a sink that no key of ours sealed: a security alert, and a dead letter
    with `reason`. Returns both deliveries."""
    alert = forged_alert(refused.record_type, event.message.topic, refused.why, clock.now_ms())
    return [await topics.send_alert(stage, alert),
            await dead_letter(topics, event, reason, stage=stage)]


def register_stage(app: App, topics: Topics, spec: StageSpec) -> StageAgent:
    """An agent running the stage of `spec`, named after it (with its timers)."""
    agent, name = StageAgent(app, topics, spec), spec.stage.name

    async def run(stream: StreamT) -> None:
        await agent.run(stream)

    async def tick() -> None:
        await agent.tick()

    async def release() -> None:
        await agent.release()

    # Faust labels an agent or a timer (logs, crashes) by its function's name, and passes a
    # timer the app when its function takes an argument: plain functions, named for the stage.
    for function, label in ((run, name), (tick, f"{name}_tick"), (release, f"{name}_release")):
        function.__name__ = function.__qualname__ = label
    app.agent(topics(*spec.reads), name=name)(run)
    if spec.tick_seconds:
        app.timer(spec.tick_seconds, name=tick.__name__)(tick)
    if agent.aligned:
        # What is held is released by time as well as by new records: once the input
        # pauses, the last records read still go through.
        app.timer(1.0, name=release.__name__)(release)
    return agent


class StageAgent:
    """One stage in the worker: built once the worker starts, fed the agent's batches and the
    timers' ticks (never at the same time), every batch through one path: the events of
    partitions still owned, in event-time order if the spec asks for it, the stage's pure step
    off the loop if it blocks, dead letters and outputs sent, state written, and only then the
    batch acknowledged."""

    def __init__(self, app: App, topics: Topics, spec: StageSpec) -> None:
        self.app, self.topics, self.spec, self.name = app, topics, spec, spec.stage.name
        # Tables are declared now: Faust subscribes to their changelogs when the worker starts.
        self.state = FaustState(app, spec.stage.tables, topics.settings.internal_keys)
        self.topic_names = {topics.settings.topic(logical) for logical in spec.reads}
        self.driver: StageDriver[EventT] | None = None  # once built, in `run`
        self.turn = asyncio.Lock()  # a batch and a tick never run the stage at the same time
        self.aligned = None if not spec.align_seconds else AlignedInput(
            app, self.name, self.topic_names, spec.align_seconds, max_hold_seconds=10.0,
            idle_seconds=topics.settings.align_idle_seconds)
        metrics.stage_pending_records.labels(self.name).set(0)  # on /metrics from the start

    async def run(self, stream: StreamT) -> None:
        """The agent: build the stage (off the loop: loading a model, reading back), then
        every batch."""
        spec, loop, policy = self.spec, asyncio.get_running_loop(), current_policy()
        make_stage = spec.build or spec.stage.configured
        stage = await loop.run_in_executor(None, make_stage, policy, self.state,
                                           self.topics.settings)
        settings = self.topics.settings
        self.driver = StageDriver(stage, Outbox(settings.partitions, settings.internal_keys),
                                  value=lambda event: event.message.value,
                                  activate=make_event_current, policy=policy, state=self.state,
                                  source=lambda event: event.message.topic)
        log.info("stage_ready stage=%s reads=%s", self.name, ",".join(spec.reads))
        async for events in batches(stream, spec.batch_size, spec.within):
            await self.run_or_stop(events)
            if self.aligned:
                await self.aligned.realign()

    async def tick(self) -> None:
        """Only where the stage's input is: a stage elsewhere holds no live state to act on
        (and nothing pending: its input's new owner judges it)."""
        if self.driver and self.owns_input():
            await self.run_or_stop([])
        elif self.driver:
            metrics.stage_pending_records.labels(self.name).set(0)

    async def release(self) -> None:
        """Records held for event-time order go through once the input pauses."""
        if self.driver and self.aligned:
            if len(self.aligned.input.reorder):
                await self.run_or_stop([])
            await self.aligned.realign()

    async def run_or_stop(self, events: list[EventT]) -> None:
        try:
            async with self.turn:
                began = time.perf_counter()
                await self.run_batch(events)
                if events:  # a tick is not a batch: it would only blur the histogram
                    metrics.stage_batch_duration.labels(self.name).observe(
                        time.perf_counter() - began)
        except Exception:
            stop_worker(self.name)

    async def run_batch(self, events: list[EventT]) -> None:
        assert self.driver is not None
        driver, spec, aligned = self.driver, self.spec, self.aligned
        loop, now_ms, policy = asyncio.get_running_loop(), clock.now_ms(), current_policy()
        if events:
            metrics.stage_events_in.labels(self.name).inc(len(events))
        events = self.owned(events)
        decoded = driver.decode(events)
        if aligned:  # in event-time order before the pure step: the model sees them so too
            await aligned.ask_log_end()
            decoded = aligned.order(events, decoded)
        if spec.blocking:  # its pure step (the model, the judging) off the loop
            prepared = await loop.run_in_executor(None, driver.prepare_step, decoded)
            # A rebalance may have revoked a partition while it ran.
            still = {id(event) for event in self.owned([m for m, _ in prepared.messages])}
            prepared.messages = [m for m in prepared.messages if id(m[0]) in still]
        else:
            prepared = driver.prepare_step(decoded)
        if spec.blocking and not spec.stage.tables:
            # Nothing to write to Faust's tables, which are written from the loop only: the
            # records' processing (the campaign stage's judging) runs off the loop as well.
            result = await loop.run_in_executor(None, driver.finish, prepared, now_ms, policy)
        else:
            result = driver.finish(prepared, now_ms, policy)
        sent = [await dead_letter(self.topics, dead.message, dead.reason, stage=self.name)
                for dead in result.dead_letters]
        for envelope in result.envelopes:
            sent.append(await self.topics.send(self.name, envelope.topic, envelope.value,
                                               envelope.partition))
        sent += [await self.topics.send_alert(self.name, alert)
                 for alert in self.unverified_state(now_ms)]
        # The batch is acknowledged when this returns: everything it produced, and the
        # state it changed, must be in Kafka by then (at-least-once across a crash or a
        # rebalance), not only in the producer's buffer.
        await asyncio.gather(*sent, self.state.delivered())
        if aligned:
            aligned.acknowledge(prepared, read_input=bool(events))
        # Only once what it produced is in Kafka: a test or a replay that waits for the worker
        # to catch up must not see 0 between a judging round and its documents.
        metrics.stage_pending_records.labels(self.name).set(driver.stage.pending())

    def unverified_state(self, now_ms: int) -> list[Alert]:
        """A security alert per table for the values this batch found sealed by no key of
        ours (they were skipped: the entities started afresh)."""
        keys: dict[str, list[str]] = {}
        why: dict[str, str] = {}
        for table, key, reason in self.state.unverified():
            keys.setdefault(table, []).append(key[:60])
            why[table] = reason
        return [forged_alert(f"state:{table}", f"the changelog of {table}",
                             f"{len(found)} value(s) (keys {', '.join(found[:5])}): "
                             f"{why[table]}", now_ms)
                for table, found in keys.items()]

    def owned(self, events: list[EventT]) -> list[EventT]:
        """The events of partitions this worker still owns. A rebalance can revoke a partition
        while its events wait in a batch; its new owner reads them again from the last commit,
        with the state the changelog gave it, and processing them here as well would write
        stale state into a changelog that another worker now writes, or send its outputs
        twice."""
        assigned = self.app.assigned_partitions()
        return [event for event in events if event.message.tp in assigned]

    def owns_input(self) -> bool:
        return any(tp.topic in self.topic_names for tp in self.app.assigned_partitions())


class AlignedInput:
    """A stage's input read in event-time order across its partitions (`streams/alignment`):
    partitions running ahead are paused after every batch, and each record is held, not
    acknowledged, until the watermark passes it. Pausing only stops fetching
    (`streams/runtime/faust_wall.py`), and a held record is acknowledged only once processed, so
    neither loses anything."""

    def __init__(self, app: App, stage: str, topic_names: set[str], max_skew_seconds: float,
                 max_hold_seconds: float, idle_seconds: float) -> None:
        self.app, self.stage, self.topic_names = app, stage, topic_names
        self.input: InputOrder[TP, tuple[EventT, list[tuple[Record, Any]]]] = \
            InputOrder.within(int(max_skew_seconds * 1000), max_hold_seconds, idle_seconds)
        self.paused: set[TP] = set()
        # Each partition's end as the broker last said (asked before a batch is ordered, in
        # the background at most once a second). The consumer's own highwater is as of its
        # last fetch of the partition, and it fetches again only once what it fetched is handed
        # out: a partition read to that stale end looked caught up while the stage before it
        # wrote on, and the others' records went past it.
        self.log_end: dict[TP, int] = {}
        self.log_end_asked = clock.Every(1.0)
        self.asking: asyncio.Future[None] | None = None
        self.held = HeldMessages()
        app.before_revoke(self.give_up)

    def order(self, events: list[EventT], prepared: Prepared[EventT]) -> Prepared[EventT]:
        """Hold what `prepared` brought (from `events`); return, in its place, what may be
        processed now."""
        now_s = time.monotonic()
        for event in events:  # dead letters too: read, they hold no partition back
            self.input.alignment.read(event.message.tp, event.message.offset, now_s)
        for dead in prepared.dead_letters:
            # Acknowledged with the records before it in its partition, not ahead of them:
            # acknowledgements in offset order never let a commit pass a held record.
            message = dead.message.message
            self.held.hold(dead.message, 1, self.input.take(
                message.tp, message.offset, [self.input.alignment.latest_ms.get(message.tp, 0)],
                "", (dead.message, []), now_s))
        for event, items in prepared.messages:
            message = event.message
            self.held.hold(event, len(items), self.input.take_records(
                message.tp, message.offset, items, event, now_s))
        start_offsets = self.app.start_offsets
        released = self.input.release(self.assigned(), lambda tp: start_offsets.get(tp, 0),
                                      self.end_offset, now_s)
        return Prepared(released, prepared.dead_letters, prepared.unverified)

    def acknowledge(self, prepared: Prepared[EventT], read_input: bool) -> None:
        """A message once the last of its records is processed (with its copies). After a
        batch of input (`read_input`) the stage turns to its input again: a stall counts from
        then. Not after the release timer's turn, or its every second would keep a stall from
        ever being seen (everything held for good behind a partition that never delivers)."""
        if read_input:
            self.input.reorder.waiting(time.monotonic())
        for event, items in prepared.messages:
            self.held.processed(event, len(items))

    def end_offset(self, tp: TP) -> int:
        return max(self.log_end.get(tp, 0), self.app.highwater(tp) or 0)

    async def ask_log_end(self) -> None:
        """Before the first batch is ordered, the ends are waited for (until then every
        partition not fetched yet looks read to its end); after that they are asked in the
        background, at most once a second, and a batch never waits for the broker's answer."""
        async def ask() -> None:
            try:
                self.log_end = dict(await self.app.log_end_offsets(set(self.assigned())))
            except Exception as exc:  # the broker unreachable: the fetched ends still hold
                log.debug("log_end_unknown stage=%s error=%r", self.stage, exc)

        if not self.log_end:
            await ask()
        elif self.log_end_asked.due() and (self.asking is None or self.asking.done()):
            self.asking = asyncio.ensure_future(ask())

    def assigned(self) -> list[TP]:
        return [tp for tp in self.app.assigned_partitions() if tp.topic in self.topic_names]

    async def realign(self) -> None:
        assigned = self.assigned()
        self.input.alignment.forget(assigned)
        ahead = self.input.alignment.ahead(assigned, self.end_offset, time.monotonic())
        if ahead != self.paused:  # a call into the consumer's thread: only for a change
            await self.app.pause_partitions(ahead, self.paused - ahead)
            log.debug("input_aligned paused=%s held=%d",
                      sorted(tp.partition for tp in ahead), len(self.input.reorder))
        self.paused = ahead
        metrics.input_held.labels(self.stage).set(len(self.input.reorder))
        metrics.input_paused_partitions.labels(self.stage).set(len(ahead))

    def give_up(self, revoked: Set[TP]) -> None:
        """The partitions are being revoked: stop holding their records, unacknowledged, so
        their offsets are not committed and their next owner reads them again. Marked done for
        Faust's wait for in-flight records, without the acknowledgement that commits."""
        self.held.give_up(revoked, (event for event, _ in
                                    self.input.reorder.abandon(lambda key: key[0] in revoked)))
        self.paused = set()  # a new assignment starts with nothing paused
        alignment = self.input.alignment
        alignment.forget(tp for tp in alignment.next_offset if tp not in revoked)


class Sink(Protocol):
    """Where batches leave Kafka (Elasticsearch, webhooks). `write` owns its retries and
    dead-letters what it cannot write, with the reason; it returns once every event of the
    batch is written or dead-lettered, and the batch is acknowledged then."""

    async def write(self, events: list[EventT]) -> None: ...

    async def close(self) -> None: ...


def register_sink(app: AppT, topics: Topics, name: str, reads: tuple[str, ...],
                  open_sink: Callable[[], Sink], batch_size: int, within: float) -> None:
    """An agent feeding batches of `reads` to the sink `open_sink` makes, named `name`."""

    async def run_sink(stream: StreamT) -> None:
        sink = open_sink()
        try:
            async for events in batches(stream, batch_size, within):
                metrics.stage_events_in.labels(name).inc(len(events))
                began = time.perf_counter()
                try:
                    await sink.write(events)
                except Exception:
                    stop_worker(name)
                metrics.stage_batch_duration.labels(name).observe(time.perf_counter() - began)
        finally:
            await sink.close()

    run_sink.__name__ = run_sink.__qualname__ = name
    app.agent(topics(*reads), name=name)(run_sink)
