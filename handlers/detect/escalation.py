"""Thread-level escalation and near-duplicate incidents: the whisper becoming a roar.

Pure functions over events you pass in, with the clock injected (``now``), so the
same code runs in the ingestion path, in replays and in tests without sleeping.
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import chain

from handlers.detect.taxonomy import SEVERITIES

_AGREE_RE = re.compile(
    r"^\s*(?:\+\s*1|same(?: here| issue| problem| for me| thing| with me)?|me too|ditto|"
    r"this|exactly|agreed?|same\W*|yep,? same)\W*$"
    r"|^\s*(?:\+\s*1|me too|same here|ditto|agreed)\b"
    r"|\b(?:same (?:issue|problem|here|thing|for me|with me)|me too|happening to me too|"
    r"(?:also|too) (?:having|getting|seeing)|having the same|i have the same|"
    r"not just you|it's not just you|can confirm|same boat)\b",
    re.IGNORECASE,
)
_WORD_RE = re.compile(r"[a-z0-9']+")
_MENTION_RE = re.compile(r"<@!?\d+>|@\w+|https?://\S+")


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


# A negator shortly before an agreement phrase turns it around ("not the same issue
# for me", "I don't have the same problem"), as long as only these filler words stand
# between them; any other word ends the look-back, so "no reply, same here" and "can't
# log in either, same issue" still agree.
_NEGATORS = _wordset(
    "not no nope nah never neither nor cannot dont doesnt didnt isnt arent wasnt werent "
    "havent hasnt hadnt cant couldnt wont wouldnt shouldnt aint"
)
_NEGATION_FILLER = _wordset(
    "i i'm im me we we're it it's its this that the a an any is am are be been was were "
    "have has had having get getting got see seeing seen experience experiencing face "
    "facing run running into exactly quite really actually sure think thinking seem seems "
    "to like look looks sound sounds for on"
)
_NEGATION_LOOKBACK = 6
_CLAUSE_END_RE = re.compile(r"[.,;:!?()\u2013\u2014-]|\bbut\b", re.IGNORECASE)
# Phrases that contradict the thread: the member does not have the problem.
# ("worked fine for me until yesterday" and "used to work for me" are not.)
_CONTRADICT_RE = re.compile(
    r"(?:(?<!used to )\b(?:works?|working)\s+"
    r"(?:(?:just\s+)?(?:fine|ok|okay|great|perfectly|well|normally)\s+)?"
    r"(?:for|on)\s+(?:me|us|my|our)"
    r"|(?<!used to work )\b(?:fine|all good|no (?:issues?|problems?)|nothing wrong)\s+"
    r"(?:here|for me|on my (?:end|side)|on our (?:end|side)))\b"
    r"(?!\s+(?:until|till|before|earlier|yesterday|last|this morning|an hour ago))"
    r"|\bcan(?:'t|not| not)\s+reproduce\b",
    re.IGNORECASE,
)


def _negated(text: str, start: int) -> bool:
    """Whether a negator stands just before ``start``, within the same clause."""
    prefix = text[:start]
    ends = list(_CLAUSE_END_RE.finditer(prefix))
    if ends:
        prefix = prefix[ends[-1].end() :]
    words = _WORD_RE.findall(prefix.lower())
    for w in reversed(words[-_NEGATION_LOOKBACK:]):
        if w in _NEGATORS or w.replace("'", "") in _NEGATORS:
            return True
        if w not in _NEGATION_FILLER:
            return False
    return False


def _stance(text: str) -> bool | None:
    """True if a reply agrees, False if it says it is not affected, None otherwise."""
    text = text.replace("\u2019", "'")
    if any(not _negated(text, m.start()) for m in _CONTRADICT_RE.finditer(text)):
        return False  # "works fine for me"; but "not working for me either" piles on
    denied = False
    for m in _AGREE_RE.finditer(text):
        if "just you" in m.group().lower() or not _negated(text, m.start()):
            return True  # "it's not just you" agrees despite its "not"
        denied = True
    return False if denied else None


def is_agreement(text: str) -> bool:
    """Whether a reply piles on ("same here", "+1", "me too", "same issue").

    Negated agreement ("not the same issue for me", "I'm not having the same problem")
    and contradictions ("works fine for me") are not agreement.
    """
    return _stance(text) is True


@dataclass(frozen=True, slots=True)
class ThreadEvent:
    """One thing that happened in a thread: a reply or a reaction."""

    at: datetime
    author_id: str
    text: str = ""
    is_reaction: bool = False
    is_complaint: bool = False
    """The detector's verdict on this reply (reactions leave it False)."""


