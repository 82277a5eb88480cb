"""Bad input through the whole stack: refused clearly, nothing lost, the bot keeps going."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.app import build_runtime
from bot.sandbox.stack import (
    FLAGS_CHANNEL,
    MANAGER,
    SLACK_COMMUNITY_CHANNEL,
    SLACK_MEMBER,
    Sandbox,
    sandbox,
)
from bot.settings import Settings
from handlers.clock import ManualClock
from storage import queries
from storage.models import Flag, Message, Outbox
from tests.core_helpers import KeywordJudge, RecordingExecutor, until


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Sandbox]:
    async with sandbox(f"sqlite:///{tmp_path}/bad.db") as sb:
        yield sb


async def _stored(sb: Sandbox) -> list[Message]:
    await sb.rt.core.flush()
    return await sb.rt.db.run(lambda s: list(s.scalars(select(Message))))


async def test_malformed_slack_requests_are_refused_and_the_bot_keeps_going(box: Sandbox) -> None:
    sb = box
    # Signed, but not JSON; signed JSON that is not an event; an interactive form with junk.
    not_json = await sb.slack.post_signed("{this is not json", "application/json")
    assert not_json.status < 500
    odd = await sb.slack.post_signed(json.dumps({"type": "event_callback"}), "application/json")
    assert odd.status < 500
    junk = await sb.slack.post_signed("payload=%7Bnope", "application/x-www-form-urlencoded")
    assert junk.status < 500
    # A message event missing its user and ts is ignored, not stored half-empty.
    broken = await sb.slack.send_event({"type": "message", "channel": SLACK_COMMUNITY_CHANNEL})
    assert broken.status == 200
    # And a real message right after is stored.
    ts, ok = await sb.slack.say(SLACK_COMMUNITY_CHANNEL, SLACK_MEMBER, "hello there")
    assert ok.status == 200
    await until(lambda: sb.rt.core.stats.messages == 1)
    rows = [m for m in await _stored(sb) if m.platform == "slack"]
    assert [m.message_id for m in rows] == [ts]


async def test_buttons_naming_a_missing_or_garbled_flag_change_nothing(box: Sandbox) -> None:
    sb = box
    # A card-like message whose buttons name flags that do not exist (a stale or forged one).
    posted = await sb.slack_adapter.client.chat_postMessage(channel=FLAGS_CHANNEL, text="old card")
    ts = str(posted["ts"])
    # Too large for the database (and not ASCII digits) must be refused like the others.
    values = ("99999", "not-a-number", "", "9" * 20, str(2**63), "١٢")
    for value in values:
        delivery = await sb.slack.click(FLAGS_CHANNEL, ts, "flag_send", MANAGER, value=value)
        assert delivery.status == 200
    await sb.slack.wait_for(lambda: len(sb.slack.ephemerals) == len(values), timeout=10)
    assert all(e["user"] == MANAGER for e in sb.slack.ephemerals)
    assert await sb.rt.db.run(lambda s: list(s.scalars(select(Flag)))) == []
    assert sb.discord.bot_messages() == []


async def test_a_malformed_outbox_item_is_failed_not_retried_forever(tmp_path: Path) -> None:
    settings = Settings(DATABASE_URL=f"sqlite:///{tmp_path}/o.db", _env_file=None)  # type: ignore[call-arg]
    clock = ManualClock()
    async with build_runtime(
        settings, clock=clock, judge=KeywordJudge(), start_workers=False
    ) as rt:
        rt.outbox.register(RecordingExecutor("slack"))
        await rt.db.run(
            lambda s: queries.enqueue(
                s,
                "action",
                {"type": "NoSuchAction", "x": 1},
                "bad-1",
                clock.now(),
                platform="slack",
            )
        )
        assert await rt.outbox.drain() == 1
        item = await rt.db.run(lambda s: s.scalars(select(Outbox)).one())
        assert item.state == "failed" and item.last_error and "malformed" in item.last_error
        assert await rt.outbox.drain() == 0
