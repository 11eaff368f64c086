import json

import pytest

from detectors.events import InvalidEventError, parse_usage_event

NOW = 1_790_000_000_000


def valid(**changes):
    event = {
        "event_id": "e-1", "ts": NOW - 1000, "account_id": "acct-1", "api_key_id": "key-1",
        "ip": "203.0.113.7", "endpoint": "/v1/chat/completions", "status": 200,
        "prompt": "hello", "moderation": {"flagged": False, "categories": {"hate": 0.01}},
        "custom_field": 3,
    }
    event.update(changes)
    return {k: v for k, v in event.items() if v is not ...}


def parse(obj):
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return parse_usage_event(raw, NOW)


def test_valid_event_is_parsed_with_extra_fields_kept():
    event = parse(valid())
    assert event.account_id == "acct-1" and event.status == 200
    assert event.moderation is not None and event.moderation.categories == {"hate": 0.01}
    assert event.extra == {"custom_field": 3}


def test_rfc3339_and_epoch_millis_agree():
    assert parse(valid(ts="2026-09-21T13:33:19.000Z")).ts_ms == 1_789_997_599_000
    assert parse(valid(ts="2026-09-21T15:33:19+02:00")).ts_ms == 1_789_997_599_000


def test_unauthenticated_401_may_omit_the_account():
    assert parse(valid(account_id=..., status=401)).account_id is None
    with pytest.raises(InvalidEventError, match="account_id"):
        parse(valid(account_id=..., status=200))


@pytest.mark.parametrize(("raw", "reason"), [
    (b"not json at all", "not valid JSON"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b'{"prompt": "\xff\xfe"}', "not valid UTF-8"),
    (valid(event_id=...), "missing required field 'event_id'"),
    (valid(ts=...), "missing required field 'ts'"),
    (valid(ip="999.1.1.1"), "not an IPv4 or IPv6"),
    (valid(status="200"), "'status' must be an integer"),
    (valid(status=700), "outside"),
    (valid(status=True), "'status' must be an integer"),
    (valid(prompt_tokens=-3), "outside"),
    (valid(latency_ms="fast"), "latency_ms"),
    (valid(prompt="x" * (64 * 1024 + 1)), "over the 65536 byte limit"),
    (valid(event_id="e" * 129), "over the 128 character limit"),
    (valid(ts=1_790_000_000), "before 2015"),
    (valid(ts=NOW + 3 * 86_400_000), "in the future"),
    (valid(ts="yesterday"), "not RFC 3339"),
    (valid(ts="2026-09-21T13:33:19"), "no time zone"),
    (valid(moderation={"flagged": "yes"}), "moderation.flagged"),
    (valid(moderation={"flagged": True, "categories": {"x": "high"}}), "categories"),
    (valid(api_key_id=42), "'api_key_id' must be a string"),
])
def test_invalid_events_are_refused_with_a_readable_reason(raw, reason):
    with pytest.raises(InvalidEventError, match=reason):
        parse(raw)


def test_oversized_message_is_refused_before_decoding():
    with pytest.raises(InvalidEventError, match="byte limit"):
        parse_usage_event(b" " * (300 * 1024), NOW)


def test_canonical_form_round_trips():
    event = parse(valid())
    assert parse(event.to_dict()) == event


# Validation is total: any input either parses into an event that travels between stages, or
# raises InvalidEventError (a dead letter with its reason); nothing else escapes.

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from detectors.events import KNOWN_FIELDS, MAX_DEPTH  # noqa: E402
from streams.messages import EventRecord, encode_batch  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=12)


def nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


def parses_or_refuses(raw: bytes) -> None:
    try:
        event = parse_usage_event(raw, NOW)
    except InvalidEventError:
        return
    encode_batch(EventRecord.TYPE, [EventRecord(event)])  # what passes, travels


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(KNOWN_FIELDS)) | st.text(max_size=6),
                       json_values, max_size=8))
def test_any_json_object_is_an_event_or_a_reasoned_refusal(fields):
    parses_or_refuses(json.dumps(valid(**fields)).encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_an_event_or_a_reasoned_refusal(raw):
    parses_or_refuses(raw)


@pytest.mark.parametrize("raw", [
    json.dumps(valid(ts=float("nan"))).encode(),
    json.dumps(valid(ts=float("inf"))).encode(),
    json.dumps(valid(ts=float("-inf"))).encode(),
    json.dumps(valid(prompt_tokens=10**400)).encode(),
    json.dumps(valid(latency_ms=10**300)).encode(),
    json.dumps(valid(custom_field=-(10**19))).encode(),
    json.dumps(valid(account_id="\ud800a")).encode(),
    json.dumps(valid(prompt="x\udc00")).encode(),
    json.dumps(valid(user_agent="\udbff")).encode(),
    json.dumps(valid(custom_field={"k": "\ud83d"})).encode(),
    b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
    json.dumps(valid(custom_field=nested(MAX_DEPTH))).encode(),
], ids=["nan", "inf", "-inf", "tokens-1e400", "latency-1e300", "int-below-64-bits",
        "surrogate-id", "surrogate-prompt", "surrogate-agent", "surrogate-extra",
        "10000-levels", f"over-{MAX_DEPTH}-levels"])
def test_crafted_events_that_crashed_the_stage_are_refused_with_a_reason(raw):
    with pytest.raises(InvalidEventError):
        parse_usage_event(raw, NOW)


def test_a_surrogate_pair_escape_is_a_valid_character():
    assert parse(valid(prompt="\U0001F600")).prompt == "\U0001F600"  # sent as \ud83d\ude00
