import hashlib

from streams.runtime.stage_agent import (
    MAX_DEAD_LETTER_KEY_BYTES,
    MAX_DEAD_LETTER_VALUE_BYTES,
    MAX_REASON_CHARS,
    fit_dead_letter,
)

# The worker's producer refuses requests over this (Faust's producer_max_request_size).
PRODUCER_MAX_REQUEST_BYTES = 1_000_000


def test_an_ordinary_dead_letter_keeps_its_key_and_bytes_untouched() -> None:
    assert fit_dead_letter(b"acct-1", b'{"broken": ') == (b"acct-1", b'{"broken": ', {})
    assert fit_dead_letter(None, None) == (None, None, {})


def test_a_message_near_the_brokers_limit_still_fits_in_a_dead_letter() -> None:
    """The broker takes a 1,047,988-byte event; copied whole, its dead letter was over the
    producer's limit and stopped the worker on every restart."""
    value, key = b"z" * 1_047_988, b"k" * 5000
    fitted_key, fitted_value, cut = fit_dead_letter(key, value)
    assert fitted_value == value[:MAX_DEAD_LETTER_VALUE_BYTES]
    assert fitted_key == key[:MAX_DEAD_LETTER_KEY_BYTES]
    assert cut["misuse.truncated.value_bytes"] == b"1047988"
    assert cut["misuse.truncated.value_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert cut["misuse.truncated.key_bytes"] == b"5000"
    headers = sum(len(k) + len(v) for k, v in cut.items()) + MAX_REASON_CHARS * 4 + 500
    assert len(fitted_key) + len(fitted_value) + headers < PRODUCER_MAX_REQUEST_BYTES
