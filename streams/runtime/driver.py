"""One loop for every stage.

A stage is a plain object (`Stage`): the record types it reads, the per-entity state tables
it keeps (plain mappings it gets from a `StateStore` when it is built), `process(record, emit,
now_ms)`, `reconfigure(policy)`, `after(emit, latest_event_ms)` for periodic work and
housekeeping, and optionally `prepare(records)`, a pure step over a whole message's records
(the embedding model's batch) whose result `process` then receives record by record. It knows
nothing of Faust or Kafka: in tests its state is `MemoryState`, in the worker Faust tables.
`StageDriver` runs one batch of Kafka messages through a stage with the loop's contract;
the Faust adapter only feeds it and sends what it produced.

The contract, per batch of Kafka messages:
1. a changed policy is applied (`reconfigure`) before anything is processed;
2. each message is decoded into records; one that cannot be read becomes a dead letter with
   the reason, and the others go on;
3. each record is processed with its message as the current event (its partition is where
   per-key state of the record lives), in the order read or, for a stage that asks, in
   event-time order (ties by record id);
4. a record the stage fails on with a data error (`RECORD_ERRORS`: what bad input raises)
   becomes a dead letter with the stage's name and the error, and the others go on; any other
   error (I/O, memory, the stage's own `StageError`) is raised, so the batch is not
   acknowledged and is read again after a restart;
5. everything the stage emitted is sent as one batch per partition (`streams/runtime/outbox.py`);
6. the stage's end-of-batch work (`after`) and the state's write-back (`StateStore.flush`),
   then the batch is acknowledged.

The driver runs in two steps so that the adapter can run the first, which may block (the
embedding model), off the event loop: `prepare` decodes and prepares (pure), `finish`
processes, sends and writes state (on the loop, where Faust's tables live).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from detectors.policy import Policy
from streams.runtime.messages import (
    ALERTS,
    AlertRecord,
    MessageError,
    Record,
    UnverifiedRecordError,
    decode_batch,
)
from streams.runtime.outbox import Envelope, Outbox
from streams.runtime.sealing import KeyRing, forged_alert
from streams.settings import Settings

log = logging.getLogger(__name__)

Emit = Callable[[str, "str | bytes", Record], None]
M = TypeVar("M")  # one Kafka message as the adapter sees it


# What bad input raises inside a stage; anything else is the stage's or the world's fault.
RECORD_ERRORS = (ValueError, TypeError, KeyError, IndexError, ArithmeticError, RecursionError,
                 AttributeError, UnicodeError)


class StateStore(Protocol):
    """Where a stage's per-entity state lives: one mapping per table name, written back once
    per batch."""

    def table(self, name: str) -> MutableMapping[str, Any]: ...

    def flush(self) -> None: ...


class MemoryState:
    """State in plain dicts, for stage tests and in-process benchmarks."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {}

    def table(self, name: str) -> MutableMapping[str, Any]:
        return self.tables.setdefault(name, {})

    def flush(self) -> None:
        pass


class Stage:
    """The base of every stage: no state, nothing to tune, nothing to tidy. Subclasses set
    `name`, `reads` and `tables` (the state tables they ask their `StateStore` for) and
    override what they need. The worker builds a stage as `configured(policy, state,
    settings)`: the settings are passed in, never read from the environment by a stage."""

    name: ClassVar[str] = "stage"
    reads: ClassVar[tuple[type[Record], ...]] = ()
    tables: ClassVar[tuple[str, ...]] = ()
    # Process a batch's records in event-time order rather than the order the partition
    # interleaved them in: for windows over records from many upstream partitions, so that
    # what is found depends on the events, not on how they arrived (`StageDriver.finish`).
    in_event_time_order: ClassVar[bool] = False

    def __init__(self, policy: Policy, state: StateStore) -> None:
        """Built for `policy`, with its tables from `state` (`state.table(name)`)."""

    @classmethod
    def configured(cls, policy: Policy, state: StateStore, settings: Settings) -> Stage:
        """The stage as the worker's settings configure it (by default, nothing to take)."""
        return cls(policy, state)

    def prepare(self, records: Sequence[Record]) -> Sequence[Any]:
        """A pure step over one message's records, before they are processed one by one (the
        default passes each record on as it is). Must not touch state: on a data error it is
        retried record by record."""
        return records

    def process(self, item: Any, emit: Emit, now_ms: int) -> None:
        raise NotImplementedError

    def reconfigure(self, policy: Policy) -> None:
        """Apply new thresholds; state (windows, clusters) stays."""

    def after(self, emit: Emit, latest_event_ms: int) -> None:
        """At the end of every batch: periodic work (judging, refits, summaries) and dropping
        what has been idle longer than its window."""

    def pending(self) -> int:
        """Records taken in whose outcome has not been sent yet (points a later round, or the
        tick once the input pauses, will judge): their offsets may be committed, so the
        worker is not caught up while any stage has some (`WorkerProcess.wait_drained`)."""
        return 0

    def decode(self, raw: bytes | None, ring: KeyRing) -> list[Record]:
        """The records of one Kafka message: a batch of one of the types this stage reads,
        sealed by `ring` (`streams/runtime/messages.py` says which types travel unsealed)."""
        batch = decode_batch(raw, ring)
        for record_type in self.reads:
            if batch.type == record_type.TYPE:
                return [record_type.from_plain(plain) for plain in batch.records]
        raise MessageError(f"stage {self.name} does not read {batch.type!r} records")


