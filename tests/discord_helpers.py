"""Shared pieces for the Discord tests: the cores, a recorder, and a running client.

The adapter is tested through the real discord.py client against the emulator. The core
behind it is chosen in one place, :func:`core_under_test`: the real runtime
(``bot.app.build_runtime``) or a small in-memory stand-in. Either way it is wrapped in
:class:`ObservedCore`, which records exactly what crossed the adapter→core boundary and
wakes waiters, so tests wait on events with a bound and never sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import discord
from sqlalchemy import func, select
from sqlmodel import Session, col

from bot.app import Runtime, build_runtime
from bot.discord_adapter import DiscordAdapter
from bot.sandbox.delegating import DelegatingCore, NullCore
from bot.sandbox.discord_emulator import (
    PERM_MANAGE_GUILD,
    PERM_MANAGE_MESSAGES,
    ChannelKind,
    DiscordEmulator,
)
from bot.settings import load_settings
from handlers.core import Core
from handlers.events import MemberJoinEvent, MessageEvent, MessageKind, ReactionEvent
from handlers.ports import ChannelInfo, CommunityCore, FlagOutcome
from storage.db import Database
from storage.models import Message
from tests.core_helpers import KeywordJudge

logger = logging.getLogger(__name__)


class MessageStore(Protocol):
    """What the tests ask of the core's storage (the real runtime answers from its DB)."""

    async def stored_text(self, platform: str, message_id: str) -> str | None: ...

    async def stored_count(self, platform: str, message_ids: list[str]) -> int: ...


@dataclass
class StoredRow:
    event: MessageEvent
    text: str
    deleted: bool = False


@dataclass
class MemoryCore(NullCore):
    """A stand-in CommunityCore: idempotent store on (platform, message id), no detection."""

    unwatched: set[str] = field(default_factory=set)
    rows: dict[tuple[str, str], StoredRow] = field(default_factory=dict)
    communities: dict[str, list[ChannelInfo]] = field(default_factory=dict)

    async def on_message(self, event: MessageEvent) -> None:
        self.accept(event)

    def accept(self, event: MessageEvent) -> None:
        if event.channel_id in self.unwatched and event.kind is not MessageKind.DELETE:
            return  # as the real core: the adapter forwards, the core decides
        key = (event.platform, event.message_id)
        row = self.rows.get(key)
        if event.kind == MessageKind.NEW:
            if row is None:
                self.rows[key] = StoredRow(event, event.text)
        elif row is not None and event.kind == MessageKind.EDIT:
            row.text = event.text
        elif row is not None and event.kind == MessageKind.DELETE:
            row.text, row.deleted = "", True

    async def register_community(
        self, platform: str, community_id: str, name: str, channels: list[ChannelInfo]
    ) -> None:
        self.communities[community_id] = channels

    async def is_watched(self, platform: str, community_id: str, channel_id: str) -> bool:
        return channel_id not in self.unwatched

    async def last_message_id(
        self, platform: str, community_id: str, channel_id: str, before: datetime | None = None
    ) -> str | None:
        ids = [
            int(r.event.message_id)
            for (p, _), r in self.rows.items()
            if p == platform
            and r.event.channel_id == channel_id
            and (before is None or r.event.created_at < before)
        ]
        return str(max(ids)) if ids else None

    async def recent_message_ids(
        self, platform: str, community_id: str, channel_id: str, since: datetime
    ) -> set[str]:
        return {
            r.event.message_id
            for (p, _), r in self.rows.items()
            if p == platform
            and r.event.channel_id == channel_id
            and r.event.thread_id is None
            and not r.deleted
            and r.event.created_at >= since
        }

    async def manual_flag(
        self, platform: str, community_id: str, channel_id: str, message_id: str, actor: str
    ) -> FlagOutcome:
        if (platform, message_id) not in self.rows:
            return FlagOutcome(ok=False, message="That message is not in Rapport's log.")
        return FlagOutcome(ok=True, message=f"Flagged message {message_id} for follow-up.")

    async def status_text(self, platform: str, community_id: str) -> str:
        n = sum(1 for r in self.rows.values() if r.event.community_id == community_id)
        return f"Rapport is listening: {n} messages logged in this community."

    # MessageStore
    async def stored_text(self, platform: str, message_id: str) -> str | None:
        row = self.rows.get((platform, message_id))
        return None if row is None else row.text

    async def stored_count(self, platform: str, message_ids: list[str]) -> int:
        return sum(1 for m in message_ids if (platform, m) in self.rows)


