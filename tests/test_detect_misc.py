"""Competitor tagging and the evaluation helpers (loader errors, feedback replay)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.eval_command import eval_detector_command
from handlers.detect import CompetitorWatch, Detector, EvalInputError, evaluate, load_labelled_csv
from handlers.detect.lexicon import load_vader_lexicon


@pytest.fixture(scope="module")
def watch() -> CompetitorWatch:
    return CompetitorWatch(["Globex", "Initech Cloud", "  "], load_vader_lexicon())


def test_competitor_mentions_are_whole_words_case_insensitive(watch: CompetitorWatch) -> None:
    found = watch.find("globex is great, but Globexia is not a competitor")
    assert [(m.name, m.start) for m in found] == [("Globex", 0)]
    assert watch.find("nothing to see") == []
    assert [m.name for m in watch.find("moved from INITECH CLOUD")] == ["Initech Cloud"]


@pytest.mark.parametrize(
    ("text", "sentiment"),
    [
        ("honestly Globex is so much better and cheaper", "positive"),
        ("Globex support was awful, terrible app", "negative"),
        ("does anyone here also use Globex?", "neutral"),
        ("Globex is not good at all", "negative"),
    ],
)
def test_competitor_sentiment(watch: CompetitorWatch, text: str, sentiment: str) -> None:
    (mention,) = watch.find(text)
    assert mention.sentiment == sentiment, mention


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_loader_reads_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "body,label\nmy order never came,bad\nthanks!,good\n")
    assert load_labelled_csv(path, "body", "label", "bad") == [
        ("my order never came", True),
        ("thanks!", False),
    ]


def test_loader_names_a_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path, "body,label\nx,y\n")
    with pytest.raises(EvalInputError) as err:
        load_labelled_csv(path, "text", "label", "bad")
    assert "'text'" in str(err.value) and "body, label" in str(err.value)
    assert "\n" not in str(err.value)


def test_loader_rejects_empty_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(EvalInputError, match="empty"):
        load_labelled_csv(write(tmp_path, ""), "text", "label", "bad")
    with pytest.raises(EvalInputError, match="no rows"):
        load_labelled_csv(write(tmp_path, "text,label\n"), "text", "label", "bad")
    with pytest.raises(EvalInputError, match="not found"):
        load_labelled_csv(tmp_path / "nope.csv", "text", "label", "bad")


ROWS = [
    ("the app is broken again and support ignores me", True),
    ("love the new update, thanks", False),
    ("refund still not here after 3 weeks", True),
    ("how do I export my data?", False),
    ("my package never arrived and no one replies", True),
    ("great job on the launch", False),
]


def test_evaluate_reports_all_keys_and_replays_feedback() -> None:
    result = evaluate(ROWS, Detector.default(), feedback_n=2)
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
    assert result["n"] == 4
    assert result["feedback"]["n"] == 2
    assert result["feedback"]["confirmed"] + result["feedback"]["manual_flag"] == 1
    assert result["macro_f1"] == 1.0
    assert result["llm_share"] == 0.0


def test_feedback_replay_uses_manager_buttons() -> None:
    detector = Detector.default()
    text = "the green is a bit darker than on the website"
    result = evaluate([(text, True), (text, True)], detector, feedback_n=1)
    assert result["feedback"]["manual_flag"] == 1
    assert result["recall"] == 1.0


def test_eval_command_prints_json_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "text,label\n" + "".join(f'"{t}",{int(y)}\n' for t, y in ROWS))
    eval_detector_command(path, "text", "label", "1", llm=True)
    out = capsys.readouterr().out.strip().splitlines()
    assert "no LLM configured" in out[0]
    summary = json.loads(out[-1])
    assert summary["n"] == len(ROWS)
    assert summary["feedback"] == 0  # rows replayed as decisions, a number
    assert set(summary["feedback_actions"]) == {
        "confirmed",
        "dismissed",
        "manual_flag",
        "no_action",
    }


def test_eval_command_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    path = write(tmp_path, "body,label\nx,1\n")
    with pytest.raises(typer.Exit) as exc:
        eval_detector_command(path, "text", "label", "1")
    assert exc.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'text'" in err


def test_a_competitor_named_in_two_cases_is_one_competitor_with_the_first_spelling() -> None:
    """Not hash order: every process must tag mentions with the same name, or the counts
    split across restarts."""
    watch = CompetitorWatch(["Globex", "GLOBEX", "globex", "Initech"], load_vader_lexicon())
    assert sorted(watch.names) == ["Globex", "Initech"]
    assert [m.name for m in watch.find("globex beats GLOBEX")] == ["Globex", "Globex"]
