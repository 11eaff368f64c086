"""Redaction of personal data and secrets in prompt text, before anything leaves the worker.

Order matters: secrets and card numbers are replaced before phone numbers, whose pattern would
otherwise eat parts of them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from functools import lru_cache
from typing import Any

# Every quantifier is bounded (or anchored behind a literal prefix), so each pattern scans in
# linear time whatever the prompt: an unbounded run once made one quadratic, 4 s for a 64 KB
# prompt of "1.1.1.".
_SECRET_PATTERNS = [
    re.compile(r"\b(?:sk|pk|rk)-(?:proj-|live-|test-)?[A-Za-z0-9_\-]{16,256}"),  # API keys
    re.compile(r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,256}"),  # Stripe
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,256}\b"),  # GitHub tokens
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,256}"),  # GitHub fine-grained tokens
    re.compile(r"\bglpat-[A-Za-z0-9_\-]{20,64}"),  # GitLab tokens
    re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"),  # Google API keys
    re.compile(r"\bxox[abpr]-[A-Za-z0-9\-]{10,256}"),  # Slack tokens
    # JWTs, and opaque bearer tokens
    re.compile(r"\beyJ[A-Za-z0-9_\-]{8,4096}\.[A-Za-z0-9_\-]{8,4096}\.[A-Za-z0-9_\-]{8,4096}"),
    re.compile(r"(?i)\bbearer\s{1,5}[A-Za-z0-9\-._~+/]{8,4096}={0,3}"),
    re.compile(r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY(?: BLOCK)?-----.*?"
               r"(?:-----END [A-Z ]{0,40}PRIVATE KEY(?: BLOCK)?-----|$)", re.DOTALL),
    # key = value, where the key names a secret: password, client_secret, aws_secret_access_key
    re.compile(r"(?i)\b[A-Za-z0-9_\-]{0,30}(?:password|passwd|pwd|secret|token|api[_-]?key|"
               r"access[_-]?key)[A-Za-z0-9_\-]{0,30}[\"']?\s{0,5}[:=]\s{0,5}[\"']?[^\s\"',;]{1,512}"),
    # ... and in words: "my password is hunter2", "the PIN was 4821"
    re.compile(r"(?i)\b(?:password|passphrase|passcode|pin)\s{1,5}(?:is|was)\s{1,5}"
               r"[^\s,;]{1,512}"),
]
# Bounded like the addresses themselves (local part 64, domain 255); \w takes in non-ASCII
# letters (müller@exämple.de).
_EMAIL = re.compile(r"[\w.%+\-]{1,64}@[\w\-]{1,63}(?:\.[\w\-]{1,63}){0,8}\.[^\W\d_]{2,24}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_CARD_CANDIDATE = re.compile(r"\b(?:\d[ .\-]{0,2}){12,18}\d\b")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6_CANDIDATE = re.compile(r"(?<![:\w])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![:\w])")
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d{1,4}\)?(?:[ .\-]?\(?\d{2,4}\)?){2,5}(?!\w)")
_STREET = re.compile(
    r"\b\d{1,5}[A-Za-z]?\s{1,3}(?:[A-Z][a-z]{1,20}\s{1,3}){1,3}(?:Street|St|Avenue|Ave|Road|Rd|"
    r"Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Square|Sq)\b\.?")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _redact_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn_valid(digits) else match.group(0)


def _redact_iban(match: re.Match[str]) -> str:
    """ISO 13616: move the first four characters to the end, letters to numbers, mod 97 is 1."""
    iban = match.group(0).replace(" ", "")
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return "[IBAN]" if 15 <= len(iban) <= 34 and int(digits) % 97 == 1 else match.group(0)


def _redact_ipv6(match: re.Match[str]) -> str:
    try:
        ipaddress.IPv6Address(match.group(0))
    except ValueError:
        return match.group(0)
    return "[IP]"


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _redact_phone(match: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in match.group(0))
    if _ISO_DATE.fullmatch(match.group(0)):
        return match.group(0)  # a date, which prompts are full of
    return "[PHONE]" if 7 <= digits <= 15 else match.group(0)


def redact(text: str) -> str:
    """Replace e-mail addresses, phone, card and bank account numbers, street addresses,
    secrets and IP addresses with tags."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("[SECRET]", text)
    text = _EMAIL.sub("[EMAIL]", text)
    text = _IBAN.sub(_redact_iban, text)
    text = _CARD_CANDIDATE.sub(_redact_card, text)
    text = _IPV4.sub("[IP]", text)
    text = _IPV6_CANDIDATE.sub(_redact_ipv6, text)
    text = _STREET.sub("[ADDRESS]", text)
    return _PHONE.sub(_redact_phone, text)


@lru_cache(maxsize=8192)  # user agents repeat: each distinct one is redacted once
def redact_agent(user_agent: str) -> str:
    return redact(user_agent)


def redact_values(value: Any) -> Any:
    """Every string inside a JSON-like value redacted (an event's unknown extra fields)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_values(item) for item in value]
    return value


def redacted_sample(text: str, max_chars: int = 200) -> str:
    """A short redacted excerpt, the only form in which a prompt is ever stored."""
    short = redact(text[: max_chars * 2])
    return short if len(short) <= max_chars else short[: max_chars - 1] + "…"


def text_hash(text: str) -> str:
    """A stable hash that logs and documents may carry instead of prompt text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()
