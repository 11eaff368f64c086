"""Standard Webhooks signing and delivery, against a real receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import random
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from streams.sinks.webhooks import (
    DeliveryResult,
    WebhookClient,
    WebhookSecretError,
    backoff_s,
    message_id,
    retryable,
    secret_key,
    sign,
    signature_header,
    verify,
)
from tests.receiver import HANG, Receiver, Reply

T = TypeVar("T")

# The Standard Webhooks reference libraries' test vector (libraries/*/tests in
# github.com/standard-webhooks/standard-webhooks).
REF_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
REF_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
REF_TIMESTAMP = 1614265330
REF_BODY = b'{"test": 2432232314}'
REF_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OLD = SecretStr("whsec_" + base64.b64encode(b"old-key-0123456789abcdefghij").decode())
NEW = SecretStr("whsec_" + base64.b64encode(b"new-key-0123456789abcdefghij").decode())
BODY = b'{"action":"suspend","account":"acct-7f3a"}'


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def now() -> int:
    return int(time.time())


class FakeSleep:
    """Records the waits instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def client(sleep: FakeSleep, **options: float) -> WebhookClient:
    settings = {"timeout_s": 2.0, "max_attempts": 6} | options
    return WebhookClient(timeout_s=settings["timeout_s"],
                         max_attempts=int(settings["max_attempts"]),
                         sleep=sleep, rng=random.Random(7))


def deliver_to(receiver_script: Callable[[Receiver], None], *, secrets: list[SecretStr],
               receiver_secrets: list[SecretStr] | None = None, sleep: FakeSleep | None = None,
               msg_id: str = "msg_fixed", **options: float,
               ) -> tuple[DeliveryResult, Receiver, FakeSleep]:
    sleep = sleep or FakeSleep()

    async def scenario() -> tuple[DeliveryResult, Receiver]:
        async with Receiver(secrets=receiver_secrets) as receiver:
            receiver_script(receiver)
            webhooks = client(sleep, **options)
            try:
                result = await webhooks.deliver(receiver.url(), BODY, msg_id, secrets, now)
            finally:
                await webhooks.close()
            return result, receiver

    result, receiver = run(scenario())
    return result, receiver, sleep


# -- signing --

def test_sign_matches_the_reference_vector() -> None:
    assert sign(REF_SECRET, REF_ID, REF_TIMESTAMP, REF_BODY) == REF_SIGNATURE


def test_a_different_id_timestamp_or_body_changes_the_signature() -> None:
    signatures = {
        sign(REF_SECRET, REF_ID, REF_TIMESTAMP, REF_BODY),
        sign(REF_SECRET, REF_ID + "x", REF_TIMESTAMP, REF_BODY),
        sign(REF_SECRET, REF_ID, REF_TIMESTAMP + 1, REF_BODY),
        sign(REF_SECRET, REF_ID, REF_TIMESTAMP, REF_BODY + b" "),
    }
    assert len(signatures) == 4


def test_whsec_secrets_decode_and_raw_secrets_are_their_bytes() -> None:
    assert secret_key("whsec_" + base64.b64encode(b"k3y").decode()) == b"k3y"
    assert secret_key("whsec_" + base64.b64encode(b"k3y").decode().rstrip("=")) == b"k3y"
    assert secret_key("plain shared secret") == b"plain shared secret"
    assert sign("plain", "msg_1", 1, b"{}") != sign("whsec_cGxhaW4=", "msg_2", 1, b"{}")
    # "whsec_cGxhaW4=" is base64 of "plain": the same key, so the same signature.
    assert sign("plain", "msg_1", 1, b"{}") == sign("whsec_cGxhaW4=", "msg_1", 1, b"{}")


@pytest.mark.parametrize("bad", ["whsec_not*base64!", "whsec_", ""])
def test_unusable_secrets_are_refused_without_echoing_them(bad: str) -> None:
    with pytest.raises(WebhookSecretError) as caught:
        secret_key(bad)
    if bad.removeprefix("whsec_"):
        assert bad.removeprefix("whsec_") not in str(caught.value)


