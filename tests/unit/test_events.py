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
    (valid(account_id=""), "'account_id' is empty"),
    (valid(account_id=" \t "), "'account_id' is empty"),
    (valid(account_id="", status=401), "'account_id' is empty"),
    (valid(org_id=""), "'org_id' is empty"),
    (valid(api_key_id="   "), "'api_key_id' is empty"),
    (valid(event_id="\u200b\u200b\u200b"), "'event_id' is empty or only blank or invisible"),
    (valid(event_id="\ufeff\u2060 \u200d"), "'event_id' is empty"),
    (valid(account_id="acct\x00-1"), "'account_id' holds a control character"),
    (valid(event_id="e-1\n"), "'event_id' holds a control character"),
    (valid(api_key_id="key\x1b[2J"), "'api_key_id' holds a control character"),
    (valid(moderation={"flagged": False, "categories": {"hate": 1.5}}), "outside 0..1"),
    (valid(moderation={"flagged": False, "categories": {"hate": -0.01}}), "outside 0..1"),
    (valid(moderation={"flagged": False, "categories": {"hate": float("inf")}}), "outside 0..1"),
    (valid(moderation={"flagged": False, "categories": {"hate": float("nan")}}), "outside 0..1"),
    (valid(custom_field=float("inf")), "extra field 'custom_field' holds a non-finite"),
    (valid(custom_field={"a": [1, float("-inf")]}), "extra field 'custom_field'"),
    (valid(latency_ms=float("nan")), "latency_ms"),
    (valid(ts=float("inf")), "'ts' = inf is not a finite number"),
    (valid(ts=float("nan")), "'ts' = nan is not a finite number"),
    (json.dumps(valid(ts=1)).replace('"ts": 1', '"ts": 1e400').encode(), "'ts' = inf"),
    (json.dumps(valid(ts=1)).replace('"ts": 1', '"ts": -1e400').encode(), "'ts' = -inf"),
    (json.dumps(valid(custom_field=1)).replace('"custom_field": 1', '"custom_field": 1e400')
     .encode(), "extra field 'custom_field' holds a non-finite number"),
    (valid(ts="0001-01-01T00:00:00+01:00"), "'ts' is outside the calendar"),
    (valid(ts="9999-12-31T23:59:59-01:00"), "'ts' is outside the calendar"),
    (valid(ts="0001-01-01T00:00:00Z"), "before 2015"),
    (valid(ts="9999-12-31T23:59:59Z"), "in the future"),
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

from detectors.events import (  # noqa: E402
    DEFAULT_MAX_FUTURE_SKEW_MS,
    EARLIEST_EVENT_MS,
    KNOWN_FIELDS,
    MAX_DEPTH,
    event_from_dict,
)
from streams.runtime.messages import EventRecord, encode_batch  # noqa: E402
from streams.runtime.sealing import DEVELOPMENT_RING as RING  # noqa: E402

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
    encode_batch(EventRecord.TYPE, [EventRecord(event)], RING)  # what passes, travels
    assert parse(strict_json(event)) == event  # and reads back as itself


def strict_json(event) -> bytes:
    """What the sinks write: strict JSON (no NaN or Infinity), UTF-8."""
    return json.dumps(event.to_dict(), allow_nan=False, ensure_ascii=False).encode("utf-8")


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


# Valid events round-trip, and a valid event with exactly one field broken is refused by a
# reason that names that field.

ids = st.text(min_size=1, max_size=128).filter(
    lambda text: text.strip() != "" and text.isprintable())
finite = st.floats(allow_nan=False, allow_infinity=False)
plain_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 63) - 1) | finite
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=3),
    max_leaves=12)
optional = {
    "org_id": ids, "user_agent": st.text(max_size=1024), "model": ids,
    "prompt": st.text(max_size=200), "prompt_tokens": st.integers(0, 1 << 40),
    "completion_tokens": st.integers(0, 1 << 40),
    "latency_ms": st.floats(0, 1e12) | st.integers(0, 10**12),
    "moderation": st.fixed_dictionaries({"flagged": st.booleans(), "categories": st.dictionaries(
        st.text(max_size=12), st.floats(0, 1) | st.sampled_from([0, 1]), max_size=4)}),
}


@st.composite
def valid_events(draw) -> dict:
    status = draw(st.integers(100, 599))
    event = {
        "event_id": draw(ids),
        "ts": draw(st.integers(EARLIEST_EVENT_MS, NOW + DEFAULT_MAX_FUTURE_SKEW_MS)),
        "api_key_id": draw(ids), "ip": str(draw(st.ip_addresses())),
        "endpoint": draw(st.text(min_size=1, max_size=40)), "status": status,
    }
    if status != 401 or draw(st.booleans()):
        event["account_id"] = draw(ids)
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        event[name] = draw(optional[name])
    extra = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in KNOWN_FIELDS),
                                 plain_values, max_size=3))
    return extra | event


@settings(max_examples=300, deadline=None)
@given(valid_events())
def test_a_valid_event_round_trips(data):
    event = event_from_dict(data, NOW)
    assert event_from_dict(event.to_dict(), NOW) == event
    assert parse(strict_json(event)) == event
    assert parse(json.dumps(data).encode()) == event


blank_ids = st.sampled_from(["", " ", "\t\n", "\u200b", "\u200b\u200c\ufeff", "\u2060 "])
control_ids = st.builds(lambda a, c, b: a + c + b, ids, st.sampled_from(["\x00", "\x1b", "\n",
                                                                        "\x7f", "\x85"]), ids)
int64 = st.integers(-(1 << 63), (1 << 63) - 1)  # beyond it, JSON parsing refuses the line
bad_id = blank_ids | control_ids | int64 | st.just("x" * 129)
non_finite = st.sampled_from([float("nan"), float("inf"), float("-inf")])
broken = {
    "event_id": bad_id, "account_id": bad_id, "api_key_id": bad_id, "org_id": bad_id,
    "ts": non_finite | st.sampled_from([
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z", "yesterday", "2026-09-21T13:33:19", 1_790_000_000, True, [1]])
    | st.integers(NOW + DEFAULT_MAX_FUTURE_SKEW_MS + 1, 10**17),
    "ip": st.sampled_from(["", "999.1.1.1", "localhost", "::g"]) | int64,
    "status": st.integers(-5, 99) | st.integers(600, 10**6) | st.sampled_from(["200", True]),
    "latency_ms": non_finite | st.floats(max_value=-0.001) | st.just("fast"),
    "prompt_tokens": st.integers(-(1 << 63), -1) | st.just(1.5),
    "moderation": st.builds(lambda score: {"flagged": True, "categories": {"hate": score}},
                            non_finite | st.floats(1.0001, 1e300) | st.floats(-1e300, -0.0001))
    | st.just("flagged"),
    "custom_field": non_finite | non_finite.map(lambda x: {"deep": [1, x]}),
}


@settings(max_examples=400, deadline=None)
@given(valid_events(), st.sampled_from(sorted(broken)), st.data())
def test_a_valid_event_with_one_field_broken_is_refused_naming_it(data, name, draw):
    data = data | {name: draw.draw(broken[name])}
    for refuse in (lambda: event_from_dict(data, NOW),
                   lambda: parse(json.dumps(data).encode())):  # NaN/Infinity literals too
        with pytest.raises(InvalidEventError, match=f"'{name}"):
            refuse()
