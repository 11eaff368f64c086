"""Cheap signals in a prompt's own text that need no pattern bank and no model.

- An optimised adversarial suffix (GCG, random search): the request ends in a run of word
  fragments, glued punctuation and brackets that never close, on one line. Ordinary prompts
  end in words; code ends in balanced brackets on indented lines.
- A disguise (detectors/text.py): look-alike letters from another script inside words,
  invisible characters inside words, letters spaced apart.
- A many-shot prompt: a faux dialogue of many turns in which the "assistant" complies
  ("Sure, here is ...") before the real request comes last (Anil et al., "Many-shot
  jailbreaking", 2024). Ordinary few-shot prompts have few turns, or answers that are labels
  and translations, not compliance; a pasted chat log is rarely flagged. So it counts as a
  jailbreak signal only on a prompt moderation flags (`detectors.jailbreak`).
- An analysis request: the prompt asks to classify, label, moderate, summarise or translate
  the content it carries. Moderation flags on such a prompt come from the content under
  analysis (a toxicity classifier's batch), not from what the sender asks for.

Measured on the corpus (tests/data): the suffix signal is set on 0 of 2174 ordinary prompts
and 0 of 401 code questions made of this repository's functions, and on ~80 % of GCG and
random-search prompts (tests/unit/test_prompt_signals.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from detectors.text import disguise_marks

TAIL_TOKENS = 24
MIN_TOKENS = 8
# Share of the tail's tokens that are odd (see `_odd`) from which a tail reads as a suffix.
MIN_ODD_SHARE = 0.12
_SYMBOLS = frozenset('\\{}[]()<>=_*#@$%^&|~`+/"')
_CAMEL = re.compile(r"[a-z][A-Z]")
# Most tokens: a word in lower case or capitalised, or a number, never odd (checked first:
# the tail of every prompt is read, a third of the embedding stage's signal time).
_PLAIN = re.compile(r"[A-Z]?[a-z]+|[0-9]+")
_BRACKETS = (("(", ")"), ("[", "]"), ("{", "}"))
_ANALYSIS_HEAD = 240
# A many-shot prompt: at least MIN_SHOTS faux exchanges, most "assistant" turns complying.
MIN_SHOTS = 8
_TURN = re.compile(
    r"^[ \t>*#-]*(?:(user|human|q|question|usuario|utilisateur|benutzer|utente|usu[aá]rio)|"
    r"(assistant|ai|a|answer|bot|model|asistente|assistente|assistent|ia))[ \t]*:[ \t]*(.*)$",
    re.IGNORECASE | re.MULTILINE)
_COMPLY = re.compile(
    r"^(?:sure|certainly|of course|absolutely|here(?:'s| is| are)|step 1|1\.|first,|claro|"
    r"por supuesto|aqu[ií] (?:tienes|est[aá])|bien s[uû]r|voici|nat[uü]rlich|hier ist|certo)",
    re.IGNORECASE)
_ANALYSIS = re.compile(
    r"\b(?:classif(?:y|ies|ication)|categori[sz]e|label|moderate|annotate|tag each|"
    r"toxic(?:ity)?|hate speech|offensive or not|sentiment|spam or not|is (?:this|the "
    r"following) (?:comment|text|message|review|post|tweet|content)|summari[sz]e|translate|"
    r"proofread|extract|detect whether|determine whether|rate (?:this|the following))\b",
    re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class PromptSignals:
    """What a prompt's text says about it, for the jailbreak spray detector."""

    suffix: bool = False
    odd_share: float = 0.0
    disguised: bool = False
    analysis: bool = False
    many_shot: bool = False

    @property
    def adversarial(self) -> bool:
        """A jailbreak signal of its own, bank or no bank."""
        return self.suffix or self.disguised

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, on in (("suffix", self.suffix),
                                           ("disguise", self.disguised),
                                           ("many_shot", self.many_shot),
                                           ("analysis", self.analysis)) if on)


def _odd(token: str) -> bool:
    """A token no sentence is made of: punctuation glued to letters ("oppositeley.](",
    "**ONE"), joined words in mixed case ("similarlyNow"), letters of two alphabets."""
    core = token.strip(".,;:!?'")
    if not core:
        return True
    if _PLAIN.fullmatch(core):
        return False
    if not any(c.isalpha() for c in core):
        return len(core) > 1 and not core.replace(".", "").replace(",", "").isdigit()
    if any(c in _SYMBOLS for c in core):
        return True
    if _CAMEL.search(core[1:] if core[0].isupper() else core):
        return True
    return (any(not c.isascii() and c.isalpha() for c in core)
            and any(c.isascii() and c.isalpha() for c in core))


def _unbalanced(text: str) -> bool:
    return (any(text.count(a) != text.count(b) for a, b in _BRACKETS)
            or text.count('"') % 2 == 1)


def _indented_lines(text: str) -> int:
    return sum(1 for line in text.split("\n") if line[:1] in (" ", "\t") and line.strip()
               and (line.startswith("    ") or line.startswith("\t")))


def suffix_score(prompt: str) -> float:
    """Share of odd tokens among the last TAIL_TOKENS tokens (0 for a short prompt)."""
    tokens = prompt.split()
    if len(tokens) < MIN_TOKENS:
        return 0.0
    tail = tokens[-TAIL_TOKENS:]
    return sum(1 for token in tail if _odd(token)) / len(tail)


def faux_exchanges(prompt: str) -> int:
    """How many faux exchanges in which the "assistant" complies the prompt carries: turns
    labelled as the assistant's, right after one labelled as the user's, that open with
    compliance."""
    if prompt.count(":") < 2 * MIN_SHOTS:
        return 0  # the common case, at no regular-expression cost
    exchanges, previous = 0, None
    for turn in _TURN.finditer(prompt):
        speaker = "user" if turn.group(1) else "assistant"
        answer = prompt[turn.start(3):turn.start(3) + 60].lstrip()  # same line or next
        if speaker == "assistant" and previous == "user" and _COMPLY.match(answer):
            exchanges += 1
        previous = speaker
    return exchanges


def prompt_signals(prompt: str) -> PromptSignals:
    """The signals of one prompt (its raw text, before redaction)."""
    odd = suffix_score(prompt)
    suffix = odd >= MIN_ODD_SHARE and _unbalanced(prompt) and _indented_lines(prompt) < 2
    return PromptSignals(
        suffix=suffix, odd_share=round(odd, 3), disguised=disguise_marks(prompt).disguised,
        analysis=_ANALYSIS.search(prompt[:_ANALYSIS_HEAD]) is not None,
        many_shot=faux_exchanges(prompt) >= MIN_SHOTS)
