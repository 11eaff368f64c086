"""What a prompt asks for (the wrapper) and what it wants said (the payload).

An influence operation pushes one narrative through many wrappers: "Write a tweet as a worried
mother saying that <claim>", "You are a retired officer. Explain in a forum post why <claim>",
"Summarise for Twitter: <claim>". Whole prompts of one operation are only ~0.6 similar, because
the persona, format and channel words dominate; the claims are nearly the same. Clustering the
payload finds the operation's unit, the narrative, where clustering whole prompts finds the
template. And a popular wrapper filled with many different payloads stops looking like one
thing.

The split is lexical and cheap (no model): the payload is quoted text, the text after a colon
that ends a short instruction, or the clause after a reporting word ("that", "why", "saying",
"claiming", ...). A prompt with none of these, or whose candidate payload is too short to carry
a claim, has no payload and is represented by its whole text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from detectors.text import normalise, text_key

MIN_PAYLOAD_WORDS = 4  # "The vaccine doesn't work" is a claim; "sorts a list" is not
# Three words carry a claim when they are long ones: Spanish drops subjects and articles
# ("vacunarse causa enfermedades"), English headlines too ("vaccines cause autism"), while a
# request's object ("sorts a list", "returns the sum") is short words.
MIN_SHORT_PAYLOAD_WORDS = 3
MIN_SHORT_PAYLOAD_LETTERS = 18
MAX_PAYLOAD_WORDS = 48
MAX_INSTRUCTION_WORDS = 24  # a colon after a longer text is punctuation, not a hand-over
_SCAN_CHARS = 4_000  # wrappers sit at the start; the scan stays linear and short

_QUOTED = re.compile(r"[\"“«„]([^\"”»“]{20,1500})[\"”»“]")
# Reporting words that hand over to the message itself, in the languages most operations write
# in (English, Spanish, French, Portuguese, Italian, German; quotes and colons work in any).
# "how" and "about" alone are left out on purpose: "Explain how X works" and "a poem about X"
# are questions and topics, not claims.
_REPORTING = re.compile(
    r"\b(?:saying|claiming|stating|arguing|insisting|warning|explaining|suggesting|"
    r"pointing out|revealing|exposing|telling|reminding|convinc\w*|showing|proving|"
    r"know|believe|the fact|the truth|the news|spreading the word|about how|"
    r"make (?:sure )?(?:\w+ ){0,2}?(?:see|understand|realise|realize)|"
    r"diciendo|afirmando|asegurando|explicando|advirtiendo|denunciando|alertando|"
    r"revelando|demostrando|recordando|sabe[rn]?|"
    r"disant|affirmant|expliquant|prétendant|assurant|dénonçant|avertissant|révélant|"
    r"montrant|rappelant|savoir|"
    r"dizendo|alegando|mostrando|avisando|"
    r"dicendo|affermando|spiegando|sostenendo|avvertendo|"
    r"sagt|behauptet|erklärt|warnt)"
    # An object may stand between the verb and the conjunction: "warning them that".
    r"(?:\s+(?:\w+\s+){0,2}?(?:that|why|que|qu['\u2019]|porque|por qué|pourquoi|perché|"
    r"che|dass|warum))?\s*(?<=['\u2019\s])", re.IGNORECASE)
# A bare conjunction hands over too ("Write a post that <claim>"), but it also opens relative
# clauses inside claims ("devices that record you"), so it counts only where no reporting
# word does, and only the first one.
_CONJUNCTION = re.compile(r"\b(?:that|why|que|qu['\u2019]|porque|por qué|pourquoi|perché|che|dass|"
                          r"warum)(?:\s+|(?<=['\u2019]))", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"“¿¡«ÁÉÍÓÚÀÂÇÈÊÎÔÑ])")
# Conjunctions and the audience a wrapper addresses ("convince people <claim>").
_LEADING_FILLER = re.compile(
    r"^(?:(?:that|why|how|so|because|people|everyone|everybody|them|others|readers|voters|"
    r"folks|neighbours|neighbors|que|qu['\u2019]|todos|la gente|tout le monde|les gens)\s*)+",
    re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Narrative:
    """A prompt split into its wrapper and payload. `payload` is None when the prompt carries
    no separable message; `wrapper_key` identifies the wrapper with the payload cut out, so
    the same wrapper filled with different claims has one key."""

    payload: str | None
    wrapper: str
    how: str  # "quote", "colon", "clause" or "none"
    wrapper_key: str = ""  # made once here: the embed stage asks for it several times

    def __post_init__(self) -> None:
        if not self.wrapper_key:
            object.__setattr__(self, "wrapper_key", text_key(normalise(self.wrapper)))

    @property
    def text(self) -> str:
        """What stands for the prompt's content: the payload, or the whole prompt."""
        return self.payload if self.payload is not None else self.wrapper


