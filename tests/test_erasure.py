"""Deletes, edits and opt-outs reach everything derived from a message, on both databases.

A member who deletes a message or opts out must not find their words left anywhere:
not in the log, not on the managers' Slack card, not in the feedback the detector
replays. An edit is followed like a new message (it may turn into a complaint, or name
a competitor), and the card always shows what the member says now.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from bot.app import Runtime, build_runtime
from bot.settings import Settings
from handlers.clock import ManualClock
from handlers.events import (
    Author,
    MemberJoinEvent,
    MessageEvent,
    MessageKind,
    PostFlagCard,
    ReactionEvent,
    UpdateFlagCard,
)
from storage.models import CompetitorMention, Feedback, Flag, Member, Message
from tests.core_helpers import KeywordJudge, RecordingExecutor, message


@asynccontextmanager
async def runtime(
    db_url: str, clock: ManualClock | None = None, **settings: str
) -> AsyncIterator[tuple[Runtime, RecordingExecutor]]:
    config = Settings(  # type: ignore[call-arg]
        DATABASE_URL=db_url,
        SLACK_MANAGERS="M1",
        _env_file=None,
        **settings,  # type: ignore[arg-type]
    )
    async with build_runtime(
        config, clock=clock or ManualClock(), judge=KeywordJudge(), start_workers=False
    ) as rt:
        slack = RecordingExecutor("slack")
        rt.outbox.register(slack)
        yield rt, slack


def delete_of(mid: str, channel: str = "c1") -> MessageEvent:
    return replace(message("", mid, channel=channel), kind=MessageKind.DELETE)


def edit_of(text: str, mid: str) -> MessageEvent:
    """The member edits message ``mid`` a minute after posting it to read ``text``."""
    return replace(
        message(text, mid), kind=MessageKind.EDIT, edited_at=datetime(2026, 1, 5, 9, 1, tzinfo=UTC)
    )


async def only(rt: Runtime, model: type) -> list:  # type: ignore[type-arg]
    return await rt.db.run(lambda s: list(s.scalars(select(model))))


async def test_a_delete_in_a_channel_unwatched_since_still_erases(db_url: str) -> None:
    async with runtime(db_url) as (rt, _):
        await rt.core.on_message(message("my phone number is 555-0101", "m1"))
        await rt.core.set_watched("discord", "g1", "c1", False)
        await rt.core.on_message(delete_of("m1"))
        await rt.settle()
        [row] = await only(rt, Message)
        assert row.deleted_at is not None and row.text == ""


async def test_deleting_a_flagged_message_erases_its_card_and_the_feedback(db_url: str) -> None:
    async with runtime(db_url) as (rt, slack):
        await rt.core.on_message(message("my order arrived broken, call me at 555-0101", "m1"))
        await rt.settle()
        [flag] = await only(rt, Flag)
        assert (await rt.core.resolve(flag.id, "M1")).ok  # a confirm: feedback with text
        assert [f.text for f in await only(rt, Feedback)]
        posted = len(slack.done)
        assert any(isinstance(a, PostFlagCard) for a in slack.done)

        await rt.core.on_message(delete_of("m1"))
        await rt.settle()

        [flag] = await only(rt, Flag)
        assert flag.quoted_text == "" and flag.draft == ""
        assert await only(rt, Feedback) == []
        # The card is rendered again, now as a deleted message, and says why.
        assert any(isinstance(a, UpdateFlagCard) for a in slack.done[posted:])
        view = await rt.core.card(flag.id)
        assert view is not None and view.message_deleted and view.text == ""
        assert any(h.action == "erased" for h in view.history)


async def test_deleting_a_hand_flagged_message_erases_the_managers_example(db_url: str) -> None:
    async with runtime(db_url) as (rt, _):
        await rt.core.on_message(message("my address is 12 Elm Street, ship it again", "m1"))
        assert (await rt.core.manual_flag("discord", "g1", "c1", "m1", "mod")).ok
        assert len(await only(rt, Feedback)) == 1
        await rt.core.on_message(delete_of("m1"))
        await rt.settle()
        assert await only(rt, Feedback) == []


async def test_a_delete_naming_the_thread_finds_the_message_under_its_parent(
    db_url: str,
) -> None:
    """Discord names only the thread when the thread is archived (not in its cache)."""
    async with runtime(db_url) as (rt, slack):
        await rt.core.on_message(
            message("card 4111 1111 and my refund is 3 weeks late", "m1", thread="t9")
        )
        await rt.settle()
        [flag] = await only(rt, Flag)
        posted = len(slack.done)
        await rt.core.on_message(delete_of("m1", channel="t9"))
        await rt.settle()
        [row] = await only(rt, Message)
        assert row.text == "" and row.deleted_at is not None and row.channel_id == "c1"
        [flag] = await only(rt, Flag)
        assert flag.quoted_text == ""
        assert any(isinstance(a, UpdateFlagCard) for a in slack.done[posted:])


async def test_opting_out_erases_name_feedback_and_what_the_card_shows(db_url: str) -> None:
    async with runtime(db_url) as (rt, slack):
        await rt.core.on_message(
            message("my email is x@example.com, this is broken", "m1", author="u9")
        )
        await rt.settle()
        [flag] = await only(rt, Flag)
        assert (await rt.core.dismiss(flag.id, "M1")).ok
        posted = len(slack.done)
        await rt.core.set_opt_out("discord", "g1", "u9", True)
        await rt.settle()
        assert await only(rt, Feedback) == []
        [member] = await only(rt, Member)
        assert member.opted_out and member.display_name == ""
        assert any(isinstance(a, UpdateFlagCard) for a in slack.done[posted:])
        view = await rt.core.card(flag.id)
        assert view is not None and "x@example.com" not in view.text


async def test_an_edit_refreshes_the_card_with_what_the_member_says_now(db_url: str) -> None:
    async with runtime(db_url) as (rt, slack):
        await rt.core.on_message(message("broken again, my number is 555-0101", "m1"))
        await rt.settle()
        [flag] = await only(rt, Flag)
        posted = len(slack.done)
        await rt.core.on_message(edit_of("broken again", "m1"))
        await rt.settle()
        assert any(isinstance(a, UpdateFlagCard) for a in slack.done[posted:])
        view = await rt.core.card(flag.id)
        assert view is not None and view.text == "broken again"


async def test_an_edit_that_turns_a_message_into_a_complaint_is_flagged(db_url: str) -> None:
    async with runtime(db_url) as (rt, slack):
        await rt.core.on_message(message("order arrived", "m1"))
        await rt.settle()
        assert await only(rt, Flag) == []
        await rt.core.on_message(edit_of("order arrived broken, I want a refund", "m1"))
        await rt.settle()
        [flag] = await only(rt, Flag)
        assert flag.quoted_text == "order arrived broken, I want a refund"
        assert any(isinstance(a, PostFlagCard) for a in slack.done)


async def test_an_edit_seen_before_its_message_stores_the_message_whole(db_url: str) -> None:
    """A live edit can race the backfill that fetches the original: the create that
    arrives after it is a redelivery, so the edit must already store everything."""
    async with runtime(db_url) as (rt, _):
        created = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
        new = message(
            "the app is broken, I want a refund", "m7", author="u5", thread="t1", at=created
        )
        await rt.core.on_message(
            replace(new, kind=MessageKind.EDIT, edited_at=created + timedelta(minutes=5))
        )
        await rt.core.on_message(new)
        await rt.settle()
        [row] = await only(rt, Message)
        assert row.thread_id == "t1" and row.edited_at is not None
        assert row.created_at.replace(tzinfo=UTC) == created
        [member] = await only(rt, Member)
        assert member.external_id == "u5" and member.message_count == 1
        assert len(await only(rt, Flag)) == 1


async def test_an_edit_updates_competitor_mentions(db_url: str) -> None:
    async with runtime(db_url, RAPPORT_COMPETITORS="Globex") as (rt, _):
        await rt.core.on_message(message("Globex is so much better and cheaper", "m1"))
        await rt.settle()
        assert [m.competitor for m in await only(rt, CompetitorMention)] == ["Globex"]
        await rt.core.on_message(edit_of("never mind, ignore me", "m1"))
        await rt.settle()
        assert await only(rt, CompetitorMention) == []


async def test_reactions_alone_escalate_a_flagged_message(db_url: str) -> None:
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _):
        await rt.core.on_message(message("my order arrived broken", "m1", at=clock.now()))
        await rt.settle()
        [flag] = await only(rt, Flag)
        assert flag.severity == "medium"
        for i in range(3):
            clock.advance(minutes=1)
            await rt.core.on_reaction(
                ReactionEvent("discord", "g1", "c1", "m1", f"r{i}", "👍", True, clock.now())
            )
        await rt.settle()
        [flag] = await only(rt, Flag)
        assert flag.severity == "high" and "agreeing" in flag.escalation


async def test_status_counts_members_who_spoke_and_messages_not_deleted(db_url: str) -> None:
    async with runtime(db_url) as (rt, _):
        await rt.core.on_message(message("hello", "m1", author="u1"))
        await rt.core.on_message(message("bye", "m2", author="u1"))
        await rt.core.on_message(delete_of("m2"))
        await rt.core.on_message(delete_of("m999"))  # never seen
        bot = Author("bot7", "SomeBot", is_bot=True)
        await rt.core.on_member_join(MemberJoinEvent("discord", "g1", bot, datetime.now(UTC)))
        await rt.core.set_opt_out("discord", "g1", "u404", True)  # never spoke
        text = await rt.core.status_text("discord", "g1")
        assert text.startswith("Rapport is listening: 1 messages logged from 1 members"), text


async def test_editing_a_complaint_merged_into_an_incident_does_not_grow_it(db_url: str) -> None:
    """A near-duplicate joined another member's flag; fixing a typo three times is
    still one member's complaint, not three more."""
    clock = ManualClock()
    async with runtime(db_url, clock) as (rt, _):
        first = message("checkout is broken, cannot pay", "m0", author="u0", at=clock.now())
        await rt.core.on_message(first)
        await rt.settle()
        clock.advance(seconds=30)
        second = message("checkout is broken, cannot pay!", "m1", author="u1", at=clock.now())
        await rt.core.on_message(second)
        await rt.settle()
        assert [f.incident_size for f in await only(rt, Flag)] == [2]
        for i in range(3):
            clock.advance(seconds=10)
            typo_fixed = replace(second, text="checkout is broken, cannot pay!!" + "!" * i)
            await rt.core.on_message(
                replace(typo_fixed, kind=MessageKind.EDIT, edited_at=clock.now())
            )
            await rt.settle()
        assert [f.incident_size for f in await only(rt, Flag)] == [2]


