"""Standard Webhooks (https://www.standardwebhooks.com/): signing, verifying, and delivery that
retries with capped, jittered backoff.

The `webhook-id` is the receiver's idempotency key: it is derived from the request (see
`message_id`), so a retry, a replay or a restart sends the same id and an idempotent receiver
acts once. The timestamp and the signature are made fresh for every attempt, as the spec asks,
so a receiver's replay window (`tolerance_s`) does not reject our own late retries.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import SecretStr

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_S = 300
_MAX_TIMESTAMP_DIGITS = 20
# Statuses that carry a Retry-After worth honouring (the spec names 429 and 503).
_RETRY_AFTER_STATUSES = {429, 503}

Outcome = Literal["delivered", "rejected", "failed"]
INVALID_URL = "invalid url"  # the error of a delivery to a URL aiohttp refuses: configuration
HeadersForAttempt = Callable[[], Mapping[str, str]]
Sleep = Callable[[float], Awaitable[None]]


class WebhookSecretError(ValueError):
    """A signing secret cannot be used. The message never contains the secret."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret: `whsec_<base64>` (the spec's form) decodes to its bytes;
    any other string is used as its UTF-8 bytes. (The reference libraries base64-decode
    unprefixed secrets too; we do not, so that a plain shared password works as configured.
    Give receivers the `whsec_` form for interoperability.)"""
    if secret.startswith(SECRET_PREFIX):
        encoded = secret[len(SECRET_PREFIX):]
        # Unpadded base64 is common in the wild; the reference library pads it the same way.
        padded = encoded + "=" * (-len(encoded) % 4)
        try:
            key = base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError):
            raise WebhookSecretError("a whsec_ secret is not valid base64") from None
    else:
        key = secret.encode()
    if not key:
        raise WebhookSecretError("a webhook secret is empty")
    return key


def _signature_bytes(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` signature."""
    digest = _signature_bytes(secret_key(secret), msg_id, timestamp, body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode()}"


def signature_header(secrets: Sequence[SecretStr], msg_id: str, timestamp: int,
                     body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret, space-separated, so that a
    receiver part-way through a key rotation accepts either key."""
    if not secrets:
        raise WebhookSecretError("no webhook secret to sign with")
    return " ".join(sign(s.get_secret_value(), msg_id, timestamp, body) for s in secrets)


def webhook_headers(secrets: Sequence[SecretStr], msg_id: str, timestamp: int,
                    body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers (no signature when there are no secrets)."""
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp)}
    if secrets:
        headers["webhook-signature"] = signature_header(secrets, msg_id, timestamp, body)
    return headers


def verify(headers: Mapping[str, str], body: bytes, secrets: Sequence[SecretStr], now_s: int,
           tolerance_s: int = DEFAULT_TOLERANCE_S) -> bool:
    """True when the request carries a `v1` signature made with one of `secrets` over this
    id, timestamp and body, and its timestamp is within `tolerance_s` of `now_s` (replay
    protection). Header names are matched case-insensitively. Whatever the headers hold, the
    answer is False, never an exception: they are the sender's to choose. (An unusable secret
    in `secrets` raises WebhookSecretError: that is the receiver's configuration.)"""
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp_text = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and timestamp_text and signatures and secrets):
        return False
    # Seconds since the epoch in ASCII digits; a few more than today's 10 are plenty, and
    # bounding them keeps int() off the 4,300-digit limit where it raises.
    if not (timestamp_text.isascii() and timestamp_text.isdigit()
            and len(timestamp_text) <= _MAX_TIMESTAMP_DIGITS):
        return False
    timestamp = int(timestamp_text)
    if abs(now_s - timestamp) > tolerance_s:
        return False
    try:
        msg_id.encode()
    except UnicodeEncodeError:
        return False  # a lone surrogate: no signer could have signed it
    expected = [_signature_bytes(secret_key(s.get_secret_value()), msg_id, timestamp, body)
                for s in secrets]
    for versioned in signatures.split():
        version, _, encoded = versioned.partition(",")
        if version != SIGNATURE_VERSION:
            continue  # v1a (asymmetric) or a future scheme: not ours to judge
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Compare against every key without stopping early: constant time per candidate.
        matches = [hmac.compare_digest(given, candidate) for candidate in expected]
        if any(matches):
            return True
    return False


def message_id(*parts: str) -> str:
    """A stable `msg_…` id from what identifies the request (e.g. the action id and the
    endpoint): the same parts give the same id across retries, replays and restarts.
    Parts are length-prefixed so ("a.b", "c") and ("a", "b.c") differ; the id has no `.`,
    which the spec forbids in ids because it delimits the signed content."""
    if not parts:
        raise ValueError("message_id needs at least one part")
    hasher = hashlib.sha256()
    for part in parts:
        encoded = part.encode()
        hasher.update(len(encoded).to_bytes(8, "big"))
        hasher.update(encoded)
    return "msg_" + hasher.hexdigest()[:32]


