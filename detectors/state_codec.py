"""Detector state as plain, versioned data: what the state tables store, and how it is read back.

One stored value is zlib-compressed msgpack of

    {"v": 1, "state": <value>}

`v` is the format version. A <value> is plain msgpack (None, bool, int, float, str, bytes, a
list, a map with str keys) or a tagged map, whose "$" key names what it stands for:

    {"$": "tuple",   "items": [<value>, ...]}
    {"$": "set",     "items": [<value>, ...]}             sorted, so equal sets encode alike
    {"$": "deque",   "items": [<value>, ...], "maxlen": int | None}
    {"$": "counter", "items": [[<key>, int], ...]}         in the counter's order
    {"$": "dict",    "items": [[<key>, <value>], ...]}     a dict with a key that is not a str
                                                           (or is "$"), in the dict's order
    {"$": "<name>",  <field>: <value>, ...}                a dataclass of STATE_TYPES

Order is kept wherever the detectors depend on it (the leaked-key detector keeps its dicts
ordered by last use; ties in Counter.most_common fall to insertion order).

Only the dataclasses named in STATE_TYPES are ever constructed, through their own __init__ (so
their validation runs); nothing is imported by a name found in the data and nothing is
unpickled, so whoever can write a changelog topic cannot make the worker run code. The names
are stable strings, not class names: a class may be renamed or moved, its name here may not.

Changing a stored type: a field added later needs a default (older values load without it);
a field renamed or removed, or a type's meaning changed, needs a new FORMAT_VERSION and a step
in `_upgrade` that turns the older plain form into the new one. tests/data/state-v1.msgpack
holds states written by version 1, which every later version must keep reading.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import msgpack

from detectors.accounts import AccountRecord, AccountStatus
from detectors.actions import AutomationLedger, PageLedger
from detectors.credential_stuffing import _Attempt, _RangeState
from detectors.incidents import Incident
from detectors.jailbreak import AccountJailbreakState, PatternState, _Hit, _Use
from detectors.leaked_key import KeyState
from detectors.risk import AccountRisk, Signal
from detectors.scraping import ScrapingState
from detectors.scraping import _Request as _ScrapingRequest
from detectors.sybil import RangeState as SybilRangeState
from detectors.sybil import _Request as _SybilRequest
from detectors.windows import ActivityCounter, SlidingWindow

FORMAT_VERSION = 1
TAG = "$"
MAX_STATE_BYTES = 64 * 1024 * 1024  # inflated; a reader refuses anything larger

# Every type a state table may hold, by its stable name. Only these are built on decode.
STATE_TYPES: dict[str, type] = {
    "incident": Incident,
    "sliding_window": SlidingWindow,
    "activity_counter": ActivityCounter,
    "credential_stuffing.range": _RangeState,
    "credential_stuffing.attempt": _Attempt,
    "sybil.range": SybilRangeState,
    "sybil.request": _SybilRequest,
    "scraping.account": ScrapingState,
    "scraping.request": _ScrapingRequest,
    "leaked_key.key": KeyState,
    "jailbreak.account": AccountJailbreakState,
    "jailbreak.hit": _Hit,
    "jailbreak.pattern": PatternState,
    "jailbreak.use": _Use,
    "risk.account": AccountRisk,
    "risk.signal": Signal,
    "accounts.record": AccountRecord,
    "accounts.status": AccountStatus,
    "actions.automation": AutomationLedger,
    "actions.pages": PageLedger,
}
_BUILTIN_TAGS = frozenset({"tuple", "set", "deque", "counter", "dict"})
_NAMES = {cls: name for name, cls in STATE_TYPES.items()}
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _NAMES}
assert not _BUILTIN_TAGS & set(STATE_TYPES) and len(_NAMES) == len(STATE_TYPES)


class StateCodecError(ValueError):
    """A state that cannot be encoded (a type this codec does not know) or decoded (not
    msgpack, an unknown version, tag or type, or fields that do not fit). The text says which."""


def encode_state(value: Any) -> bytes:
    envelope = msgpack.packb({"v": FORMAT_VERSION, "state": to_plain(value)}, use_bin_type=True)
    # Level 1: field names and tags repeat in every window item and compress ~8x, for a small
    # share of the encoding's time; the busiest states (an attack's window) stay far below
    # Kafka's message size limit.
    return zlib.compress(envelope, 1)


def decode_state(raw: bytes) -> Any:
    try:
        inflater = zlib.decompressobj()
        packed = inflater.decompress(raw, MAX_STATE_BYTES)
        if inflater.unconsumed_tail:
            raise StateCodecError(f"state is over {MAX_STATE_BYTES} bytes")
        envelope = msgpack.unpackb(packed, raw=False, strict_map_key=True)
    except StateCodecError:
        raise
    except Exception as exc:  # zlib and msgpack raise several types for bad input
        hint = " (pickled state from before the codec?)" if raw[:1] == b"\x80" else ""
        raise StateCodecError(f"not a stored state{hint}: {type(exc).__name__}: {exc}") \
            from None
    if not isinstance(envelope, dict) or set(envelope) != {"v", "state"}:
        raise StateCodecError("not a state: expected a map of 'v' and 'state'")
    version = envelope["v"]
    if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
        raise StateCodecError(f"unknown state format version {version!r}; this worker reads "
                              f"1 to {FORMAT_VERSION}")
    try:
        return from_plain(_upgrade(version, envelope["state"]))
    except RecursionError:
        raise StateCodecError("state nested too deeply") from None


def _upgrade(version: int, plain: Any) -> Any:
    """The plain form of format `version` in the current one (nothing to do while there is
    only version 1): one step per version, applied in turn."""
    return plain


def to_plain(value: Any) -> Any:
    """`value` in its plain form (the module's docstring). Dispatched on the exact type: a
    state is encoded whole after every batch that changed it (a busy account's window of
    thousands of requests), and a chain of isinstance tests per item was most of that time."""
    encode = _ENCODERS.get(type(value))
    return encode(value) if encode is not None else _to_plain_other(value)


def _to_plain_other(value: Any) -> Any:
    """Subclasses of the plain types (a numpy float64 is a float, an IntEnum an int)."""
    if isinstance(value, int | str | bytes):
        return value
    if isinstance(value, float):
        return float(value)  # a numpy float64 is a float: store the plain one
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    raise StateCodecError(f"{type(value).__qualname__} is not a state type: add it to "
                          "STATE_TYPES under a stable name")


def _itself(value: Any) -> Any:
    return value


def _plain_dict(value: dict[Any, Any]) -> dict[str, Any]:
    if all(isinstance(k, str) and k != TAG for k in value):
        return {k: to_plain(v) for k, v in value.items()}
    return {TAG: "dict", "items": [[to_plain(k), to_plain(v)] for k, v in value.items()]}


def _plain_dataclass(name: str, fields: tuple[str, ...]) -> Callable[[Any], dict[str, Any]]:
    def encode(value: Any) -> dict[str, Any]:
        plain: dict[str, Any] = {TAG: name}
        for field in fields:
            plain[field] = to_plain(getattr(value, field))
        return plain
    return encode


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    type(None): _itself, bool: _itself, int: _itself, str: _itself, bytes: _itself,
    float: _itself,
    list: lambda value: [to_plain(v) for v in value],
    tuple: lambda value: {TAG: "tuple", "items": [to_plain(v) for v in value]},
    set: lambda value: {TAG: "set", "items": [to_plain(v) for v in _sorted(value)]},
    deque: lambda value: {TAG: "deque", "items": [to_plain(v) for v in value],
                          "maxlen": value.maxlen},
    Counter: lambda value: {TAG: "counter",
                            "items": [[to_plain(k), to_plain(v)] for k, v in value.items()]},
    dict: _plain_dict,
    **{cls: _plain_dataclass(name, _FIELDS[cls]) for cls, name in _NAMES.items()},
}


def from_plain(plain: Any) -> Any:
    if isinstance(plain, list):
        return [from_plain(v) for v in plain]
    if not isinstance(plain, dict):
        return plain
    if TAG not in plain:
        return {k: from_plain(v) for k, v in plain.items()}
    tag = plain[TAG]
    if not isinstance(tag, str):
        raise StateCodecError(f"a type tag is a str, not {tag!r}")
    if tag in _BUILTIN_TAGS:
        return _builtin(tag, plain)
    cls = STATE_TYPES.get(tag)
    if cls is None:
        raise StateCodecError(f"unknown state type {tag!r}")
    fields = {k: from_plain(v) for k, v in plain.items() if k != TAG}
    unknown = set(fields) - set(_FIELDS[cls])
    if unknown:
        raise StateCodecError(f"{tag}: unknown field(s) {', '.join(sorted(unknown))}")
    try:
        return cls(**fields)
    except (TypeError, ValueError) as exc:  # a required field is missing, or refused
        raise StateCodecError(f"{tag}: {exc}") from None


def _builtin(tag: str, plain: dict[str, Any]) -> Any:
    items = plain.get("items")
    expected = {TAG, "items", "maxlen"} if tag == "deque" else {TAG, "items"}
    if not isinstance(items, list) or set(plain) != expected:
        raise StateCodecError(f"{tag}: expected the keys {', '.join(sorted(expected))}")
    try:
        if tag == "tuple":
            return tuple(from_plain(v) for v in items)
        if tag == "set":
            return {from_plain(v) for v in items}
        if tag == "deque":
            return deque((from_plain(v) for v in items), maxlen=plain["maxlen"])
        pairs = [(from_plain(k), from_plain(v)) for k, v in items]
        # Counter(pairs) would count the pairs: build it from a dict, which keeps the order.
        return Counter(dict(pairs)) if tag == "counter" else dict(pairs)
    except (TypeError, ValueError) as exc:  # a pair that is not two items, an unhashable key
        raise StateCodecError(f"{tag}: {exc}") from None


def _sorted(values: set[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:  # mixed types: the order does not matter for a set, only for its bytes
        return list(values)
