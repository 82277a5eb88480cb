"""The shared admin commands' parsing: what an admin may type and what is refused."""

from __future__ import annotations

import pytest

from handlers.commands import (
    ADMIN_COMMANDS,
    MAX_COMPETITORS,
    _mentions_line,
    parse_competitors,
    parse_sensitivity,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.4", 0.4), (" 40% ", 0.4), ("0.05", 0.05), ("default", None), ("RESET", None)],
)
def test_sensitivity_values_an_admin_may_type(text: str, expected: float | None) -> None:
    assert parse_sensitivity(text) == expected


@pytest.mark.parametrize("text", ["loud", "0", "1", "0.99", "-0.3", "50", "nan", "%"])
def test_sensitivity_values_that_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_sensitivity(text)


def test_competitor_lists() -> None:
    assert parse_competitors(" Globex, Initech ,, Globex") == ["Globex", "Initech"]
    assert parse_competitors("none") == [] and parse_competitors("clear") == []
    assert parse_competitors("default") is None
    with pytest.raises(ValueError, match="at most"):
        parse_competitors(",".join(f"Brand{i}" for i in range(MAX_COMPETITORS + 1)))
    with pytest.raises(ValueError, match="longer"):
        parse_competitors("x" * 101)


def test_every_command_name_is_unique_and_usable_as_a_discord_name() -> None:
    names = [c.name for c in ADMIN_COMMANDS]
    assert len(set(names)) == len(names)
    assert all(n.islower() and n.isalpha() and len(n) <= 32 for n in names)
    assert {c.usage for c in ADMIN_COMMANDS} >= {"status", "sensitivity [value]"}


def test_mention_summary_lists_every_name_with_its_sentiments() -> None:
    counts = [("Globex", "negative", 1), ("Globex", "positive", 2), ("Umbrella", "neutral", 1)]
    assert _mentions_line(("Initech", "Globex"), counts) == (
        "Mentions in the last 7 days: Globex 3 (2 positive, 1 negative); Initech none; "
        "Umbrella 1 (1 neutral)."
    )
