"""Competitor mentions with a sentiment tag, for the weekly digest.

Admins set the names; matching is whole-word and case-insensitive so "Acme" does not
match "acmeist". Sentiment is read from the words near the mention with the same
valence table the detector uses, plus a few comparison words ("switching to X",
"X is cheaper") that matter for competitors and are not in general lexicons.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from handlers.detect.lexicon import NEGATORS

_WORD_RE = re.compile(r"[a-z0-9']+")
_WINDOW = 6
_COMPARISON: Mapping[str, float] = MappingProxyType(
    {
        "better": 2.0,
        "cheaper": 2.0,
        "faster": 1.5,
        "switching": 1.5,
        "switched": 1.5,
        "moving": 1.0,
        "recommend": 1.5,
        "worse": -2.0,
        "slower": -1.5,
        "pricier": -1.5,
    }
)


@dataclass(frozen=True, slots=True)
class CompetitorMention:
    """One competitor name found in a message."""

    name: str
    """The admin's spelling of the competitor."""
    start: int
    end: int
    sentiment: str
    """``positive``, ``neutral`` or ``negative`` toward the competitor."""
    score: float


class CompetitorWatch:
    """Finds an admin-set list of competitor names in messages."""

    def __init__(self, names: Iterable[str], valence: Mapping[str, float]) -> None:
        spelled: dict[str, str] = {}  # one per name whatever its case; first spelling kept
        for n in (n.strip() for n in names):
            if n:
                spelled.setdefault(n.casefold(), n)
        # Longest first, so "Acme Mobile" wins over "Acme"; stable, so never hash order.
        cleaned = sorted(spelled.values(), key=len, reverse=True)
        self._canonical = {n.lower(): n for n in cleaned}
        self._valence = valence
        self._pattern: re.Pattern[str] | None = None
        if cleaned:
            alternatives = "|".join(re.escape(n) for n in cleaned)
            self._pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._canonical.values())

    def find(self, text: str) -> list[CompetitorMention]:
        """Every mention in ``text``, each tagged from the words within a few tokens."""
        if self._pattern is None:
            return []
        out: list[CompetitorMention] = []
        for m in self._pattern.finditer(text):
            before = _WORD_RE.findall(text[: m.start()].lower())[-_WINDOW:]
            after = _WORD_RE.findall(text[m.end() :].lower())[:_WINDOW]
            score = self._score(before) + self._score(after)
            if score >= 0.5:
                sentiment = "positive"
            elif score <= -0.5:
                sentiment = "negative"
            else:
                sentiment = "neutral"
            name = self._canonical.get(m.group(0).lower(), m.group(0))
            out.append(CompetitorMention(name, m.start(), m.end(), sentiment, round(score, 3)))
        return out

    def _score(self, words: list[str]) -> float:
        total = 0.0
        negate = 0
        for w in words:
            if w in NEGATORS:
                negate = 3
                continue
            v = _COMPARISON.get(w, self._valence.get(w, 0.0))
            if negate:
                v = -0.74 * v
                negate -= 1
            total += v
        return total
