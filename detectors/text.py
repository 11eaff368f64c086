"""Prompt text as the detectors compare it: canonical, normalised, truncated, shingled, keyed.

`canonical` undoes the cheap disguises an operation uses to make one text look like many, or
to slip a known text past a pattern match: compatibility forms (NFKC), invisible and format
characters, look-alike letters from another script inside a word (Unicode TR39 confusables),
letters spaced or punctuated apart, repeated punctuation and spacing. Everything that is
hashed, sketched, embedded or matched goes through it; stored samples keep the original text.

Folding must not damage text that is legitimately in another script: a Russian or Greek
sentence keeps its letters. Look-alikes are folded only inside a word that mixes scripts
(towards the word's own majority script), or for a whole word of look-alikes standing in a
text that is otherwise Latin. Japanese and Korean mix scripts by design and are left alone.

`normalise` builds on it and decides what counts as "the same prompt" for the exact-duplicate
cache, so it also throws away what a campaign varies without changing the message (numbers
such as dates and counts, punctuation around words).
"""

# ruff: noqa: RUF002, RUF003 (examples of look-alike letters in the comments)
from __future__ import annotations

import bisect
import functools
import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from importlib import resources

_DIGITS = re.compile(r"\d+")
# Punctuation and symbols at the edges of a token; inside a token ("don't", "e-mail") it stays.
_EDGE = re.compile(r"^[\W_]+|[\W_]+$")
_LETTER = r"[^\W\d_]"
# Four or more single letters with one separator between them: "v.a.c.c.i.n.e", "v a c c i n e".
_SPACED = re.compile(rf"(?<!\w){_LETTER}(?P<sep>[ .\-_*·•|/~+])(?:{_LETTER}(?P=sep)){{2,}}"
                     rf"{_LETTER}(?!\w)")
# Three or more short letter groups glued with punctuation: "va.cc.ine", "vac*ci*ne".
_PUNCTUATED = re.compile(rf"(?<![\w.*·•|~+]){_LETTER}{{1,3}}(?:[.*·•|~+]+{_LETTER}{{1,3}}){{2,}}"
                         rf"(?![\w*·•|~+]|\.\w)")
_SPLIT_SEPARATORS = re.compile(r"[ .\-_*·•|/~+]")
_REPEATED_PUNCTUATION = re.compile(r"([^\w\s])\1+")
_LETTER_RUN = re.compile(r"[^\W\d_](?:[^\W\d_]|[\u0300-\u036f])*")

DEFAULT_MAX_WORDS = 64
DEFAULT_SHINGLE_WORDS = 3
CHAR_GRAM = 5

# Scripts that TR39's "highly restrictive" profile lets mix with Latin and with each other in
# one word: Japanese writes kanji, kana and Latin without spaces, Korean hangul with hanja.
_EAST_ASIAN = frozenset({"HAN", "HIRAGANA", "KATAKANA", "HANGUL", "BOPOMOFO"})
_NEUTRAL = frozenset({"COMMON", "INHERITED", "Unknown"})
# Scripts whose orthography uses the zero-width joiners (Arabic, Persian, Indic, ...): a ZWNJ
# or ZWJ between their letters is spelling, not disguise. Between Latin, Greek, Cyrillic or
# Armenian letters it has no use.
_JOINER_FREE = frozenset({"LATIN", "GREEK", "CYRILLIC", "ARMENIAN", "CHEROKEE"})
# A whole word of look-alikes is folded to Latin only where the text is this Latin (letters).
_LATIN_TEXT = 0.8
_TAG_BASE = 0xE0000
_BLACK_FLAG = "\U0001f3f4"  # emoji flag tag sequences (subdivision flags) start with it


@functools.cache
def _scripts() -> tuple[list[int], list[tuple[int, str]]]:
    """Unicode's Scripts.txt as ranges, from the confusable-homoglyphs package's data."""
    data = json.loads(resources.files("confusable_homoglyphs")
                      .joinpath("categories.json").read_text(encoding="utf-8"))
    aliases = data["iso_15924_aliases"]
    ranges = data["code_points_ranges"]
    return ([r[0] for r in ranges], [(r[1], aliases[r[2]]) for r in ranges])


