"""Redaction of personal data and secrets in prompt text, before anything leaves the worker.

Order matters: secrets and card numbers are replaced before phone numbers, whose pattern would
otherwise eat parts of them.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

_SECRET_PATTERNS = [
    re.compile(r"\b(?:sk|pk|rk)-(?:proj-|live-|test-)?[A-Za-z0-9_\-]{16,}"),  # API keys
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),  # GitHub tokens
    re.compile(r"\bxox[abpr]-[A-Za-z0-9\-]{10,}"),  # Slack tokens
    re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"),  # JWTs
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
               re.DOTALL),
    re.compile(r"(?i)\b(?:password|passwd|pwd|secret|token|api[_-]?key)\s*[:=]\s*\S+"),
]
# Bounded like the addresses themselves (local part 64, domain 255): unbounded runs made the
# scan quadratic, 4 s for a 64 KB prompt of "1.1.1.".
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9.\-]{1,255}\.[A-Za-z]{2,24}\b")
_CARD_CANDIDATE = re.compile(r"\b(?:\d[ \-]?){12,18}\d\b")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6_CANDIDATE = re.compile(r"(?<![:\w])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![:\w])")
_PHONE = re.compile(r"(?<![\w+])\+?\(?\d{1,4}\)?(?:[ .\-]?\(?\d{2,4}\)?){2,5}(?!\w)")


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


def _redact_ipv6(match: re.Match[str]) -> str:
    try:
        ipaddress.IPv6Address(match.group(0))
    except ValueError:
        return match.group(0)
    return "[IP]"


def _redact_phone(match: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in match.group(0))
    return "[PHONE]" if 7 <= digits <= 15 else match.group(0)


def redact(text: str) -> str:
    """Replace e-mail addresses, phone and card numbers, secrets and IP addresses with tags."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub("[SECRET]", text)
    text = _EMAIL.sub("[EMAIL]", text)
    text = _CARD_CANDIDATE.sub(_redact_card, text)
    text = _IPV4.sub("[IP]", text)
    text = _IPV6_CANDIDATE.sub(_redact_ipv6, text)
    return _PHONE.sub(_redact_phone, text)


def redacted_sample(text: str, max_chars: int = 200) -> str:
    """A short redacted excerpt, the only form in which a prompt is ever stored."""
    short = redact(text[: max_chars * 2])
    return short if len(short) <= max_chars else short[: max_chars - 1] + "…"


def text_hash(text: str) -> str:
    """A stable hash that logs and documents may carry instead of prompt text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()