def split_narrative(prompt: str) -> Narrative:
    """The payload by the first rule that yields one long enough to carry a claim: quoted text,
    text after an instruction's colon, the clause after a reporting word."""
    head = prompt[:_SCAN_CHARS]
    for how, find in (("quote", _quoted), ("colon", _after_colon), ("clause", _after_clause)):
        span = find(head)
        if span is None:
            continue
        start, end = span
        # A reporting word inside the handed-over text narrows it further ("Share this: people
        # need to know that <claim>"), so that one claim yields one payload whatever wraps it.
        inner = _after_clause(head[start:end], conjunctions=False) if how != "clause" \
            else None
        if inner is not None:
            start, end = start + inner[0], start + inner[1]
        payload = _clean(head[start:end])
        if payload is not None:
            wrapper = f"{head[:start]} {{}} {head[end:]}".strip()
            return Narrative(payload, wrapper, how)
    return Narrative(None, prompt, "none")


def _quoted(text: str) -> tuple[int, int] | None:
    match = _QUOTED.search(text)
    return match.span(1) if match else None


def _after_colon(text: str) -> tuple[int, int] | None:
    colon = text.find(":")
    if colon < 0 or len(text[:colon].split()) > MAX_INSTRUCTION_WORDS:
        return None
    return colon + 1, _sentence_end(text, colon + 1)


def _after_clause(text: str, conjunctions: bool = True) -> tuple[int, int] | None:
    """In the first sentence that hands over a payload, the last reporting word ("a letter
    that convinces people <claim>" hands over at "convinces"), else its first bare "that" or
    "why" (when `conjunctions`)."""
    sentence_start = 0
    while sentence_start < len(text):
        sentence_end = _sentence_end(text, sentence_start)
        found = [m.end() for m in _REPORTING.finditer(text, sentence_start, sentence_end)]
        found.reverse()
        if conjunctions:
            found += [m.end() for m in _CONJUNCTION.finditer(text, sentence_start, sentence_end)]
        for start in found:
            if _carries_a_claim(text[start:sentence_end].split()):
                return start, sentence_end
        sentence_start = sentence_end + 1
    return None


def _sentence_end(text: str, start: int) -> int:
    """The end of the sentence that begins at `start`: a payload is one statement, and what
    follows it is usually more instruction ("Keep it under 280 characters.")."""
    match = _SENTENCE_END.search(text, start)
    return match.start() if match else len(text)


def _clean(span: str) -> str | None:
    words = _LEADING_FILLER.sub("", span.strip(" \t\n'\"“”«»„¿¡\u2013\u2014-:")).split()
    if not _carries_a_claim(words):
        return None
    return " ".join(words[:MAX_PAYLOAD_WORDS]).rstrip(".!?;,")


def _carries_a_claim(words: list[str]) -> bool:
    return len(words) >= MIN_PAYLOAD_WORDS or (
        len(words) >= MIN_SHORT_PAYLOAD_WORDS
        and sum(char.isalpha() for word in words for char in word) >= MIN_SHORT_PAYLOAD_LETTERS)