@functools.cache
def _confusables() -> dict[str, list[str]]:
    """Unicode's confusables.txt (TR39), both directions, single characters only."""
    data = json.loads(resources.files("confusable_homoglyphs")
                      .joinpath("confusables.json").read_text(encoding="utf-8"))
    return {char: [e["c"] for e in entries if len(e["c"]) == 1]
            for char, entries in data.items() if len(char) == 1}


@functools.cache
def script(char: str) -> str:
    """The Unicode script of a character (LATIN, CYRILLIC, GREEK, HAN, COMMON, ...)."""
    starts, ends = _scripts()
    code = ord(char)
    index = bisect.bisect_right(starts, code) - 1
    if index >= 0 and code <= ends[index][0]:
        return ends[index][1]
    return "Unknown"


@functools.cache
def lookalike(char: str, target: str) -> str | None:
    """A character of script `target` that TR39 says looks like `char`, if there is one; for
    Latin only a plain ASCII letter (Cyrillic 'т' is like small-capital 'ᴛ', not like 't':
    nobody disguising English text uses it)."""
    if script(char) == target:
        return None
    table = _confusables()
    candidates = list(table.get(char, ()))
    # One hop through the prototype: Cyrillic 'т' -> small-capital 'ᴛ' -> ... -> 't'.
    for proto in list(candidates):
        candidates.extend(table.get(proto, ()))
    found = [c for c in candidates if c != char and script(c) == target
             and unicodedata.category(c).startswith("L")]
    if not found:
        return None
    if target == "LATIN":
        found = [c for c in found if c.isascii()]
    return found[0] if found else None


@functools.cache
def _invisible(char: str) -> bool:
    """Default-ignorable: format characters (Cf: zero-width space and joiners, word joiner,
    BOM, soft hyphen, bidi controls, tags), variation selectors, the combining grapheme joiner,
    Hangul fillers and Mongolian variation selectors. None of them is seen when the text is
    shown."""
    code = ord(char)
    return (unicodedata.category(char) == "Cf" or 0xFE00 <= code <= 0xFE0F
            or 0xE0100 <= code <= 0xE01EF or 0x180B <= code <= 0x180F
            or code in (0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0))


def blank(text: str) -> bool:
    """Nothing a person would see: empty, only whitespace, or only invisible characters (an
    id of zero-width spaces looks empty in every tool an analyst reads it in)."""
    return all(char.isspace() or _invisible(char) for char in text)


def _visible(text: str) -> str:
    """Invisible characters removed; Unicode tag characters (ASCII hidden in the tag block,
    "ASCII smuggling") turned back into the ASCII they hide, so a pattern match sees it."""
    out: list[str] = []
    for char in text:
        if not _invisible(char):
            out.append(char)
            continue
        code = ord(char)
        if _TAG_BASE + 0x20 <= code <= _TAG_BASE + 0x7E:
            out.append(chr(code - _TAG_BASE))
        elif code in (0x200C, 0x200D) and out and _joins(out[-1]):
            out.append(char)  # spelling in Persian, Indic scripts; emoji sequences
    return "".join(out)


def _joins(char: str) -> bool:
    """Whether a zero-width (non-)joiner after this character has a job: after a letter or
    mark of a script that uses it, or inside an emoji sequence."""
    category = unicodedata.category(char)
    if category == "So":
        return True
    return category[0] in "LM" and script(char) not in _JOINER_FREE


def _target(word: str, scripts: list[str], kinds: set[str], by_text: dict[str, int]) -> str:
    """The script a mixed word is folded to: the first of its scripts (Latin, then by use in
    the whole text) into which every letter of its other scripts has a look-alike. Disguise
    goes towards Latin ("vассinе" is Latin); a Russian word with a Latin 'o' in it has letters
    no Latin one looks like, and goes to Cyrillic ("прoдукт"). Else the first of them."""
    ranked = sorted(kinds, key=lambda name: (name != "LATIN", -by_text.get(name, 0), name))
    for target in ranked:
        if all(lookalike(c, target) is not None
               for c, s in zip(word, scripts, strict=True) if s in kinds and s != target):
            return target
    return ranked[0]


