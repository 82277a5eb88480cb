"""Check feedback settings on the project's own seed, leaving one domain out at a time.

For each seed domain: fit the shared model on the other domains, replay the first part
of the held-out domain as managers' decisions (as ``evaluate.replay_feedback`` does) and
score the rest, before and after. This is how ``FeedbackConfig``'s defaults were chosen;
no evaluation file takes part. Run ``python -m handlers.detect.tune [key=value ...]``;
``python -m handlers.detect.tune threshold`` does the same for the decision threshold.
"""

from __future__ import annotations

import random
import sys
from dataclasses import fields, replace
from typing import Any

from handlers.detect.evaluate import prediction_scores, replay_feedback
from handlers.detect.feedback import FeedbackConfig
from handlers.detect.lexicon import load_vader_lexicon
from handlers.detect.model import Detector, fit, load_seed_domains


def _macro_f1(pred: list[bool], gold: list[bool]) -> float:
    return prediction_scores(pred, gold, digits=None)["macro_f1"]


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


def threshold_cv(thresholds: tuple[float, ...] = (0.35, 0.4, 0.45, 0.5, 0.55, 0.6)) -> list[str]:
    """Mean macro-F1 over held-out seed domains for each decision threshold.

    A community is one domain, so this scores the mean over held-out domains (not the
    pooled rows). ``DEFAULT_THRESHOLD`` is checked against it; no evaluation file takes
    part.
    """
    valence = load_vader_lexicon()
    rows = load_seed_domains()
    scored: list[tuple[list[float], list[bool]]] = []
    for dom in sorted({d for d, _, _ in rows}):
        test = [(t, y) for d, t, y in rows if d == dom]
        if len({y for _, y in test}) < 2:
            continue
        detector = Detector(fit([(t, y) for d, t, y in rows if d != dom], valence), valence)
        scored.append(([detector.judge(t).score for t, _ in test], [y for _, y in test]))
    lines = []
    for th in thresholds:
        per = [_macro_f1([p >= th for p in ps], gold) for ps, gold in scored]
        lines.append(f"threshold {th:.2f}: mean held-out macro-F1 {sum(per) / len(per):.4f}")
    return lines


def main(argv: list[str]) -> None:
    if argv[1:] == ["threshold"]:
        for line in threshold_cv():
            print(line)
        return
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
