import json
import re._parser as re_parser
import unicodedata
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


# A corpus of the formats that leaked (and more), each case leaking or not: 150 texts whose
# secret or personal datum must not survive, 79 ordinary ones (code, versions, dates, prices,
# prose about streets, passwords and passports) that must come through as they are.
# tests/data/redaction-corpus.jsonl; the newer cases name their format.
CORPUS = [json.loads(line) for line in
          (Path(__file__).parent.parent / "data" / "redaction-corpus.jsonl").open()]


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def test_the_corpus_is_large_enough_to_mean_something():
    assert len(CORPUS) >= 200
    assert sum("leaks" in c for c in CORPUS) >= 140 and sum("keep" in c for c in CORPUS) >= 70


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c["text"][:40])
def test_redaction_corpus(case):
    out = redact(case["text"])
    if "leaks" in case:
        # The output is normalised: a full-width or non-breaking leak would be a plain one.
        assert case["leaks"] not in out and nfkc(case["leaks"]) not in out, out
    else:
        assert out == case["text"]


def test_redaction_normalises_what_could_hide_a_number():
    assert redact("\uff46\uff55\uff4c\uff4c\u00a0width \u2460") == "full width 1"
    assert "[CARD]" in redact("\uff14\uff11\uff11\uff11\u20091111\u200b1111\u00a01111")


@pytest.mark.parametrize("case", [c for c in CORPUS if "leaks" in c], ids=lambda c: c["text"][:40])
def test_a_rule_skipped_for_want_of_its_hints_would_have_found_nothing(case):
    """A rule runs only on a text with one of its hints (and a digit where it needs one): every
    match of every rule in the corpus holds them, or the shortcut would let a secret through."""
    text = nfkc(case["text"])
    for rule in redaction.RULES:
        for match in rule.pattern.finditer(text):
            found = match.group(0).lower()
            assert not rule.needs_digit or any(c.isdigit() for c in found), rule.pattern.pattern
            assert not rule.hints or any(h in found for h in rule.hints), rule.pattern.pattern


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
    64 KB.) The one unbounded repeat is a private key block's body (PEM, PuTTY), lazily
    matched after its literal marker up to its end marker or the end of the text: scanned
    once per such marker."""
    patterns = redaction.patterns()
    assert len(patterns) >= 20
    for pattern in patterns:
        unbounded = [r for r in repeats(re_parser.parse(pattern.pattern, pattern.flags))
                     if r[1] == re_parser.MAXREPEAT]
        if pattern in redaction.KEY_BLOCKS:
            assert len(unbounded) == 1
            continue
        assert not unbounded, pattern.pattern


def test_a_megabyte_of_adversarial_text_is_redacted():
    for unit in ("1.", "a.", "a@", "1 ", "-", "sk-", "a=", "password ", "DE89 "):
        text = unit * (1_000_000 // len(unit))
        assert len(redact(text)) > 0


KEY_BLOCK = "-----BEGIN PRIVATE KEY-----\n" + "A" * 300 + "\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(("value", "tag"), [
    ("jane.roe@example.org", "[EMAIL]"),
    ("+1 (415) 555-0132", "[PHONE]"),
    ("2001:db8:85a3::8a2e:370:7334", "[IP]"),
])
# Across the 400th character, where samples were cut before they were redacted (the key block
# shrinks to a tag and brings it into the sample), and across the 200th, where they are cut now.
@pytest.mark.parametrize(("cut", "head"), [(400, KEY_BLOCK + "word " * 20), (200, "word " * 50)])
def test_a_value_across_the_cut_of_a_sample_leaves_nothing(value, tag, cut, head):
    """A sample is the redacted text cut, never the cut text redacted: half a value left at a
    cut is too short for any pattern to know it."""
    half = len(value) // 2
    text = head[: cut - half - 1] + " " + value + " and more words after it"
    assert text.index(value) + half == cut
    sample = redacted_sample(text, max_chars=200)
    assert value[:half] not in sample and value[half:] not in sample
    if cut == 400:
        assert tag in sample