@dataclass(frozen=True, slots=True)
class _Fold:
    text: str
    mixed_words: int  # words mixing scripts in which a look-alike was folded
    confusable_words: int  # whole words of another script's look-alikes in Latin text


def _fold_confusables(text: str) -> _Fold:
    # Most prompts are ASCII letters with at most typographic quotes and dashes.
    if text.isascii() or not any(c.isalpha() for c in text if c > "\x7f"):
        return _Fold(text, 0, 0)
    by_text: dict[str, int] = {}
    words: list[tuple[re.Match[str], list[str], set[str]]] = []
    latin_words = other_words = 0
    for run in _LETTER_RUN.finditer(text):
        word = run.group()
        scripts = ["LATIN"] * len(word) if word.isascii() else [script(c) for c in word]
        alphabets = [s for s in scripts if s not in _NEUTRAL and s not in _EAST_ASIAN]
        for name in alphabets:
            by_text[name] = by_text.get(name, 0) + 1
        kinds = set(alphabets)
        words.append((run, scripts, kinds))
        if kinds == {"LATIN"}:
            latin_words += 1
        elif kinds and not _all_latin_lookalikes(word, kinds):
            other_words += 1
    # Text in Latin apart from words made wholly of look-alikes: those are disguised words.
    latin_text = latin_words >= 2 and latin_words >= _LATIN_TEXT * (latin_words + other_words)
    mixed = confusable = 0
    pieces: list[str] = []
    last = 0
    for run, scripts, kinds in words:
        word = run.group()
        if kinds == {"LATIN"} or not kinds:
            continue
        folded: str | None = None
        if len(kinds) >= 2:
            target = _target(word, scripts, kinds, by_text)
            swapped = [lookalike(c, target) if s in kinds and s != target else None
                       for c, s in zip(word, scripts, strict=True)]
            if any(swapped):
                folded = "".join(s or c for c, s in zip(word, swapped, strict=True))
                mixed += 1
        elif (latin_text and len(word) >= 2 and not word.isupper()
              and _all_latin_lookalikes(word, kinds)):
            # Not an acronym in capitals: "OAO" in "Russian: ОАО «Ангстрем»" is Russian.
            folded = "".join(lookalike(c, "LATIN") or c for c in word)
            confusable += 1
        if folded is not None:
            pieces.append(text[last:run.start()])
            pieces.append(folded)
            last = run.end()
    if not pieces:
        return _Fold(text, 0, 0)
    pieces.append(text[last:])
    return _Fold("".join(pieces), mixed, confusable)


def _all_latin_lookalikes(word: str, kinds: set[str]) -> bool:
    """A word of one other alphabet whose every letter has a Latin look-alike."""
    return (len(kinds) == 1 and "LATIN" not in kinds
            and all(lookalike(c, "LATIN") is not None for c in word if c.isalpha()))


def _join_split_words(text: str) -> tuple[str, int]:
    count = 0

    def join(match: re.Match[str]) -> str:
        nonlocal count
        pieces = [p for p in _SPLIT_SEPARATORS.split(match.group()) if p]
        # Acronyms ("u.s.a") and host names ("www.abc.net") are how those are written.
        if (len(pieces) < 4 and all(len(p) == 1 for p in pieces)) or pieces[0] == "www":
            return match.group()
        count += 1
        return "".join(pieces)

    text = _SPACED.sub(join, text)
    text = _PUNCTUATED.sub(join, text)
    return text, count


@functools.lru_cache(maxsize=8192)
def _canonical(text: str) -> tuple[str, _Fold, int]:
    # Cached: one prompt is read as a whole, as a payload, as the request around it, for its
    # disguise and for its jailbreak signals, and templated prompts repeat.
    text = unicodedata.normalize("NFKC", text)
    if not text.isascii():
        text = _visible(text)
    fold = _fold_confusables(text)
    text = fold.text.casefold()
    text, split = _join_split_words(text)
    text = _REPEATED_PUNCTUATION.sub(r"\1", text)
    return " ".join(text.split()), fold, split


def readable(text: str) -> str:
    """The text with its disguise undone but its case and punctuation kept (NFKC, invisible
    characters removed, look-alike letters folded): what a lexical reading (sentences,
    clauses, quotes) works on."""
    text = unicodedata.normalize("NFKC", text)
    if text.isascii():
        return text
    return _fold_confusables(_visible(text)).text