class ObservedCore(DelegatingCore):
    """Forwards to a real or stand-in core and records every call, waking waiters."""

    def __init__(self, inner: CommunityCore) -> None:
        super().__init__(inner)
        self.messages: list[MessageEvent] = []
        self.reactions: list[ReactionEvent] = []
        self.joins: list[MemberJoinEvent] = []
        self.registered: list[tuple[str, list[ChannelInfo]]] = []
        self.flags: list[tuple[str, str, str, str]] = []
        self.flag_outcomes: list[FlagOutcome] = []
        self.status_calls: list[str] = []
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while not pred():
                await self._changed.wait()

    def kinds(self, message_id: str) -> list[MessageKind]:
        return [e.kind for e in self.messages if e.message_id == message_id]

    def new_count(self) -> Counter[str]:
        return Counter(e.message_id for e in self.messages if e.kind == MessageKind.NEW)

    async def on_message(self, event: MessageEvent) -> None:
        await self.inner.on_message(event)
        self.messages.append(event)
        self._notify()

    def accept(self, event: MessageEvent) -> None:
        self.inner.accept(event)
        self.messages.append(event)
        self._notify()

    async def on_reaction(self, event: ReactionEvent) -> None:
        await self.inner.on_reaction(event)
        self.reactions.append(event)
        self._notify()

    async def on_member_join(self, event: MemberJoinEvent) -> None:
        await self.inner.on_member_join(event)
        self.joins.append(event)
        self._notify()

    async def register_community(
        self, platform: str, community_id: str, name: str, channels: list[ChannelInfo]
    ) -> None:
        await self.inner.register_community(platform, community_id, name, channels)
        self.registered.append((community_id, channels))
        self._notify()

    async def manual_flag(
        self, platform: str, community_id: str, channel_id: str, message_id: str, actor: str
    ) -> FlagOutcome:
        outcome = await self.inner.manual_flag(
            platform, community_id, channel_id, message_id, actor
        )
        self.flags.append((community_id, channel_id, message_id, actor))
        self.flag_outcomes.append(outcome)
        self._notify()
        return outcome

    async def status_text(self, platform: str, community_id: str) -> str:
        self.status_calls.append(community_id)
        return await self.inner.status_text(platform, community_id)


class RuntimeStore:
    """:class:`MessageStore` over the real runtime's database.

    The core does not wait for most messages' commits, so reads first flush it, as the
    core's own readers do.
    """

    def __init__(self, db: Database, core: Core) -> None:
        self._db = db
        self._core = core

    async def stored_text(self, platform: str, message_id: str) -> str | None:
        def work(s: Session) -> str | None:
            row = s.scalars(
                select(Message).where(
                    col(Message.platform) == platform, col(Message.message_id) == message_id
                )
            ).first()
            return None if row is None else row.text

        await self._core.flush()
        return await self._db.run(work)

    async def stored_count(self, platform: str, message_ids: list[str]) -> int:
        def work(s: Session) -> int:
            return int(
                s.execute(
                    select(func.count())
                    .select_from(Message)
                    .where(
                        col(Message.platform) == platform,
                        col(Message.message_id).in_(message_ids),
                    )
                ).scalar_one()
            )

        await self._core.flush()
        return await self._db.run(work)


@dataclass
class CoreUnderTest:
    core: ObservedCore
    store: MessageStore
    unwatch: Callable[[str, str], Awaitable[None]]
    runtime: Runtime | None = None


@contextlib.asynccontextmanager
async def core_under_test(kind: str, tmp_path: Path) -> AsyncIterator[CoreUnderTest]:
    """The real runtime (SQLite file, detector, outbox) or the in-memory stand-in.

    This is also how the app wires Discord: build the runtime, hand ``rt.core`` to
    :class:`DiscordAdapter`, register ``adapter.executor`` on ``rt.outbox`` (done by
    :func:`running_client` when a runtime is given).
    """
    if kind == "memory":
        inner = MemoryCore()

        async def unwatch_memory(community_id: str, channel_id: str) -> None:
            inner.unwatched.add(channel_id)

        yield CoreUnderTest(ObservedCore(inner), inner, unwatch_memory)
        return
    settings = load_settings(_env_file=None, DATABASE_URL=f"sqlite:///{tmp_path}/rapport.db")
    async with build_runtime(settings, judge=KeywordJudge(), start_workers=False) as rt:

        async def unwatch_real(community_id: str, channel_id: str) -> None:
            await rt.core.set_watched("discord", community_id, channel_id, False)

        yield CoreUnderTest(ObservedCore(rt.core), RuntimeStore(rt.db, rt.core), unwatch_real, rt)


@dataclass
class Community:
    """The seeded guild: ids the tests refer to."""

    guild_id: int
    general: int
    support: int
    forum: int
    alice: int
    bob: int
    mod: int
    otherbot: int


def seed_community(emu: DiscordEmulator) -> Community:
    gid = emu.create_guild("Acme Community")
    return Community(
        guild_id=gid,
        general=emu.create_channel(gid, "general"),
        support=emu.create_channel(gid, "support"),
        forum=emu.create_channel(gid, "feedback", ChannelKind.FORUM),
        alice=emu.add_member(gid, "alice"),
        bob=emu.add_member(gid, "bob"),
        mod=emu.add_member(gid, "mod", permissions=PERM_MANAGE_GUILD | PERM_MANAGE_MESSAGES),
        otherbot=emu.add_member(gid, "otherbot", bot=True),
    )


@contextlib.asynccontextmanager
async def running_client(
    emu: DiscordEmulator,
    core: CommunityCore,
    guild_ids: list[int],
    runtime: Runtime | None = None,
    guild_ready_timeout: float = 0.02,
    **options: Any,
) -> AsyncIterator[DiscordAdapter]:
    """A started adapter, READY, its commands registered; closed on exit.

    discord.py's endpoints are process-wide class attributes: they are put back on exit.
    """
    saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    client = DiscordAdapter(
        core,
        api_base=emu.api_base,
        gateway_url=emu.gateway_url,
        guild_ids=guild_ids,
        guild_ready_timeout=guild_ready_timeout,
        identify_delay=0,
        **options,
    )
    if runtime is not None:
        runtime.outbox.register(client.executor)
    runner = asyncio.create_task(client.start(emu.token))
    try:
        async with asyncio.timeout(10):
            ready = asyncio.create_task(client.wait_until_ready())
            done, _ = await asyncio.wait({ready, runner}, return_when=asyncio.FIRST_COMPLETED)
            if runner in done:
                ready.cancel()
                runner.result()  # raises why the client stopped
            await emu.wait_for_command("rapport")
        yield client
    finally:
        await client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(runner, 5)
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved
