"""``rapport eval-detector`` as a user runs it: a subprocess, its exit code and its output."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from bot.sandbox.openai_emulator import OpenAIEmulator
from handlers.detect.evaluate import read_labelled_csv

ROWS = [
    ("Third week waiting for my refund and nobody answers my emails", "neg"),
    ("The app crashes every time I open settings since the update", "neg"),
    ("Charged twice this month, support ignores me", "neg"),
    ("Love the new dark mode, great work team", "pos"),
    ("How do I export my data to CSV?", "neutral"),
    ("this boss fight is brutal lol", "neutral"),
    ("Is the shop open on Sundays?", "neutral"),
    ("meh, the update is kind of slow I guess", "neg"),
]
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "DISCORD_", "SLACK_"))}


def _csv(
    path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("body", "label")
) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _eval(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "eval-detector", *args],
        cwd=cwd,
        env={**CLEAN, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_last_line_is_the_json_interface(tmp_path: Path) -> None:
    path = _csv(tmp_path / "data.csv", ROWS)
    proc = _eval(
        [
            str(path),
            "--text-column",
            "body",
            "--label-column",
            "label",
            "--positive",
            "neg",
            "--feedback",
            "2",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result) >= {
        "n",
        "precision",
        "recall",
        "f1",
        "macro_f1",
        "msgs_per_s",
        "feedback",
        "llm_share",
    }
    assert result["n"] == len(ROWS) - 2
    assert result["feedback"] == 2
    assert result["llm_share"] == 0.0


def test_missing_column_and_empty_file_are_one_clear_line(tmp_path: Path) -> None:
    path = _csv(tmp_path / "data.csv", ROWS)
    proc = _eval(
        [str(path), "--text-column", "text", "--label-column", "label", "--positive", "neg"],
        tmp_path,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "text" in proc.stderr
    empty = _csv(tmp_path / "empty.csv", [])
    proc = _eval(
        [str(empty), "--text-column", "body", "--label-column", "label", "--positive", "neg"],
        tmp_path,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    proc = _eval(
        [
            str(tmp_path / "nope.csv"),
            "--text-column",
            "body",
            "--label-column",
            "label",
            "--positive",
            "neg",
        ],
        tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


async def test_llm_flag_sends_borderline_rows_to_the_configured_llm(tmp_path: Path) -> None:
    path = _csv(tmp_path / "data.csv", ROWS * 3)
    verdict = json.dumps(
        {"is_complaint": True, "reason": "other", "severity": "low", "rationale": "emulated judge"}
    )
    async with OpenAIEmulator(default_answer=verdict) as llm:
        env = {"LLM_BASE_URL": llm.base_url, "LLM_API_KEY": "sk-test", "LLM_MODEL": "m"}
        import asyncio

        proc = await asyncio.to_thread(
            _eval,
            [
                str(path),
                "--text-column",
                "body",
                "--label-column",
                "label",
                "--positive",
                "neg",
                "--llm",
            ],
            tmp_path,
            env,
        )
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        sent = len(llm.requests)
    assert 0.0 < result["llm_share"] < 1.0
    assert sent == round(result["llm_share"] * result["n"])


def test_a_label_that_looks_like_rich_markup_is_printed_not_parsed(tmp_path: Path) -> None:
    path = _csv(tmp_path / "data.csv", [("the app crashed again", "[/neg]"), ("love it", "[b]")])
    proc = _eval(
        [str(path), "--text-column", "body", "--label-column", "label", "--positive", "[/neg]"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-400:]
    assert "'[/neg]'" in proc.stdout
    assert json.loads(proc.stdout.strip().splitlines()[-1])["n"] == 2


def test_rows_without_a_label_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "missing.csv"
    path.write_text(
        "body,label\n"
        '"Charged twice, no refund",neg\n'
        '"love it",pos\n'
        '"the app keeps crashing"\n'  # label field missing
        '"still waiting",\n'  # label empty
        '"where is my parcel","  "\n',  # label blank
        encoding="utf-8",
    )
    proc = _eval(
        [str(path), "--text-column", "body", "--label-column", "label", "--positive", "neg"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["n"] == 2 and summary["skipped_unlabelled"] == 3
    assert "3 rows without a label skipped" in "\n".join(lines[:-1])
    # A fully labelled file says 0 and prints no such note.
    full = _csv(tmp_path / "full.csv", ROWS)
    proc = _eval(
        [str(full), "--text-column", "body", "--label-column", "label", "--positive", "neg"],
        tmp_path,
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1])["skipped_unlabelled"] == 0
    assert "without a label" not in proc.stdout


def test_a_file_without_any_label_is_refused_in_one_line(tmp_path: Path) -> None:
    path = _csv(tmp_path / "unlabelled.csv", [("the app keeps crashing", ""), ("love it", " ")])
    proc = _eval(
        [str(path), "--text-column", "body", "--label-column", "label", "--positive", "neg"],
        tmp_path,
    )
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "no labelled rows" in err and "Traceback" not in err


def test_a_text_field_longer_than_the_csv_default_limit_is_read(tmp_path: Path) -> None:
    long_text = "still no refund, " * 9000  # ~153k characters, over csv's 131,072 default
    path = _csv(tmp_path / "long.csv", [(long_text, "neg"), ("love it", "pos")])
    proc = _eval(
        [str(path), "--text-column", "body", "--label-column", "label", "--positive", "neg"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr.strip()
    assert json.loads(proc.stdout.strip().splitlines()[-1])["n"] == 2
    # In process: the rows come back whole and the csv module's limit is left as it was.
    before = csv.field_size_limit()
    labelled = read_labelled_csv(path, "body", "label", "neg")
    assert labelled.rows[0] == (long_text, True) and labelled.skipped_unlabelled == 0
    assert csv.field_size_limit() == before
