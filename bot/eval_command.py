"""Body of ``rapport eval-detector``: measure the detector on a labelled CSV file.

The lead wires it into the Typer app; it prints a rich progress bar and a short table,
then the figures as one JSON object on the very last line (for scripts and CI): keys n,
precision, recall, f1, macro_f1, msgs_per_s, feedback (rows replayed as decisions),
feedback_actions, llm_share and skipped_unlabelled (rows with a missing or blank label,
left out of every figure; the table says so too). Errors are one line on stderr, exit
code 2 (a file where no row has a label is one of them).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from handlers.detect import Detector, EvalInputError, LlmJudge, evaluate
from handlers.detect.evaluate import read_labelled_csv

_PROGRESS_MIN_ROWS = 2000


def eval_detector_command(
    file: Path,
    text_column: str,
    label_column: str,
    positive: str,
    feedback: int = 0,
    llm: bool = False,
    llm_judge: Callable[[], LlmJudge | None] | None = None,
) -> None:
    """Evaluate the local detector (optionally with replayed feedback and an LLM judge).

    ``llm_judge`` is a factory for the configured LLM judge; it may return None when no
    LLM is configured, in which case the run is local only (llm_share 0.0).
    """
    out = Console()
    err = Console(stderr=True)
    try:
        labelled = read_labelled_csv(file, text_column, label_column, positive)
    except EvalInputError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    rows = labelled.rows
    skipped = labelled.skipped_unlabelled
    if feedback < 0 or feedback >= len(rows):
        err.print(
            f"error: --feedback must be between 0 and {len(rows) - 1} for {len(rows)} rows",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    judge: LlmJudge | None = None
    if llm:
        judge = llm_judge() if llm_judge is not None else None
        if judge is None:
            out.print("note: no LLM configured; evaluating the local detector only")
    detector = Detector.default()
    if len(rows) - feedback >= _PROGRESS_MIN_ROWS:
        with Progress(
            TextColumn("judging"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("judging", total=len(rows) - feedback)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = evaluate(rows, detector, feedback, progress=progress, llm_judge=judge)
    else:
        result = evaluate(rows, detector, feedback, llm_judge=judge)

    # User-provided strings (file name, label) go in as Text: never parsed as Rich markup.
    rows_word = "row" if skipped == 1 else "rows"
    table = Table(
        title=Text(f"detector on {file.name} (positive = {positive!r})"),
        caption=Text(f"{skipped:,} {rows_word} without a label skipped") if skipped else None,
    )
    for col in ("n", "precision", "recall", "F1", "macro-F1", "msgs/s", "feedback", "LLM share"):
        table.add_column(col, justify="right")
    table.add_row(
        str(result["n"]),
        f"{result['precision']:.3f}",
        f"{result['recall']:.3f}",
        f"{result['f1']:.3f}",
        f"{result['macro_f1']:.3f}",
        f"{result['msgs_per_s']:,}",
        str(result["feedback"]["n"]),
        f"{result['llm_share']:.1%}",
    )
    out.print(table)
    # Plain print: the last line must be exactly one JSON object, unwrapped by Rich.
    # "feedback" is the number of replayed decisions; the buttons' breakdown is beside it.
    actions = {k: v for k, v in result["feedback"].items() if k != "n"}
    summary = {
        **result,
        "feedback": result["feedback"]["n"],
        "feedback_actions": actions,
        "skipped_unlabelled": skipped,
    }
    print(json.dumps(summary, sort_keys=True))