@dataclass(frozen=True)
class StageSpec:
    """Where a stage runs: the topics it reads (logical names), how its batches are taken,
    and how it is built in the worker (by default `Stage.configured`; `build` may first
    restore what the stage keeps outside its tables). `blocking`: it runs in a thread, wholly when
    it keeps no tables, else its `prepare` step (`streams/runtime/stage_agent.py`). `tick_seconds`:
    also run the stage's `after` this often without input, for work that must not wait for the
    next message (judging what the last batch brought, once the input pauses).
    `align_seconds`: pause the input partitions that run more than this far ahead in event
    time of the slowest one still being read (`streams/runtime/alignment.py`)."""

    stage: type[Stage]
    reads: tuple[str, ...]
    build: Callable[[Policy, StateStore, Settings], Stage] | None = None
    batch_size: int = 500
    within: float = 0.5
    blocking: bool = False
    tick_seconds: float | None = None
    align_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter(Generic[M]):
    message: M
    reason: str


@dataclass
class BatchResult(Generic[M]):
    envelopes: list[Envelope] = field(default_factory=list)
    dead_letters: list[DeadLetter[M]] = field(default_factory=list)
    records: int = 0


@dataclass
class Prepared(Generic[M]):
    """A batch after the pure step: each readable message with its (record, prepared item)
    pairs, and the dead letters found so far."""

    messages: list[tuple[M, list[tuple[Record, Any]]]] = field(default_factory=list)
    dead_letters: list[DeadLetter[M]] = field(default_factory=list)
    # Batches refused for a missing or wrong MAC: each raises a security alert in `finish`.
    unverified: list[tuple[M, UnverifiedRecordError]] = field(default_factory=list)


class StageError(RuntimeError):
    """The stage failed in a way no single record explains: the batch must not be
    acknowledged."""


