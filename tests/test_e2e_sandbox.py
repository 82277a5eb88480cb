"""Across platforms: a Discord complaint becomes a Slack card; Send answers in Discord."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.sandbox.stack import FLAGS_CHANNEL, MANAGER, OUTSIDER, Sandbox, sandbox
from handlers.judging import DraftJob, DraftResult
from tests.core_helpers import until


class FixedDrafter:
    async def make(self, job: DraftJob) -> DraftResult:
        return DraftResult(f"Sorry {job.member_name}, we're on it. @everyone", "template")


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with sandbox(f"sqlite:///{tmp_path}/e2e.db", drafter=FixedDrafter()) as sb:
        yield sb


def _card_text(sb: Sandbox, ts: str) -> str:
    return str(sb.slack.message(FLAGS_CHANNEL, ts)["text"])


async def test_discord_complaint_to_slack_card_to_discord_reply(box: Sandbox) -> None:
    sb = box
    alice = sb.ids.members["alice"]
    sb.discord.say(alice, sb.ids.general, "love the new release!")
    mid = sb.discord.say(
        alice,
        sb.ids.general,
        "Third week waiting for my refund and no reply to 2 emails. Unacceptable.",
    )
    await sb.slack.wait_for(lambda: len(sb.cards()) == 1, timeout=10)
    card = sb.cards()[0]
    assert "alice" in card["text"]
    await sb.slack.wait_for(
        lambda: "Drafting" not in str(sb.slack.message(FLAGS_CHANNEL, card["ts"])), timeout=10
    )

    await sb.slack.click(FLAGS_CHANNEL, card["ts"], "flag_send", OUTSIDER)
    await sb.slack.wait_for(lambda: len(sb.slack.ephemerals) == 1, timeout=10)
    assert sb.discord.bot_messages(sb.ids.general) == []

    await sb.slack.click(FLAGS_CHANNEL, card["ts"], "flag_send", MANAGER)
    posted: dict[str, Any] = await sb.discord.wait_for_bot_message(timeout=10)
    request = posted["request"]
    assert str(request["message_reference"]["message_id"]) == str(mid)
    assert request["allowed_mentions"]["parse"] == []
    await sb.slack.wait_for(lambda: "(replied)" in _card_text(sb, card["ts"]), timeout=10)
    assert len(sb.cards()) == 1


async def test_two_managers_clicking_send_at_once_post_one_reply(box: Sandbox) -> None:
    from bot.sandbox.stack import SECOND_MANAGER

    sb = box
    sb.discord.say(
        sb.ids.members["bob"],
        sb.ids.support,
        "My order never arrived, 12 days late, and nobody answers my emails.",
    )
    await sb.slack.wait_for(lambda: len(sb.cards()) == 1, timeout=10)
    ts = sb.cards()[0]["ts"]
    await sb.slack.wait_for(
        lambda: "Drafting" not in str(sb.slack.message(FLAGS_CHANNEL, ts)), timeout=10
    )
    await asyncio.gather(
        sb.slack.click(FLAGS_CHANNEL, ts, "flag_send", MANAGER),
        sb.slack.click(FLAGS_CHANNEL, ts, "flag_send", SECOND_MANAGER),
    )
    await sb.slack.wait_for(lambda: "(replied)" in _card_text(sb, ts), timeout=10)
    await sb.rt.settle()
    assert len(sb.discord.bot_messages(sb.ids.support)) == 1


async def test_flag_for_follow_up_in_discord_puts_a_card_in_slack(box: Sandbox) -> None:
    sb = box
    mid = sb.discord.say(sb.ids.members["carol"], sb.ids.general, "the new logo is a bit meh")
    await until(lambda: sb.rt.core.stats.messages == 1)
    record = sb.discord.invoke_message_command(sb.ids.members["mod"], "Flag for follow-up", mid)
    reply = await sb.discord.wait_for_interaction_reply(record, timeout=10)
    assert "Flagged" in reply or "flag" in reply.lower()
    await sb.slack.wait_for(lambda: len(sb.cards()) == 1, timeout=10)
    assert "carol" in sb.cards()[0]["text"]
    denied = sb.discord.invoke_message_command(sb.ids.members["dan"], "Flag for follow-up", mid)
    assert "Manage Messages" in await sb.discord.wait_for_interaction_reply(denied, timeout=10)
