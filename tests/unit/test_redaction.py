import json
import re
import re._parser as re_parser
from pathlib import Path

import pytest

from detectors import redaction
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


# A corpus of the formats that leaked (and more), each case leaking or not: 61 texts whose
# secret or personal datum must not survive, 42 ordinary ones that must come through as they
# are. tests/data/redaction-corpus.jsonl
CORPUS = [json.loads(line) for line in
          (Path(__file__).parent.parent / "data" / "redaction-corpus.jsonl").open()]


def test_the_corpus_is_large_enough_to_mean_something():
    assert len(CORPUS) >= 100
    assert sum("leaks" in c for c in CORPUS) >= 50 and sum("keep" in c for c in CORPUS) >= 40


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c["text"][:40])
def test_redaction_corpus(case):
    out = redact(case["text"])
    if "leaks" in case:
        assert case["leaks"] not in out, out
    else:
        assert out == case["text"]


def repeats(parsed) -> list[tuple[int, int]]:
    """Every (min, max) repeat in a parsed pattern, nested ones included."""
    found = []
    for op, arg in parsed:
        if op in (re_parser.MAX_REPEAT, re_parser.MIN_REPEAT):
            found.append((arg[0], arg[1]))
            found += repeats(arg[2])
        elif op in (re_parser.SUBPATTERN,):
            found += repeats(arg[-1])
        elif op == re_parser.BRANCH:
            for branch in arg[1]:
                found += repeats(branch)
    return found


def test_every_pattern_runs_in_linear_time():
    """The work budget, without a clock: every repeat of every pattern is bounded, so each
    start position costs at most a fixed number of steps and a prompt of n characters
    O(n) of them. (A run like [A-Za-z0-9.]+ before an "@" made redaction quadratic: 4 s for
    64 KB.) The one unbounded repeat is a private key block's body, lazily matched after
    the literal "-----BEGIN": scanned once per such marker."""
    patterns = [v for v in vars(redaction).values() if isinstance(v, re.Pattern)]
    patterns += redaction._SECRET_PATTERNS
    assert len(patterns) >= 20
    for pattern in patterns:
        unbounded = [r for r in repeats(re_parser.parse(pattern.pattern, pattern.flags))
                     if r[1] == re_parser.MAXREPEAT]
        if pattern.pattern.startswith("-----BEGIN"):
            assert len(unbounded) == 1
            continue
        assert not unbounded, pattern.pattern


def test_a_megabyte_of_adversarial_text_is_redacted():
    for unit in ("1.", "a.", "a@", "1 ", "-", "sk-", "a=", "password ", "DE89 "):
        text = unit * (1_000_000 // len(unit))
        assert len(redact(text)) > 0
