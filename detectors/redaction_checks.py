"""The checks that tell a real identifier or credential from its look-alike, for redaction:
checksums where the format has one (Luhn, IBAN, Base58Check, Bech32), shape where it has not."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re


def is_card_number(text: str) -> bool:
    """13 to 19 digits that pass the Luhn check."""
    digits = re.sub(r"\D", "", text)
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def is_iban(text: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters to numbers, mod 97 is 1.
    Written in either case."""
    iban = text.replace(" ", "").upper()
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return 15 <= len(iban) <= 34 and int(digits) % 97 == 1


_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def is_base58check_address(text: str) -> bool:
    """A legacy Bitcoin address (P2PKH "1...", P2SH "3..."): 25 bytes whose last four are the
    start of the double SHA-256 of the rest."""
    number = 0
    for char in text:
        number = number * 58 + _BASE58.index(char)
    try:
        raw = number.to_bytes(25, "big")
    except OverflowError:
        return False
    return hashlib.sha256(hashlib.sha256(raw[:-4]).digest()).digest()[:4] == raw[-4:]


_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_BECH32_CONSTANTS = (1, 0x2BC830A3)  # BIP 173 (SegWit v0) and BIP 350 (Bech32m, Taproot)


def is_bech32_address(text: str) -> bool:
    """A SegWit or Taproot address ("bc1q...", "bc1p..."): its Bech32(m) checksum holds."""
    if text != text.lower() and text != text.upper():
        return False
    text = text.lower()
    hrp, _, data = text.rpartition("1")
    values = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    values += [_BECH32.index(c) for c in data]
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for bit, generator in enumerate(_BECH32_GENERATOR):
            if top >> bit & 1:
                check ^= generator
    return check in _BECH32_CONSTANTS


def is_basic_credentials(text: str) -> bool:
    """"Basic <base64 of user:password>", as an HTTP header carries it ("basic understanding"
    is not base64 of anything with a colon)."""
    encoded = text.split()[-1]
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    return ":" in decoded and decoded.isprintable()


def looks_like_token(text: str) -> bool:
    """"Bearer <token>" rather than "bearer authentication": the word after it is long, or has
    a digit or a symbol, or mixes cases inside."""
    token = text.split()[-1]
    inner = token[1:]
    return (len(token) >= 20 or not token.isalpha()
            or (any(c.isupper() for c in inner) and any(c.islower() for c in inner)))


def mixes_cases_and_digits(text: str) -> bool:
    """Random base64 of 40 characters (an AWS secret access key) has upper and lower case letters
    and digits; hex digests, paths and words do not."""
    return (any(c.isupper() for c in text) and any(c.islower() for c in text)
            and any(c.isdigit() for c in text))


def has_hex_letter(text: str) -> bool:
    """A dotted MAC address ("001a.2b3c.4d5e") rather than a number in groups of four."""
    return any(c in "abcdefABCDEF" for c in text)
