"""Reason taxonomy, severity rules and the one-line rationale for a verdict.

The categories fit most brands (a game studio, a bank, an airline, a SaaS tool), so a
flags channel can be filtered and the weekly digest can count reasons across brands.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from handlers.detect.features import Features

REASONS: Final[tuple[str, ...]] = (
    "product_defect",
    "delivery_delay",
    "billing_refund",
    "account_access",
    "customer_service",
    "pricing",
    "cancellation",
    "safety",
    "other",
)
SEVERITIES: Final[tuple[str, ...]] = ("low", "medium", "high")

# Which cue groups point at which reason, and how strongly. Specific topics (refund,
# login) outweigh generic ones (waiting, support) so "waiting for my refund, no reply"
# is a billing problem that support is slow on, not the reverse.
_REASON_WEIGHTS: Final[Mapping[str, tuple[tuple[str, float], ...]]] = {
    "safety": (("safety", 3.0),),
    "billing_refund": (("billing", 2.2),),
    "cancellation": (("cancel", 1.8), ("topic_cancel", 1.5)),
    "account_access": (("access", 1.8), ("topic_access", 2.0)),
    "delivery_delay": (
        ("delay", 1.0),
        ("delivery", 0.8),
        ("notrecv", 1.0),
        ("duration", 0.3),
    ),
    "product_defect": (("defect", 1.1), ("notwork", 1.3), ("negaction", 0.3)),
    "customer_service": (("service", 0.7), ("noreply", 1.0), ("hold", 1.2), ("nobody", 0.5)),
    "pricing": (("pricing", 1.2),),
}

# Short human labels for evidence groups that have no good surface text of their own.
_LABEL_PRIORITY: Final[Mapping[str, int]] = {
    "safety": 0,
    "legal": 1,
    "billing": 2,
    "cancel": 2,
    "access": 2,
    "topic_access": 2,
    "notrecv": 2,
    "notwork": 2,
    "defect": 3,
    "duration": 3,
    "attempts": 3,
    "repeat": 3,
    "noreply": 3,
    "hold": 3,
    "delay": 4,
    "pricing": 4,
    "strong": 4,
    "churn": 4,
    "sarcasm": 5,
    "negpraise": 5,
    "negaction": 5,
    "blame": 6,
    "rhetorical": 6,
    "emotion": 6,
    "expect": 6,
    "persist": 7,
    "nobody": 7,
    "demand": 7,
    "service": 8,
}


def reason_for(feats: Features) -> str:
    """Pick the taxonomy reason whose cue groups fired most strongly."""
    groups = feats.groups
    best = "other"
    best_score = 0.0
    for reason, weights in _REASON_WEIGHTS.items():
        s = 0.0
        for g, w in weights:
            c = groups.get(g)
            if c:
                s += w * (1.0 if c == 1 else 1.3)
        if reason == "delivery_delay" and feats.hours > 0 and s > 0:
            s += 0.3
        if s > best_score:
            best, best_score = reason, s
    return best


def severity_for(feats: Features, score: float, threshold: float) -> str:
    """Severity of a complaint: high when unsafe, legal, furious, long or repeated."""
    g = feats.groups
    if "safety" in g or "legal" in g:
        return "high"
    points = 0
    if "strong" in g or "negpraise" in g:
        points += 1
    if "churn" in g:
        points += 1
    if feats.hours >= 24:
        points += 1
    if feats.attempts >= 3 or ("repeat" in g and feats.attempts >= 2):
        points += 1
    if feats.shouting or feats.values.get("#excl", 0.0) > 1.0:
        points += 1
    if score >= 0.9:
        points += 1
    if points >= 3:
        return "high"
    if points >= 1 or score >= threshold + 0.2:
        return "medium"
    return "low"


def rationale_for(feats: Features, is_negative: bool, limit: int = 3) -> str:
    """A few words a manager can read at a glance, e.g. "refund + 3 weeks + no reply"."""
    if is_negative:
        candidates = sorted(
            (rank, pos, group, surface)
            for pos, (group, surface) in enumerate(feats.evidence)
            if (rank := _LABEL_PRIORITY.get(group)) is not None
        )
        picked: list[tuple[int, str]] = []
        seen_groups: set[str] = set()
        for _rank, pos, group, surface in candidates:
            if len(picked) == limit:
                break
            if group in seen_groups and group not in ("duration", "attempts"):
                continue
            # "no reply" as a phrase makes the bare "reply" it contains redundant.
            if any(surface in other or other in surface for _, other in picked):
                continue
            seen_groups.add(group)
            picked.append((pos, surface))
        if not picked:
            return "negative tone"
        picked.sort()
        return " + ".join(surface for _, surface in picked)
    g = feats.groups
    weak = [s for grp, s in feats.evidence if grp in _LABEL_PRIORITY and grp != "service"]
    if weak and not ("praise" in g or "positive" in g or "resolved" in g):
        return "weak complaint cues: " + ", ".join(dict.fromkeys(weak[:limit]))
    if "praise" in g or "positive" in g:
        return "thanks/praise"
    if "resolved" in g:
        return "problem resolved"
    if feats.is_question:
        return "question without complaint cues"
    if "laugh" in g:
        return "banter"
    return "no complaint cues"
