"""Whole flows on Discord: member message → real core → flag → manager sends → reply on Discord."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlmodel import col, select

from bot.app import Runtime, build_runtime
from bot.discord_adapter import DiscordAdapter
from bot.sandbox.discord_emulator import DiscordEmulator
from bot.settings import load_settings
from handlers.ports import ActionExecutor
from storage.models import Flag
from tests.core_helpers import KeywordJudge
from tests.discord_helpers import (
    Community,
    MemoryCore,
    ObservedCore,
    RuntimeStore,
    running_client,
    seed_community,
)

Stack = tuple[DiscordEmulator, Community, ObservedCore, Runtime]

MANAGER = "U_MANAGER"


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """Emulator + real runtime (SQLite, keyword judge) + adapter with its executor registered."""
    settings = load_settings(
        _env_file=None, DATABASE_URL=f"sqlite:///{tmp_path}/rapport.db", SLACK_MANAGERS=MANAGER
    )
    async with (
        DiscordEmulator() as emu,
        build_runtime(settings, judge=KeywordJudge(), start_workers=False) as rt,
    ):
        community = seed_community(emu)
        core = ObservedCore(rt.core)
        async with running_client(emu, core, [community.guild_id], rt):
            yield emu, community, core, rt


async def _flag_for(rt: Runtime, message_id: str) -> Flag:
    await rt.settle()
    flag = await rt.db.run(
        lambda s: s.exec(select(Flag).where(col(Flag.message_id) == message_id)).first()
    )
    assert flag is not None and flag.id is not None
    return flag


async def test_complaint_is_flagged_and_the_approved_reply_lands_as_a_reply(
    stack: Stack,
) -> None:
    emu, c, core, rt = stack
    mid = emu.say(c.alice, c.general, "I want a refund, the app is broken")
    await core.wait_until(lambda: str(mid) in core.new_count())
    assert await RuntimeStore(rt.db, rt.core).stored_count("discord", [str(mid)]) == 1
    flag = await _flag_for(rt, str(mid))
    assert flag.id is not None

    outcome = await rt.core.send(
        flag.id, MANAGER, "Sorry about this @everyone, refund is on its way."
    )
    assert outcome.ok, outcome.message
    await rt.settle()

    post = await emu.wait_for_bot_message(lambda p: p["channel_id"] == c.general)
    assert str(post["request"]["message_reference"]["message_id"]) == str(mid)
    assert post["request"]["allowed_mentions"]["parse"] == []
    assert post["message"]["content"].startswith("Sorry about this")


async def test_reply_to_a_thread_message_goes_into_the_thread(
    stack: Stack,
) -> None:
    emu, c, core, rt = stack
    root = emu.say(c.alice, c.general, "shipping question")
    thread = emu.create_thread(c.general, "shipping", owner_id=c.alice, from_message=root)
    mid = emu.say(c.bob, thread, "still no refund after a month")
    await core.wait_until(lambda: str(mid) in core.new_count())
    flag = await _flag_for(rt, str(mid))
    assert flag.thread_id == str(thread) and flag.id is not None

    assert (await rt.core.send(flag.id, MANAGER, "Looking into it now.")).ok
    await rt.settle()
    post = await emu.wait_for_bot_message(lambda p: p["channel_id"] == thread)
    assert str(post["request"]["message_reference"]["message_id"]) == str(mid)


async def test_status_counts_what_was_stored(
    stack: Stack,
) -> None:
    emu, c, core, _ = stack
    for i in range(3):
        mid = emu.say(c.alice, c.general, f"hello {i}")
    await core.wait_until(lambda: str(mid) in core.new_count())
    rec = emu.invoke_slash(c.mod, "rapport", sub="status")
    text = await emu.wait_for_interaction_reply(rec)
    assert "3 messages" in text


def test_adapter_is_an_action_executor_for_discord() -> None:
    client = DiscordAdapter(MemoryCore())
    executor: ActionExecutor = client.executor
    assert executor.platform == "discord"


async def test_from_settings_points_the_client_at_the_configured_discord(tmp_path: Path) -> None:
    async with DiscordEmulator() as emu:
        c = seed_community(emu)
        settings = load_settings(
            _env_file=None,
            DATABASE_URL=f"sqlite:///{tmp_path}/rapport.db",
            DISCORD_TOKEN=emu.token,
            DISCORD_API_BASE=emu.api_base,
            DISCORD_GATEWAY_URL=emu.gateway_url,
        )
        core = ObservedCore(MemoryCore())
        adapter = DiscordAdapter.from_settings(settings, core, guild_ready_timeout=0.02)
        assert settings.DISCORD_TOKEN is not None
        async with adapter:
            runner = asyncio.create_task(adapter.start(settings.DISCORD_TOKEN))
            async with asyncio.timeout(10):
                await adapter.wait_until_ready()
            mid = emu.say(c.alice, c.general, "hello from settings")
            await core.wait_until(lambda: str(mid) in core.new_count())
            await adapter.close()
            await runner


async def test_admin_sets_sensitivity_and_competitors_with_slash_commands(
    stack: Stack,
) -> None:
    """``/rapport sensitivity`` and ``/rapport competitors`` through the real discord.py
    client: one optional string option each, stored, and in effect for the next message."""
    emu, c, core, rt = stack
    rapport = {cmd["name"]: cmd for cmd in emu.commands[c.guild_id]}["rapport"]
    options = {o["name"]: o.get("options", []) for o in rapport["options"]}
    assert [(o["name"], o["type"], o.get("required", False)) for o in options["sensitivity"]] == [
        ("value", 3, False)
    ]
    assert [o["name"] for o in options["competitors"]] == ["names"]
    assert options["status"] == []

    async def run(sub: str, value: str | None = None, member: int = c.mod) -> str:
        opts = [{"type": 3, "name": options[sub][0]["name"], "value": value}] if value else None
        rec = emu.invoke_slash(member, "rapport", sub=sub, options=opts)
        return await emu.wait_for_interaction_reply(rec)

    assert "Manage Server" in await run("sensitivity", "0.1", member=c.alice)
    assert "not changed" in await run("sensitivity", "very")
    answer = await run("sensitivity", "90%")
    assert "0.90 or more" in answer
    quiet = emu.say(c.alice, c.general, "I want a refund")  # the keyword judge scores 0.8
    await core.wait_until(lambda: str(quiet) in core.new_count())
    await rt.settle()
    flagged = await rt.db.run(lambda s: list(s.exec(select(Flag))))
    assert flagged == []

    assert "Globex none" in await run("competitors", "Globex")
    fan = emu.say(c.bob, c.general, "honestly Globex is great, I love their app")
    await core.wait_until(lambda: str(fan) in core.new_count())
    assert "Mentions in the last 7 days: Globex 1 (1 positive)." in await run("competitors")
    status = await run("status")
    assert "Sensitivity 0.90 (default 0.50)" in status and "Competitors tagged: Globex" in status

    assert "the default" in await run("sensitivity", "default")
    loud = emu.say(c.alice, c.general, "still no refund")
    await core.wait_until(lambda: str(loud) in core.new_count())
    assert (await _flag_for(rt, str(loud))).id is not None