ACKNOWLEDGING_REACTIONS: frozenset[str] = frozenset(
    {"👀", "✅", "☑️", "✔️", "🆗", "👌", "eyes", "white_check_mark", "heavy_check_mark"}
    | {"ballot_box_with_check", "ok", "ok_hand"}
)
"""Reactions that acknowledge a message (seen, handled) rather than agree with it: as a
``ThreadEvent`` a reaction's ``text`` is its emoji (Discord) or emoji name (Slack)."""


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    """When a thread counts as escalating; defaults suit a community of hundreds."""

    window: timedelta = timedelta(hours=1)
    agreeing_members: int = 3
    crowd_members: int = 6
    replies_per_hour: float = 12.0
    min_replies_for_velocity: int = 5
    min_repliers_for_velocity: int = 3
    """One member posting fast is a conversation, not a crowd."""
    active_member_messages: int = 200
    """A member with at least this many messages has reach (others read them)."""
    repeat_complaints: int = 2


@dataclass(frozen=True, slots=True)
class Escalation:
    """The thread's new severity (never lower than before) and why."""

    severity: str
    raised: bool
    rationale: str
    agreeing_members: int = 0
    replies_in_window: int = 0
    reach_members: int = 0
    max_repeats: int = 0


def _fmt_span(span: timedelta) -> str:
    minutes = max(1, round(span.total_seconds() / 60))
    if minutes < 90:
        return f"{minutes} min"
    return f"{round(minutes / 60)} h"


def escalate(
    severity: str,
    events: Sequence[ThreadEvent],
    now: datetime,
    *,
    original_author: str | None = None,
    member_activity: Mapping[str, int] | None = None,
    policy: EscalationPolicy | None = None,
) -> Escalation:
    """Raise ``severity`` from pile-on, velocity, reach and repeated complaints.

    ``events`` are the thread's replies and reactions (any order, any age; only those
    in ``policy.window`` before ``now`` count). ``member_activity`` maps member id to
    their message count in the community, to weigh who is involved.
    """
    policy = policy or EscalationPolicy()
    if severity not in SEVERITIES:
        raise ValueError(f"unknown severity {severity!r}")
    start = now - policy.window
    recent = sorted((e for e in events if start <= e.at <= now), key=lambda e: e.at)
    agreeing: set[str] = set()
    replies = 0
    complaints_by: dict[str, int] = {}
    involved: set[str] = set()
    if original_author is not None:
        involved.add(original_author)
        complaints_by[original_author] = 1
    first_agree: datetime | None = None
    last_agree: datetime | None = None
    for e in recent:
        involved.add(e.author_id)
        if not e.is_reaction:
            replies += 1
        if e.is_reaction:
            # "Seen" and "done" marks (often a moderator's) are not members piling on.
            agrees = e.text not in ACKNOWLEDGING_REACTIONS
        else:
            # A reply the detector calls negative piles on, unless it says the member
            # is not affected ("not the same issue for me" reads as negative too).
            stance = _stance(e.text)
            agrees = stance is True or (e.is_complaint and stance is None)
        if agrees and e.author_id != original_author and e.author_id not in agreeing:
            agreeing.add(e.author_id)
            first_agree = first_agree or e.at
            last_agree = e.at
        if e.is_complaint and not e.is_reaction:
            complaints_by[e.author_id] = complaints_by.get(e.author_id, 0) + 1
    activity = member_activity or {}
    reach = sorted(m for m in involved if activity.get(m, 0) >= policy.active_member_messages)
    max_repeats = max(complaints_by.values(), default=0)

    steps = 0
    why: list[str] = []
    if len(agreeing) >= policy.agreeing_members:
        steps += 2 if len(agreeing) >= policy.crowd_members else 1
        span = (last_agree - first_agree) if first_agree and last_agree else timedelta(0)
        why.append(f"{len(agreeing)} members agreeing in {_fmt_span(span)}")
    repliers = {e.author_id for e in recent if not e.is_reaction}
    if (
        replies >= policy.min_replies_for_velocity
        and len(repliers) >= policy.min_repliers_for_velocity
    ):
        span = max(now - recent[0].at, timedelta(minutes=5))
        rate = replies / (span.total_seconds() / 3600)
        if rate >= policy.replies_per_hour:
            steps += 1
            why.append(f"{replies} replies in {_fmt_span(span)}")
    if reach and (steps or len(agreeing) >= 1 or max_repeats >= policy.repeat_complaints):
        steps += 1
        n = len(reach)
        why.append(f"{n} highly active member{'s' if n > 1 else ''} involved")
    if max_repeats >= policy.repeat_complaints:
        steps += 1
        why.append(f"same member complained {max_repeats} times")
    level = min(len(SEVERITIES) - 1, SEVERITIES.index(severity) + steps)
    new = SEVERITIES[max(level, SEVERITIES.index(severity))]
    return Escalation(
        severity=new,
        raised=new != severity,
        rationale="; ".join(why) if why else "no escalation",
        agreeing_members=len(agreeing),
        replies_in_window=replies,
        reach_members=len(reach),
        max_repeats=max_repeats,
    )


