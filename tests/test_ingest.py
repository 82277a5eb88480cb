"""Ingestion: idempotent, edits, deletes, opt-outs, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.app import build_runtime
from bot.settings import Settings
from handlers.clock import ManualClock
from handlers.events import Author, MessageEvent, MessageKind, ReactionEvent
from storage.models import Flag, Member, Message
from tests.core_helpers import KeywordJudge, RecordingExecutor, message


def _settings(url: str) -> Settings:
    return Settings(DATABASE_URL=url, SLACK_MANAGERS="M1", _env_file=None)  # type: ignore[call-arg]


async def _count(rt, model) -> int:  # type: ignore[no-untyped-def]
    await rt.writer.flush()
    return await rt.db.run(  # type: ignore[no-any-return]
        lambda s: s.execute(select(func.count()).select_from(model)).scalar_one()
    )


async def test_same_message_many_times_concurrently_is_one_row(db_url: str) -> None:
    clock = ManualClock()
    async with (
        build_runtime(
            _settings(db_url), clock=clock, judge=KeywordJudge(), start_workers=False
        ) as rt1,
        build_runtime(
            _settings(db_url), clock=clock, judge=KeywordJudge(), start_workers=False
        ) as rt2,
    ):
        rng = random.Random(7)
        events = [message(f"hello number {i}", f"m{i}") for i in range(40)]
        deliveries = [e for e in events for _ in range(rng.randint(1, 4))]
        rng.shuffle(deliveries)
        cores = [rt1.core, rt2.core]
        await asyncio.gather(*(cores[i % 2].on_message(e) for i, e in enumerate(deliveries)))
        await rt2.writer.flush()
        assert await _count(rt1, Message) == 40
        members = await rt1.db.run(lambda s: s.scalars(select(Member)).all())
        assert len(members) == 1
        assert members[0].message_count == 40  # redeliveries are not counted again


async def test_edit_updates_and_delete_erases_text_and_flag(db_url: str) -> None:
    clock = ManualClock()
    async with build_runtime(
        _settings(db_url), clock=clock, judge=KeywordJudge(), start_workers=False
    ) as rt:
        rt.outbox.register(RecordingExecutor("slack"))
        await rt.core.on_message(message("my order arrived broken", "m1"))
        await rt.core.on_message(
            replace(
                message("my order arrived broken, want a refund", "m1"),
                kind=MessageKind.EDIT,
                edited_at=clock.advance(minutes=1),
            )
        )
        await rt.settle()
        row = await rt.db.run(lambda s: s.scalars(select(Message)).one())
        assert row.text == "my order arrived broken, want a refund"
        assert row.edited_at is not None
        flag = await rt.db.run(lambda s: s.scalars(select(Flag)).one())
        assert flag.quoted_text == "my order arrived broken, want a refund"  # the edited text

        await rt.core.on_message(replace(message("", "m1"), kind=MessageKind.DELETE))
        await rt.settle()
        row = await rt.db.run(lambda s: s.scalars(select(Message)).one())
        assert row.text == "" and row.deleted_at is not None and row.message_id == "m1"
        flag = await rt.db.run(lambda s: s.scalars(select(Flag)).one())
        assert flag.quoted_text == "" and flag.draft == ""


async def test_edit_and_delete_for_unseen_messages(db_url: str) -> None:
    async with build_runtime(
        _settings(db_url), clock=ManualClock(), judge=KeywordJudge(), start_workers=False
    ) as rt:
        await rt.core.on_message(replace(message("edited text", "x1"), kind=MessageKind.EDIT))
        await rt.core.on_message(replace(message("", "x2"), kind=MessageKind.DELETE))
        # The create that arrives after its delete must not bring the text back.
        await rt.core.on_message(message("secret that was deleted", "x2"))
        rows = {
            m.message_id: m for m in await rt.db.run(lambda s: s.scalars(select(Message)).all())
        }
        assert rows["x1"].text == "edited text" and rows["x1"].edited_at is not None
        assert rows["x2"].text == "" and rows["x2"].deleted_at is not None


async def test_opted_out_member_is_not_stored_and_opt_out_erases(db_url: str) -> None:
    async with build_runtime(
        _settings(db_url), clock=ManualClock(), judge=KeywordJudge(), start_workers=False
    ) as rt:
        await rt.core.on_message(message("before opting out", "a1", author="u9"))
        await rt.core.set_opt_out("discord", "g1", "u9", True)
        await rt.core.on_message(message("after opting out", "a2", author="u9"))
        await rt.core.on_message(message("someone else", "a3", author="u2"))
        await rt.writer.flush()
        rows = {
            m.message_id: m for m in await rt.db.run(lambda s: s.scalars(select(Message)).all())
        }
        assert set(rows) == {"a1", "a3"}
        assert rows["a1"].text == ""
    # The opt-out survives a restart.
    async with build_runtime(
        _settings(db_url), clock=ManualClock(), judge=KeywordJudge(), start_workers=False
    ) as rt:
        await rt.core.on_message(message("still opted out", "a4", author="u9"))
        assert await _count(rt, Message) == 2


async def test_competitor_mentions_are_tagged_and_follow_deletes(db_url: str) -> None:
    from storage.models import CompetitorMention

    settings = Settings(  # type: ignore[call-arg]
        DATABASE_URL=db_url, RAPPORT_COMPETITORS="Globex, Initech", _env_file=None
    )
    async with build_runtime(
        settings, clock=ManualClock(), judge=KeywordJudge(), start_workers=False
    ) as rt:
        await rt.core.on_message(message("honestly Globex is better and cheaper", "c1"))
        await rt.core.on_message(message("Initech is terrible, the worst", "c2"))
        await rt.core.on_message(message("Initech is terrible, the worst", "c2"))  # again
        await rt.core.on_message(message("no competitors here", "c3"))
        await rt.core.set_competitors("discord", "g2", ["Umbrella"])
        await rt.core.on_message(message("Globex? Umbrella is great", "c4", community="g2"))
        await rt.writer.flush()
        rows = await rt.db.run(lambda s: list(s.scalars(select(CompetitorMention))))
        tags = sorted((r.message_id, r.competitor, r.sentiment) for r in rows)
        assert tags == [
            ("c1", "Globex", "positive"),
            ("c2", "Initech", "negative"),
            ("c4", "Umbrella", "positive"),
        ]
        week = await rt.core.competitor_mentions("discord", "g1")
        assert sorted(week) == [("Globex", "positive", 1), ("Initech", "negative", 1)]
        old = datetime(2025, 12, 20, 9, 0, tzinfo=UTC)  # 16 days before the clock
        await rt.core.on_message(message("Globex is terrible", "c0", at=old))
        assert await rt.core.competitor_mentions("discord", "g1") == week
        assert len(await rt.core.competitor_mentions("discord", "g1", days=30)) == 3
        await rt.core.on_message(replace(message("", "c0"), kind=MessageKind.DELETE))
        await rt.core.on_message(replace(message("", "c2"), kind=MessageKind.DELETE))
        await rt.writer.flush()
        left = await rt.db.run(
            lambda s: [r.message_id for r in s.scalars(select(CompetitorMention))]
        )
        assert sorted(left) == ["c1", "c4"]
    # The community's own list survives a restart.
    async with build_runtime(
        settings, clock=ManualClock(), judge=KeywordJudge(), start_workers=False
    ) as rt:
        await rt.core.on_message(message("Umbrella and Globex both", "c5", community="g2"))
        await rt.writer.flush()
        names: list[str] = await rt.db.run(
            lambda s: [
                r.competitor for r in s.scalars(select(CompetitorMention)) if r.message_id == "c5"
            ]
        )
        assert names == ["Umbrella"]


async def test_admin_settings_survive_a_restart_and_a_bad_stored_value_is_ignored(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from storage import queries

    settings = _settings(db_url)
    async with build_runtime(
        settings, clock=ManualClock(), judge=KeywordJudge(), start_workers=False
    ) as rt:
        await rt.core.set_sensitivity("discord", "g1", 0.9)
        await rt.core.set_competitors("discord", "g1", [" Globex ", "Globex", ""])
        await rt.core.set_sensitivity("discord", "g2", 0.3)
        await rt.core.set_sensitivity("discord", "g2", None)  # back to the default
        now = datetime(2026, 1, 5, tzinfo=UTC)
        await rt.db.run(  # written by hand or an older version: not a number
            lambda s: queries.set_community_setting(s, "discord", "g3", "sensitivity", "x", now)
        )
    judge = KeywordJudge()
    async with build_runtime(settings, clock=ManualClock(), judge=judge, start_workers=False) as rt:
        g1 = await rt.core.community_settings("discord", "g1")
        assert (g1.sensitivity, g1.competitors, g1.competitors_are_default) == (
            0.9,
            ("Globex",),
            False,
        )
        assert (await rt.core.community_settings("discord", "g2")).sensitivity == 0.5
        assert (await rt.core.community_settings("discord", "g3")).sensitivity == 0.5
        assert "ignoring stored sensitivity 'x'" in caplog.text
        await rt.core.on_message(message("I want a refund", "m1", community="g1"))
        await rt.core.on_message(message("I want a refund", "m2", community="g2"))
        await rt.settle()
        flagged = await rt.db.run(lambda s: [f.message_id for f in s.scalars(select(Flag))])
        assert flagged == ["m2"]
    with pytest.raises(ValueError):
        async with build_runtime(settings, judge=KeywordJudge(), start_workers=False) as rt:
            await rt.core.set_sensitivity("discord", "g1", 1.5)


async def test_recent_threads_lists_active_threads_newest_first(db_url: str) -> None:
    """What a backfill reads again after downtime: threads with recent replies only."""
    t0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
    async with build_runtime(
        _settings(db_url), clock=ManualClock(t0), judge=KeywordJudge(), start_workers=False
    ) as rt:
        said = [
            message("old thread reply", "r0", thread="t-old", at=t0 - timedelta(days=5)),
            message("a reply", "r1", thread="t-a", at=t0 - timedelta(hours=3)),
            message("another reply", "r2", thread="t-b", at=t0 - timedelta(hours=2)),
            message("a later reply", "r3", thread="t-a", at=t0 - timedelta(hours=1)),
            message("top level", "m1", at=t0),
            message("elsewhere", "r4", thread="t-c", channel="c2", at=t0),
        ]
        for event in said:
            await rt.core.on_message(event)
        threads = await rt.core.recent_threads("discord", "g1", "c1", t0 - timedelta(days=1))
        assert threads == [
            ("t-a", t0 - timedelta(hours=1)),
            ("t-b", t0 - timedelta(hours=2)),
        ]


async def test_a_nul_character_does_not_cost_a_message_its_row(db_url: str) -> None:
    """Chat JSON may carry U+0000, which PostgreSQL text cannot hold: the message is
    stored (the NUL shown as U+FFFD) instead of failing its insert."""
    async with build_runtime(
        _settings(db_url), clock=ManualClock(), judge=KeywordJudge(), start_workers=False
    ) as rt:
        await rt.core.on_message(message("before\x00after", "n1"))
        await rt.core.on_message(replace(message("edited\x00", "n1"), kind=MessageKind.EDIT))
        await rt.core.on_message(message("neighbour", "n2"))
        await rt.writer.flush()
        texts = await rt.db.run(
            lambda s: {m.message_id: m.text for m in s.scalars(select(Message)).all()}
        )
        assert texts == {"n1": "edited\ufffd", "n2": "neighbour"}


async def test_accepted_messages_are_judged_together_in_arrival_order(db_url: str) -> None:
    """The adapters' fast path: accept() returns at once; the messages are judged in
    one pass when the loop is free, a complaint's flag follows its commit, and anything
    handled through the core meanwhile (a delete) waits its turn behind them."""
    async with build_runtime(
        _settings(db_url), clock=ManualClock(), judge=KeywordJudge(), start_workers=False
    ) as rt:
        rt.core.accept(message("good morning", "m1"))
        rt.core.accept(message("my order arrived broken", "m2"))
        rt.core.accept(replace(message("bot says hi", "m3"), author=Author("b", "bot", True)))
        rt.core.accept(message("terrible service, I want a refund", "m4", author="u2"))
        # Nothing judged yet; a delete of m4 comes through on_message before the pass.
        assert rt.core.stats.messages == 0
        await rt.core.on_message(replace(message("", "m4"), kind=MessageKind.DELETE))
        await rt.settle()
        rows = {
            m.message_id: m for m in await rt.db.run(lambda s: s.scalars(select(Message)).all())
        }
        assert set(rows) == {"m1", "m2", "m4"}
        assert rows["m1"].text == "good morning" and rows["m1"].score is not None
        assert rows["m4"].text == "" and rows["m4"].deleted_at is not None
        flags = await rt.db.run(lambda s: [f.message_id for f in s.scalars(select(Flag))])
        assert flags == ["m2"]  # the deleted complaint is not flagged
        assert rt.core.stats.messages == 3 and rt.core.stats.flagged == 1


async def test_taking_messages_in_passes_ends_as_taking_them_one_by_one(
    db_url: str, tmp_path: Path
) -> None:
    """Random mixes of new messages (taken with accept, judged in passes at whatever
    point the loop gets to them), edits, deletes and reactions end with the same log as
    the same events awaited one by one through on_message."""
    rng = random.Random(20261123)
    texts = ["hello all", "my order arrived broken", "thanks!", "refund please", "lol"]
    events: list[tuple[str, MessageEvent | ReactionEvent]] = []
    for i in range(60):
        mid = f"m{rng.randrange(15)}"
        roll = rng.random()
        if roll < 0.55:
            event = message(rng.choice(texts), mid, author=f"u{rng.randrange(4)}")
            events.append(("new", event))
        elif roll < 0.75:
            event = replace(message(rng.choice(texts), mid), kind=MessageKind.EDIT)
            events.append(("edit", replace(event, edited_at=event.created_at + timedelta(i))))
        elif roll < 0.9:
            events.append(("delete", replace(message("", mid), kind=MessageKind.DELETE)))
        else:
            at = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
            reaction = ReactionEvent("discord", "g1", "c1", mid, "u9", "👍", True, at)
            events.append(("react", reaction))
        if rng.random() < 0.3:
            events.append(("yield", message("", "-")))

    async def log(batched: bool, url: str) -> dict[str, tuple[str, bool, object]]:
        async with build_runtime(
            _settings(url), clock=ManualClock(), judge=KeywordJudge(), start_workers=False
        ) as rt:
            for kind, event in events:
                if kind == "yield":
                    if batched:
                        await asyncio.sleep(0)  # let a pending pass run here
                elif isinstance(event, ReactionEvent):
                    await rt.core.on_reaction(event)
                elif kind == "new" and batched:
                    rt.core.accept(event)
                else:
                    await rt.core.on_message(event)
            await rt.settle()
            rows = await rt.db.run(lambda s: list(s.scalars(select(Message))))
            return {m.message_id: (m.text, m.deleted_at is not None, m.score) for m in rows}

    one_by_one = await log(False, f"sqlite:///{tmp_path}/one_by_one.db")
    assert await log(True, db_url) == one_by_one
    assert len(one_by_one) > 5


class _BrokenJudge(KeywordJudge):
    """Raises on one text, as a detector with a bug would."""

    def judge(self, text: str, community_id: str | None = None):  # type: ignore[no-untyped-def]
        if "crash the judge" in text:
            raise ValueError("detector bug")
        return super().judge(text, community_id)


class _JunkJudge(KeywordJudge):
    """Returns something that is not a verdict for one text, as a broken plug-in would."""

    def judge(self, text: str, community_id: str | None = None):  # type: ignore[no-untyped-def]
        if "junk verdict" in text:
            return object()
        return super().judge(text, community_id)


async def test_a_junk_verdict_leaves_the_message_stored_unjudged(db_url: str) -> None:
    async with build_runtime(
        _settings(db_url), clock=ManualClock(), judge=_JunkJudge(), start_workers=False
    ) as rt:
        rt.core.accept(message("a junk verdict in a pass", "m1"))
        rt.core.accept(message("my refund never came", "m2"))  # the pass goes on
        await rt.core.on_message(message("a junk verdict, awaited", "m3"))
        await rt.settle()
        rows = {
            m.message_id: m for m in await rt.db.run(lambda s: s.scalars(select(Message)).all())
        }
        assert sorted(rows) == ["m1", "m2", "m3"]
        assert rows["m1"].score is None and rows["m3"].score is None
        assert rows["m2"].score == 0.8
        flagged = await rt.db.run(lambda s: [f.message_id for f in s.scalars(select(Flag))])
        assert flagged == ["m2"]


async def test_a_message_the_judge_fails_on_is_stored_unjudged_not_lost(db_url: str) -> None:
    async with build_runtime(
        _settings(db_url), clock=ManualClock(), judge=_BrokenJudge(), start_workers=False
    ) as rt:
        rt.core.accept(message("please crash the judge", "m1"))
        rt.core.accept(message("my order arrived broken", "m2"))
        await rt.core.on_message(
            replace(message("edited: crash the judge", "m2"), kind=MessageKind.EDIT)
        )
        await rt.settle()
        rows = {
            m.message_id: m for m in await rt.db.run(lambda s: s.scalars(select(Message)).all())
        }
        assert rows["m1"].text == "please crash the judge" and rows["m1"].score is None
        assert rows["m2"].text == "edited: crash the judge" and rows["m2"].score is None
        assert rt.core.stats.messages == 2
