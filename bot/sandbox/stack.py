"""The whole bot against local emulators: Discord, Slack and (optionally) an LLM.

One place wires what ``rapport run`` wires, but aimed at the emulators on loopback, so
the demo, the benchmarks and the cross-platform tests all exercise the real adapters,
the real core and a real database.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlmodel import col

from bot.app import Runtime, build_runtime
from bot.discord_adapter import DiscordAdapter
from bot.http import make_web_app, start_site
from bot.sandbox.discord_emulator import PERM_MANAGE_GUILD, PERM_MANAGE_MESSAGES, DiscordEmulator
from bot.sandbox.slack_emulator import SlackEmulator
from bot.sandbox.waiting import until
from bot.service import attach_adapters
from bot.settings import Settings, load_settings
from bot.slack_adapter import SlackAdapter
from handlers.clock import Clock
from handlers.judging import DraftMaker, Judge
from storage.models import Community

logger = logging.getLogger(__name__)

SLACK_SECRET = "sandbox-signing-secret"
SLACK_BOT_TOKEN = "xoxb-sandbox"
FLAGS_CHANNEL = "C0FLAGS"
SLACK_COMMUNITY_CHANNEL = "C0HELP"
MANAGER = "U0MARIA"
SECOND_MANAGER = "U0DEV"
SLACK_MEMBER = "U0SAM"
OUTSIDER = "U0OSCAR"


@dataclass
class DiscordIds:
    guild: int
    general: int
    support: int
    members: dict[str, int] = field(default_factory=dict)


@dataclass
class Sandbox:
    settings: Settings
    rt: Runtime
    discord: DiscordEmulator
    slack: SlackEmulator
    discord_adapter: DiscordAdapter
    slack_adapter: SlackAdapter
    ids: DiscordIds
    extras: dict[str, Any] = field(default_factory=dict)

    def cards(self) -> list[dict[str, Any]]:
        """Top-level messages in the flags channel: one per flag."""
        return [
            m for m in self.slack.messages(FLAGS_CHANNEL) if m.get("thread_ts") in (None, m["ts"])
        ]


def _seed_discord(emu: DiscordEmulator, names: tuple[str, ...]) -> DiscordIds:
    guild = emu.create_guild("Acme Community")
    ids = DiscordIds(
        guild=guild,
        general=emu.create_channel(guild, "general"),
        support=emu.create_channel(guild, "support"),
    )
    for name in names:
        ids.members[name] = emu.add_member(guild, name)
    ids.members["mod"] = emu.add_member(
        guild, "mod", permissions=PERM_MANAGE_GUILD | PERM_MANAGE_MESSAGES
    )
    return ids


def _seed_slack(emu: SlackEmulator) -> None:
    emu.add_channel(FLAGS_CHANNEL, "rapport-flags", is_private=True)
    emu.add_channel(SLACK_COMMUNITY_CHANNEL, "customer-help")
    emu.add_user(MANAGER, "maria")
    emu.add_user(SECOND_MANAGER, "dev")
    emu.add_user(SLACK_MEMBER, "sam")
    emu.add_user(OUTSIDER, "oscar")


async def _until_registered(rt: Runtime, guild_id: str, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    """The adapter names the guild and its channels just after READY; cards want the names."""

    def registered() -> bool:
        return rt.db.call(
            lambda s: (
                s.scalars(
                    select(Community).where(
                        col(Community.platform) == "discord", col(Community.external_id) == guild_id
                    )
                ).first()
                is not None
            )
        )

    if not await until(registered, timeout, interval_s=0.01):
        raise TimeoutError(f"guild {guild_id} was not registered within {timeout} s")


@contextlib.asynccontextmanager
async def sandbox(
    database_url: str,
    *,
    clock: Clock | None = None,
    judge: Judge | None = None,
    drafter: DraftMaker | None = None,
    members: tuple[str, ...] = ("alice", "bob", "carol", "dan", "erin"),
    extra_settings: dict[str, Any] | None = None,
) -> AsyncIterator[Sandbox]:
    """Start the emulators, the runtime and both adapters; stop them all afterwards."""
    async with (
        DiscordEmulator() as discord_emu,
        SlackEmulator(signing_secret=SLACK_SECRET, bot_token=SLACK_BOT_TOKEN) as slack_emu,
    ):
        ids = _seed_discord(discord_emu, members)
        _seed_slack(slack_emu)
        settings = load_settings(
            _env_file=None,
            DATABASE_URL=database_url,
            DISCORD_TOKEN=discord_emu.token,
            DISCORD_API_BASE=discord_emu.api_base,
            DISCORD_GATEWAY_URL=discord_emu.gateway_url,
            SLACK_BOT_TOKEN=SLACK_BOT_TOKEN,
            SLACK_SIGNING_SECRET=SLACK_SECRET,
            SLACK_API_BASE=slack_emu.api_base,
            SLACK_FLAGS_CHANNEL=FLAGS_CHANNEL,
            SLACK_MANAGERS=f"{MANAGER},{SECOND_MANAGER}",
            RAPPORT_HTTP_PORT=0,
            **(extra_settings or {}),
        )
        async with build_runtime(settings, clock=clock, judge=judge, drafter=drafter) as rt:
            parts: dict[str, str] = {}
            web_app: web.Application = make_web_app(rt, lambda: dict(parts))
            adapters = await attach_adapters(
                rt,
                settings,
                web_app,
                parts,
                discord_options={
                    "identify_delay": 0,
                    "guild_ready_timeout": 0.05,
                    "guild_ids": (ids.guild,),
                },
            )
            runner, port = await start_site(web_app, "127.0.0.1", 0)
            slack_emu.app_url = f"http://127.0.0.1:{port}/slack/events"
            try:
                assert adapters.discord is not None and adapters.slack is not None
                await discord_emu.wait_for_ready(timeout=15)
                await discord_emu.wait_for_command("rapport", timeout=15)
                await _until_registered(rt, str(ids.guild))
                yield Sandbox(
                    settings, rt, discord_emu, slack_emu, adapters.discord, adapters.slack, ids
                )
            finally:
                await adapters.close()
                await runner.cleanup()
