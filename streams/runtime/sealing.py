"""The worker's own records are sealed with its key, so that what it reads back from an
internal topic is what it wrote, not what whoever can produce to that topic wrote.

ACLs are the first wall (only the worker's principal may write its topics); this is the second,
for clusters whose ACLs are coarse. What is sealed: every batch the worker writes to an
internal topic (`encode_batch` in `streams/runtime/messages.py`: events, prompt vectors,
jailbreak matches, signals, alerts, documents, action and page requests, deliveries; not the
analysts' decisions, which other services write and sign their own way)
and every state value the worker writes to a changelog. Every step counts: a forged prompt
vector can make a campaign, whose signals the worker would then seal itself. A sealed value is

    MAGIC (4 bytes) + HMAC-SHA256(key, context + payload) (32 bytes) + payload

over the exact payload bytes (a msgpack batch, or a codec's compressed state), so nothing is
encoded twice. `context` binds a state value to its table and key: a genuine "allowlisted"
status cannot be copied onto another account. Neither msgpack (a map starts 0x8_ or 0xde/0xdf)
nor zlib (0x78) starts with MAGIC, so an unsealed value is told apart by its first bytes.

Keys rotate like the webhook secrets: the first key of `MISUSE_INTERNAL_KEY` seals, any listed
key opens. Without one, on a PLAINTEXT (local, open) stack, the worker uses `DEVELOPMENT_KEY`,
which anyone can read here: `misuse doctor` warns of it, and a worker on a secured broker
refuses to start without a key of its own (`require_key`).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import SecretStr

from detectors.alerts import Alert, Entity

MAGIC = b"\xc1MAC"  # 0xc1 is the one byte msgpack never uses
_MAC_BYTES = 32
HEADER_BYTES = len(MAGIC) + _MAC_BYTES  # what comes before a sealed value's payload
DEVELOPMENT_KEY = SecretStr("misuse-detector-development-key-not-secret")
FORGED_RECORD_RULE = "security.unverified_record"


UNSEALED = "it carries no MAC (forged, or written before the worker sealed its records)"


class UnsealedError(ValueError):
    """A value without a MAC, or whose MAC no internal key verifies. The text says which."""


class InternalKeyMissingError(RuntimeError):
    """The worker would sign with the public development key on a secured broker."""


@dataclass(frozen=True)
class KeyRing:
    """`keys`: the first seals, every one opens (two during a rotation)."""

    keys: tuple[SecretStr, ...]

    def __post_init__(self) -> None:
        if not self.keys or not all(k.get_secret_value() for k in self.keys):
            raise ValueError("a key ring needs at least one key, none of them empty")

    def seal(self, payload: bytes, context: bytes = b"") -> bytes:
        return MAGIC + _mac(self.keys[0], context, payload) + payload

    def open(self, raw: bytes, context: bytes = b"") -> bytes:
        """The payload of a sealed value, or UnsealedError."""
        if not raw.startswith(MAGIC):
            raise UnsealedError(UNSEALED)
        mac, payload = raw[len(MAGIC):HEADER_BYTES], raw[HEADER_BYTES:]
        if not any(hmac.compare_digest(mac, _mac(key, context, payload)) for key in self.keys):
            raise UnsealedError("its MAC does not verify under any internal key")
        return payload

    @property
    def development(self) -> bool:
        return self.keys[0].get_secret_value() == DEVELOPMENT_KEY.get_secret_value()


DEVELOPMENT_RING = KeyRing((DEVELOPMENT_KEY,))


def ring_of(keys: Sequence[SecretStr]) -> KeyRing:
    """The ring of the configured keys, or the development ring when none is set."""
    return KeyRing(tuple(keys)) if keys else DEVELOPMENT_RING


def require_key(keys: Sequence[SecretStr], security_protocol: str) -> None:
    """A worker on a secured broker must have a key of its own: the development key is in
    this file, so records sealed with it prove nothing."""
    if security_protocol != "PLAINTEXT" and (not keys or ring_of(keys).development):
        raise InternalKeyMissingError(
            f"MISUSE_INTERNAL_KEY is not set (MISUSE_KAFKA_SECURITY_PROTOCOL="
            f"{security_protocol}): the worker seals its internal records with it; set it to a "
            "long random secret, the same on every worker, e.g. `openssl rand -base64 32`")


def _mac(key: SecretStr, context: bytes, payload: bytes) -> bytes:
    signer = hmac.new(key.get_secret_value().encode("utf-8"), digestmod=hashlib.sha256)
    signer.update(len(context).to_bytes(4, "big") + context)  # context and payload apart
    signer.update(payload)
    return signer.digest()


def forged_alert(what: str, where: str, why: str, now_ms: int) -> Alert:
    """High severity: a record the worker would read was not made by the worker. `what`:
    the record type or state table; `where`: the topic or changelog. Both name the entity, so
    forgeries of one type on two topics in the same millisecond are two alerts, not one
    overwriting the other."""
    return Alert(
        rule_id=FORGED_RECORD_RULE, severity="high", score=1.0,
        entity=Entity("internal_record", f"{what} on {where}"), incident_start_ms=now_ms,
        window_start_ms=now_ms, window_end_ms=now_ms,
        reasons=(f"a {what} record on {where} was refused: {why}",),
        evidence={"record": what, "where": where, "refused_because": why})
