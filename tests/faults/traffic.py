"""The traffic every fault run gets: the simulator's full mix, the same bytes in every run, and
the crafted events of the storm, each under a key of its own so that its dead letter is found."""

from __future__ import annotations

import json
from dataclasses import dataclass

from detectors.events import MAX_DEPTH
from streams.tooling.simulation import preset_options, simulate

# What the broker accepts in one message by default (message.max.bytes, 1 MiB + 12): an event
# a little under it reaches the worker, one far over it is refused to the producer.
BROKER_MESSAGE_LIMIT = 1_048_588


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes | None
    value: bytes | None

    @property
    def size(self) -> int:
        return len(self.value or b"") + len(self.key or b"")


def simulated(scale: float, start_ms: int, seed: int = 7) -> list[Message]:
    """The full preset (campaigns, template crowds, every attack) over `scale` of its hour,
    benign accounts scaled alike: about 13 thousand events at 0.5, 6.5 thousand at 0.2."""
    options = preset_options("full", scale)
    options["duration_s"] = max(600, round(3600 * scale))
    events = simulate(seed, start_ms, **options).events
    return [Message(e["account_id"].encode() if e.get("account_id") else None,
                    json.dumps(e).encode()) for e in events]


def _valid(own_id: str, ts_ms: int, **changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": own_id, "ts": ts_ms, "account_id": "acct-storm", "api_key_id": "key-storm",
        "ip": "198.51.100.77", "endpoint": "/v1/chat/completions", "status": 200,
        "prompt": "hello"}
    event.update(changes)
    return {k: v for k, v in event.items() if v is not ...}


def _nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


def crafted(round_: int, ts_ms: int) -> dict[str, bytes | None]:
    """Every kind of bad input known to have crashed a stage once (tests/unit/test_events.py),
    and the malformed, null, empty and oversized messages a gateway can send, by name; the
    ones with an event id have one of their own (`storm-<round>-<name>`)."""
    near_limit = BROKER_MESSAGE_LIMIT - 600  # the broker takes it; the event limit does not
    cases: dict[str, dict[str, object] | bytes | None] = {
        "nan-ts": {"ts": float("nan")},
        "inf-ts": {"ts": float("inf")},
        "minus-inf-ts": {"ts": float("-inf")},
        "tokens-1e400": {"prompt_tokens": 10**400},
        "latency-1e300": {"latency_ms": 10**300},
        "int-below-64-bits": {"custom_field": -(10**19)},
        "surrogate-id": {"account_id": "\ud800a"},
        "surrogate-prompt": {"prompt": "x\udc00"},
        "surrogate-agent": {"user_agent": "\udbff"},
        "surrogate-extra": {"custom_field": {"k": "\ud83d"}},
        "10000-levels": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        f"over-{MAX_DEPTH}-levels": {"custom_field": _nested(MAX_DEPTH)},
        "broken-json": b'{"event_id": "storm-%d-broken-json", "ts": 17900' % round_,
        "not-utf8": b'{"event_id": "\xff\xfe"}',
        "json-array": b"[1, 2, 3]",
        "json-null": b"null",
        "null-fields": b"null-fields",  # below: every field of a valid event set to null
        "null-event-id": {"event_id": None},
        "missing-ts": {"ts": ...},
        "empty": b"",
        "tombstone": None,
        "ts-before-2015": {"ts": 1_000_000_000_000},
        "ts-far-future": {"ts": ts_ms + 10 * 86_400_000},
        "status-string": {"status": "200"},
        "id-over-128": {"event_id": f"storm-{round_}-" + "e" * 129},
        "prompt-over-64k": {"prompt": "x" * (64 * 1024 + 1)},
        "event-over-256k": {"prompt": "y" * 300_000},
        "event-near-broker-limit": {"prompt": ""},  # filled up to near_limit below
        "event-5mb": {"prompt": "w" * 5_000_000},
    }
    out: dict[str, bytes | None] = {}
    for name, case in cases.items():
        event_id = f"storm-{round_}-{name}"
        if name == "null-fields":
            out[name] = json.dumps(dict.fromkeys(_valid(event_id, ts_ms))).encode()
        elif isinstance(case, dict):
            out[name] = json.dumps(_valid(event_id, ts_ms, **case)).encode()
        else:
            out[name] = case
    filler = near_limit - len(out["event-near-broker-limit"] or b"")
    out["event-near-broker-limit"] = json.dumps(
        _valid(f"storm-{round_}-event-near-broker-limit", ts_ms, prompt="z" * filler)).encode()
    return out


def storm(traffic: list[Message], rounds: int, ts_ms: int) -> tuple[list[Message], list[str]]:
    """The traffic with `rounds` rounds of every crafted event spread evenly through it; each
    crafted message's key is `storm-<round>-<name>`. Returns the mix and the crafted keys."""
    rounds_at = {round(len(traffic) * (r + 1) / (rounds + 1)): r for r in range(rounds)}
    mixed: list[Message] = []
    keys: list[str] = []
    for index, message in enumerate(traffic):
        if index in rounds_at:
            r = rounds_at[index]
            for name, value in crafted(r, ts_ms).items():
                keys.append(f"storm-{r}-{name}")
                mixed.append(Message(keys[-1].encode(), value))
        mixed.append(message)
    return mixed, keys