async def test_a_manual_flag_on_an_opted_out_member_s_message_is_refused(db_url: str) -> None:
    async with runtime(db_url) as (rt, _):
        await rt.core.on_message(message("the app keeps logging me out", "m1", author="u9"))
        await rt.settle()
        await rt.core.set_opt_out("discord", "g1", "u9", True)
        outcome = await rt.core.manual_flag("discord", "g1", "c1", "m1", "mod1")
        assert not outcome.ok and "opted-out" in outcome.message
        assert await only(rt, Flag) == []


def test_which_stored_messages_a_partial_read_can_judge_deleted() -> None:
    """The rule both adapters use after a gap (handlers.reconcile)."""
    from handlers.reconcile import deleted_while_away

    stored = {"1", "2", "3", "5", "9"}
    # Complete read: whatever is stored and was not read is gone.
    assert deleted_while_away(
        stored, {"1", "3", "9"}, complete=True, read_from="oldest", order=int
    ) == ["2", "5"]
    # Read oldest first, cut at 3: only ids below the newest read are judged.
    assert deleted_while_away(
        stored, {"1", "3"}, complete=False, read_from="oldest", order=int
    ) == ["2"]
    # Read newest first, cut at 5: only ids from the oldest read on are judged.
    assert (
        deleted_while_away(stored, {"5", "9"}, complete=False, read_from="newest", order=int) == []
    )
    assert deleted_while_away(
        stored, {"3", "9"}, complete=False, read_from="newest", order=int
    ) == ["5"]
    # An empty read proves nothing.
    assert deleted_while_away(stored, set(), complete=True, read_from="oldest", order=int) == []
