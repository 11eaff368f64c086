"""Prompt text as the embedding stage sees it: normalised, truncated, shingled and keyed.

Normalisation decides what counts as "the same prompt" for the exact-duplicate cache, so it
throws away what a campaign varies without changing the message (case, spacing, punctuation
around words, numbers such as dates and counts).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_DIGITS = re.compile(r"\d+")
# Punctuation and symbols at the edges of a token; inside a token ("don't", "e-mail") it stays.
_EDGE = re.compile(r"^[\W_]+|[\W_]+$")

DEFAULT_MAX_WORDS = 64
DEFAULT_SHINGLE_WORDS = 3
CHAR_GRAM = 5


def normalise(prompt: str) -> str:
    """Lower-case words separated by single spaces, edge punctuation gone, digit runs as '0'.

    "Vote on Nov 5!" and "vote on  nov 6" both become "vote on nov 0": fills like dates, counts
    and ids would otherwise make every templated prompt unique.
    """
    text = unicodedata.normalize("NFKC", prompt).casefold()
    text = _DIGITS.sub("0", text)
    words = (_EDGE.sub("", word) for word in text.split())
    return " ".join(word for word in words if word)


def truncate_words(text: str, max_words: int = DEFAULT_MAX_WORDS) -> str:
    """The first `max_words` words.

    The start of a prompt carries the instruction and the claim; long tails are pasted material
    that costs model time (which grows with length) and adds little to what the prompt is for.
    """
    words = text.split()
    if len(words) <= max_words:
        return " ".join(words)
    return " ".join(words[:max_words])


def shingles(text: str, k: int = DEFAULT_SHINGLE_WORDS) -> set[str]:
    """Word k-shingles of a normalised text; character 5-grams when it has under 2k words.

    A short prompt has too few word shingles for a change of one word to leave any overlap, so
    character grams keep near-duplicate detection working for it.
    """
    words = text.split()
    if len(words) >= 2 * k:
        return {" ".join(words[i:i + k]) for i in range(len(words) - k + 1)}
    joined = " ".join(words)
    if len(joined) <= CHAR_GRAM:
        return {joined} if joined else set()
    return {joined[i:i + CHAR_GRAM] for i in range(len(joined) - CHAR_GRAM + 1)}


def text_key(normalised: str) -> str:
    """A stable 128-bit key of a normalised text: the exact cache key, and safe to log."""
    return hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).hexdigest()
