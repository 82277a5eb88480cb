"""``rapport eval-detector`` as a user runs it: a subprocess, its exit code and its output."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from bot.sandbox.openai_emulator import OpenAIEmulator

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
