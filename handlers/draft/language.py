"""A cheap guess at the language a member wrote in, for choosing a reply template.

Only at drafting time (one complaint, not every message), from the most common function
words of each language the brand supports: no model, no download. It only has to tell
apart the few languages a brand lists, and says nothing (None) when unsure, so the
brand's default language is used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


FUNCTION_WORDS: dict[str, frozenset[str]] = {
    "en": _words(
        "the and is are was my your you it this that not have has for with but still "
        "what why when where been to of i me we our"
    ),
    "fr": _words(
        "le la les des du un une est et je mon ma mes vous votre vos pas ne que qui "
        "pour avec mais toujours depuis n'est c'est j'ai ai au aux sur très nous ça"
    ),
    "es": _words(
        "el la los las del un una es y yo mi mis su sus no que para con pero todavía "
        "desde está estoy ya muy por nos les lo al he han"
    ),
    "de": _words(
        "der die das und ist ich mein meine nicht ein eine mit für aber noch seit "
        "schon sehr wir uns ihr ihre auf zu den dem bitte warum"
    ),
}


def guess_language(text: str, supported: Iterable[str]) -> str | None:
    """The supported language whose function words the text uses most, when at least
    two of them occur and it clearly leads (two more hits than the runner-up); None
    otherwise."""
    words = [w.lower().replace("’", "'") for w in _WORD.findall(text)]
    if not words:
        return None
    scores = []
    for lang in supported:
        vocab = FUNCTION_WORDS.get(lang.lower().split("-")[0])
        if vocab is not None:
            scores.append((sum(w in vocab for w in words), lang))
    if not scores:
        return None
    scores.sort(reverse=True)
    best, lang = scores[0]
    runner_up = scores[1][0] if len(scores) > 1 else 0
    if best >= 2 and best >= runner_up + 2:
        return lang
    return None
