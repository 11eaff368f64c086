"""The usage event: parsing and validation exactly as DESIGN.md specifies.

Parsing is pure: the caller passes the current time so that "absurd timestamps" can be judged
without this module reading a clock.
"""

from __future__ import annotations

import ipaddress
import json
import math
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from detectors.text import blank

MAX_EVENT_BYTES = 256 * 1024
MAX_ID_CHARS = 128
MAX_USER_AGENT_CHARS = 1024
MAX_ENDPOINT_CHARS = 1024
MAX_PROMPT_BYTES = 64 * 1024
MAX_DEPTH = 16  # nesting of objects and arrays, extra fields included
# Integers travel as msgpack between stages: what does not fit 64 bits is refused here.
INT_RANGE = (-(1 << 63), 1 << 64)
# Nothing this API ever served predates 2015; a timestamp before that is a unit or parsing bug.
EARLIEST_EVENT_MS = 1_420_070_400_000
DEFAULT_MAX_FUTURE_SKEW_MS = 24 * 3600 * 1000

KNOWN_FIELDS = frozenset(
    {
        "event_id", "ts", "account_id", "org_id", "api_key_id", "ip", "user_agent", "endpoint",
        "model", "status", "prompt", "prompt_tokens", "completion_tokens", "latency_ms",
        "moderation",
    }
)


class InvalidEventError(ValueError):
    """The event breaks the schema; the message says how, for a person reading the dead letters."""


@dataclass(frozen=True, slots=True)
class Moderation:
    flagged: bool
    categories: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UsageEvent:
    event_id: str
    ts_ms: int
    account_id: str | None
    api_key_id: str
    ip: str
    endpoint: str
    status: int
    org_id: str | None = None
    user_agent: str | None = None
    model: str | None = None
    prompt: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: float | None = None
    moderation: Moderation | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_auth_failure(self) -> bool:
        return self.status == 401

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form, as forwarded between stages (ts in epoch millis)."""
        out: dict[str, Any] = dict(self.extra)
        out |= {
            "event_id": self.event_id, "ts": self.ts_ms, "account_id": self.account_id,
            "api_key_id": self.api_key_id, "ip": self.ip, "endpoint": self.endpoint,
            "status": self.status,
        }
        for name in ("org_id", "user_agent", "model", "prompt", "prompt_tokens",
                     "completion_tokens", "latency_ms"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.moderation is not None:
            out["moderation"] = {"flagged": self.moderation.flagged,
                                 "categories": self.moderation.categories}
        return out


def parse_usage_event(raw: bytes, now_ms: int,
                      max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS) -> UsageEvent:
    """Decode and validate one message value; raise InvalidEventError with a readable reason."""
    if raw is None:
        raise InvalidEventError("empty message (null value)")
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEventError(f"event is {len(raw)} bytes, over the {MAX_EVENT_BYTES} byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidEventError(f"not valid UTF-8 at byte {exc.start}") from None
    try:
        # NaN, Infinity and 1e400 load as non-finite floats; the field checks refuse them,
        # naming the field, wherever they stand.
        data = json.loads(text, parse_int=_int64)
    except ValueError as exc:
        raise InvalidEventError(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidEventError(f"nested more than {MAX_DEPTH} levels deep") from None
    if not isinstance(data, dict):
        raise InvalidEventError(f"event must be a JSON object, got {type(data).__name__}")
    if _depth(data) > MAX_DEPTH:
        raise InvalidEventError(f"nested more than {MAX_DEPTH} levels deep")
    if "\\u" in text:  # only an escape can make a lone surrogate, which no sink can encode
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEventError("a string holds a lone UTF-16 surrogate escape") from None
    return event_from_dict(data, now_ms, max_future_skew_ms)


def _int64(digits: str) -> int:
    value = int(digits) if len(digits) <= 21 else INT_RANGE[1]
    if not INT_RANGE[0] <= value < INT_RANGE[1]:
        raise InvalidEventError(f"integer {digits[:24]}{'...' if len(digits) > 24 else ''} "
                                "does not fit 64 bits")
    return value


def _depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deep `value` nests, counted no further than limit + 1."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


def event_from_dict(data: dict[str, Any], now_ms: int,
                    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS) -> UsageEvent:
    status = _int(data, "status", required=True, low=100, high=599)
    assert status is not None
    account_id = _id(data, "account_id")
    if account_id is None and status != 401:
        raise InvalidEventError("missing required field 'account_id' (only 401 events may omit it)")
    prompt = _string(data, "prompt", None)
    if prompt is not None and len(prompt.encode("utf-8")) > MAX_PROMPT_BYTES:
        raise InvalidEventError(f"field 'prompt' is over the {MAX_PROMPT_BYTES} byte limit")
    extra = {k: v for k, v in data.items() if k not in KNOWN_FIELDS}
    for name, value in extra.items():
        _require_finite(value, f"extra field {name[:64]!r}")
    latency = data.get("latency_ms")
    if latency is not None and (not _is_number(latency) or not 0 <= latency <= 1e12):
        raise InvalidEventError("field 'latency_ms' must be a number of 0..1e12")
    return UsageEvent(
        event_id=_required_id(data, "event_id"),
        ts_ms=_timestamp(data.get("ts"), now_ms, max_future_skew_ms),
        account_id=account_id,
        org_id=_id(data, "org_id"),
        api_key_id=_required_id(data, "api_key_id"),
        ip=_ip(data.get("ip")),
        user_agent=_string(data, "user_agent", MAX_USER_AGENT_CHARS),
        endpoint=_required_string(data, "endpoint", MAX_ENDPOINT_CHARS),
        model=_string(data, "model", MAX_ID_CHARS),
        status=status,
        prompt=prompt,
        prompt_tokens=_int(data, "prompt_tokens", low=0),
        completion_tokens=_int(data, "completion_tokens", low=0),
        latency_ms=float(latency) if latency is not None else None,
        moderation=_moderation(data.get("moderation")),
        extra=extra,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _string(data: dict[str, Any], name: str, max_chars: int | None) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEventError(f"field '{name}' must be a string, got {type(value).__name__}")
    if max_chars is not None and len(value) > max_chars:
        raise InvalidEventError(f"field '{name}' is over the {max_chars} character limit")
    return value


def _required_string(data: dict[str, Any], name: str, max_chars: int) -> str:
    value = _string(data, name, max_chars)
    if not value:
        raise InvalidEventError(f"missing required field '{name}'")
    return value


def _id(data: dict[str, Any], name: str) -> str | None:
    """An id field: what joins an event to its account, key or org, so one that looks empty
    or hides control characters would join unrelated traffic under one name (or none)."""
    value = _string(data, name, MAX_ID_CHARS)
    if value is None:
        return None
    if blank(value):
        raise InvalidEventError(f"field '{name}' is empty or only blank or invisible "
                                "characters (omit it or send null when there is none)")
    if not value.isprintable() and any(unicodedata.category(char) == "Cc" for char in value):
        raise InvalidEventError(f"field '{name}' holds a control character")
    return value


def _required_id(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if value is None or value == "":
        raise InvalidEventError(f"missing required field '{name}'")
    checked = _id(data, name)
    assert checked is not None
    return checked


def _require_finite(value: Any, where: str) -> None:
    if (reason := not_strict_json(value)) is not None:
        raise InvalidEventError(f"{where} {reason}")


def not_strict_json(value: Any, depth: int = MAX_DEPTH) -> str | None:
    """Why `value` has no place in strict JSON (what the sinks write and state keeps): a NaN
    or infinite float somewhere in it, or nesting deeper than `depth`; None when it fits."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"holds a non-finite number ({value})"
    if depth < 0:
        return f"is nested more than {MAX_DEPTH} levels deep"
    children = value.values() if isinstance(value, Mapping) else \
        value if isinstance(value, list | tuple) else ()
    for child in children:
        if (reason := not_strict_json(child, depth - 1)) is not None:
            return reason
    return None


