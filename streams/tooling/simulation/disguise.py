"""Disguised text, as operations write it to slip past exact and fuzzy matching: Latin letters
swapped for look-alike Cyrillic and Greek ones, invisible characters inside words, letters
spaced apart and stray punctuation in the middle of words.

Deterministic for a random generator: the same generator state gives the same disguise. The
detectors compare text in canonical form (NFKC, confusables folded, invisible characters
removed), which undoes the homoglyphs and invisible characters but not the spacing and the
punctuation: this is the traffic that measures how much of the disguise that canonical form
really removes.
"""

from __future__ import annotations

import random

# Latin letter -> look-alikes (Cyrillic first, then Greek).
HOMOGLYPHS: dict[str, tuple[str, ...]] = {
    "a": ("\u0430",), "c": ("\u0441",), "e": ("\u0435",), "i": ("\u0456",),
    "j": ("\u0458",), "o": ("\u043e", "\u03bf"), "p": ("\u0440", "\u03c1"), "s": ("\u0455",),
    "x": ("\u0445", "\u03c7"), "y": ("\u0443", "\u03b3"), "v": ("\u03bd",),
    "A": ("\u0410", "\u0391"), "B": ("\u0412", "\u0392"), "C": ("\u0421",),
    "E": ("\u0415", "\u0395"), "H": ("\u041d", "\u0397"), "I": ("\u0406", "\u0399"),
    "K": ("\u041a", "\u039a"), "M": ("\u041c", "\u039c"), "N": ("\u039d",),
    "O": ("\u041e", "\u039f"), "P": ("\u0420", "\u03a1"), "T": ("\u0422", "\u03a4"),
    "X": ("\u0425", "\u03a7"), "Y": ("\u03a5",),
}
INVISIBLE = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")
STRAY = (".", "-", "*", "_", "'", "·")


def _homoglyphs(rng: random.Random, word: str) -> str:
    spots = [n for n, ch in enumerate(word) if ch in HOMOGLYPHS]
    if not spots:
        return word
    chars = list(word)
    for n in rng.sample(spots, min(len(spots), rng.randint(1, 2))):
        chars[n] = rng.choice(HOMOGLYPHS[chars[n]])
    return "".join(chars)


def _inside(rng: random.Random, word: str, marks: tuple[str, ...]) -> str:
    at = rng.randint(1, len(word) - 1)
    return word[:at] + rng.choice(marks) + word[at:]


def disguise_word(rng: random.Random, word: str) -> str:
    """One of: look-alike letters, an invisible character inside, the letters spaced apart,
    a stray punctuation mark inside."""
    if len(word) < 3 or not word.isalpha():
        return _homoglyphs(rng, word)
    kind = rng.random()
    if kind < 0.45:
        return _homoglyphs(rng, word)
    if kind < 0.75:
        return _inside(rng, word, INVISIBLE)
    if kind < 0.85 and len(word) <= 9:
        return " ".join(word)
    return _inside(rng, word, STRAY)


def disguise(rng: random.Random, text: str, share: float = 0.35) -> str:
    """`text` with about `share` of its words disguised (at least one, so the text always
    changes when it has a letter to change); whitespace between words is kept, and doubled
    now and then."""
    words = text.split(" ")
    candidates = [n for n, word in enumerate(words) if any(ch.isalpha() for ch in word)]
    if not candidates:
        return text
    chosen = {n for n in candidates if rng.random() < share} or {rng.choice(candidates)}
    out = []
    for n, word in enumerate(words):
        if n in chosen:
            # Keep punctuation at the end of a word where it was.
            core = word.rstrip(".,;:!?\"»)")
            tail = word[len(core):]
            word = (disguise_word(rng, core) if core else word) + tail
        out.append(word)
    joined = ""
    for n, word in enumerate(out):
        joined += word if n == 0 else (" " if rng.random() > 0.08 else "  ") + word
    if joined == text:  # nothing changeable was chosen: an invisible mark after a letter
        at = next(n for n, ch in enumerate(text) if ch.isalpha()) + 1
        joined = text[:at] + rng.choice(INVISIBLE) + text[at:]
    return joined
