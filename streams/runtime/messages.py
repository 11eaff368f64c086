"""Messages between stages: typed, versioned, and batched.

Every internal topic carries batches. One Kafka message is one batch of records of one type,
all bound for the same partition of that topic:

    msgpack map {"v": 1, "type": "<record type>", "records": [<record>, ...]}

`v` is the wire version of the envelope and of every record type's fields (a field renamed
since is still read under its old name: `PromptVector.RENAMED`). A record is the
plain form of its type (`to_plain`): a msgpack map of str keys and plain values (str, int,
float, bool, None, bytes, lists and maps of them). Nothing is pickled, so nothing written to a
topic can run code in the worker. A reader refuses a batch whose version or type it does not
know, or whose records do not fit their type, with `MessageError`, whose text says why; the
stage runtime dead-letters such a batch and goes on.

A record fits its type only if its values are in range, too: times between 2015 and 2100, ids
that are non-empty strings, numbers finite. What a stage keeps in state comes from these
records, so one absurd value (a signal dated 10^17 ms) refused here is one dead letter, where
let in it would fail the stage's end-of-batch work on every restart. The range is fixed, not
"a day ahead of now": decoding runs without a clock (and replays read old traffic), and ingest
already held each event to a day ahead of the wall clock, so every time a record carries, being
derived from event times, is inside it.

Every batch the worker writes is sealed with its key (`streams/runtime/sealing.py`): the
message is the batch's bytes behind a MAC, and a reader refuses one whose MAC is missing or
wrong with `UnverifiedRecordError`, which the stage runtime dead-letters with a security
alert. A forged event, prompt vector or jailbreak match would otherwise become an alert, a
campaign or a signal that the worker itself then seals. The one type that travels unsealed is
an analyst's decision (`UNSEALED_TYPES`, on `misuse.feedback`, or an approval on
`misuse.account-actions`): other services write it (`misuse review`, `feedback_batch`), and
each carries its analyst's own signature instead (`streams/runtime/review.py`).

Why batches: a stage that sends one Kafka message per record spends most of its time in the
producer's send path. Records bound for one partition (chosen with the same murmur2
partitioner as a keyed send, `streams/runtime/outbox.py`) share one message, so keyed state still
lands where its key says.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol, TypeVar

import msgpack
import numpy as np

from detectors.alerts import Alert
from detectors.events import (
    EARLIEST_EVENT_MS,
    InvalidEventError,
    UsageEvent,
    event_from_dict,
    not_strict_json,
)
from detectors.risk import Signal
from streams.runtime.sealing import (
    HEADER_BYTES,
    MAGIC,
    UNSEALED,
    KeyRing,
    UnsealedError,
)

WIRE_VERSION = 1
ALERTS = "misuse.alerts"  # where a refused sealed batch raises its security alert
EARLIEST_RECORD_MS = EARLIEST_EVENT_MS  # 2015-01-01
LATEST_RECORD_MS = 4_102_444_800_000  # 2100-01-01
LATEST_DATE_MS = 253_402_214_400_000  # 9999-12-31, the last a date can show: ends chosen by hand
MAX_BATCH_BYTES = 8 * 1024 * 1024  # a reader refuses anything larger before decoding it

R = TypeVar("R", bound="Record")
P = TypeVar("P", bound="PlainRecord")
T = TypeVar("T")


class MessageError(ValueError):
    """A batch that cannot be read: not msgpack, unknown version or type, or a record that
    does not fit its type. The text says which."""


class UnverifiedRecordError(MessageError):
    """A batch whose MAC is missing (and whose type is not one of `UNSEALED_TYPES`) or does
    not verify: not the worker's."""

    def __init__(self, record_type: str, why: str) -> None:
        record_type = record_type[:60]  # a forger's claim: kept short
        super().__init__(f"unverified {record_type} batch: {why}")
        self.record_type, self.why = record_type, why


