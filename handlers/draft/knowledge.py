"""A small per-community knowledge base: Markdown files, searched with BM25.

``kb_dir/<community_id>/*.md`` (else ``kb_dir/default/``) is split into sections at
headings; the best few sections for a complaint go into the prompt, so the model answers
from the brand's actual policy rather than inventing one, and the template fallback can
quote the top answer. Indexes are cached per folder and rebuilt when a file changes.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from handlers.detect.lexicon import NUMBER_WORDS, ORDINALS, TIME_UNITS

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_HEADING = re.compile(r"^(#{1,3})\s+(.+?)\s*#*\s*$")
_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    "a an and are as at be been but by can do does for from has have how i if in is it "  # noqa: SIM905
    "its me my no not of on or our so that the their them there they this to was we what "
    "when where which who why will with you your yours i'm im ive just still".split()
)
# Numbers, times and filler words say nothing about a complaint's topic: "two days" must
# not pull in "Two-factor authentication", nor "every time" the "Feature requests" page.
# The detector's word lists already name numbers, ordinals and time units.
_NOISE_WORDS = frozenset(
    {*NUMBER_WORDS, *ORDINALS, *TIME_UNITS}
    | frozenset(
        "zero forty fifty hundred thousand first half time times today tonight yesterday "  # noqa: SIM905
        "tomorrow morning afternoon evening weekend monday tuesday wednesday thursday "
        "friday saturday sunday again ago after before since until already yet now then "
        "soon later lately recently every ever always up out ve ll re get got went go "
        "going also even really very".split()
    )
)
_NUMBER = re.compile(r"\d+(?:st|nd|rd|th|s)?")


def tokenize(text: str) -> list[str]:
    """Lower-cased words without stop words, with a light plural/-ing/-ed stemmer."""
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word in _STOPWORDS or word in _NOISE_WORDS or len(word) < 2 or _NUMBER.fullmatch(word):
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(word) > len(suffix) + 3 and word.endswith(suffix):
                word = word[: -len(suffix)]
                break
        out.append(word)
    return out


@dataclass(frozen=True, slots=True)
class Snippet:
    source: str  # "refunds.md#Refund window"
    title: str
    text: str
    score: float = 0.0


def split_sections(name: str, markdown: str) -> list[Snippet]:
    """One snippet per heading (text before the first heading belongs to the file title)."""
    sections: list[Snippet] = []
    title = name
    lines: list[str] = []

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            sections.append(Snippet(f"{name}#{title}", title, body))

    for line in markdown.splitlines():
        m = _HEADING.match(line)
        if m:
            flush()
            lines = []
            title = m.group(2)
            continue
        lines.append(line)
    flush()
    return sections


class Bm25:
    """Okapi BM25 with Lucene's always-positive IDF.

    Written out (a few lines) rather than taken from rank-bm25, whose Okapi IDF goes
    negative for a term in more than half the documents: with a knowledge base of a
    handful of sections that hides exactly the sections that match.
    """

    def __init__(self, corpus: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.docs = [Counter(doc) for doc in corpus]
        self.lengths = [len(doc) for doc in corpus]
        self.avg_len = (sum(self.lengths) / len(corpus)) if corpus else 0.0
        df: Counter[str] = Counter()
        for doc in self.docs:
            df.update(doc.keys())
        n = len(corpus)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def scores(self, query: Sequence[str]) -> list[float]:
        out = []
        for doc, length in zip(self.docs, self.lengths, strict=True):
            norm = self.k1 * (1 - self.b + self.b * length / (self.avg_len or 1.0))
            score = 0.0
            for term in query:
                tf = doc.get(term, 0)
                if tf:
                    score += self.idf[term] * tf * (self.k1 + 1) / (tf + norm)
            out.append(score)
        return out


class KnowledgeBase:
    """BM25 over sections; an empty base simply finds nothing."""

    def __init__(self, sections: Sequence[Snippet]) -> None:
        self.sections = list(sections)
        self._bm25 = Bm25([tokenize(f"{s.title} {s.title} {s.text}") for s in self.sections])

    @classmethod
    def from_dir(cls, folder: Path) -> KnowledgeBase:
        sections: list[Snippet] = []
        for path in sorted(folder.glob("*.md")):
            try:
                sections.extend(split_sections(path.name, path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError):
                logger.exception("cannot read knowledge base file %s", path)
        return cls(sections)

    def search(
        self, query: str, k: int = 3, *, min_share: float = 0.5, min_terms: int = 1
    ) -> list[Snippet]:
        """Up to ``k`` sections, best first, each scoring at least ``min_share`` of the
        best: a section that shares one common word with a complaint ("email" in a
        refund complaint and in "Password reset") would only mislead the draft and the
        card's list of sources.

        ``min_terms`` is an absolute floor on top of that relative one: a section must
        share at least that many distinct content words with the query (all of them
        when the query has fewer), otherwise the best of several poor matches would
        still be quoted."""
        terms = tokenize(query)
        if not self.sections or not terms or k <= 0:
            return []
        scores = self._bm25.scores(terms)
        distinct = set(terms)
        need = min(max(1, min_terms), len(distinct))
        relevant = [
            i
            for i in range(len(scores))
            if scores[i] > 0 and sum(t in self._bm25.docs[i] for t in distinct) >= need
        ]
        if not relevant:
            return []
        ranked = sorted(relevant, key=lambda i: scores[i], reverse=True)
        floor = scores[ranked[0]] * min_share
        out: list[Snippet] = []
        for i in ranked[:k]:
            if scores[i] < floor:
                break
            s = self.sections[i]
            out.append(Snippet(s.source, s.title, s.text, scores[i]))
        return out


class KnowledgeStore:
    """Finds and caches each community's knowledge base under ``kb_dir``."""

    def __init__(self, kb_dir: Path, *, recheck_s: float = 5.0) -> None:
        self.kb_dir = kb_dir
        self.recheck_s = recheck_s  # how often to look for edited files (stat calls)
        self._cache: dict[Path, tuple[tuple[tuple[str, int, int], ...], KnowledgeBase]] = {}
        self._resolved: dict[str, tuple[float, KnowledgeBase]] = {}

    def folder_for(self, community_id: str) -> Path:
        if _SAFE_ID.match(community_id) and community_id not in (".", ".."):
            own = self.kb_dir / community_id
            if own.is_dir() and any(own.glob("*.md")):
                return own
        return self.kb_dir / "default"

    def get(self, community_id: str) -> KnowledgeBase:
        now = time.monotonic()
        hit = self._resolved.get(community_id)
        if hit is not None and now - hit[0] < self.recheck_s:
            return hit[1]
        folder = self.folder_for(community_id)
        try:
            signature = tuple(
                (p.name, p.stat().st_mtime_ns, p.stat().st_size)
                for p in sorted(folder.glob("*.md"))
            )
        except OSError:
            signature = ()
        cached = self._cache.get(folder)
        if cached is None or cached[0] != signature:
            kb = KnowledgeBase.from_dir(folder) if signature else KnowledgeBase([])
            cached = (signature, kb)
            self._cache[folder] = cached
            logger.info("knowledge base %s: %d sections", folder, len(kb.sections))
        self._resolved[community_id] = (now, cached[1])
        return cached[1]

    def search(
        self, community_id: str, query: str, k: int = 3, *, min_terms: int = 2
    ) -> list[Snippet]:
        """Sections sharing at least ``min_terms`` distinct content words with the query.

        Two, because the drafter's query always carries the flag's reason words
        ("customer service", "product defect") next to the member's text: one shared
        word is then too often a coincidence ("service" in the status-page section), and
        a "rare word" exemption would let exactly those coincidences through."""
        return self.get(community_id).search(query, k, min_terms=min_terms)
