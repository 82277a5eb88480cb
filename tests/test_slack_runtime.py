"""The whole path with the real runtime (SQLite, outbox, flag workflow) behind the Slack
adapter: a member complains in Slack, a card appears, managers act, the member gets a
reply in their thread. Only Slack itself is emulated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

from storage.models import CompetitorMention, Message
from tests.slack_helpers import (
    EVIL,
    FLAGS,
    GENERAL,
    MANAGER,
    MEMBER,
    OUTSIDER,
    SlackStack,
    all_text,
    runtime_stack,
)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[SlackStack]:
    async with runtime_stack(tmp_path) as s:
        yield s


def top_level(stack: SlackStack) -> list[dict[str, Any]]:
    return [m for m in stack.emu.messages(FLAGS) if m.get("thread_ts") in (None, m["ts"])]


async def complain(stack: SlackStack, text: str) -> tuple[str, str]:
    """A member complains; returns (member message ts, card ts) once the card is up."""
    ts, delivery = await stack.emu.say(GENERAL, MEMBER, text)
    assert delivery.status == 200
    await stack.emu.wait_for(lambda: len(top_level(stack)) == 1, timeout=10)
    return ts, top_level(stack)[0]["ts"]


def card_state(stack: SlackStack, card_ts: str) -> str:
    return str(stack.emu.message(FLAGS, card_ts)["text"])


async def test_complaint_to_card_claim_send_resolve(stack: SlackStack) -> None:
    emu = stack.emu
    member_ts, card_ts = await complain(stack, f"I want a refund, this is broken {EVIL}")
    card = emu.message(FLAGS, card_ts)
    for token in ("<!channel>", "<@U1>", "<https://evil|click>"):
        assert token not in all_text(card)
    assert "mallory" in card["text"] and "#general" in card["text"]

    await emu.click(FLAGS, card_ts, "flag_claim", MANAGER)
    await emu.wait_for(lambda: "(claimed)" in card_state(stack, card_ts), timeout=10)
    assert all(u["ts"] == card_ts for u in emu.card_updates)

    await emu.wait_for(lambda: "Drafting" not in all_text(emu.message(FLAGS, card_ts)), timeout=10)
    await emu.click(FLAGS, card_ts, "flag_send", MANAGER)
    await emu.wait_for(lambda: len(emu.thread(GENERAL, member_ts)) == 2, timeout=10)
    reply = emu.thread(GENERAL, member_ts)[1]
    assert reply["thread_ts"] == member_ts and reply["user"] == emu.bot_user_id
    await emu.wait_for(lambda: "(replied)" in card_state(stack, card_ts), timeout=10)

    await emu.click(FLAGS, card_ts, "flag_resolve", MANAGER)
    await emu.wait_for(lambda: "(resolved)" in card_state(stack, card_ts), timeout=10)
    assert emu.find_button(emu.message(FLAGS, card_ts), "flag_claim") is None
    assert len(top_level(stack)) == 1
    assert emu.ephemerals == []


async def test_edit_and_send_with_the_real_workflow(stack: SlackStack) -> None:
    emu = stack.emu
    member_ts, card_ts = await complain(stack, "refund please, the export is broken")
    await emu.click(FLAGS, card_ts, "flag_edit", MANAGER)
    await emu.wait_for(lambda: len(emu.views) == 1, timeout=10)
    ((view_id, _),) = emu.views.items()
    done = await emu.submit_view(view_id, MANAGER, {"reply": {"text": "Fixed in 2.1 <3 & thanks"}})
    assert done.status == 200 and done.body == ""
    await emu.wait_for(lambda: len(emu.thread(GENERAL, member_ts)) == 2, timeout=10)
    assert emu.thread(GENERAL, member_ts)[1]["text"] == "Fixed in 2.1 &lt;3 &amp; thanks"
    await emu.wait_for(lambda: "(replied)" in card_state(stack, card_ts), timeout=10)
    assert "edited by a manager" in all_text(emu.message(FLAGS, card_ts))


async def test_dismiss_and_outsider_refusal_with_the_real_workflow(stack: SlackStack) -> None:
    emu = stack.emu
    _, card_ts = await complain(stack, "this update is terrible")
    await emu.click(FLAGS, card_ts, "flag_dismiss", OUTSIDER)
    await emu.wait_for(lambda: len(emu.ephemerals) == 1, timeout=10)
    assert "(open)" in card_state(stack, card_ts)
    await emu.click(FLAGS, card_ts, "flag_dismiss", MANAGER)
    await emu.wait_for(lambda: "(dismissed)" in card_state(stack, card_ts), timeout=10)


async def test_shortcut_and_status_with_the_real_core(stack: SlackStack) -> None:
    emu = stack.emu
    ts, _ = await emu.say(GENERAL, MEMBER, "hmm, not sure about the new pricing")
    observed = stack.extras["observed"]
    await observed.wait_for(lambda: len(observed.messages) == 1)
    await emu.message_shortcut("flag_for_followup", GENERAL, ts, MANAGER)
    await emu.wait_for(lambda: len(emu.responses) == 1, timeout=10)
    assert "flag #" in emu.responses[0]["text"].lower()
    await emu.wait_for(lambda: len(top_level(stack)) == 1, timeout=10)
    await emu.slash_command("status", MANAGER, GENERAL)
    await emu.wait_for(lambda: len(emu.responses) == 2, timeout=10)
    assert "1 messages" in emu.responses[1]["text"]


async def test_messages_missed_while_away_are_backfilled_once(stack: SlackStack) -> None:
    emu = stack.emu
    first, _ = await emu.say(GENERAL, MEMBER, "morning all")
    observed = stack.extras["observed"]
    await observed.wait_for(lambda: len(observed.messages) == 1)
    # Said while the bot was down (or acked and lost): in Slack's history, never delivered.
    missed = [emu.member_message(GENERAL, MEMBER, f"said while away {i}")["ts"] for i in range(3)]
    assert await stack.adapter.backfill() == 3
    assert await stack.adapter.backfill() == 0
    assert stack.runtime is not None
    await stack.runtime.writer.flush()
    stored = await stack.runtime.db.run(
        lambda s: sorted(m.message_id for m in s.scalars(select(Message)))
    )
    assert stored == sorted([first, *missed])


async def test_thread_replies_missed_while_away_are_backfilled_once(stack: SlackStack) -> None:
    """Replies are not in channel history: both to a thread the bot already knows (whose
    parent is older than anything missed) and to a new parent said while away."""
    emu = stack.emu
    observed = stack.extras["observed"]
    parent, _ = await emu.say(GENERAL, MEMBER, "anyone else seeing login errors?")
    first_reply, _ = await emu.say(GENERAL, MEMBER, "same here", thread_ts=parent)
    latest, _ = await emu.say(GENERAL, MEMBER, "unrelated: nice update")
    await observed.wait_for(lambda: len(observed.messages) == 3)
    # While the bot was down: a reply under the old parent, a new thread with a reply.
    old_thread_reply = emu.member_message(GENERAL, MEMBER, "still broken", thread_ts=parent)
    new_parent = emu.member_message(GENERAL, MEMBER, "checkout fails for me")
    new_reply = emu.member_message(GENERAL, MEMBER, "me too", thread_ts=new_parent["ts"])
    assert await stack.adapter.backfill() == 3
    assert await stack.adapter.backfill() == 0
    assert stack.runtime is not None
    await stack.runtime.writer.flush()
    stored = await stack.runtime.db.run(
        lambda s: {m.message_id: m.thread_id for m in s.scalars(select(Message))}
    )
    assert stored == {
        parent: None,
        first_reply: parent,
        latest: None,
        old_thread_reply["ts"]: parent,
        new_parent["ts"]: None,
        new_reply["ts"]: new_parent["ts"],
    }


async def test_admin_sets_sensitivity_and_competitors_with_slash_commands(
    stack: SlackStack,
) -> None:
    """The shared admin commands on Slack: managers change settings, others only look,
    a bad value changes nothing, and the new threshold decides the next message."""
    emu = stack.emu
    assert stack.runtime is not None
    core = stack.runtime.core

    async def run(text: str, user: str = MANAGER) -> str:
        before = len(emu.responses)
        await emu.slash_command(text, user, GENERAL)
        await emu.wait_for(lambda: len(emu.responses) == before + 1, timeout=10)
        return str(emu.responses[-1]["text"])

    listed = await emu.slash_command("help", OUTSIDER, GENERAL)  # answered in the ack
    assert "`sensitivity [value]`" in listed.body and "`competitors [names]`" in listed.body
    assert "0.50 or more" in await run("sensitivity") and "the default" in await run("sensitivity")
    refused = await run("sensitivity 0.9", user=OUTSIDER)
    assert "Only admins" in refused
    assert "not changed" in await run("sensitivity loud")
    assert "outside" in await run("sensitivity 1.5")
    assert (await core.community_settings("slack", emu.team_id)).sensitivity == 0.5

    answer = await run("sensitivity 0.9")
    assert "0.90 or more" in answer and "the default is 0.50" in answer
    observed = stack.extras["observed"]
    await emu.say(GENERAL, MEMBER, "I want a refund")  # the keyword judge scores 0.8
    await observed.wait_for(lambda: len(observed.messages) == 1)
    await stack.runtime.settle()
    assert top_level(stack) == []

    assert "Competitors tagged: Globex, Initech" in await run("competitors Initech, Globex")
    assert "this community's list" in await run("competitors")
    assert "No competitor names" in await run("competitors none")

    assert "the default" in await run("sensitivity default")
    await emu.say(GENERAL, MEMBER, "still waiting for that refund")
    await emu.wait_for(lambda: len(top_level(stack)) == 1, timeout=10)


async def test_a_thread_parent_deleted_under_its_replies_is_erased(stack: SlackStack) -> None:
    """Slack keeps a tombstone in place of a deleted parent that has replies and sends a
    ``message_changed``, not ``message_deleted``: it must erase the message and the card."""
    emu = stack.emu
    member_ts, card_ts = await complain(stack, "I want a refund, my card 4111 is on file")
    await emu.say(GENERAL, OUTSIDER, "me too", thread_ts=member_ts)
    event = emu.delete_event(GENERAL, member_ts)
    assert event["subtype"] == "message_changed"  # what Slack sends for such a parent
    assert (await emu.send_event(event)).status == 200
    await emu.wait_for(lambda: "4111" not in all_text(emu.message(FLAGS, card_ts)), timeout=10)
    assert stack.runtime is not None
    await stack.runtime.settle()
    row = await stack.runtime.db.run(
        lambda s: s.scalars(select(Message).where(col(Message.message_id) == member_ts)).one()
    )
    assert row.deleted_at is not None and row.text == ""
    assert row.deleted_at > row.created_at  # when it was deleted, not when it was said
    assert "This message was deleted" not in all_text(emu.message(FLAGS, card_ts))
    assert emu.find_button(emu.message(FLAGS, card_ts), "flag_send") is None


async def test_an_admin_names_a_competitor_with_an_ampersand(stack: SlackStack) -> None:
    """Slack escapes a command's text like message text: `AT&T` arrives as `AT&amp;T`."""
    emu, rt = stack.emu, stack.runtime
    assert rt is not None
    assert (
        await emu.slash_command('competitors AT&T, Toys"R"Us, at&t', MANAGER, GENERAL)
    ).status == 200
    await emu.wait_for(lambda: len(emu.responses) == 1, timeout=10)
    assert "AT&amp;amp;T" not in emu.responses[0]["text"]
    settings = await rt.core.community_settings("slack", emu.team_id)
    assert sorted(settings.competitors) == ["AT&T", 'Toys"R"Us']  # one AT&T, any case
    observed = stack.extras["observed"]
    seen = len(observed.messages)
    await emu.say(GENERAL, MEMBER, "I'm switching to AT&T, their coverage is better")
    await observed.wait_for(lambda: len(observed.messages) > seen)
    await rt.settle()
    tags = await rt.db.run(lambda s: [m.competitor for m in s.scalars(select(CompetitorMention))])
    assert tags == ["AT&T"]