class Record(Protocol):
    """A record type: a frozen dataclass with a wire name and a plain form."""

    TYPE: ClassVar[str]

    def to_plain(self) -> dict[str, Any]: ...

    @classmethod
    def from_plain(cls: type[R], plain: Mapping[str, Any]) -> R: ...


class PlainRecord:
    """The plain form of a dataclass whose fields are already plain values (str, numbers,
    bools, None, bytes, lists and maps of them)."""

    TYPE: ClassVar[str] = ""

    def to_plain(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_plain(cls: type[P], plain: Mapping[str, Any]) -> P:
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(plain) - names
        if unknown:
            raise MessageError(f"{cls.TYPE}: unknown field(s) {', '.join(sorted(unknown))}")
        try:
            record = cls(**plain)
        except TypeError as exc:  # a required field is missing
            raise MessageError(f"{cls.TYPE}: {exc}") from None
        _require_finite(cls.TYPE, plain)
        record.check()
        return record

    def check(self) -> None:
        """Raise MessageError if a value is out of its range (see the module's doc)."""


@dataclass(frozen=True, slots=True)
class Batch:
    type: str
    records: tuple[Mapping[str, Any], ...]


def encode_batch(record_type: str, records: Sequence[Record], ring: KeyRing) -> bytes:
    """One message of the worker's, sealed with `ring` (the worker's `settings.internal_keys`)."""
    return ring.seal(_packed(record_type, records))


def feedback_batch(records: Sequence[FeedbackRecord]) -> bytes:
    """Analysts' decisions as the tools outside the worker write them: unsealed (the worker's
    key stays with the worker), each record signed by its analyst."""
    return _packed(FeedbackRecord.TYPE, records)


def _packed(record_type: str, records: Sequence[Record]) -> bytes:
    return msgpack.packb({"v": WIRE_VERSION, "type": record_type,
                          "records": [r.to_plain() for r in records]}, use_bin_type=True)


def decode_batch(raw: bytes | None, ring: KeyRing) -> Batch:
    """The envelope of one Kafka message; its records stay plain until `records_of`. A sealed
    message is read only when its MAC verifies under `ring`, before anything in it is
    decoded; an unsealed one only when its type is one of `UNSEALED_TYPES`."""
    if raw is None:
        raise MessageError("empty message: a batch has a value")
    if len(raw) > MAX_BATCH_BYTES:
        raise MessageError(f"batch of {len(raw)} bytes is over {MAX_BATCH_BYTES}")
    if raw.startswith(MAGIC):
        try:
            return _envelope(ring.open(raw))
        except UnsealedError as exc:
            raise UnverifiedRecordError(_type_of(raw[HEADER_BYTES:]), str(exc)) from None
    batch = _envelope(raw)
    if batch.type not in UNSEALED_TYPES:
        raise UnverifiedRecordError(batch.type, UNSEALED)
    return batch


def _type_of(payload: bytes) -> str:
    """The type a refused batch claims, for its security alert."""
    try:
        return _envelope(payload).type
    except MessageError:
        return "unreadable"


def _envelope(raw: bytes) -> Batch:
    try:
        envelope = msgpack.unpackb(raw, raw=False, strict_map_key=True,
                                   max_bin_len=MAX_BATCH_BYTES, max_str_len=MAX_BATCH_BYTES)
    except Exception as exc:  # msgpack raises several types for bad input
        raise MessageError(f"not a msgpack batch: {type(exc).__name__}: {exc}") from None
    if not isinstance(envelope, dict):
        raise MessageError("not a batch: the message is not a map")
    version = envelope.get("v")
    if version != WIRE_VERSION:
        raise MessageError(f"unknown wire version {version!r}; this worker reads "
                           f"{WIRE_VERSION}")
    records = envelope.get("records")
    if not isinstance(envelope.get("type"), str) or not isinstance(records, list) \
            or not all(isinstance(r, dict) for r in records):
        raise MessageError("not a batch: it needs a str type and a list of record maps")
    return Batch(envelope["type"], tuple(records))


def records_of(batch: Batch, record_type: type[R]) -> list[R]:
    if batch.type != record_type.TYPE:
        raise MessageError(f"expected {record_type.TYPE} records, got {batch.type!r}")
    return [record_type.from_plain(plain) for plain in batch.records]


def alerts_in(raw: bytes | None, ring: KeyRing) -> list[Alert]:
    """The alerts of one message of the alerts topic, for tools that read it (eval, bench)."""
    return [record.alert for record in records_of(decode_batch(raw, ring), AlertRecord)]


def vector_bytes(vector: np.ndarray) -> bytes:
    """A vector on the wire: float16, 768 bytes for 384 dimensions."""
    return np.asarray(vector, dtype=np.float16).tobytes()


def vector_from(raw: bytes) -> np.ndarray:
    """The unit float32 vector of `vector_bytes`; a wrong size is a MessageError."""
    if not isinstance(raw, bytes) or len(raw) % 2:
        raise MessageError("a vector is float16 bytes")
    vector = np.frombuffer(raw, dtype=np.float16).astype(np.float32)
    if not np.all(np.isfinite(vector)):
        raise MessageError("a vector has a NaN or infinite component")
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


# The record types. Each names its wire type; a field added later must have a default, and a
# renamed or retyped field is a new wire version.

@dataclass(frozen=True, slots=True)
class EventRecord:
    """A validated usage event forwarded by ingest (without its prompt on the network topic,
    with its redacted prompt on the prompts topic). Read back through the same validation as
    the input: a stage never trusts a record it did not make."""

    TYPE: ClassVar[str] = "usage-event"
    event: UsageEvent

    @property
    def ts_ms(self) -> int:
        return self.event.ts_ms

    def to_plain(self) -> dict[str, Any]:
        return self.event.to_dict()

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> EventRecord:
        return cls(forwarded_event(plain))


def forwarded_event(plain: Any) -> UsageEvent:
    """A usage event as one stage forwards it to another: validated again (a stage never
    trusts a record it did not make), but not against the clock, which ingest did."""
    event = _read(EventRecord.TYPE, lambda p: event_from_dict(dict(p), _NO_CLOCK_CHECK), plain)
    _require_time(EventRecord.TYPE, "ts", event.ts_ms)
    return event


@dataclass(frozen=True, slots=True)
class AlertRecord:
    TYPE: ClassVar[str] = "alert"
    alert: Alert

    def to_plain(self) -> dict[str, Any]:
        return self.alert.to_dict()

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> AlertRecord:
        return cls(read_alert(cls.TYPE, plain))


def read_alert(record_type: str, plain: Mapping[str, Any]) -> Alert:
    """An alert in its plain form, as a record of `record_type` carries it."""
    alert = _read(record_type, Alert.from_dict, plain)
    _require_finite(record_type, plain)
    for name in ("rule_id", "severity"):
        _require_id(record_type, name, getattr(alert, name))
    _require_id(record_type, "entity.kind", alert.entity.kind)
    _require_id(record_type, "entity.id", alert.entity.id)
    for account in alert.accounts:
        _require_id(record_type, "accounts[]", account)
    for name in ("incident_start_ms", "window_end_ms"):
        _require_time(record_type, name, getattr(alert, name))
    if not 0 <= alert.window_start_ms <= alert.window_end_ms:  # an empty window starts at 0
        raise MessageError(f"{record_type}: window_start_ms = {alert.window_start_ms} is not "
                           f"in 0..window_end_ms")
    return alert


@dataclass(frozen=True, slots=True)
class SignalRecord:
    TYPE: ClassVar[str] = "signal"
    signal: Signal

    def to_plain(self) -> dict[str, Any]:
        return self.signal.to_dict()

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> SignalRecord:
        signal = _read(cls.TYPE, Signal.from_dict, plain)  # refuses a strength outside 0..1
        for name in ("account_id", "detector", "rule_id"):
            _require_id(cls.TYPE, name, getattr(signal, name))
        _require_time(cls.TYPE, "ts_ms", signal.ts_ms)
        return cls(signal)


@dataclass(frozen=True, slots=True)
class DocumentRecord(PlainRecord):
    """A campaign, account or action document for Elasticsearch (`index` without prefix),
    written as a partial update."""

    TYPE: ClassVar[str] = "document"
    index: str
    id: str
    source: dict[str, Any]

    def check(self) -> None:
        _require_id(self.TYPE, "index", self.index)
        _require_id(self.TYPE, "id", self.id)


@dataclass(frozen=True, slots=True)
class FeedbackRecord(PlainRecord):
    """An analyst's decision on an account (cleared, allowlisted, optionally until a time, or
    unlisted), on the suspension waiting for it (approved, rejected; `resume` for the breaker),
    or on one of its alerts (acknowledged, closed with a `close_reason`)."""

    TYPE: ClassVar[str] = "feedback"
    account_id: str
    decision: str
    analyst: str
    ts_ms: int
    until_ms: int | None = None
    note: str = ""
    signature: str = ""  # HMAC-SHA256 by the analyst's key (`streams/runtime/review.py`)
    alert_id: str = ""
    close_reason: str = ""  # true_positive, false_positive, benign_positive, duplicate
    page_group: str = ""  # the page the closed alert's incident resolves
    # Its own id, signed with the rest: the worker applies a decision once (review.py)
    decision_id: str = ""

    def check(self) -> None:
        for name in ("account_id", "decision", "analyst"):
            _require_id(self.TYPE, name, getattr(self, name))
        _require_time(self.TYPE, "ts_ms", self.ts_ms)
        if self.until_ms is not None:  # chosen by the analyst, any date a calendar shows
            _require_time(self.TYPE, "until_ms", self.until_ms, latest=LATEST_DATE_MS)


@dataclass(frozen=True, slots=True)
class JailbreakMatch(PlainRecord):
    """A prompt close to a pattern of the jailbreak bank, for the cross-account spread rule
    (keyed by pattern id). The event travels without its prompt."""

    TYPE: ClassVar[str] = "jailbreak-match"
    event: UsageEvent
    similarity: float
    pattern_id: str
    pattern_category: str
    pattern_text: str

    @property
    def ts_ms(self) -> int:
        return self.event.ts_ms

    def to_plain(self) -> dict[str, Any]:
        event = self.event.to_dict()
        event.pop("prompt", None)
        return {**PlainRecord.to_plain(self), "event": event}

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> JailbreakMatch:
        return super(JailbreakMatch, cls).from_plain(
            {**plain, "event": forwarded_event(plain.get("event"))})

    def check(self) -> None:
        _require_id(self.TYPE, "pattern_id", self.pattern_id)
        if not isinstance(self.similarity, float | int) or isinstance(self.similarity, bool) \
                or not -1.0 <= self.similarity <= 1.0:
            raise MessageError(f"{self.TYPE}: similarity = {self.similarity!r} is not a cosine")


@dataclass(frozen=True, slots=True)
class ActionRequest:
    """An action the risk stage asks for, for the act stage: a suspension, or its reversal
    (`unsuspend`) after an analyst cleared or allowlisted the account. It travels as
    {"request": {...}}, the map its audit documents and the approval queue keep (`as_map`)."""

    TYPE: ClassVar[str] = "action-request"
    # What requests written before this type had fields still carry: `by` (now `analyst`) and
    # the status change's own flags, which nothing read.
    FORMER: ClassVar[dict[str, str | None]] = {
        "by": "analyst", "request_suspension": None, "set_by": None}
    account_id: str
    action: str  # suspend, unsuspend
    ts_ms: int
    automated: bool = True
    dry_run: bool | None = None  # a suspension's: carried out only when False
    reasons: tuple[str, ...] = ()
    alert_ids: tuple[str, ...] = ()
    detectors: tuple[str, ...] = ()
    # The status change behind a suspension
    score: float | None = None
    status: str | None = None
    previous: str | None = None
    evidence_since_ms: int | None = None
    # A reversal: the analyst, and the decision it carries out (its audit's id)
    analyst: str | None = None
    decision_id: str = ""

    @property
    def dry(self) -> bool:
        """A suspension only logged: unless the risk stage said it may be carried out."""
        return self.dry_run is not False

    def as_map(self) -> dict[str, Any]:
        plain = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in plain.items()}

    def to_plain(self) -> dict[str, Any]:
        return {"request": self.as_map()}

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> ActionRequest:
        if set(plain) != {"request"} or not isinstance(plain["request"], Mapping):
            raise MessageError(f"{cls.TYPE}: a map of one field, request, that is a map")
        return cls.from_map(plain["request"])

    @classmethod
    def from_map(cls, request: Mapping[str, Any]) -> ActionRequest:
        """A request from its map (`as_map`, or as a request written before held it)."""
        names = {f.name for f in fields(cls)}
        current: dict[str, Any] = {}
        for name, value in request.items():
            name_now = cls.FORMER.get(name, name) if name not in names else name
            if name_now is None:
                continue
            if name_now not in names:
                raise MessageError(f"{cls.TYPE}: unknown field request.{name}")
            current[name_now] = tuple(value) if isinstance(value, list) else value
        try:
            action = cls(**current)
        except TypeError as exc:  # a required field is missing
            raise MessageError(f"{cls.TYPE}: {exc}") from None
        _require_finite(cls.TYPE, request)
        _require_id(cls.TYPE, "request.account_id", action.account_id)
        _require_id(cls.TYPE, "request.action", action.action)
        _require_time(cls.TYPE, "request.ts_ms", action.ts_ms)
        for name in ("reasons", "alert_ids", "detectors"):
            items = getattr(action, name)
            if not isinstance(items, tuple) or not all(isinstance(i, str) for i in items):
                raise MessageError(f"{cls.TYPE}: request.{name} must be a list of strings")
        return action


