"""The shared admin commands' parsing: what an admin may type and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import build_runtime
from bot.settings import Settings
from handlers.commands import (
    ADMIN_COMMANDS,
    MAX_COMPETITORS,
    _mentions_line,
    parse_competitors,
    parse_sensitivity,
)
from tests.core_helpers import KeywordJudge


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


async def test_a_setting_changed_on_another_replica_takes_effect_here(tmp_path: Path) -> None:
    """Two replicas share the database: an admin's change on one reaches the other at
    its next settings reload, and so does going back to the default."""
    url = f"sqlite:///{tmp_path}/replicas.db"
    settings = Settings(DATABASE_URL=url, _env_file=None)  # type: ignore[call-arg]
    async with (
        build_runtime(settings, judge=KeywordJudge(), start_workers=False) as a,
        build_runtime(settings, judge=KeywordJudge(), start_workers=False) as b,
    ):
        await a.core.set_sensitivity("slack", "T1", 0.9)
        await a.core.set_competitors("slack", "T1", ["Globex"])
        assert (await b.core.community_settings("slack", "T1")).sensitivity == 0.5
        assert await b.core.reload_settings() == 1
        here = await b.core.community_settings("slack", "T1")
        assert here.sensitivity == 0.9 and here.competitors == ("Globex",)
        assert await b.core.reload_settings() == 0  # nothing new
        await a.core.set_sensitivity("slack", "T1", None)
        await a.core.set_competitors("slack", "T1", None)
        await b.core.reload_settings()
        back = await b.core.community_settings("slack", "T1")
        assert back.sensitivity == 0.5 and back.competitors_are_default


async def test_a_reload_does_not_undo_an_admin_change_made_while_it_waits(tmp_path: Path) -> None:
    """The reload waits for pending writes; an admin's change on this replica during
    that wait must survive it (not come back only at the next tick)."""
    import asyncio
    from datetime import UTC, datetime

    from storage import queries

    settings = Settings(_env_file=None, DATABASE_URL=f"sqlite:///{tmp_path}/r.db")  # type: ignore[call-arg]
    async with build_runtime(settings, judge=KeywordJudge(), start_workers=False) as rt:
        core = rt.core
        await core.set_competitors("discord", "g1", ["OldCo"])
        await core.reload_settings()
        now = datetime(2026, 1, 5, tzinfo=UTC)
        await rt.db.run(  # another replica changes this community's sensitivity
            lambda s: queries.set_community_setting(s, "discord", "g1", "sensitivity", 0.7, now)
        )
        gate, entered = asyncio.Event(), asyncio.Event()
        real_flush = core.flush
        calls = 0

        async def slow_first_flush() -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                entered.set()
                await gate.wait()
            await real_flush()

        core.flush = slow_first_flush  # type: ignore[method-assign]
        tick = asyncio.create_task(core.reload_settings())
        await entered.wait()
        await core.set_competitors("discord", "g1", ["NewCo"])  # an admin on this replica
        gate.set()
        await tick
        here = await core.community_settings("discord", "g1")
        assert here.competitors == ("NewCo",) and here.sensitivity == 0.7