# Words that say nothing about what went wrong: function words, greetings and filler,
# and the generic vocabulary of any complaint ("problem", "still", "again", "please
# help"). Two complaints sharing only these are not one incident, so they are dropped
# before shingling; what is left ("order arrived broken") is what gets compared.
_STOPWORDS = _wordset(
    """
    a about above after again against all almost already also am an and any anyone
    anything are aren't as at be because been before being below between both but by
    can can't cannot could couldn't did didn't do does doesn't doing don't done
    during each either even ever every few for from further get gets getting got had
    hadn't has hasn't have haven't having he her here hers him his how i i'd i'll i'm
    i've if in into is isn't it it's its itself just keep keeps let me more most much
    my myself no nope nor not now of on once one only or other our ours over own
    really same she should shouldn't since so some someone something still such than
    that that's the their theirs them then there these they this those though through
    to too under until up us very was wasn't we we're were weren't what what's when
    where which while who whom why will with won't would wouldn't yet you you're your
    yours yourself im ive dont doesnt didnt isnt arent wasnt cant wont
    hi hello hey dear team guys folks everyone anybody please pls plz thanks thank thx
    help ok okay yes yeah well problem problems issue issues trouble
    """
)


def shingles(text: str, size: int = 2) -> frozenset[str]:
    """Content-word unigrams plus ``size``-word shingles, numbers and mentions blurred.

    Stopwords and generic complaint words are dropped first, so complaints compare on
    what they are about. Unigrams keep very short complaints comparable; shingles keep
    word order mattering for longer ones. Numbers become ``#`` so "3 hours" and "4
    hours" match. A text of stopwords only keeps all its words (it still matches itself).
    """
    low = _MENTION_RE.sub(" ", text.lower().replace("’", "'"))
    words = ["#" if w.isdigit() else w for w in _WORD_RE.findall(low)]
    content = [w for w in words if w not in _STOPWORDS]
    if content:
        words = content
    out = set(words)
    for i in range(len(words) - size + 1):
        out.add(" ".join(words[i : i + size]))
    return frozenset(out)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


@dataclass(slots=True)
class _Entry:
    key: str
    at: datetime
    shingles: frozenset[str]


@dataclass(slots=True)
class _Community:
    """One community's recent complaints, with an inverted index from shingle to entries.

    ``order`` (entry ids) and ``arrivals`` are in arrival order, so pruning pops stale
    items off their fronts: its cost is what expired, not what is kept. (A clock that
    steps back only makes a few entries live a little longer.)
    """

    entries: dict[int, _Entry] = field(default_factory=dict)
    order: deque[int] = field(default_factory=deque)
    postings: dict[str, set[int]] = field(default_factory=dict)
    next_id: int = 0
    samples: dict[str, int] = field(default_factory=dict)  # stored entries per incident
    arrivals: deque[tuple[datetime, str]] = field(default_factory=deque)  # every complaint
    sizes: dict[str, int] = field(default_factory=dict)  # complaints per live incident