async def test_messages_deleted_while_away_are_erased_by_the_backfill(stack: SlackStack) -> None:
    """Nothing replays a delete Rapport missed: the backfill compares the last day of
    history with what is stored (a parent deleted under its replies is a tombstone)."""
    emu, rt = stack.emu, stack.runtime
    assert rt is not None
    observed = stack.extras["observed"]
    kept, _ = await emu.say(GENERAL, MEMBER, "all good here")
    gone, _ = await emu.say(GENERAL, MEMBER, "my card is 4111 1111 1111 1111")
    parent, _ = await emu.say(GENERAL, MEMBER, "my address is 12 Elm Street")
    await emu.say(GENERAL, OUTSIDER, "oh no", thread_ts=parent)
    await observed.wait_for(lambda: len(observed.messages) == 4)
    # While Rapport is away: both are deleted; the events go nowhere.
    del emu.channels[GENERAL].messages[gone]
    emu.delete_event(GENERAL, parent)  # leaves a tombstone, as Slack does
    await stack.adapter.backfill()
    await rt.settle()
    rows = await rt.db.run(
        lambda s: {m.message_id: (m.text, m.deleted_at) for m in s.scalars(select(Message))}
    )
    assert rows[gone][0] == "" and rows[gone][1] is not None
    assert rows[parent][0] == "" and rows[parent][1] is not None
    assert rows[kept] == ("all good here", None)
