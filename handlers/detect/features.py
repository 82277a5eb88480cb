"""Fast hand-built features for one chat message.

One regex tokenisation and one pass over the tokens, with dict look-ups only, so the
detector stays far above the ingestion rate (tens of microseconds per message). Text
that is not ASCII is checked for curly apostrophes and invisible characters; ASCII
text skips that. Sentence punctuation is tokenised so a negation
("no", "didn't") reaches no further than its own clause. The
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

# Decimals ("2.5", "1.5hrs") are one token; "." ";" "," "!" "?" are tokens of their own.
_TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+|\.\d+[a-z]*)?|[!?.,;]")
_STRIP_RE = re.compile(r"@\w+|https?://\S+|www\.\S+|&amp;|&gt;|&lt;")
# A number token: "2.5", or a count with its unit attached ("48hrs", "3days", "2yrs").
# A bare "d" is no unit: "3d printer" and "2d art" are not days.
_NUMBER_RE = re.compile(r"(\d{1,3}(?:\.\d+)?)(mins?|h|hrs?|hours?|days?|wks?|weeks?|yrs?|years?)?$")
_CAPS_RE = re.compile(r"\b[A-Z]{4,}\b")
_POS_EMOJI_RE = re.compile("[" + POSITIVE_EMOJI + "]")
_NEG_EMOJI_RE = re.compile("[" + NEGATIVE_EMOJI + "]")
# Invisible characters that split a word in two ("char\u200bged"): zero-width space,
# non-joiner, joiner, word joiner, BOM and soft hyphen. (A regex: ``str.translate``
# with a table costs ten times as much on a chat line.)
_INVISIBLE_RE = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_VAGUE_DURATIONS = words("hours days weeks months years ages forever")
# "in an hour", "within 2 days": a time ahead, not a wait, unless the clause is negated
# ("hasn't moved in 10 days"). Words that may stand between: "in the next 2 days".
_AHEAD = words("in within")
_AHEAD_SKIP = words("a an the next about around roughly just only another over under")
_SOFT_PUNCT = frozenset(".,;")
"""Punctuation that may open a message ("... how do I") without being its first word."""
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


def _not_a_wait(toks: list[str], start: int, end: int, negated: bool) -> bool:
    """Whether the duration ``toks[start..end]`` is a point in time ("3 weeks ago") or,
    outside a negated clause, a time ahead ("in an hour", "within the next 2 days")."""
    if end + 1 < len(toks) and toks[end + 1] == "ago":
        return True
    if negated:
        return False
    j = start - 1
    while j >= 0 and toks[j] in _AHEAD_SKIP:
        j -= 1
    return j >= 0 and toks[j] in _AHEAD


def extract(text: str, valence: Mapping[str, float]) -> Features:
    """Turn ``text`` into features; ``valence`` is a word -> VADER valence table."""
    ascii_text = text.isascii()
    if not ascii_text and _INVISIBLE_RE.search(text) is not None:
        text = _INVISIBLE_RE.sub("", text)
    low = text.lower()
    if not ascii_text and "’" in low:
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
    negated = False  # a negator earlier in this clause
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
        # Punctuation (the only tokens below "a" that do not start with a digit) ends a
        # negation's reach; all but a comma also end the bigram chain.
        if t < "a" and (t < "0" or t > ":"):
            neg_left = 0
            negated = False
            if t == ",":
                continue
            if t == "?":
                qmarks += 1
            elif t == "!":
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
            negated = True
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
        num: float | None = NUMBER_WORDS.get(t)
        if num is None and t < ":":
            if t.isdigit():
                num = int(t) if len(t) <= 3 else None
            else:
                m = _NUMBER_RE.match(t)
                if m is not None:
                    unit = m.group(2)
                    if unit is None:
                        num = float(m.group(1))  # a decimal, "2.5"
                    elif not _not_a_wait(toks, i, i, negated):
                        hours = max(hours, float(m.group(1)) * TIME_UNITS[unit])
                        evidence.append(("duration", t))
        if num is not None and i + 1 < n_toks:
            j = i + 1
            nxt = toks[j]
            if nxt in ("more", "whole", "full", "entire") and j + 1 < n_toks:
                j += 1
                nxt = toks[j]
            unit_h = TIME_UNITS.get(nxt)
            if unit_h is not None:
                if not _not_a_wait(toks, i, j, negated):
                    hours = max(hours, num * unit_h)
                    evidence.append(("duration", f"{t} {nxt}"))
            elif num >= 2 and nxt in ATTEMPT_NOUNS:
                attempts = max(attempts, int(num))
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
        if (
            t in _VAGUE_DURATIONS
            and (i == 0 or (toks[i - 1] not in NUMBER_WORDS and not "0" <= toks[i - 1] < ":"))
            and not _not_a_wait(toks, i, i, negated)
        ):
            hours = max(hours, TIME_UNITS.get(t, 24.0) * 2)
        prev = t

    for g, c in groups.items():
        vals["#" + g] = 1.0 if c == 1 else 1.5
    cues = len(COMPLAINT_GROUPS.intersection(groups)) if groups else 0
    positive = bool(groups) and not POSITIVE_GROUPS.isdisjoint(groups)
    if hours >= 1:
        # Minutes are no wait to complain of by themselves ("brb 10 mins"): they stay in
        # the evidence ("on hold + 40 minutes") but make no duration cue.
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
    k = 0
    while k < n_toks and toks[k] in _SOFT_PUNCT:
        k += 1
    first = toks[k] if k < n_toks else ""
    if first in QUESTION_STARTERS:
        vals["#qstart"] = 1.0
        is_question = True
    if k + 1 < n_toks and first + " " + toks[k + 1] in INFO_QUESTION_STARTS:
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
    if not ascii_text:
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
