"""Fast hand-built features for one chat message.

One regex tokenisation and one pass over the tokens, with dict look-ups only, so the
detector stays far above the ingestion rate (tens of microseconds per message). The
output feeds a linear model: token and bigram keys (the "hashed" lexical part, keyed
by the string itself) plus ``#``-prefixed dense features a human can read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from handlers.detect.lexicon import (
    ACTION_VERBS,
    ATTEMPT_NOUNS,
    FIRST_PERSON,
    INFO_QUESTION_STARTS,
    NEGATIVE_EMOJI,
    NEGATORS,
    NUMBER_WORDS,
    ORDINALS,
    PHRASE_GROUPS,
    POSITIVE_EMOJI,
    QUESTION_STARTERS,
    SECOND_PERSON,
    STOPWORDS,
    TIME_UNITS,
    WORD_GROUPS,
    words,
)
from storage.records import record

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")
_STRIP_RE = re.compile(r"@\w+|https?://\S+|www\.\S+|&amp;|&gt;|&lt;")
_DIGIT_UNIT_RE = re.compile(r"(\d{1,3})(mins?|h|hrs?|hours?|d|days?|wks?|weeks?)$")
_CAPS_RE = re.compile(r"\b[A-Z]{4,}\b")
_POS_EMOJI_RE = re.compile("[" + POSITIVE_EMOJI + "]")
_NEG_EMOJI_RE = re.compile("[" + NEGATIVE_EMOJI + "]")
_DIGIT_UNITS = {"h": 1.0, "d": 24.0}
_VAGUE_DURATIONS = words("hours days weeks months ages forever")
_SPECIAL: frozenset[str] = frozenset(
    {*WORD_GROUPS, *NUMBER_WORDS, *ORDINALS, *_VAGUE_DURATIONS, "all"}
    | NEGATORS
    | ACTION_VERBS
    | SECOND_PERSON
    | FIRST_PERSON
    | ATTEMPT_NOUNS
)
"""Tokens the full per-token path must see; any other word takes the short path."""
_COUNTING: frozenset[str] = frozenset(
    {*NUMBER_WORDS, *ORDINALS, *ATTEMPT_NOUNS, *_VAGUE_DURATIONS, "all"}
)
"""Listed tokens that can start a duration or a count (as can any number)."""

# Groups that signal a complaint (as opposed to topic-only or positive groups).
COMPLAINT_GROUPS: frozenset[str] = words(
    "delay cancel billing defect noreply notwork notrecv hold strong emotion persist "
    "nobody expect trouble negaction negpraise blame rhetorical churn legal safety sarcasm demand "
    "duration attempts repeat"
)
POSITIVE_GROUPS: frozenset[str] = words("praise positive resolved negstrong")


@record
class Features:
    """What the model and the explanation need from one message."""

    values: dict[str, float]
    """Feature name -> value: tokens, "a b" bigrams and ``#dense`` features."""
    groups: dict[str, int]
    """Cue group -> how many times it fired."""
    evidence: tuple[tuple[str, str], ...]
    """(group, surface text) in order of appearance, for the rationale."""
    content: frozenset[str]
    """Content words, for the nearest-neighbour feedback memory."""
    hours: float
    """Longest duration mentioned, in hours (0 when none)."""
    attempts: int
    """Largest count of repeated attempts or occurrences mentioned."""
    is_question: bool
    shouting: bool