@dataclass(slots=True)
class IncidentIndex:
    """Groups near-duplicate complaints within a time window into one incident.

    One object per process (or per test) holds every community's recent complaints;
    pass it in where needed. ``match`` finds the incident a text belongs to, ``add``
    records a complaint (joining an incident or starting one). Candidates come from an
    inverted index on shingles, so a burst of complaints costs what the shared shingles
    cost, not one comparison with every complaint in the window.
    """

    window: timedelta = timedelta(hours=6)
    min_similarity: float = 0.5
    samples_per_incident: int = 8
    """An incident keeps this many of its texts to match against; a storm of identical
    complaints then costs a bounded comparison each, while every one is still counted."""
    _communities: dict[str, _Community] = field(default_factory=dict)
    _counter: int = 0

    def _prune(self, community_id: str, now: datetime) -> _Community:
        com = self._communities.get(community_id)
        if com is None:
            com = self._communities[community_id] = _Community()
            return com
        start = now - self.window
        entries = com.entries
        order = com.order
        while order and entries[order[0]].at < start:
            i = order.popleft()
            entry = entries.pop(i)
            com.samples[entry.key] -= 1
            if not com.samples[entry.key]:
                del com.samples[entry.key]
            for sh in entry.shingles:
                ids = com.postings.get(sh)
                if ids is not None:
                    ids.discard(i)
                    if not ids:
                        del com.postings[sh]
        arrivals = com.arrivals
        while arrivals and arrivals[0][0] < start:
            _, key = arrivals.popleft()
            com.sizes[key] -= 1
            if not com.sizes[key]:
                del com.sizes[key]
        return com

    def match(self, community_id: str, text: str, now: datetime) -> str | None:
        """The incident key of the most similar recent complaint, if similar enough.

        The detector's reason is not compared: two wordings of one problem can get
        different reasons, while the content words already keep different problems apart.
        """
        return self._match(self._prune(community_id, now), shingles(text))

    def _match(self, com: _Community, sh: frozenset[str]) -> str | None:
        # Shared shingles per candidate, counted in C: words common in complaints
        # ("order", "app") post to many live entries, and a per-posting Python loop was
        # most of a complaint's matching cost.
        postings = com.postings
        shared = Counter(chain.from_iterable([postings[s] for s in sh if s in postings]))
        best_key: str | None = None
        best = self.min_similarity
        for i, inter in shared.items():
            entry = com.entries[i]
            sim = inter / (len(sh) + len(entry.shingles) - inter)
            if sim >= best:
                best_key, best = entry.key, sim
        return best_key

    def add(
        self,
        community_id: str,
        text: str,
        now: datetime,
        key: str | None = None,
    ) -> str:
        """Record a complaint; returns its incident key (an existing one if it matches).

        ``key`` names a new incident (e.g. the flag id); it is ignored when the text
        joins an existing incident.
        """
        com = self._prune(community_id, now)
        sh = shingles(text)
        found = self._match(com, sh)
        if found is None:
            if key is None:
                self._counter += 1
                key = f"{community_id}:incident:{self._counter}"
            found = key
        com.arrivals.append((now, found))
        com.sizes[found] = com.sizes.get(found, 0) + 1
        if com.samples.get(found, 0) < self.samples_per_incident:
            com.samples[found] = com.samples.get(found, 0) + 1
            entry_id = com.next_id
            com.next_id += 1
            com.entries[entry_id] = _Entry(found, now, sh)
            com.order.append(entry_id)
            for s in sh:
                com.postings.setdefault(s, set()).add(entry_id)
        return found

    def incident_sizes(self, community_id: str, now: datetime) -> dict[str, int]:
        """How many complaints each live incident holds."""
        return dict(self._prune(community_id, now).sizes)


def merge_keys(keys: Iterable[str | None]) -> list[str]:
    """Distinct incident keys in first-seen order (for digest counting)."""
    seen: dict[str, None] = {}
    for k in keys:
        if k is not None:
            seen.setdefault(k, None)
    return list(seen)