def test_rotation_signs_once_per_secret_and_either_key_verifies() -> None:
    header = signature_header([OLD, NEW], "msg_r", 1000, BODY)
    assert header.split(" ") == [sign(OLD.get_secret_value(), "msg_r", 1000, BODY),
                                 sign(NEW.get_secret_value(), "msg_r", 1000, BODY)]
    headers = {"webhook-id": "msg_r", "webhook-timestamp": "1000", "webhook-signature": header}
    assert verify(headers, BODY, [OLD], now_s=1000)
    assert verify(headers, BODY, [NEW], now_s=1000)
    other = SecretStr("whsec_" + base64.b64encode(b"someone-else").decode())
    assert not verify(headers, BODY, [other], now_s=1000)


def test_verify_accepts_the_reference_vector_among_other_schemes() -> None:
    headers = {"Webhook-Id": REF_ID, "Webhook-Timestamp": str(REF_TIMESTAMP),
               "Webhook-Signature": "v1a,AAAA v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= "
                                    + REF_SIGNATURE}
    assert verify(headers, REF_BODY, [SecretStr(REF_SECRET)], now_s=REF_TIMESTAMP)


@pytest.mark.parametrize(("offset", "ok"), [(0, True), (300, True), (-300, True),
                                            (301, False), (-301, False)])
def test_verify_tolerates_300_seconds_of_clock_difference(offset: int, ok: bool) -> None:
    headers = {"webhook-id": REF_ID, "webhook-timestamp": str(REF_TIMESTAMP),
               "webhook-signature": REF_SIGNATURE}
    assert verify(headers, REF_BODY, [SecretStr(REF_SECRET)],
                  now_s=REF_TIMESTAMP + offset) is ok


@pytest.mark.parametrize("change", ["no-id", "no-timestamp", "no-signature", "bad-timestamp",
                                    "float-timestamp", "body", "id", "garbage-signature",
                                    "v2-only"])
def test_verify_rejects_missing_or_altered_parts(change: str) -> None:
    headers = {"webhook-id": REF_ID, "webhook-timestamp": str(REF_TIMESTAMP),
               "webhook-signature": REF_SIGNATURE}
    body = REF_BODY
    if change.startswith("no-"):
        del headers["webhook-" + change.removeprefix("no-")]
    elif change == "bad-timestamp":
        headers["webhook-timestamp"] = "hello"
    elif change == "float-timestamp":
        headers["webhook-timestamp"] = f"{REF_TIMESTAMP}.0"
    elif change == "body":
        body = REF_BODY.replace(b"2432", b"2433")
    elif change == "id":
        headers["webhook-id"] = REF_ID + "x"
    elif change == "garbage-signature":
        headers["webhook-signature"] = "v1,%%%not-base64 v1"
    elif change == "v2-only":
        headers["webhook-signature"] = REF_SIGNATURE.replace("v1,", "v2,")
    assert not verify(headers, body, [SecretStr(REF_SECRET)], now_s=REF_TIMESTAMP)


def test_verify_without_secrets_accepts_nothing() -> None:
    headers = {"webhook-id": REF_ID, "webhook-timestamp": str(REF_TIMESTAMP),
               "webhook-signature": REF_SIGNATURE}
    assert not verify(headers, REF_BODY, [], now_s=REF_TIMESTAMP)


FULL_WIDTH_TIMESTAMP = str(REF_TIMESTAMP).translate({c: c + 0xFEE0 for c in range(48, 58)})
# Any string a client can put in a header: surrogates and other non-ASCII, empty, negative and
# absurdly long numbers (5,000 digits: past Python's int conversion limit).
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=64)
HEADER_VALUES = st.one_of(
    ANY_TEXT, st.integers().map(str), st.just(""),
    st.text("0123456789", min_size=1, max_size=6000),
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
    st.just(str(REF_TIMESTAMP)), st.just(REF_ID), st.just(REF_SIGNATURE))
HEADER_NAMES = st.one_of(
    st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature",
                     "Webhook-Timestamp", "WEBHOOK-SIGNATURE"]), ANY_TEXT)


@given(st.dictionaries(HEADER_NAMES, HEADER_VALUES, max_size=6))
def test_verify_refuses_and_never_raises_whatever_the_headers(headers: dict[str, str]) -> None:
    result = verify(headers, REF_BODY, [SecretStr(REF_SECRET)], now_s=REF_TIMESTAMP)
    assert result is False or (headers.get("webhook-id") == REF_ID and result is True)


