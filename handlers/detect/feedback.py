"""Per-community adaptation from a manager's decisions (Dismiss, Flag, Confirm).

Two small pieces per community, both effective for the very next message and both
explainable: an online logistic layer over the same features as the shared model (it
learns that "brutal" is banter in a game server) and a nearest-neighbour memory of the
messages themselves (so a dismissed message's near-twin is not flagged again, and the
card can say "similar to 2 dismissed messages"). The shared model is never modified, so
one community's feedback cannot make another community forget the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from handlers.detect.features import Features


@dataclass(frozen=True, slots=True)
class FeedbackConfig:
    """Tuning for adaptation; defaults chosen on the project's own seed examples."""

    learning_rate: float = 0.6
    """Step size of the per-community logistic layer (AdaGrad-scaled per feature)."""
    min_similarity: float = 0.5
    """Jaccard similarity of content words above which a remembered example counts."""
    max_pull: float = 0.9
    """How far an identical remembered example pulls the probability to its label."""
    memory_size: int = 5000
    """Oldest remembered examples are dropped past this many."""


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
    return tuple(min(hash(w) ^ salt for w in content) for salt in _SALTS)


@dataclass(slots=True)
class NeighbourMemory:
    """Remembered feedback messages, found again through min-hash buckets.

    Two sets with Jaccard similarity J share a given min-hash with probability J, so
    four buckets find a 0.5-similar example 94% of the time while touching only a few
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
        for i in candidates:
            ex = self.examples[i]
            if ex is None:
                continue
            words, label = ex
            m = len(words)
            if m > 2 * n or n > 2 * m:  # Jaccard >= 0.5 is impossible
                continue
            inter = len(content & words)
            sim = inter / (n + m - inter)
            if sim >= self.config.min_similarity:
                found.append(Neighbour(sim, label))
        found.sort(key=lambda nb: -nb.similarity)
        return found[:k]

    def _evict_oldest(self) -> None:
        for i, ex in enumerate(self.examples):
            if ex is not None:
                self.examples[i] = None
                self.live -= 1
                return


@dataclass(slots=True)
class CommunityModel:
    """One community's learned offset to the shared model, plus its memory."""

    config: FeedbackConfig
    weights: dict[str, float] = field(default_factory=dict)
    grad_sq: dict[str, float] = field(default_factory=dict)
    bias: float = 0.0
    bias_sq: float = 0.0
    memory: NeighbourMemory | None = None
    decisions: int = 0

    def __post_init__(self) -> None:
        if self.memory is None:
            self.memory = NeighbourMemory(self.config)

    def logit_offset(self, feats: Features) -> float:
        """What this community adds to the shared model's logit."""
        z = self.bias
        w = self.weights
        if w:
            for k, v in feats.values.items():
                x = w.get(k)
                if x is not None:
                    z += x * v
        return z

    def update(self, feats: Features, base_logit: float, is_negative: bool) -> None:
        """One AdaGrad step on the log-loss of this decision, then remember it."""
        z = base_logit + self.logit_offset(feats)
        p = 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z))))
        g = (1.0 if is_negative else 0.0) - p
        lr = self.config.learning_rate
        self.bias_sq += g * g
        self.bias += lr * g / math.sqrt(1.0 + self.bias_sq)
        for k, v in feats.values.items():
            gv = g * v
            sq = self.grad_sq.get(k, 0.0) + gv * gv
            self.grad_sq[k] = sq
            self.weights[k] = self.weights.get(k, 0.0) + lr * gv / math.sqrt(1.0 + sq)
        assert self.memory is not None
        self.memory.add(feats.content, is_negative)
        self.decisions += 1

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
