"""Redaction of personal data and secrets in prompt text, before anything leaves the worker.

The text is NFKC-normalised first (and invisible characters between digits dropped), so a
number written with non-breaking spaces, full-width digits or zero-width joiners is the same
number as its plain form; the redacted text comes back in that normalised form.

Order matters: secrets (whole tokens, URLs with credentials, key blocks) are replaced first,
then identifiers with a checksum or a fixed shape, then addresses, and phone numbers last,
because their pattern would otherwise eat parts of the others. Checksums (Luhn, IBAN mod 97,
Base58Check, Bech32) and shape checks in the replacement functions keep look-alikes (order
numbers, hashes, versions, prose) as they are.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from detectors import redaction_checks as checks

Replacement = str | Callable[[re.Match[str]], str]

SECRET = "[SECRET]"

# Dashes that NFKC leaves alone but people (and word processors) put between digit groups.
_DASH = "\\-\u2010-\u2015\u2212"
# Invisible characters that could split a number into pieces no pattern sees as one.
_INVISIBLE_IN_NUMBER = re.compile(r"(?<=\d)[\u00ad\u200b-\u200d\u2060\ufeff]{1,8}(?=\d)")


def _unless(check: Callable[[str], bool], tag: str) -> Callable[[re.Match[str]], str]:
    """A replacement that tags a match only when `check` accepts it."""
    def replace(match: re.Match[str]) -> str:
        return tag if check(match.group(0)) else match.group(0)
    return replace


def _one_of(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{pattern})" for pattern in patterns))


def _userinfo(match: re.Match[str]) -> str:
    return match.group("scheme") + SECRET + "@"


def _keyword_kept(tag: str) -> Callable[[re.Match[str]], str]:
    """The keyword that gave the value away stays ("passport number [ID]"), the value goes."""
    def replace(match: re.Match[str]) -> str:
        if not any(c.isdigit() for c in match.group("value")):
            return match.group(0)
        return match.group(0)[: match.start("value") - match.start(0)] + tag
    return replace


# Every quantifier is bounded (or anchored behind a literal prefix), so each pattern scans in
# linear time whatever the prompt: an unbounded run once made one quadratic, 4 s for a 64 KB
# prompt of "1.1.1.". The two key-block patterns are the exception the linear-time test knows:
# their lazy body stops at the block's end marker or at the end of the text, once per marker.
_PEM_BLOCK = re.compile(
    r"-{4,5} ?BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)? ?-{4,5}.*?"
    r"(?:-{4,5} ?END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)? ?-{4,5}|$)", re.DOTALL)
_PUTTY_BLOCK = re.compile(
    r"PuTTY-User-Key-File-\d{1,2}:.*?(?:Private-MAC:[ \t]{0,5}[0-9A-Fa-f]{0,128}|$)", re.DOTALL)
KEY_BLOCKS = (_PEM_BLOCK, _PUTTY_BLOCK)

_SECRET_TOKENS = [
    r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/\-]{8,256}",
    r"\bdiscord(?:app)?\.com/api/webhooks/\d{5,30}/[\w\-]{20,256}",
    r"\b(?:sk|pk|rk)-(?:proj-|live-|test-)?[A-Za-z0-9_\-]{16,256}",  # API keys
    r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{10,256}",  # Stripe
    r"\bwhsec_[A-Za-z0-9+/=]{16,256}",  # webhook signing secrets (Stripe, Svix)
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",  # AWS access key ids
    r"\bgh[pousr]_[A-Za-z0-9]{30,256}\b",  # GitHub tokens
    r"\bgithub_pat_[A-Za-z0-9_]{20,256}",  # GitHub fine-grained tokens
    r"\bglpat-[A-Za-z0-9_\-]{20,64}",  # GitLab
    r"\bAIza[0-9A-Za-z_\-]{35}",  # Google API keys
    r"\bGOCSPX-[\w\-]{20,64}",  # Google OAuth client secrets
    r"\bx(?:ox[abposer]|app)-[A-Za-z0-9\-]{10,256}",  # Slack
    r"\bhf_[A-Za-z0-9]{30,64}\b",  # Hugging Face
    r"\bnpm_[A-Za-z0-9]{36}\b",
    r"\bpypi-[A-Za-z0-9_\-]{50,512}",
    r"\bSG\.[\w\-]{16,32}\.[\w\-]{32,64}",  # SendGrid
    r"\bAGE-SECRET-KEY-1[0-9A-Z]{58}\b",  # age encryption keys
    # JWTs, signed or not (alg=none leaves the third part empty)
    r"\beyJ[A-Za-z0-9_\-]{4,4096}\.[A-Za-z0-9_\-]{4,4096}\.[A-Za-z0-9_\-]{0,4096}",
    # Authorization headers: a scheme and its credentials, or a bare token
    r"(?i:\b(?:proxy-)?authorization[\"']?\s{0,5}[:=]\s{0,5}[\"']?"
    r"(?:(?:bearer|basic|token|digest|negotiate|ntlm|apikey|api-key|sso-key|aws4-hmac-sha256|"
    r"hmac[\w\-]{0,20})\s{1,5}[^\s\"',;]{1,4096}|[A-Za-z0-9\-._~+/]{16,4096}={0,3}))",
    r"(?<!\S)(?:-u|--user)\s{1,3}[\"']?[^\s:\"']{1,128}:[^\s\"']{1,256}",  # curl -u user:pass
]
_TOKEN_HINTS = ("hooks.slack.com/", "discord", "sk-", "pk-", "rk-", "_live_", "_test_", "whsec_",
                "akia", "asia", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-",
                "aiza", "gocspx-", "xox", "xapp-", "hf_", "npm_", "pypi-", "sg.", "age-secret-key-",
                "eyj", "authorization", "-u")
_NAMED_SECRETS = [
    # key = value, where the key names a secret: password, client_secret, aws_secret_access_key
    r"(?i:\b[A-Za-z0-9_\-]{0,30}(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|"
    r"private[_-]?key)[A-Za-z0-9_\-]{0,30}[\"']?\s{0,5}[:=]\s{0,5}[\"']?[^\s\"',;]{1,512})",
    # ... and in words: "my password is hunter2", "mein Passwort ist ...", "the PIN was 4821"
    r"(?i:\b(?:password|passphrase|passcode|pin|passwort|kennwort|contraseña|contrasena|"
    r"mot de passe|senha|wachtwoord)\s{1,5}(?:is|was|ist|war|es|era|est|était|é)\s{1,5}"
    r"[^\s,;]{1,512})",
    # "the secret is ..." only with a digit in it: "the secret is to relax" stays
    r"(?i:\b(?:secret|token|api key|key)\s{1,5}(?:is|was)\s{1,5}(?=[^\s,;]{0,127}\d)"
    r"[^\s,;]{6,512})",
]
_NAMED_SECRET_HINTS = ("pass", "pwd", "secret", "token", "key", "pin", "kennwort", "contrase",
                       "senha", "wachtwoord")

# Bounded like the addresses themselves (local part 64, domain 255); \w takes in non-ASCII
# letters (müller@exämple.de).
_EMAIL = re.compile(r"[\w.%+\-]{1,64}@[\w\-]{1,63}(?:\.[\w\-]{1,63}){0,8}\.[^\W\d_]{2,24}\b")
_IBAN = re.compile(r"(?i)\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
# Digits may touch letters of scripts written without spaces ("番号は4111..."), not Latin ones.
_CARD_CANDIDATE = re.compile(rf"(?<![A-Za-z0-9_])(?:\d[ .{_DASH}]{{0,2}}){{12,18}}\d"
                             r"(?![A-Za-z0-9_])")
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")
_IPV6_CANDIDATE = re.compile(r"(?<![:\w])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![:\w])")
_MAC = re.compile(r"\b[0-9A-Fa-f]{2}([:\-])[0-9A-Fa-f]{2}(?:\1[0-9A-Fa-f]{2}){4}\b")
_MAC_DOTTED = re.compile(r"\b[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\b")  # Cisco
_BITCOIN_BASE58 = re.compile(r"\b[13][1-9A-HJ-NP-Za-km-z]{25,34}\b")
_BITCOIN_BECH32 = re.compile(r"\b(?:bc|tb|BC|TB)1[02-9ac-hj-np-zAC-HJ-NP-Z]{8,87}\b")
_ETHEREUM = re.compile(r"\b0x[0-9a-fA-F]{40}\b")
# UK National Insurance numbers (HMRC's allocation rules: no D F I Q U V first, no D F I O Q U
# V second, never BG GB NK KN TN NT ZZ, suffix A-D).
_UK_NINO = re.compile(r"(?i)\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
                      r" ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
# Passport numbers have no shape of their own: only beside the word, and with a digit in them.
_PASSPORT = re.compile(
    r"(?i)\b(?:passport|passeport|reisepass|pasaporte|passaporto|paspoort)"
    r"(?:\s{0,3}(?:number|numéro|numero|nummer|num|no|nr|n°|#|id)\.?)?"
    r"(?:\s{1,3}(?:is|es|est|ist)\b|\s{0,3}[:#=])?\s{0,3}(?P<value>[A-Z0-9]{6,10})\b")
# The machine-readable zone of a passport: the name line and the number line.
_MRZ_NAMES = re.compile(r"\bP[A-Z<][A-Z]{3}[A-Z<]{2,39}<<[A-Z<]{1,39}")
_MRZ_NUMBERS = re.compile(r"\b[A-Z0-9<]{9}\d[A-Z<]{3}\d{6}\d[MFX<]\d{6}\d[A-Z0-9<]{14,16}\d{0,2}")
_PHONE = re.compile(rf"(?<![A-Za-z0-9_+{_DASH}])\+?\(?\d{{1,4}}\)?"
                    rf"(?:[ .{_DASH}]?\(?\d{{2,4}}\)?){{2,5}}(?![A-Za-z0-9_])")

_US_STATES = ("AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|"
              "MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY")
_US_TAIL = (rf"(?:,?\s{{1,3}}(?:[A-Z][a-z]{{1,20}}\s{{1,3}}){{1,3}},?\s{{0,3}}(?:{_US_STATES})"
            r"\s{1,3}\d{5}(?:-\d{4})?\b)?")
_ADDRESSES = _one_of([
    # US and UK: "1600 Pennsylvania Avenue NW", "1234 W. Elm Street Apt 5B", "350 5th Ave, New
    # York, NY 10118"
    r"\b\d{1,6}[A-Za-z]?\s{1,3}(?:(?:[NSEW]|N[EW]|S[EW]|North|South|East|West)\.?\s{1,3})?"
    r"(?:(?:[A-Z][a-z]{1,20}|\d{1,3}(?:st|nd|rd|th))\s{1,3}){1,3}"
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|"
    r"Terrace|Square|Sq|Circle|Cir|Parkway|Pkwy|Highway|Hwy|Loop|Trail|Trl|Plaza|Crescent|"
    r"Close|Row|Mews)\b\.?(?:\s{1,3}(?:NW|NE|SW|SE|N|S|E|W)\b)?"
    r"(?:,?\s{1,3}(?:Apt|Apartment|Suite|Ste|Unit|#)\.?\s{0,3}[A-Za-z0-9\-]{1,6})?" + _US_TAIL,
    # ... written in lower case, with the unambiguous street words only ("5 miles down the road"
    # stays)
    r"\b\d{1,6}\s{1,3}(?:[a-z]{2,20}\s{1,3}){1,2}(?:street|st|avenue|ave|boulevard|"
    r"blvd)\b\.?",
    # A city, state and ZIP code on their own: "Cupertino, CA 95014"
    rf"\b[A-Z][a-z]{{2,20}}(?:\s[A-Z][a-z]{{2,20}})?,\s{{1,3}}(?:{_US_STATES})"
    r"\s{1,3}\d{5}(?:-\d{4})?\b",
    # German: "Musterstraße 12a", "Berliner Allee 45", "Am Lindenweg 7, 01067 Dresden"
    r"\b(?:(?:Am|An der|Im|Zum|Zur|Auf der|In der)\s{1,2})?(?:"
    # (not "-ring": During, String, Spring)
    r"[A-ZÄÖÜ][a-zäöüß\-]{1,30}(?:straße|strasse|str\.|weg|gasse|allee|platz|damm|ufer|"
    r"chaussee|steig|pfad)|"
    r"[A-ZÄÖÜ][a-zäöüß]{1,20}\s{1,2}(?:Straße|Strasse|Str\.|Weg|Gasse|Allee|Platz|Ring|Damm|"
    r"Ufer|Chaussee))"
    r"\s{0,2}\d{1,4}(?:\s?[a-z]\b)?(?:,?\s{1,3}\d{5}\s{1,3}[A-ZÄÖÜ][a-zäöüß\-]{2,30})?",
    # French: "12 rue de la Paix, 75002 Paris", "3 bis boulevard Haussmann"
    r"\b\d{1,4}(?:\s?(?:bis|ter|quater|[A-D]))?,?\s{1,3}(?i:rue|avenue|av\.|boulevard|bd|"
    r"place|allée|allee|impasse|chemin|quai|cours|route|voie|cité|esplanade|faubourg|villa|"
    r"sentier)\s{1,3}(?:(?:de la|de l'|des|du|de|d'|la|le|les|l')\s{0,3})?"
    r"[A-ZÀ-ÖØ-Þ][\w'\-]{1,40}(?:\s{1,3}[A-ZÀ-ÖØ-Þ][\w'\-]{1,40}){0,3}"
    r"(?:,?\s{1,3}\d{5}\s{1,3}[A-ZÀ-ÖØ-Þ][\w'\-]{1,40})?",
    # Spanish and Catalan: "Calle Mayor 5, 3º B", "C/ Alcalá, 42", "Paseo de la Castellana 259"
    r"(?<!\w)(?i:calle|c/|avenida|avda\.?|av\.|paseo|plaza|pza\.?|camino|carretera|ctra\.?|"
    r"ronda|travesía|carrer|rambla|glorieta|passeig)\s{0,3}"
    r"(?:(?:de la|de los|de las|del|de|d'|dels|la|el)\s{1,3})?"
    r"[A-ZÁÉÍÓÚÑÀÈÒÇ][\w'\-]{1,30}(?:\s{1,3}(?:(?:de|del|la)\s{1,3})?"
    r"[A-ZÁÉÍÓÚÑÀÈÒÇ][\w'\-]{1,30}){0,3},?\s{1,3}(?:n[o°]\.?\s?|núm\.?\s?)?\d{1,4}"
    r"(?:,?\s{1,3}\d{1,2}[o°a]\s?[A-Z]?\b)?(?:,?\s{1,3}\d{5}\s{1,3}[A-ZÁÉÍÓÚÑ][\w\-]{1,30})?",
    # Any of the above styles' last line with a building number: "Unter den Linden 77, 10117
    # Berlin"
    r"\b(?:[A-ZÄÖÜ][a-zäöüß\-]{1,30}\s{1,2}(?:[a-zäöü]{2,3}\s{1,2})?){1,3}"
    r"\d{1,4}\s?[a-z]?,\s{0,2}\d{5}\s{1,2}[A-ZÄÖÜ][a-zäöüß\-]{2,30}",
])


def _redact_ipv6(match: re.Match[str]) -> str:
    try:
        ipaddress.IPv6Address(match.group(0))
    except ValueError:
        return match.group(0)
    return "[IP]"


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_YEAR_RANGE = re.compile(rf"\(?(?:1\d|20)\d\d ?[{_DASH}/] ?(?:1\d|20)\d\d\)?")


def _redact_phone(match: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in match.group(0))
    if _ISO_DATE.fullmatch(match.group(0)) or _YEAR_RANGE.fullmatch(match.group(0)):
        return match.group(0)  # a date or a span of years ("1685-1753"): prompts are full of them
    return "[PHONE]" if 7 <= digits <= 15 else match.group(0)


@dataclass(frozen=True)
class Rule:
    """A pattern and what replaces its matches. It runs only on a text that holds one of its
    `hints` (lower case) and, where it `needs_digit`, a digit: every match does, and most
    prompts hold none, so most rules cost a substring test instead of a pass."""

    pattern: re.Pattern[str]
    replacement: Replacement
    hints: tuple[str, ...] = ()
    needs_digit: bool = False


_DIGIT = re.compile(r"\d")

RULES = (
    Rule(_PEM_BLOCK, SECRET, ("private key",)),
    Rule(_PUTTY_BLOCK, SECRET, ("putty-user-key-file-",)),
    # Credentials in a URL (scheme://user:pass@host, redis://:pass@host): the host stays.
    Rule(re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]{1,30}://)[^\s/?#@:]{0,256}:"
                    r"[^\s/?#]{1,256}@"), _userinfo, ("://",)),
    # Alternatives in one pattern: one pass instead of one per format.
    Rule(_one_of(_SECRET_TOKENS), SECRET, _TOKEN_HINTS),
    Rule(_one_of(_NAMED_SECRETS), SECRET, _NAMED_SECRET_HINTS),
    Rule(re.compile(r"(?i)\bbearer\s{1,5}[A-Za-z0-9\-._~+/]{8,4096}={0,3}"),
         _unless(checks.looks_like_token, SECRET), ("bearer",)),
    Rule(re.compile(r"(?i)\bbasic\s{1,5}[A-Za-z0-9+/]{8,4096}={0,2}"),
         _unless(checks.is_basic_credentials, SECRET), ("basic",)),
    # AWS secret access keys anywhere: 40 characters of base64 with upper, lower case and digits
    Rule(re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"),
         _unless(checks.mixes_cases_and_digits, SECRET), needs_digit=True),
    Rule(_EMAIL, "[EMAIL]", ("@",)),
    Rule(_IBAN, _unless(checks.is_iban, "[IBAN]"), needs_digit=True),
    Rule(_CARD_CANDIDATE, _unless(checks.is_card_number, "[CARD]"), needs_digit=True),
    Rule(_ETHEREUM, "[WALLET]", ("0x",)),
    Rule(_BITCOIN_BASE58, _unless(checks.is_base58check_address, "[WALLET]"), needs_digit=True),
    Rule(_BITCOIN_BECH32, _unless(checks.is_bech32_address, "[WALLET]"), ("bc1", "tb1")),
    Rule(_MRZ_NAMES, "[ID]", ("<<",)),
    Rule(_MRZ_NUMBERS, "[ID]", needs_digit=True),
    Rule(_UK_NINO, "[ID]", needs_digit=True),
    Rule(_PASSPORT, _keyword_kept("[ID]"), ("pas", "reisepass"), needs_digit=True),
    Rule(_MAC, "[MAC]", (":", "-")),
    Rule(_MAC_DOTTED, _unless(checks.has_hex_letter, "[MAC]"), (".",)),
    Rule(_IPV4, "[IP]", (".",), needs_digit=True),
    Rule(_IPV6_CANDIDATE, _redact_ipv6, (":",)),
    Rule(_ADDRESSES, "[ADDRESS]", needs_digit=True),
    Rule(_PHONE, _redact_phone, needs_digit=True),
)


def patterns() -> list[re.Pattern[str]]:
    """Every pattern redaction runs (for the test of their cost)."""
    return [rule.pattern for rule in RULES] + [_INVISIBLE_IN_NUMBER, _DIGIT]


def redact(text: str) -> str:
    """Replace e-mail addresses, phone, card and bank account numbers, national identifiers,
    street addresses, wallet and hardware addresses, secrets and IP addresses with tags. The
    result is NFKC-normalised."""
    text = _INVISIBLE_IN_NUMBER.sub("", unicodedata.normalize("NFKC", text))
    # Replacing only takes text away (a tag in its place), and no rule needs a tag to match:
    # what the text holds now decides for every rule.
    lower = text.lower()
    has_digit = _DIGIT.search(text) is not None
    for rule in RULES:
        if (rule.needs_digit and not has_digit) or (
                rule.hints and not any(hint in lower for hint in rule.hints)):
            continue
        text = rule.pattern.sub(rule.replacement, text)
    return text


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
    """A short redacted excerpt, the only form in which a prompt is ever stored. The whole text
    is redacted before it is cut: cut first, a value across the cut would leave its first half,
    too short for any pattern to know it."""
    short = redact(text)
    return short if len(short) <= max_chars else short[: max_chars - 1] + "…"


def text_hash(text: str) -> str:
    """A stable hash that logs and documents may carry instead of prompt text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()