@given(msg_id=HEADER_VALUES, timestamp=HEADER_VALUES, signature=HEADER_VALUES)
def test_verify_refuses_every_value_of_each_header(msg_id: str, timestamp: str,
                                                   signature: str) -> None:
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp,
               "webhook-signature": signature}
    genuine = (msg_id, timestamp, signature) == (REF_ID, str(REF_TIMESTAMP), REF_SIGNATURE)
    assert verify(headers, REF_BODY, [SecretStr(REF_SECRET)], now_s=REF_TIMESTAMP) is genuine


@pytest.mark.parametrize("msg_id", ["msg_\ud800", "msg_ü", "", " ", "msg.with.dots"])
def test_verify_refuses_an_id_it_was_not_signed_with(msg_id: str) -> None:
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(REF_TIMESTAMP),
               "webhook-signature": REF_SIGNATURE}
    assert verify(headers, REF_BODY, [SecretStr(REF_SECRET)], now_s=REF_TIMESTAMP) is False


@pytest.mark.parametrize("timestamp", ["9" * 5000, "1" * 4301, "-1614265330", "", " ",
                                       FULL_WIDTH_TIMESTAMP, "1614265330\n", "0x60375bf2"])
def test_verify_refuses_an_absurd_timestamp(timestamp: str) -> None:
    headers = {"webhook-id": REF_ID, "webhook-timestamp": timestamp,
               "webhook-signature": REF_SIGNATURE}
    assert verify(headers, REF_BODY, [SecretStr(REF_SECRET)], now_s=REF_TIMESTAMP) is False


# -- ids, backoff, retry table --

def test_message_id_is_stable_and_distinguishes_its_parts() -> None:
    assert message_id("act-1", "https://a/hook") == message_id("act-1", "https://a/hook")
    assert message_id("act-1", "https://a/hook") != message_id("act-2", "https://a/hook")
    assert message_id("a.b", "c") != message_id("a", "b.c")
    assert message_id("ab") != message_id("a", "b")
    msg = message_id("act-1")
    assert msg.startswith("msg_") and "." not in msg and len(msg) == 36
    with pytest.raises(ValueError):
        message_id()


def test_backoff_grows_exponentially_within_the_cap_with_full_jitter() -> None:
    rng = random.Random(1)
    for attempt in range(1, 80):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        samples = [backoff_s(attempt, 0.5, 30.0, rng) for _ in range(200)]
        assert all(0.0 <= s <= ceiling for s in samples)
        # Full jitter: spread over the whole range, not bunched at the ceiling.
        assert min(samples) < 0.25 * ceiling < 0.75 * ceiling < max(samples)
    with pytest.raises(ValueError):
        backoff_s(0, 0.5, 30.0, rng)


def test_backoff_is_pure_given_the_rng() -> None:
    first = [backoff_s(a, 0.5, 30.0, random.Random(3)) for a in range(1, 8)]
    again = [backoff_s(a, 0.5, 30.0, random.Random(3)) for a in range(1, 8)]
    assert first == again


@pytest.mark.parametrize(("status", "expected"), [
    (None, True), (429, True), (500, True), (502, True), (503, True), (504, True),
    (599, True), (200, False), (202, False), (204, False), (301, False), (400, False),
    (401, False), (403, False), (404, False), (409, False), (410, False), (422, False),
])
def test_retryable(status: int | None, expected: bool) -> None:
    assert retryable(status) is expected


# -- deliveries to a real receiver --

def test_retries_server_errors_with_the_same_id_and_fresh_signatures() -> None:
    result, receiver, sleep = deliver_to(lambda r: r.script([500, 500, 200]),
                                         secrets=[OLD, NEW], receiver_secrets=[NEW])
    assert (result.outcome, result.status, result.attempts) == ("delivered", 200, 3)
    assert result.error is None and result.latency_s >= 0
    requests = receiver.requests
    assert [r.status for r in requests] == [500, 500, 200]
    assert {r.webhook_id for r in requests} == {"msg_fixed"}
    assert all(r.signature_ok for r in requests)
    assert all(r.headers["content-type"] == "application/json" for r in requests)
    assert all(r.body == BODY and r.json == json.loads(BODY) for r in requests)
    assert len(sleep.delays) == 2
    assert receiver.effects == 1 and receiver.conflicting_ids() == {}


