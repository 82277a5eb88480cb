"""Across platforms: a Discord complaint becomes a Slack card; Send answers in Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.sandbox.stack import FLAGS_CHANNEL, MANAGER, OUTSIDER, Sandbox, sandbox
from handlers.judging import DraftJob, DraftResult


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