@dataclass(frozen=True, slots=True)
class PageRequest(PlainRecord):
    """An alert that may page on-call (`trigger`), or the end of its incident (`resolve`), for
    the act stage, which routes, groups and rate-limits pages. `group`: what pages once per
    window (a campaign, or one rule on one entity)."""

    TYPE: ClassVar[str] = "page-request"
    action: str
    group: str
    ts_ms: int
    alert: Alert | None = None

    def to_plain(self) -> dict[str, Any]:
        return {**PlainRecord.to_plain(self),
                "alert": None if self.alert is None else self.alert.to_dict()}

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> PageRequest:
        alert = plain.get("alert")
        return super(PageRequest, cls).from_plain(
            {**plain, "alert": None if alert is None else read_alert(cls.TYPE, alert)})

    def check(self) -> None:
        _require_id(self.TYPE, "action", self.action)
        _require_id(self.TYPE, "group", self.group)
        _require_time(self.TYPE, "ts_ms", self.ts_ms)


@dataclass(frozen=True, slots=True)
class Delivery(PlainRecord):
    """One request to an outside system, decided by the act stage and carried out by the
    delivery sink. `id` is its idempotency key, the same on every retry, replay and restart
    (Standard Webhooks' `webhook-id`); `receiver` is suspension, pagerduty or alertmanager;
    `body` holds no secret (the sink adds routing keys and signatures)."""

    TYPE: ClassVar[str] = "delivery"
    id: str
    receiver: str
    body: dict[str, Any]
    account_id: str = ""
    action: str = ""
    ts_ms: int = 0

    def check(self) -> None:
        _require_id(self.TYPE, "id", self.id)
        _require_id(self.TYPE, "receiver", self.receiver)
        if self.ts_ms != 0:  # 0: not known (the field's default)
            _require_time(self.TYPE, "ts_ms", self.ts_ms)