def test_each_attempt_is_signed_with_its_own_timestamp() -> None:
    clock = iter([1_700_000_000, 1_700_000_100])
    timestamps: list[int] = []

    def now_s() -> int:
        timestamps.append(next(clock))
        return timestamps[-1]

    async def scenario() -> Receiver:
        async with Receiver(secrets=[NEW], now_s=lambda: 1_700_000_050) as receiver:
            receiver.script([503, 200])
            webhooks = client(FakeSleep())
            await webhooks.deliver(receiver.url(), BODY, "msg_ts", [NEW], now_s)
            await webhooks.close()
            return receiver

    requests = run(scenario()).requests
    assert [r.headers["webhook-timestamp"] for r in requests] == ["1700000000", "1700000100"]
    assert requests[0].headers["webhook-signature"] != requests[1].headers["webhook-signature"]
    assert all(r.signature_ok for r in requests)


def test_a_client_error_is_rejected_after_one_attempt() -> None:
    result, receiver, sleep = deliver_to(lambda r: r.script([400]), secrets=[NEW])
    assert (result.outcome, result.status, result.attempts) == ("rejected", 400, 1)
    assert result.error == "http 400"
    assert len(receiver.requests) == 1 and sleep.delays == [] and receiver.effects == 0


def test_a_wrong_key_is_answered_401_and_not_retried() -> None:
    result, receiver, _ = deliver_to(lambda r: None, secrets=[OLD], receiver_secrets=[NEW])
    assert (result.outcome, result.status, result.attempts) == ("rejected", 401, 1)
    assert receiver.bad_signatures == 1 and receiver.effects == 0


def test_an_unsigned_delivery_sends_no_signature_header() -> None:
    result, receiver, _ = deliver_to(lambda r: None, secrets=[])
    assert result.delivered
    (request,) = receiver.requests
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] == "msg_fixed"
    assert request.signature_ok is None


def test_a_hanging_receiver_times_out_every_attempt_and_the_delivery_fails() -> None:
    result, receiver, sleep = deliver_to(lambda r: r.script([HANG] * 4), secrets=[NEW],
                                         timeout_s=0.2, max_attempts=4)
    assert (result.outcome, result.status, result.attempts) == ("failed", None, 4)
    assert result.error is not None and "timeout" in result.error
    assert len(receiver.requests) == 4 and receiver.effects == 0
    assert len(sleep.delays) == 3


def test_a_receiver_that_hangs_once_then_answers_is_delivered() -> None:
    result, receiver, _ = deliver_to(lambda r: r.script([HANG, 200]), secrets=[NEW],
                                     timeout_s=0.2)
    assert (result.outcome, result.attempts) == ("delivered", 2)
    assert receiver.effects == 1


def test_nobody_listening_fails_after_max_attempts() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port is closed again: connections are refused.
    sleep = FakeSleep()

    async def scenario() -> DeliveryResult:
        webhooks = client(sleep, max_attempts=3)
        try:
            return await webhooks.deliver(f"http://127.0.0.1:{port}/hook", BODY, "msg_x",
                                          [NEW], now)
        finally:
            await webhooks.close()

    result = run(scenario())
    assert (result.outcome, result.status, result.attempts) == ("failed", None, 3)
    assert result.error is not None and result.error.startswith("connection error")
    assert len(sleep.delays) == 2


def test_an_invalid_url_is_rejected_at_once() -> None:
    sleep = FakeSleep()

    async def scenario() -> DeliveryResult:
        webhooks = client(sleep)
        try:
            return await webhooks.deliver("not a url", BODY, "msg_x", [NEW], now)
        finally:
            await webhooks.close()

    result = run(scenario())
    assert (result.outcome, result.attempts, result.error) == ("rejected", 1, "invalid url")


def test_retry_after_is_honoured_and_capped() -> None:
    replies: list[int | Reply] = [Reply(429, retry_after="7"), Reply(503, retry_after="120"), 200]
    result, _, sleep = deliver_to(lambda r: r.script(replies), secrets=[NEW])
    assert (result.outcome, result.attempts) == ("delivered", 3)
    assert sleep.delays == [7.0, 30.0]


