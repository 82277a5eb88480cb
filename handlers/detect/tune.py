"""Check feedback settings on the project's own seed, leaving one domain out at a time.

For each seed domain: fit the shared model on the other domains, replay the first part
of the held-out domain as managers' decisions (as ``evaluate.replay_feedback`` does) and
score the rest, before and after. This is how ``FeedbackConfig``'s defaults were chosen;
no evaluation file takes part. Run ``python -m handlers.detect.tune [key=value ...]``.
"""

from __future__ import annotations

import random
import sys
from dataclasses import fields, replace
from typing import Any

from handlers.detect.evaluate import replay_feedback
from handlers.detect.feedback import FeedbackConfig
from handlers.detect.lexicon import load_vader_lexicon
from handlers.detect.model import Detector, fit, load_seed_domains


def _macro_f1(pred: list[bool], gold: list[bool]) -> float:
    def f1(pos: bool) -> float:
        tp = sum(p == pos and g == pos for p, g in zip(pred, gold, strict=True))
        fp = sum(p == pos and g != pos for p, g in zip(pred, gold, strict=True))
        fn = sum(p != pos and g == pos for p, g in zip(pred, gold, strict=True))
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0

    return (f1(True) + f1(False)) / 2


def run(config: FeedbackConfig, *, share: float = 0.6, repeats: int = 3) -> list[str]:
    """Per-domain macro-F1 without and with replayed feedback, as printable lines."""
    valence = load_vader_lexicon()
    rows = load_seed_domains()
    domains = sorted({d for d, _, _ in rows})
    lines = []
    before_all: list[float] = []
    after_all: list[float] = []
    for dom in domains:
        held = [(t, y) for d, t, y in rows if d == dom]
        if len(held) < 40 or sum(y for _, y in held) < 10:
            continue
        base = fit([(t, y) for d, t, y in rows if d != dom], valence)
        b_sum = a_sum = 0.0
        for r in range(repeats):
            data = held[:]
            random.Random(r).shuffle(data)
            cut = int(len(data) * share)
            train, test = data[:cut], data[cut:]
            gold = [y for _, y in test]
            plain = Detector(base, valence, feedback=config)
            b_sum += _macro_f1([plain.judge(t, "c").is_negative for t, _ in test], gold)
            tuned = Detector(base, valence, feedback=config)
            replay_feedback(tuned, train, "c")
            a_sum += _macro_f1([tuned.judge(t, "c").is_negative for t, _ in test], gold)
        before, after = b_sum / repeats, a_sum / repeats
        before_all.append(before)
        after_all.append(after)
        lines.append(f"{dom:<10}{len(held):>5}{before:>8.3f}{after:>8.3f}")
    n = len(before_all)
    lines.append(f"{'mean':<10}{'':>5}{sum(before_all) / n:>8.3f}{sum(after_all) / n:>8.3f}")
    return lines


def main(argv: list[str]) -> None:
    kinds = {f.name: f.type for f in fields(FeedbackConfig)}
    overrides: dict[str, Any] = {}
    for arg in argv[1:]:
        key, _, value = arg.partition("=")
        if key not in kinds:
            raise SystemExit(f"unknown setting {key!r}; known: {', '.join(kinds)}")
        overrides[key] = int(value) if kinds[key] in ("int", int) else float(value)
    config = replace(FeedbackConfig(), **overrides)
    print(f"{'domain':<10}{'n':>5}{'before':>8}{'after':>8}")
    for line in run(config):
        print(line)


if __name__ == "__main__":
    main(sys.argv)
