"""Per-community adaptation from a manager's decisions (Dismiss, Flag, Confirm).

Each community gets a small logistic layer on top of the shared model, refitted over
*all* of that community's stored decisions whenever a new one arrives (warm-started, a
few epochs: milliseconds for a few hundred decisions), so it is effective for the very
next message. The layer adds to the shared model's logit:

* a community bias (its base rate: a complaint-heavy community moves it up),
* a calibration slope on the shared logit,
* weights over the message's word unigrams and bigrams (hashed) and the shared model's
  readable cue features (it learns that "brutal" is banter in a game server).

Every weight is L2-regularised towards zero, so with few decisions the community keeps
the shared default, and the shared model itself is never modified: one community's
feedback cannot change another community's verdicts.

Managers only act on what they see: they confirm or dismiss flags and flag by hand what
the detector missed. Messages the detector left unflagged and nobody flagged are "no
action": weak evidence that they were fine. Without them the decisions would be a biased
sample (mostly complaints) and the layer would learn to flag everything, so the
community keeps a bounded pool of recent unflagged messages (as hashed features only,
never text) that count as implicit non-complaints with a reduced weight; a later manual
flag of the same message removes it from the pool.

A nearest-neighbour memory of the decisions themselves complements the layer: a
dismissed message's near-twin is not flagged again, and the card can say "similar to 2
dismissed messages".
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from handlers.detect.features import Features
from handlers.detect.lexicon import PHRASE_GROUPS, STOPWORDS, WORD_GROUPS, words


@dataclass(frozen=True, slots=True)
class FeedbackConfig:
    """Tuning for adaptation, chosen by replaying held-out domains of the project's own
    seed examples (``python -m handlers.detect.tune``), never on an evaluation file."""

    l2: float = 4.0
    """Pull of each learned word/cue weight towards zero, in decisions' worth of
    log-loss: a word needs a few consistent decisions before it moves a verdict much."""
    l2_cues: float = 1.0
    """Pull of the weights of the readable cue features (``#question``...) towards zero."""
    l2_bias: float = 4.0
    """Pull of the community bias and calibration slope towards zero."""
    implicit_weight: float = 0.5
    """Weight of a "no action" message (left unflagged, never flagged by hand) relative
    to an explicit decision: weaker, since nobody necessarily read it."""
    pool_size: int = 1000
    """Most recent unflagged messages kept per community as implicit non-complaints."""
    learning_rate: float = 0.3
    """AdaGrad step size of the refit."""
    epochs: int = 8
    """Epochs of a warm refit (after one more decision)."""
    cold_epochs: int = 24
    """Epochs of a refit from scratch (first fit, or after many new decisions)."""
    max_examples: int = 3000
    """Only this many most recent decisions take part in a refit."""
    max_steps: int = 20000
    """Cap on example visits in a warm refit (a cold one gets four times as many), so a
    decision costs a bounded fraction of a second even in a very busy community."""
    min_similarity: float = 0.6
    """Jaccard similarity of content words above which a remembered decision counts."""
    max_pull: float = 0.9
    """How far an identical remembered decision pulls the probability to its label."""
    memory_size: int = 5000
    """Oldest remembered decisions are dropped from the neighbour memory past this."""


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A remembered feedback example close to the message being judged."""

    similarity: float
    is_negative: bool


_SALTS = (0x5BD1E995, 0x27D4EB2F, 0x165667B1, 0x61C88647)


def _signature(content: frozenset[str]) -> tuple[int, ...]:
    """MinHash-lite: one min-hash per salt; equal sets always share every value.

    Uses the process's string hash, which is fine because memories are rebuilt from
    persisted decisions at start-up rather than stored.
    """
    hs = [hash(w) for w in content]
    return tuple(min([h ^ salt for h in hs]) for salt in _SALTS)


@dataclass(slots=True)
class NeighbourMemory:
    """Remembered feedback messages, found again through min-hash buckets.

    Two sets with Jaccard similarity J share a given min-hash with probability J, so
    four buckets find a 0.6-similar example 97% of the time while touching only a few
    candidates, keeping ``judge`` fast when a community has thousands of decisions.
    """

    config: FeedbackConfig
    examples: list[tuple[frozenset[str], bool] | None] = field(default_factory=list)
    buckets: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    live: int = 0

    def add(self, content: frozenset[str], is_negative: bool) -> None:
        """Remember one decision; an identical earlier one is replaced (latest wins)."""
        if not content:
            return
        sig = _signature(content)
        for i in self.buckets.get((0, sig[0]), ()):
            old = self.examples[i]
            if old is not None and old[0] == content:
                self.examples[i] = None
                self.live -= 1
        pos = len(self.examples)
        self.examples.append((content, is_negative))
        self.live += 1
        for band, value in enumerate(sig):
            self.buckets.setdefault((band, value), []).append(pos)
        if self.live > self.config.memory_size:
            self._evict_oldest()

    def nearest(self, content: frozenset[str], k: int = 3) -> list[Neighbour]:
        """Up to ``k`` remembered examples at least ``min_similarity`` alike."""
        if not content or not self.live:
            return []
        candidates: set[int] = set()
        for band, value in enumerate(_signature(content)):
            candidates.update(self.buckets.get((band, value), ()))
        found: list[Neighbour] = []
        n = len(content)
        min_sim = self.config.min_similarity
        for i in candidates:
            ex = self.examples[i]
            if ex is None:
                continue
            other, label = ex
            m = len(other)
            if min(m, n) < min_sim * max(m, n):  # the similarity bound is unreachable
                continue
            inter = len(content & other)
            sim = inter / (n + m - inter)
            if sim >= min_sim:
                found.append(Neighbour(sim, label))
        found.sort(key=lambda nb: -nb.similarity)
        return found[:k]

    def _evict_oldest(self) -> None:
        for i, ex in enumerate(self.examples):
            if ex is not None:
                self.examples[i] = None
                self.live -= 1
                return


_BASE_KEY = hash("#base_logit")
"""Feature id of the calibration slope: the shared logit, scaled down."""
_BASE_SCALE = 0.25


@dataclass(slots=True)
class Example:
    """One training example of a community layer: hashed features and the shared logit."""

    keys: tuple[int, ...]
    values: tuple[float, ...]
    base: float
    label: float
    weight: float


_CUE_NAMES: frozenset[str] = frozenset(
    {"#" + g for g in (*WORD_GROUPS.values(), *PHRASE_GROUPS.values())}
    | {
        "#" + name
        for name in words(
            "negpraise negstrong negaction dur dur_hours dur_days attempts cues pos_x_cue "
            "q_x_cue pos_only no_cue vneg vpos negs q qstart infoq excl excl_x_cue you my "
            "short long caps emoji_pos emoji_neg"
        )
    }
)
"""Every readable ``#`` cue feature ``features.extract`` can produce."""
_CUE_KEYS: frozenset[int] = frozenset(hash(k) for k in _CUE_NAMES)


def encode(values: Mapping[str, float], base: float, label: float, weight: float) -> Example:
    """Hash a feature dict into a compact example (no text is kept).

    Tuples, not arrays: every unflagged message is encoded into its community's pool,
    and filling an ``array`` from Python ints cost three times as much.
    """
    keys = (*map(hash, values), _BASE_KEY)
    vals = (*values.values(), max(-2.0, min(2.0, base * _BASE_SCALE)))
    return Example(keys, vals, base, label, weight)


def _telling(name: str) -> bool:
    """A word or word pair an admin would recognise (not a cue, stopword or number)."""
    if name.startswith("#"):
        return False
    parts = name.split(" ")
    return not all(p in STOPWORDS or p.isdigit() for p in parts)


def sigmoid(z: float) -> float:
    """The logistic function, clamped so extreme logits cannot overflow ``exp``."""
    if z < -30.0:
        return 0.0
    if z > 30.0:
        return 1.0
    return 1.0 / (1.0 + math.exp(-z))


@dataclass(slots=True)
class CommunityModel:
    """One community's learned layer over the shared model, its memory and its pool."""

    config: FeedbackConfig
    weights: dict[int, float] = field(default_factory=dict)
    bias: float = 0.0
    decisions: int = 0
    examples: list[Example] = field(default_factory=list)
    pool: OrderedDict[int, Example] = field(default_factory=OrderedDict)
    memory: NeighbourMemory | None = None
    dirty: bool = False
    judged: bool = False
    """Whether any message of this community was judged yet (live, not start-up)."""
    fitted_on: int = 0
    """How many decisions the current weights were fitted on."""
    names: dict[int, str] = field(default_factory=dict)
    """Feature id -> name for the features of decisions (not of the "no action" pool),
    so an admin can be told what the layer learned."""

    def __post_init__(self) -> None:
        if self.memory is None:
            self.memory = NeighbourMemory(self.config)

    # -- recording ----------------------------------------------------------------------

    def observe_unflagged(self, text_key: int, feats: Features, base_logit: float) -> None:
        """Keep an unflagged message as an implicit non-complaint (bounded, hashed)."""
        pool = self.pool
        if text_key in pool:
            pool.move_to_end(text_key)
            return
        pool[text_key] = encode(feats.values, base_logit, 0.0, self.config.implicit_weight)
        if len(pool) > self.config.pool_size:
            pool.popitem(last=False)

    def add_decision(
        self, text_key: int, feats: Features, base_logit: float, is_negative: bool
    ) -> None:
        """Store a manager's decision; the layer is refitted before the next verdict."""
        self.pool.pop(text_key, None)
        self.examples.append(encode(feats.values, base_logit, float(is_negative), 1.0))
        names = self.names
        for name in feats.values:
            names[hash(name)] = name
        assert self.memory is not None
        self.memory.add(feats.content, is_negative)
        self.decisions += 1
        self.dirty = True

    def pool_weight(self) -> float:
        """Total weight of the "no action" messages currently kept."""
        return sum(ex.weight for ex in self.pool.values())

    # -- fitting ------------------------------------------------------------------------

    def refit(self) -> None:
        """Refit the layer over all stored decisions plus the pool (warm-started)."""
        cfg = self.config
        self.dirty = False
        data = self.examples[-cfg.max_examples :] + list(self.pool.values())
        if not self.examples:
            self.weights = {}
            self.bias = 0.0
            self.fitted_on = 0
            return
        new = self.decisions - self.fitted_on
        if new * 4 >= max(self.decisions, 1):
            epochs = min(cfg.cold_epochs, max(2, 4 * cfg.max_steps // len(data)))
        else:
            epochs = min(cfg.epochs, max(1, cfg.max_steps // len(data)))
        self.fitted_on = self.decisions
        # Distribute each weight's L2 penalty over the examples it occurs in, so one
        # epoch applies the full penalty ``l2 * w`` whatever the feature's frequency.
        mass: dict[int, float] = {}
        total = 0.0
        for ex in data:
            total += ex.weight
            for k in ex.keys:
                mass[k] = mass.get(k, 0.0) + ex.weight
        w = self.weights
        bias = self.bias
        sq: dict[int, float] = {}
        bias_sq = 0.0
        lr = cfg.learning_rate
        l2 = cfg.l2
        l2_bias = cfg.l2_bias
        lams = {k: cfg.l2_cues for k in _CUE_KEYS}
        lams[_BASE_KEY] = l2_bias
        rng = random.Random(len(data))
        order = list(range(len(data)))
        for _ in range(epochs):
            rng.shuffle(order)
            for i in order:
                ex = data[i]
                keys = ex.keys
                vals = ex.values
                z = ex.base + bias
                for j in range(len(keys)):
                    x = w.get(keys[j])
                    if x is not None:
                        z += x * vals[j]
                g = ex.weight * (ex.label - sigmoid(z))
                gb = g - l2_bias * bias * ex.weight / total
                bias_sq += gb * gb
                bias += lr * gb / math.sqrt(1.0 + bias_sq)
                for j in range(len(keys)):
                    k = keys[j]
                    cur = w.get(k, 0.0)
                    lam = lams.get(k, l2)
                    gk = g * vals[j] - lam * cur * ex.weight / mass[k]
                    s = sq.get(k, 0.0) + gk * gk
                    sq[k] = s
                    w[k] = cur + lr * gk / math.sqrt(1.0 + s)
        # Drop negligible weights so ``judge`` touches fewer entries.
        self.weights = {k: v for k, v in w.items() if abs(v) >= 1e-3}
        self.bias = bias

    # -- judging ------------------------------------------------------------------------

    def offset(self, feats: Features, base_logit: float) -> float:
        """What this community adds to the shared model's logit (refits if needed)."""
        if self.dirty:
            self.refit()
        w = self.weights
        z = self.bias + w.get(_BASE_KEY, 0.0) * max(-2.0, min(2.0, base_logit * _BASE_SCALE))
        for k, v in feats.values.items():
            x = w.get(hash(k))
            if x is not None:
                z += x * v
        return z

    def top_feature(self, feats: Features) -> tuple[str, float]:
        """The learned word or cue that moves this message's logit most."""
        w = self.weights
        top, top_w = "", 0.0
        for k, v in feats.values.items():
            c = w.get(hash(k), 0.0) * v
            if abs(c) > abs(top_w):
                top, top_w = k, c
        return top, top_w

    def learned(self, k: int = 3, at_least: float = 0.1) -> tuple[list[str], list[str]]:
        """The words this community's decisions weigh most: up to ``k`` that raise the
        score and ``k`` that lower it, strongest first. Readable cues (``#qstart``),
        stopwords and bare numbers are left out: an admin reads these."""
        if self.dirty:
            self.refit()
        weighed = [
            (w, name)
            for h, name in self.names.items()
            if abs(w := self.weights.get(h, 0.0)) >= at_least and _telling(name)
        ]
        raising = [name for w, name in sorted(weighed, reverse=True) if w > 0]
        lowering = [name for w, name in sorted(weighed) if w < 0]
        return raising[:k], lowering[:k]

    def blend(self, feats: Features, p: float) -> tuple[float, str]:
        """Pull ``p`` toward the labels of near-identical remembered messages."""
        assert self.memory is not None
        near = self.memory.nearest(feats.content)
        if not near:
            return p, ""
        pull = min(self.config.max_pull, near[0].similarity ** 2)
        total = sum(n.similarity for n in near)
        target = sum(n.similarity for n in near if n.is_negative) / total
        flagged = sum(1 for n in near if n.is_negative)
        dismissed = len(near) - flagged
        parts = []
        if dismissed:
            parts.append(f"{dismissed} dismissed message{'s' if dismissed > 1 else ''}")
        if flagged:
            parts.append(f"{flagged} flagged message{'s' if flagged > 1 else ''}")
        note = "similar to " + " and ".join(parts)
        return (1.0 - pull) * p + pull * target, note

    def explain(self, feats: Features) -> str:
        """A short note on how this community's decisions moved the score."""
        n = self.decisions
        head = f"learned from {n} decision{'s' if n != 1 else ''} in this community"
        name, weight = self.top_feature(feats)
        if name and abs(weight) >= 0.3:
            way = "raises" if weight > 0 else "lowers"
            return f'{head} ("{name.lstrip("#")}" {way} the score)'
        return head