def test_a_retry_after_date_falls_back_to_backoff() -> None:
    replies: list[int | Reply] = [Reply(429, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"), 200]
    result, _, sleep = deliver_to(lambda r: r.script(replies), secrets=[NEW])
    assert result.delivered and len(sleep.delays) == 1 and 0 <= sleep.delays[0] <= 0.5


def test_the_same_id_delivered_twice_has_one_effect() -> None:
    async def scenario() -> Receiver:
        async with Receiver(secrets=[NEW]) as receiver:
            webhooks = client(FakeSleep())
            for _ in range(2):  # e.g. a replay after a restart
                result = await webhooks.deliver(receiver.url(), BODY, "msg_same", [NEW], now)
                assert result.delivered
            await webhooks.deliver(receiver.url(), BODY, "msg_other", [NEW], now)
            await webhooks.close()
            return receiver

    receiver = run(scenario())
    assert receiver.effects == 2 and receiver.duplicates == 1
    assert receiver.distinct_ids == {"msg_same", "msg_other"}


def test_the_receiver_reports_an_id_reused_for_another_body() -> None:
    async def scenario() -> Receiver:
        async with Receiver() as receiver:
            webhooks = client(FakeSleep())
            await webhooks.deliver(receiver.url(), b'{"a":1}', "msg_dup", [], now)
            await webhooks.deliver(receiver.url(), b'{"a":2}', "msg_dup", [], now)
            await webhooks.close()
            return receiver

    assert list(run(scenario()).conflicting_ids()) == ["msg_dup"]


def test_scripts_are_per_path_with_a_global_fallback() -> None:
    async def scenario() -> Receiver:
        async with Receiver() as receiver:
            receiver.script([503])
            receiver.script([404], path="/b")
            webhooks = client(FakeSleep(), max_attempts=1)
            for path in ("/a", "/b", "/a"):
                await webhooks.deliver(receiver.url(path), BODY, f"msg{path[1]}", [], now)
            await webhooks.close()
            return receiver

    receiver = run(scenario())
    assert [(r.path, r.status) for r in receiver.requests] == [("/a", 503), ("/b", 404),
                                                               ("/a", 200)]


def test_the_receiver_runs_in_a_thread_for_other_processes() -> None:
    with Receiver(secrets=[NEW]) as receiver:
        receiver.script([HANG], path="/slow")

        async def scenario() -> tuple[DeliveryResult, DeliveryResult]:
            webhooks = client(FakeSleep(), timeout_s=0.2, max_attempts=1)
            ok = await webhooks.deliver(receiver.url(), BODY, "msg_t", [NEW], now)
            slow = await webhooks.deliver(receiver.url("/slow"), BODY, "msg_s", [NEW], now)
            await webhooks.close()
            return ok, slow

        ok, slow = run(scenario())
        assert ok.delivered and slow.outcome == "failed"
        assert receiver.effects == 1
        assert [r.path for r in receiver.requests] == ["/hook", "/slow"]
    # Stopped: nothing listens any more, and stopping did not wait for the hung handler.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", receiver.port), 1):
        pass


def test_no_secret_reaches_reprs_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    raw = "whsec_" + base64.b64encode(b"very-secret-key-material-42").decode()
    secret = SecretStr(raw)
    caplog.set_level(logging.DEBUG)
    replies: list[int | Reply] = [Reply(429, retry_after="0"), 500, 400]
    result, receiver, _ = deliver_to(lambda r: r.script(replies), secrets=[secret])
    assert result.outcome == "rejected"
    assert receiver.requests[0].headers["webhook-signature"]  # it was used
    key_text = base64.b64decode(raw.removeprefix("whsec_")).decode()
    seen = " ".join([repr(result), str(result), repr(secret), str([secret]), caplog.text,
                     repr(client(FakeSleep()))])
    for leaked in (raw, raw.removeprefix("whsec_"), key_text):
        assert leaked not in seen
    assert "acct-7f3a" not in caplog.text  # nor the body
    assert "webhook retry" in caplog.text  # the log was captured at all
