"""Benchmark: VADER baseline vs Rapport's local detector on a labelled file.

Usage: python bench/detector.py [CSV]  (default ../shared/data/airline_dev.csv beside
the repository, label column airline_sentiment, positive class "negative").
The file is for evaluation only; nothing here fits anything on it. The last printed
line is one JSON object with every figure.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from handlers.detect import Detector, evaluate, load_labelled_csv  # noqa: E402
from handlers.detect.evaluate import prediction_scores  # noqa: E402

DEFAULT_CSV = REPO / ".." / "shared" / "data" / "airline_dev.csv"
FEEDBACK_N = 300


def vader_baseline(rows: list[tuple[str, bool]]) -> dict[str, float]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    sia = SentimentIntensityAnalyzer()
    t0 = time.perf_counter()
    pred = [sia.polarity_scores(text)["compound"] <= -0.05 for text, _ in rows]
    elapsed = time.perf_counter() - t0
    out = prediction_scores(pred, [g for _, g in rows])
    out["msgs_per_s"] = round(len(rows) / elapsed)
    return out


def main(argv: list[str]) -> None:
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT_CSV
    rows = load_labelled_csv(path, "text", "airline_sentiment", "negative")
    vader = vader_baseline(rows)
    rapport = evaluate(rows, Detector.default(), 0)
    fb = evaluate(rows, Detector.default(), FEEDBACK_N)
    print(f"{len(rows)} rows from {path.name}; positive class = negative")
    print(f"{'method':<24}{'precision':>10}{'recall':>8}{'F1':>8}{'macro-F1':>10}{'msgs/s':>10}")
    for name, m in (
        ("VADER compound<=-0.05", vader),
        ("Rapport", rapport),
        (f"Rapport +{FEEDBACK_N} feedback", fb),
    ):
        print(
            f"{name:<24}{m['precision']:>10.3f}{m['recall']:>8.3f}{m['f1']:>8.3f}"
            f"{m['macro_f1']:>10.3f}{m['msgs_per_s']:>10,}"
        )
    summary: dict[str, float | int] = {"n": len(rows)}
    for prefix, m in (("vader", vader), ("rapport", rapport), (f"rapport_fb{FEEDBACK_N}", fb)):
        for key in ("precision", "recall", "f1", "macro_f1", "msgs_per_s"):
            summary[f"{prefix}_{key}"] = m[key]
    summary[f"rapport_fb{FEEDBACK_N}_n"] = fb["n"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv)