def extract(text: str, valence: Mapping[str, float]) -> Features:
    """Turn ``text`` into features; ``valence`` is a word -> VADER valence table."""
    low = text.lower()
    if "’" in low:
        low = low.replace("’", "'")
    if "@" in low or "http" in low or "&" in low or "www" in low:
        low = _STRIP_RE.sub(" ", low)
    toks = _TOKEN_RE.findall(low)
    n_toks = len(toks)
    vals: dict[str, float] = {}
    groups: dict[str, int] = {}
    evidence: list[tuple[str, str]] = []
    content: set[str] = set()
    vpos = 0.0
    vneg = 0.0
    neg_left = 0
    negs = 0
    n_you = 0
    n_my = 0
    hours = 0.0
    attempts = 0
    qmarks = 0
    excl = 0
    words = 0
    prev = ""
    word_groups = WORD_GROUPS
    phrase_groups = PHRASE_GROUPS
    special = _SPECIAL
    counting = _COUNTING
    for i in range(n_toks):
        t = toks[i]
        if t == "?":
            qmarks += 1
            prev = ""
            continue
        if t == "!":
            excl += 1
            prev = ""
            continue
        words += 1
        vals[t] = 1.0
        # Most tokens are in no word list: for them only valence, the bigram they end
        # and the content set matter, and the look-ups below are skipped. (Tokens are
        # [a-z0-9']: one below ":" starts with a digit, a comparison instead of a call.)
        listed = t in special or t < ":"
        if listed:
            g = word_groups.get(t)
            if g is not None:
                if neg_left:
                    if g == "praise":
                        g = "negpraise"
                    elif g == "strong":
                        g = "negstrong"
                groups[g] = groups.get(g, 0) + 1
                evidence.append((g, t))
        v = valence.get(t)
        if v is not None:
            if neg_left:
                v = -0.74 * v
            if v > 0:
                vpos += v
            else:
                vneg -= v
        if prev:
            bg = f"{prev} {t}"
            vals[bg] = 1.0
            pg = phrase_groups.get(bg)
            if pg is not None:
                groups[pg] = groups.get(pg, 0) + 1
                evidence.append((pg, bg))
            if neg_left and listed and t in ACTION_VERBS:
                groups["negaction"] = groups.get("negaction", 0) + 1
                evidence.append(("negaction", bg))
        if not listed:
            if neg_left:
                neg_left -= 1
            if len(t) > 2 and t not in STOPWORDS:
                content.add(t)
            prev = t
            continue
        if t in NEGATORS:
            neg_left = 3
            negs += 1
        elif neg_left:
            neg_left -= 1
        if t in SECOND_PERSON:
            n_you += 1
        elif t in FIRST_PERSON:
            n_my += 1
        elif len(t) > 2 and t not in STOPWORDS:
            content.add(t)
        if not (t in counting or t < ":"):
            prev = t  # a person, negator or cue word: no duration or count starts here
            continue
        # Durations ("3 weeks", "an hour", "48hrs") and counts ("2 emails", "third time").
        num = NUMBER_WORDS.get(t)
        if num is None and t < ":":
            if t.isdigit():
                num = int(t) if len(t) <= 3 else None
            else:
                m = _DIGIT_UNIT_RE.match(t)
                if m is not None:
                    unit = m.group(2)
                    h = _DIGIT_UNITS.get(unit) or TIME_UNITS.get(unit, 0.0)
                    hours = max(hours, int(m.group(1)) * h)
                    evidence.append(("duration", t))
        if num is not None and i + 1 < n_toks:
            nxt = toks[i + 1]
            if nxt in ("more", "whole", "full", "entire") and i + 2 < n_toks:
                nxt = toks[i + 2]
            unit_h = TIME_UNITS.get(nxt)
            if unit_h is not None:
                hours = max(hours, num * unit_h)
                evidence.append(("duration", f"{t} {nxt}"))
            elif num >= 2 and nxt in ATTEMPT_NOUNS:
                attempts = max(attempts, num)
                evidence.append(("attempts", f"{t} {nxt}"))
        elif i + 1 < n_toks:
            nxt = toks[i + 1]
            if t in ORDINALS and nxt in TIME_UNITS:
                hours = max(hours, ORDINALS[t] * TIME_UNITS[nxt])
                evidence.append(("duration", f"{t} {nxt}"))
            elif (t in ORDINALS and nxt in ATTEMPT_NOUNS) or (
                t in ATTEMPT_NOUNS and nxt in ORDINALS
            ):
                attempts = max(attempts, ORDINALS.get(t) or ORDINALS.get(nxt) or 2)
                evidence.append(("repeat", f"{t} {nxt}"))
            elif t == "all" and nxt in TIME_UNITS:
                hours = max(hours, TIME_UNITS[nxt])
                evidence.append(("duration", f"all {nxt}"))
        if t in _VAGUE_DURATIONS and (
            i == 0 or (toks[i - 1] not in NUMBER_WORDS and not toks[i - 1].isdigit())
        ):
            hours = max(hours, TIME_UNITS.get(t, 24.0) * 2)
        prev = t

    for g, c in groups.items():
        vals["#" + g] = 1.0 if c == 1 else 1.5
    cues = len(COMPLAINT_GROUPS.intersection(groups)) if groups else 0
    positive = bool(groups) and not POSITIVE_GROUPS.isdisjoint(groups)
    if hours > 0:
        vals["#dur"] = 1.0
        if hours >= 2:
            vals["#dur_hours"] = 1.0
        if hours >= 24:
            vals["#dur_days"] = 1.0
        cues += 1
    if attempts:
        vals["#attempts"] = 1.0
        cues += 1
    if cues:
        vals["#cues"] = min(cues, 4) / 2.0
        if positive:
            vals["#pos_x_cue"] = 1.0
        if qmarks:
            vals["#q_x_cue"] = 1.0
    elif positive:
        vals["#pos_only"] = 1.0
    else:
        vals["#no_cue"] = 1.0
    if vneg:
        vals["#vneg"] = min(vneg / 3.0, 2.0)
    if vpos:
        vals["#vpos"] = min(vpos / 3.0, 2.0)
    if negs:
        vals["#negs"] = 1.0 if negs == 1 else 1.5
    is_question = qmarks > 0
    if is_question:
        vals["#q"] = 1.0
    first = toks[0] if toks else ""
    if first in QUESTION_STARTERS:
        vals["#qstart"] = 1.0
        is_question = True
    if n_toks > 1 and first + " " + toks[1] in INFO_QUESTION_STARTS:
        vals["#infoq"] = 1.0
        is_question = True
    if excl:
        # "!" intensifies whatever the message is: excitement without complaint cues,
        # exasperation with them.
        vals["#excl_x_cue" if cues else "#excl"] = 1.0 if excl == 1 else 1.5
    if n_you:
        vals["#you"] = 1.0 if n_you == 1 else 1.5
    if n_my:
        vals["#my"] = 1.0 if n_my == 1 else 1.5
    if words <= 3:
        vals["#short"] = 1.0
    elif words >= 18:
        vals["#long"] = 1.0
    shouting = False
    if _CAPS_RE.search(text) is not None:
        shouting = len(_CAPS_RE.findall(text)) >= 2
        vals["#caps"] = 1.5 if shouting else 1.0
    if not text.isascii():
        if _POS_EMOJI_RE.search(text) is not None:
            vals["#emoji_pos"] = 1.0
        if _NEG_EMOJI_RE.search(text) is not None:
            vals["#emoji_neg"] = 1.0
    return Features(
        values=vals,
        groups=groups,
        evidence=tuple(evidence),
        content=frozenset(content),
        hours=hours,
        attempts=attempts,
        is_question=is_question,
        shouting=shouting,
    )