def _int(data: dict[str, Any], name: str, *, required: bool = False,
         low: int | None = None, high: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        if required:
            raise InvalidEventError(f"missing required field '{name}'")
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidEventError(f"field '{name}' must be an integer, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"{low if low is not None else ''}..{high if high is not None else ''}"
        raise InvalidEventError(f"field '{name}' = {value} is outside {bounds}")
    return value


def _timestamp(value: Any, now_ms: int, max_future_skew_ms: int) -> int:
    if value is None:
        raise InvalidEventError("missing required field 'ts'")
    if _is_number(value):
        if not math.isfinite(value):
            raise InvalidEventError(f"field 'ts' = {value} is not a finite number")
        ts_ms = int(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise InvalidEventError(f"field 'ts' is not RFC 3339 or epoch millis: {value[:64]!r}")\
                from None
        if parsed.tzinfo is None:
            raise InvalidEventError("field 'ts' has no time zone offset (RFC 3339 requires one)")
        try:  # year 1 or 9999 with an offset falls off the calendar when moved to UTC
            ts_ms = int(parsed.astimezone(UTC).timestamp() * 1000)
        except (OverflowError, ValueError):
            raise InvalidEventError(f"field 'ts' is outside the calendar: {value[:64]!r}")\
                from None
    else:
        raise InvalidEventError(
            f"field 'ts' must be a string or a number, got {type(value).__name__}")
    if ts_ms < EARLIEST_EVENT_MS:
        raise InvalidEventError(f"field 'ts' = {ts_ms} ms is before 2015 (seconds instead of ms?)")
    if ts_ms > now_ms + max_future_skew_ms:
        raise InvalidEventError(f"field 'ts' = {ts_ms} ms is more than "
                                f"{max_future_skew_ms // 1000} s in the future")
    return ts_ms


def _ip(value: Any) -> str:
    if value is None or value == "":
        raise InvalidEventError("missing required field 'ip'")
    if not isinstance(value, str):
        raise InvalidEventError(f"field 'ip' must be a string, got {type(value).__name__}")
    canonical = _canonical_ip(value) if len(value) <= 64 else None  # a cache, not a sink
    if canonical is None:
        raise InvalidEventError(f"field 'ip' is not an IPv4 or IPv6 address: {value[:64]!r}")
    return canonical


@lru_cache(maxsize=65_536)  # parsing an address is a fifth of validating an event; they repeat
def _canonical_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _moderation(value: Any) -> Moderation | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidEventError("field 'moderation' must be an object")
    flagged = value.get("flagged", False)
    if not isinstance(flagged, bool):
        raise InvalidEventError("field 'moderation.flagged' must be a boolean")
    categories = value.get("categories") or {}
    if not isinstance(categories, dict) or not all(
        isinstance(k, str) and _is_number(v) for k, v in categories.items()
    ):
        raise InvalidEventError("field 'moderation.categories' must map names to numbers")
    for name, score in categories.items():
        # A classifier's score is a probability; anything else is a bug upstream, and a score
        # of inf or 1e9 would outweigh every other signal on the account.
        if not 0.0 <= score <= 1.0:  # also false for NaN
            raise InvalidEventError(
                f"field 'moderation.categories' score {name[:64]!r} = {score} is outside 0..1")
    return Moderation(flagged=flagged, categories={k: float(v) for k, v in categories.items()})