def _read(record_type: str, parse: Callable[[Mapping[str, Any]], T],
          plain: Mapping[str, Any]) -> T:
    """`parse(plain)`, with whatever a malformed record makes it raise as a MessageError."""
    try:
        return parse(plain)
    except (InvalidEventError, KeyError, TypeError, ValueError, OverflowError) as exc:
        raise MessageError(f"{record_type}: {exc!r}") from None


def _require_time(record_type: str, name: str, value: Any, *,
                  latest: int = LATEST_RECORD_MS) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise MessageError(f"{record_type}: {name} must be epoch millis (an integer), got "
                           f"{type(value).__name__}")
    if not EARLIEST_RECORD_MS <= value <= latest:
        year = 2100 if latest == LATEST_RECORD_MS else 9999
        raise MessageError(f"{record_type}: {name} = {value} ms is outside 2015..{year}")


def _require_id(record_type: str, name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise MessageError(f"{record_type}: {name} must be a non-empty string, got "
                           f"{value!r:.40}")


def _require_finite(record_type: str, value: Any) -> None:
    if (reason := not_strict_json(value)) is not None:
        raise MessageError(f"{record_type}: {reason}")


@dataclass(frozen=True, slots=True)
class PromptVector(PlainRecord):
    """One embedded prompt for the campaign stage: the vector of its narrative (payload or
    whole prompt) in its space, who sent it, and what the embedding stage knows of the
    account and key that the campaign stage, keyed by LSH bucket, cannot."""

    TYPE: ClassVar[str] = "prompt-vector"
    # Field names it was written with before every time was named `..._ms`: still read, for
    # the vectors a restart reads back (`streams/stages/detect_campaigns.py`).
    RENAMED: ClassVar[dict[str, str]] = {"ts": "ts_ms", "key_first_seen": "key_first_seen_ms"}
    event_id: str
    ts_ms: int
    account_id: str
    api_key_id: str
    ip: str
    user_agent: str
    sample: str
    text_key: str
    space: str
    vector: bytes
    account_prompts: int
    key_first_seen_ms: int
    wrapper_key: str = ""
    wrapper: str = ""
    # The payload's language, when the model embedded it ("und" when not known).
    language: str = "und"
    disguised: bool = False  # look-alike letters, invisible characters, letters spaced apart
    intent: str = ""  # what its wrapper asks: publish, verify, jailbreak, other; "" if none

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> PromptVector:
        named: dict[str, Any] = {}
        for name, value in plain.items():
            current = cls.RENAMED.get(name, name)
            if current in named:
                raise MessageError(f"{cls.TYPE}: {current} given under both its names")
            named[current] = value
        return super(PromptVector, cls).from_plain(named)

    def check(self) -> None:
        for name in ("event_id", "account_id", "api_key_id"):
            _require_id(self.TYPE, name, getattr(self, name))
        _require_time(self.TYPE, "ts_ms", self.ts_ms)
        _require_time(self.TYPE, "key_first_seen_ms", self.key_first_seen_ms)
        if not isinstance(self.account_prompts, int) or self.account_prompts < 0:
            raise MessageError(f"{self.TYPE}: account_prompts = {self.account_prompts!r} is "
                               "not a count")


_NO_CLOCK_CHECK = 2**62


# What other services write to the worker's topics, signed their own way: every other batch
# travels sealed (see the module's doc).
UNSEALED_TYPES = frozenset({FeedbackRecord.TYPE})

RECORD_TYPES: dict[str, type[Record]] = {
    t.TYPE: t for t in (EventRecord, AlertRecord, SignalRecord, DocumentRecord, FeedbackRecord,
                        JailbreakMatch, ActionRequest, PageRequest, Delivery, PromptVector)}


def records_in(raw: bytes | None, ring: KeyRing) -> list[Record]:
    """The records of one message, whatever their type (for tools that read any topic)."""
    batch = decode_batch(raw, ring)
    if batch.type not in RECORD_TYPES:
        raise MessageError(f"unknown record type {batch.type!r}")
    return records_of(batch, RECORD_TYPES[batch.type])
