"""Measure the detector on a labelled file, replaying feedback as managers would.

Used by ``rapport eval-detector`` and ``bench/detector.py``. Feedback replay mirrors the
Slack buttons: a flagged negative is confirmed, a flagged non-negative is dismissed, a
missed negative is flagged by hand, and an unflagged non-negative needs no action.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handlers.detect.llm import LlmJudge, LlmStats, judge_with_llm
from handlers.detect.model import Detector

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)``."""


class EvalInputError(Exception):
    """The labelled file cannot be used; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class LabelledRows:
    """Rows of ``(text, label == positive)`` and how many rows had no label (left out)."""

    rows: list[tuple[str, bool]]
    skipped_unlabelled: int = 0


# The csv module stores its limit in a C long; 2**31 - 1 fits on every platform.
_MAX_FIELD_LIMIT = 2**31 - 1


@contextmanager
def _field_size_limit(limit: int) -> Iterator[None]:
    """Let the csv module read fields up to ``limit`` characters, then restore its limit.

    The limit is process-wide state of the csv module (131,072 by default); it is raised
    only while one file is read, so other code keeps the default.
    """
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, min(limit, _MAX_FIELD_LIMIT)))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def read_labelled_csv(
    path: Path, text_column: str, label_column: str, positive: str
) -> LabelledRows:
    """Read a labelled CSV; raises ``EvalInputError`` on bad input.

    A row whose label is missing or blank cannot be scored either way: it is left out
    and counted in ``skipped_unlabelled`` (not scored as "not positive"). A file with no
    labelled row at all is refused.
    """
    if not path.is_file():
        raise EvalInputError(f"file not found: {path}")
    skipped = 0
    rows: list[tuple[str, bool]] = []
    try:
        # No field can be longer than the file itself, so a valid file always fits.
        with (
            _field_size_limit(path.stat().st_size + 1),
            path.open(newline="", encoding="utf-8-sig") as fh,
        ):
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            if not columns:
                raise EvalInputError(f"{path} is empty")
            for col in (text_column, label_column):
                if col not in columns:
                    raise EvalInputError(
                        f"column {col!r} not in {path.name}; available: {', '.join(columns)}"
                    )
            for row in reader:
                label = (row[label_column] or "").strip()
                if not label:
                    skipped += 1
                    continue
                rows.append((row[text_column] or "", label == positive))
    except UnicodeDecodeError as exc:
        raise EvalInputError(f"{path} is not UTF-8 text: {exc.reason}") from exc
    except csv.Error as exc:
        raise EvalInputError(f"{path} is not valid CSV: {exc}") from exc
    if not rows and not skipped:
        raise EvalInputError(f"{path} has a header but no rows")
    if not rows:
        raise EvalInputError(
            f"{path} has no labelled rows: column {label_column!r} is empty in all {skipped} rows"
        )
    return LabelledRows(rows, skipped)


def load_labelled_csv(
    path: Path, text_column: str, label_column: str, positive: str
) -> list[tuple[str, bool]]:
    """Rows of ``(text, label == positive)``; raises ``EvalInputError`` on bad input.

    Rows without a label are left out (``read_labelled_csv`` also says how many).
    """
    return read_labelled_csv(path, text_column, label_column, positive).rows


def _scores(tp: int, fp: int, fn: int, tn: int, digits: int | None = 4) -> dict[str, float]:
    def f1(p: float, r: float) -> float:
        return 2 * p * r / (p + r) if p + r else 0.0

    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    neg_precision = tn / (tn + fn) if tn + fn else 0.0
    neg_recall = tn / (tn + fp) if tn + fp else 0.0
    f1_pos = f1(precision, recall)
    out = {
        "precision": precision,
        "recall": recall,
        "f1": f1_pos,
        "macro_f1": (f1_pos + f1(neg_precision, neg_recall)) / 2,
    }
    return out if digits is None else {k: round(v, digits) for k, v in out.items()}


def prediction_scores(
    pred: Sequence[bool], gold: Sequence[bool], *, digits: int | None = 4
) -> dict[str, float]:
    """Precision, recall and F1 of the positive class, and macro-F1 over both classes."""
    tp = sum(p and g for p, g in zip(pred, gold, strict=True))
    fp = sum(p and not g for p, g in zip(pred, gold, strict=True))
    fn = sum(g and not p for p, g in zip(pred, gold, strict=True))
    return _scores(tp, fp, fn, len(gold) - tp - fp - fn, digits)


def replay_feedback(
    detector: Detector, rows: Sequence[tuple[str, bool]], community_id: str
) -> dict[str, int]:
    """Feed ``rows`` through ``detector.learn`` exactly as managers' buttons would."""
    counts = {"confirmed": 0, "dismissed": 0, "manual_flag": 0, "no_action": 0}
    for text, label in rows:
        flagged = detector.judge(text, community_id).is_negative
        if flagged and label:
            counts["confirmed"] += 1
            detector.learn(community_id, text, True)
        elif flagged:
            counts["dismissed"] += 1
            detector.learn(community_id, text, False)
        elif label:
            counts["manual_flag"] += 1
            detector.learn(community_id, text, True)
        else:
            counts["no_action"] += 1
    return counts


async def evaluate_async(
    rows: Iterable[tuple[str, bool]],
    detector: Detector,
    feedback_n: int = 0,
    community_id: str = "eval",
    progress: Progress | None = None,
    llm_judge: LlmJudge | None = None,
) -> dict[str, Any]:
    """As ``evaluate``, awaiting the LLM judge for borderline messages."""
    data = list(rows)
    feedback_rows = data[:feedback_n]
    test_rows = data[feedback_n:]
    fb_counts = replay_feedback(detector, feedback_rows, community_id)
    stats = LlmStats()
    tp = fp = fn = tn = 0
    total = len(test_rows)
    step = max(1, total // 100)
    local_seconds = 0.0
    for i, (text, label) in enumerate(test_rows):
        if llm_judge is None:
            t0 = time.perf_counter()
            flagged = detector.judge(text, community_id).is_negative
            local_seconds += time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            detector.judge(text, community_id)
            local_seconds += time.perf_counter() - t0
            verdict = await judge_with_llm(
                detector, llm_judge, text, community_id=community_id, stats=stats
            )
            flagged = verdict.is_negative
        if flagged:
            if label:
                tp += 1
            else:
                fp += 1
        elif label:
            fn += 1
        else:
            tn += 1
        if progress is not None and (i % step == 0 or i + 1 == total):
            progress(i + 1, total)
    result: dict[str, Any] = {"n": total}
    result.update(_scores(tp, fp, fn, tn))
    result["msgs_per_s"] = round(total / local_seconds) if local_seconds > 0 else 0
    result["feedback"] = {"n": len(feedback_rows), **fb_counts}
    result["llm_share"] = round(stats.share, 4)
    return result


def evaluate(
    rows: Iterable[tuple[str, bool]],
    detector: Detector,
    feedback_n: int = 0,
    community_id: str = "eval",
    progress: Progress | None = None,
    llm_judge: LlmJudge | None = None,
) -> dict[str, Any]:
    """Precision, recall, F1 and macro-F1 on the rows after the first ``feedback_n``.

    ``msgs_per_s`` times the local detector alone (the LLM's latency is not the
    detector's). Returns keys n, precision, recall, f1, macro_f1, msgs_per_s,
    feedback, llm_share.
    """
    return asyncio.run(
        evaluate_async(rows, detector, feedback_n, community_id, progress, llm_judge)
    )
