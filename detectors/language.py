"""The language a short text is written in, cheaply: enough to list a campaign's languages.

Texts in their own script are named by it (Cyrillic, Arabic, Greek, Hebrew, Thai, Hangul,
kana, Han). Latin-script texts by their most common function words: a claim of ten words
carries two or three of them. Language-identification libraries measured here took ~2 ms a
text; this takes a few microseconds, and a campaign's languages need no more.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

UNDETERMINED = "und"

_FUNCTION_WORDS = {
    "en": "the of and to is are was that this for with have not they from their will be it",
    "es": "el la los las de del que y en por para con una un es son se su no más está como",
    "fr": "le la les des du de et est sont que qui une un dans pour pas sur ce nous vous il",
    "de": "der die das und ist sind nicht mit ein eine zu den von dass auf für sich auch",
    "ca": "els les del i per amb és són una al als seu aquest aquesta perquè però què molt hi ho",
    "it": "il lo la gli le di che e è sono non una un per con del della nel questo anche",
    "pt": "o a os as de do da que e é são não um uma para com em no na mais está isso",
    "nl": "de het een en is zijn niet van dat op voor met te ook maar wat deze",
    "pl": "i w z na nie się jest to że do jak co ale są tak od po czy",
    "tr": "ve bir bu da de için ile çok ne var değil gibi daha olan ama",
}
_WORDS = {lang: frozenset(words.split()) for lang, words in _FUNCTION_WORDS.items()}
_SCRIPTS = (("CYRILLIC", "ru"), ("ARABIC", "ar"), ("GREEK", "el"), ("HEBREW", "he"),
            ("THAI", "th"), ("HANGUL", "ko"), ("HIRAGANA", "ja"), ("KATAKANA", "ja"),
            ("CJK", "zh"))
_TOKEN = re.compile(r"[^\W\d_]+")


def language_of(text: str) -> str:
    """An ISO 639-1 code, or "und" when nothing decides."""
    scripts: Counter[str] = Counter()
    latin = 0
    for char in text[:400]:
        if not char.isalpha():
            continue
        name = unicodedata.name(char, "")
        if name.startswith("LATIN"):
            latin += 1
            continue
        for script, language in _SCRIPTS:
            if name.startswith(script):
                scripts[language] += 1
                break
    if scripts:
        language, count = scripts.most_common(1)[0]
        if count > latin:
            # Japanese mixes kana with Han characters: any kana decides.
            return "ja" if scripts["ja"] else language
    words = [word.casefold() for word in _TOKEN.findall(text[:400])]
    hits = {lang: sum(word in vocabulary for word in words) for lang, vocabulary in _WORDS.items()}
    best = max(hits, key=lambda lang: hits[lang])
    ranked = sorted(hits.values(), reverse=True)
    if ranked[0] == 0 or ranked[0] == ranked[1]:
        return UNDETERMINED
    return best
