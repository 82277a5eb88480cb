"""Benchmark: how much a community's feedback can teach the detector, by amount.

Usage: python bench/detector_feedback.py [CSV]  (default ../shared/data/airline_dev.csv
beside the repository, label column airline_sentiment, positive class "negative").

For each amount N, a fresh detector replays the file's first N rows as managers'
decisions through the same path as the Slack buttons (``evaluate.replay_feedback``,
the path ``eval-detector --feedback N`` takes) and is then scored on the same last
4,000 rows, so the amounts compare like with like. Nothing fitted here is saved: the
community layer lives in memory and is dropped with the run. The last printed line is
one JSON object. Each live decision refits the community layer (bounded work per
click), so the whole run takes about 11 minutes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from handlers.detect import Detector, evaluate, load_labelled_csv  # noqa: E402

DEFAULT_CSV = REPO / ".." / "shared" / "data" / "airline_dev.csv"
SCORED = 4000
AMOUNTS = (0, 300, 1000, 2500)


def main(argv: list[str]) -> None:
    path = Path(argv[1]) if len(argv) > 1 else DEFAULT_CSV
    rows = load_labelled_csv(path, "text", "airline_sentiment", "negative")
    if len(rows) <= SCORED:
        raise SystemExit(f"{path.name} has {len(rows)} rows; this bench needs more than {SCORED}")
    scored = rows[-SCORED:]
    amounts = [n for n in AMOUNTS if n <= len(rows) - SCORED]
    summary: dict[str, float | int] = {"scored_rows": SCORED}
    print(f"scored on the last {SCORED} of {len(rows)} rows of {path.name}")
    print(f"{'feedback rows':>14}{'precision':>10}{'recall':>8}{'macro-F1':>10}")
    for n in amounts:
        result = evaluate(rows[:n] + scored, Detector.default(), n)
        print(
            f"{n:>14,}{result['precision']:>10.3f}{result['recall']:>8.3f}{result['macro_f1']:>10.3f}"
        )
        summary[f"fb{n}_precision"] = result["precision"]
        summary[f"fb{n}_recall"] = result["recall"]
        summary[f"fb{n}_macro_f1"] = result["macro_f1"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main(sys.argv)
