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