@dataclass
class StageDriver(Generic[M]):
    """Runs batches of messages through a stage. `value` and `activate` are the adapter's:
    the raw value of a message, and making a message the current event (for per-partition
    state); both are plain functions in tests. `state` is the store the stage was built with:
    written back after every batch. The outbox's ring (the worker's keys) seals what the stage
    sends and opens what it reads: one ring, so a stage cannot read with another key than it
    writes. `source`: where a message came from (its
    topic), for the security alert of one refused as unverified."""

    stage: Stage
    outbox: Outbox
    value: Callable[[M], bytes | None]
    activate: Callable[[M], None] = lambda message: None
    policy: Policy | None = None
    state: StateStore = field(default_factory=MemoryState)
    source: Callable[[M], str] = lambda message: "an internal topic"

    def run(self, messages: Sequence[M], now_ms: int, policy: Policy | None = None
            ) -> BatchResult[M]:
        return self.finish(self.prepare(messages), now_ms, policy)

    def prepare(self, messages: Sequence[M]) -> Prepared[M]:
        """Decode every message and run the stage's pure batch step; touches no state."""
        return self.prepare_step(self.decode(messages))

    def decode(self, messages: Sequence[M]) -> Prepared[M]:
        """Every message decoded, each record standing for itself until `prepare_step` (an
        aligned input puts the records in event-time order in between)."""
        prepared: Prepared[M] = Prepared()
        for message in messages:
            try:
                records = self.stage.decode(self.value(message), self.outbox.ring)
            except UnverifiedRecordError as exc:
                log.warning("record_unverified stage=%s %s", self.stage.name, exc)
                prepared.dead_letters.append(DeadLetter(message, str(exc)))
                prepared.unverified.append((message, exc))
                continue
            except MessageError as exc:
                prepared.dead_letters.append(DeadLetter(message, str(exc)))
                continue
            except RECORD_ERRORS as exc:  # a decoder's own bug or a gap in validation
                log.warning("message_dead_lettered stage=%s error=%r", self.stage.name, exc)
                prepared.dead_letters.append(DeadLetter(
                    message, f"stage {self.stage.name} could not decode it: {exc!r}"))
                continue
            prepared.messages.append((message, [(record, record) for record in records]))
        return prepared

    def prepare_step(self, decoded: Prepared[M]) -> Prepared[M]:
        """The stage's pure batch step over every record of `decoded` at once (one call of
        the model for the batch); on a data error, each record alone. Touches no state."""
        dead = list(decoded.dead_letters)
        records = [record for _, items in decoded.messages for record, _ in items]
        try:
            outputs = list(self.stage.prepare(records)) if records else []
            if len(outputs) != len(records):
                raise ValueError(f"{len(outputs)} prepared for {len(records)} records")
            steps = iter(outputs)
            messages = [(message, [(record, next(steps)) for record, _ in items])
                        for message, items in decoded.messages]
        except RECORD_ERRORS:
            messages = [(message, self._one_by_one(message, [r for r, _ in items], dead))
                        for message, items in decoded.messages]
        return Prepared(messages, dead, decoded.unverified)

    def finish(self, prepared: Prepared[M], now_ms: int, policy: Policy | None = None
               ) -> BatchResult[M]:
        if policy is not None and policy is not self.policy:
            if self.policy is not None:
                self.stage.reconfigure(policy)
            self.policy = policy
        result: BatchResult[M] = BatchResult(dead_letters=list(prepared.dead_letters))
        for message, refused in prepared.unverified:
            alert = forged_alert(refused.record_type, self.source(message), refused.why, now_ms)
            self.outbox.put(ALERTS, alert.alert_id, AlertRecord(alert))
        latest_ms = 0
        current: M | None = None
        for message, record, item in self._in_order(prepared):
            if message is not current:
                self.activate(message)
                current = message
            try:
                self.stage.process(item, self.outbox.put, now_ms)
            except RECORD_ERRORS as exc:
                self._dead(message, record, exc, result.dead_letters)
                continue
            result.records += 1
            latest_ms = max(latest_ms, event_ms(record))
        self.stage.after(self.outbox.put, latest_ms)
        result.envelopes = list(self.outbox.drain())
        self.state.flush()
        return result

    def _in_order(self, prepared: Prepared[M]) -> list[tuple[M, Record, Any]]:
        triples = [(message, record, item) for message, items in prepared.messages
                   for record, item in items]
        if self.stage.in_event_time_order:
            triples.sort(key=lambda t: (event_ms(t[1]), record_id(t[1])))
        return triples

    def _one_by_one(self, message: M, records: list[Record], dead: list[DeadLetter[M]]
                    ) -> list[tuple[Record, Any]]:
        prepared = []
        for record in records:  # which one? each alone
            try:
                prepared.append((record, self.stage.prepare([record])[0]))
            except RECORD_ERRORS as exc:
                self._dead(message, record, exc, dead)
        return prepared

    def _dead(self, message: M, record: Record, exc: BaseException,
              dead: list[DeadLetter[M]]) -> None:
        log.warning("record_dead_lettered stage=%s type=%s error=%r", self.stage.name,
                    record.TYPE, exc)
        dead.append(DeadLetter(
            message, f"stage {self.stage.name} failed on a {record.TYPE} record: {exc!r}"))


def event_ms(record: Any) -> int:
    """The event time of a record (`ts_ms`), for housekeeping; 0 when it has none."""
    value = getattr(record, "ts_ms", 0)
    return value if isinstance(value, int) else 0


def record_id(record: Any) -> str:
    """What breaks a tie in event time: the event's id, else nothing (the sort is stable)."""
    return str(getattr(getattr(record, "event", record), "event_id", ""))
