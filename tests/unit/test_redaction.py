import pytest

from detectors.redaction import redact, redacted_sample


@pytest.mark.parametrize(("text", "secret", "tag"), [
    ("write to jane.roe@example.org today", "jane.roe@example.org", "[EMAIL]"),
    ("call +1 (415) 555-0132 now", "555-0132", "[PHONE]"),
    ("card 4111 1111 1111 1111 expires", "4111", "[CARD]"),
    ("key sk-proj-AbCdEfGhIjKlMnOpQrStUv here", "AbCdEfGh", "[SECRET]"),
    ("AKIAABCDEFGHIJKLMNOP is my aws id", "AKIAABCDEFGHIJKLMNOP", "[SECRET]"),
    ("password: hunter2", "hunter2", "[SECRET]"),
    ("server at 198.51.100.23 is down", "198.51.100.23", "[IP]"),
    ("v6 host 2001:db8::1 is up", "2001:db8::1", "[IP]"),
])
def test_personal_data_and_secrets_are_replaced(text, secret, tag):
    out = redact(text)
    assert secret not in out and tag in out


def test_ordinary_text_is_left_alone():
    text = "Summarize the 2024 report: revenue grew 12.5% to 340 million in Q3; std::vector"
    assert redact(text) == text


def test_a_non_luhn_number_is_not_a_card():
    assert "[CARD]" not in redact("order 1234 5678 9012 3456")


def test_sample_is_short_and_redacted():
    sample = redacted_sample("mail bob@example.com " + "word " * 200, max_chars=50)
    assert len(sample) <= 50 and "bob@" not in sample