def canonical(text: str) -> str:
    """The text as it is compared: NFKC; invisible and format characters removed (Unicode tag
    characters read as the ASCII they hide); look-alike letters of another script folded
    inside words that mix scripts, and whole look-alike words in Latin text (TR39
    confusables); case folded; letters spaced or punctuated apart joined again
    ("v.a.c.c.i.n.e", "va.cc.ine" -> "vaccine"); runs of one punctuation mark and of
    whitespace made single."""
    return _canonical(text)[0]


@dataclass(frozen=True, slots=True)
class Disguise:
    """Marks of a text dressed to evade matching: words that mix scripts through look-alike
    letters, whole words of look-alikes in Latin text, invisible characters inside words (or
    hidden ASCII in tag characters, or bidi controls in text with no right-to-left letters),
    and words spelled with their letters spaced or punctuated apart. Each is rare in what
    people type; `disguised` says whether these marks add up to a disguise."""

    mixed_script_words: int = 0
    confusable_words: int = 0
    invisible_chars: int = 0
    split_words: int = 0

    @property
    def disguised(self) -> bool:
        return (self.mixed_script_words + self.confusable_words + self.invisible_chars > 0
                or self.split_words >= 2)

    @property
    def reasons(self) -> tuple[str, ...]:
        out = []
        if self.mixed_script_words:
            out.append(f"{self.mixed_script_words} word(s) mixing scripts through look-alike "
                       "letters")
        if self.confusable_words:
            out.append(f"{self.confusable_words} word(s) of another script's look-alikes in "
                       "Latin text")
        if self.invisible_chars:
            out.append(f"{self.invisible_chars} invisible character(s) inside words")
        if self.split_words:
            out.append(f"{self.split_words} word(s) with letters spaced or punctuated apart")
        return tuple(out)


def _suspicious_invisibles(text: str) -> int:
    """Invisible characters with no job where they stand: between two letters of an alphabet
    that never joins (Latin, Greek, Cyrillic...), tag characters outside an emoji flag, bidi
    controls in a text with no right-to-left letters. A variation selector after an emoji, a
    ZWJ inside an emoji sequence, a ZWNJ in Persian, a BOM at the start are ordinary."""
    count = 0
    rtl: bool | None = None
    length = len(text)
    for index, char in enumerate(text):
        if not _invisible(char):
            continue
        code = ord(char)
        if _TAG_BASE <= code <= _TAG_BASE + 0x7F:
            if _BLACK_FLAG not in text[max(0, index - 40):index]:
                count += 1
            continue
        if 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069 or code in (0x200E, 0x200F):
            if rtl is None:
                rtl = any(unicodedata.bidirectional(c) in ("R", "AL") for c in text)
            if not rtl:
                count += 1
            continue
        before = _previous_visible(text, index)
        after = _next_visible(text, index, length)
        if (before is not None and after is not None and before.isalpha() and after.isalpha()
                and script(before) in _JOINER_FREE and script(after) in _JOINER_FREE):
            count += 1
    return count


def _previous_visible(text: str, index: int) -> str | None:
    while index > 0:
        index -= 1
        if not _invisible(text[index]):
            return text[index]
    return None


def _next_visible(text: str, index: int, length: int) -> str | None:
    while index + 1 < length:
        index += 1
        if not _invisible(text[index]):
            return text[index]
    return None


def disguise_marks(text: str) -> Disguise:
    """The disguise marks of a prompt (see `Disguise`). Cheap on plain ASCII text."""
    nfkc = unicodedata.normalize("NFKC", text)
    invisible = 0 if nfkc.isascii() else _suspicious_invisibles(nfkc)
    _, fold, split = _canonical(text)
    return Disguise(fold.mixed_words, fold.confusable_words, invisible, split)


def normalise(prompt: str) -> str:
    """The canonical text, with edge punctuation gone and digit runs as '0'.

    "Vote on Nov 5!" and "vote on  nov 6" both become "vote on nov 0": fills like dates, counts
    and ids would otherwise make every templated prompt unique.
    """
    text = _DIGITS.sub("0", canonical(prompt))
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