def backoff_s(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """The wait after failed attempt number `attempt` (1-based): "full jitter", uniform in
    [0, min(cap, base * 2**(attempt-1))]. Jitter spreads the retries of many deliveries that
    failed together, so a receiver coming back is not hit by all of them at once."""
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    # Beyond 2**62 the cap has long won; stop before the float overflows.
    ceiling = cap_s if attempt > 62 else min(cap_s, base_s * 2 ** (attempt - 1))
    return rng.uniform(0.0, max(ceiling, 0.0))


def retryable(status: int | None) -> bool:
    """Worth another attempt: no answer (timeout, connection error), 429 or 5xx. A 2xx is
    success; other 4xx (and 3xx: redirects are not followed, per the spec) would fail the
    same way again."""
    if status is None:
        return True
    return status == 429 or 500 <= status <= 599


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Outcome
    status: int | None  # the last HTTP status; None when the last attempt got no answer
    attempts: int
    latency_s: float  # from the first attempt to the outcome, waits included
    error: str | None = None  # short, for people: never a secret, a body or a URL

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


def _retry_after_s(response: aiohttp.ClientResponse) -> float | None:
    # Only the delta-seconds form: an HTTP-date needs a trusted clock, and backoff is a
    # reasonable answer to one.
    if response.status not in _RETRY_AFTER_STATUSES:
        return None
    value = response.headers.get("Retry-After", "").strip()
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _host(url: str) -> str:
    # Webhook URLs may carry tokens in their path or query: logs get the host only.
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"


class WebhookClient:
    """POSTs JSON bodies and retries what `retryable` says, with capped jittered backoff.
    Never raises for HTTP or network trouble: the outcome is in the DeliveryResult."""

    def __init__(self, session: aiohttp.ClientSession | None = None, *,
                 timeout_s: float = 5.0, max_attempts: int = 6,
                 base_backoff_s: float = 0.5, cap_backoff_s: float = 30.0,
                 sleep: Sleep = asyncio.sleep, rng: random.Random | None = None) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._session = session
        self._owns_session = session is None
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.base_backoff_s = base_backoff_s
        self.cap_backoff_s = cap_backoff_s
        self._sleep = sleep
        self._rng = rng or random.Random()

    def __repr__(self) -> str:
        return (f"WebhookClient(timeout_s={self.timeout_s}, max_attempts={self.max_attempts},"
                f" backoff_s={self.base_backoff_s}..{self.cap_backoff_s})")

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession belongs to the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    async def close(self) -> None:
        if self._owns_session and self._session is not None and not self._session.closed:
            await self._session.close()

    async def deliver(self, url: str, body: bytes, msg_id: str, secrets: Sequence[SecretStr],
                      now_s: Callable[[], int]) -> DeliveryResult:
        """A Standard Webhooks delivery: the same `msg_id` on every attempt, a fresh
        timestamp and signature per attempt. `secrets=()` sends no signature header.
        An unusable secret raises WebhookSecretError: configuration, not delivery trouble
        (check secrets at start with `secret_key`)."""
        def headers() -> Mapping[str, str]:
            return webhook_headers(secrets, msg_id, now_s(), body)
        return await self.post_with_retries(url, body, headers, label=msg_id)

    async def post_with_retries(self, url: str, body: bytes,
                                headers_for_attempt: HeadersForAttempt,
                                label: str = "-") -> DeliveryResult:
        """POST `body` as JSON until it is accepted, rejected, or `max_attempts` are spent.
        `headers_for_attempt` is called before each attempt; `label` names the delivery in
        logs (an id, never content)."""
        session = self._get_session()
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        attempt = 0
        while True:
            attempt += 1
            status, error, retry_after = await self._attempt(session, url, body,
                                                             headers_for_attempt())
            if status is not None and 200 <= status <= 299:
                return self._result("delivered", status, attempt, started, None, url, label)
            if error == INVALID_URL or not retryable(status):
                return self._result("rejected", status, attempt, started, error, url, label)
            if attempt >= self.max_attempts:
                return self._result("failed", status, attempt, started, error, url, label)
            delay = backoff_s(attempt, self.base_backoff_s, self.cap_backoff_s, self._rng)
            if retry_after is not None:
                delay = min(retry_after, self.cap_backoff_s)
            log.info("webhook retry label=%s host=%s attempt=%d status=%s error=%s delay_s=%.2f",
                     label, _host(url), attempt, status, error, delay)
            await self._sleep(delay)

    async def _attempt(self, session: aiohttp.ClientSession, url: str, body: bytes,
                       extra_headers: Mapping[str, str],
                       ) -> tuple[int | None, str | None, float | None]:
        headers = {"content-type": "application/json", **extra_headers}
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with session.post(url, data=body, headers=headers, timeout=timeout,
                                    allow_redirects=False) as response:
                error = None if 200 <= response.status <= 299 else f"http {response.status}"
                return response.status, error, _retry_after_s(response)
        except aiohttp.InvalidURL:
            return None, INVALID_URL, None
        except TimeoutError:
            return None, f"timeout after {self.timeout_s:g}s", None
        except (aiohttp.ClientError, OSError) as exc:
            # The class name only: aiohttp's messages include the URL.
            return None, f"connection error ({type(exc).__name__})", None

    @staticmethod
    def _result(outcome: Outcome, status: int | None, attempts: int, started: float,
                error: str | None, url: str, label: str) -> DeliveryResult:
        result = DeliveryResult(outcome, status, attempts, time.monotonic() - started, error)
        level = logging.INFO if outcome == "delivered" else logging.WARNING
        log.log(level, "webhook %s label=%s host=%s attempts=%d status=%s error=%s",
                outcome, label, _host(url), attempts, status, error)
        return result
