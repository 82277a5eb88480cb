"""Stand-in CommunityCores: one that forwards every call, one that does nothing.

Tests and benchmarks wrap the real core to watch what reaches it, or stand in for it;
subclassing one of these and overriding a method or two keeps each to the part that
differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from handlers.events import MemberJoinEvent, MessageEvent, ReactionEvent
from handlers.ports import ChannelInfo, CommunityCore, CommunitySettings, FlagOutcome


class DelegatingCore:
    def __init__(self, inner: CommunityCore) -> None:
        self.inner = inner

    async def on_message(self, event: MessageEvent) -> None:
        await self.inner.on_message(event)

    def accept(self, event: MessageEvent) -> None:
        self.inner.accept(event)

    async def on_reaction(self, event: ReactionEvent) -> None:
        await self.inner.on_reaction(event)

    async def on_member_join(self, event: MemberJoinEvent) -> None:
        await self.inner.on_member_join(event)

    async def register_community(
        self, platform: str, community_id: str, name: str, channels: list[ChannelInfo]
    ) -> None:
        await self.inner.register_community(platform, community_id, name, channels)

    async def is_watched(self, platform: str, community_id: str, channel_id: str) -> bool:
        return await self.inner.is_watched(platform, community_id, channel_id)

    async def last_message_id(
        self, platform: str, community_id: str, channel_id: str, before: datetime | None = None
    ) -> str | None:
        return await self.inner.last_message_id(platform, community_id, channel_id, before)

    async def recent_threads(
        self, platform: str, community_id: str, channel_id: str, since: datetime
    ) -> list[tuple[str, datetime]]:
        return await self.inner.recent_threads(platform, community_id, channel_id, since)

    async def known_channels(self, platform: str) -> list[tuple[str, str]]:
        return await self.inner.known_channels(platform)

    async def recent_message_ids(
        self, platform: str, community_id: str, channel_id: str, since: datetime
    ) -> set[str]:
        return await self.inner.recent_message_ids(platform, community_id, channel_id, since)

    async def manual_flag(
        self, platform: str, community_id: str, channel_id: str, message_id: str, actor: str
    ) -> FlagOutcome:
        return await self.inner.manual_flag(platform, community_id, channel_id, message_id, actor)

    async def status_text(self, platform: str, community_id: str) -> str:
        return await self.inner.status_text(platform, community_id)

    async def community_settings(self, platform: str, community_id: str) -> CommunitySettings:
        return await self.inner.community_settings(platform, community_id)

    async def set_sensitivity(
        self, platform: str, community_id: str, threshold: float | None
    ) -> None:
        await self.inner.set_sensitivity(platform, community_id, threshold)

    async def set_competitors(
        self, platform: str, community_id: str, names: Sequence[str] | None
    ) -> None:
        await self.inner.set_competitors(platform, community_id, names)

    async def competitor_mentions(
        self, platform: str, community_id: str, days: int = 7
    ) -> list[tuple[str, str, int]]:
        return await self.inner.competitor_mentions(platform, community_id, days)


class NullCore:
    """A CommunityCore that stores nothing and answers "nothing known".

    The base for stand-in cores in tests and benchmarks: each overrides only the calls
    it gives meaning to, and a method added to the port is added here once.
    """

    async def on_message(self, event: MessageEvent) -> None:
        return None

    def accept(self, event: MessageEvent) -> None:
        """Nothing (stand-ins that store messages override this and :meth:`on_message`:
        the Discord adapter takes new messages here)."""
        return None

    async def on_reaction(self, event: ReactionEvent) -> None:
        return None

    async def on_member_join(self, event: MemberJoinEvent) -> None:
        return None

    async def register_community(
        self, platform: str, community_id: str, name: str, channels: list[ChannelInfo]
    ) -> None:
        return None

    async def is_watched(self, platform: str, community_id: str, channel_id: str) -> bool:
        return True

    async def last_message_id(
        self, platform: str, community_id: str, channel_id: str, before: datetime | None = None
    ) -> str | None:
        return None

    async def recent_threads(
        self, platform: str, community_id: str, channel_id: str, since: datetime
    ) -> list[tuple[str, datetime]]:
        return []

    async def known_channels(self, platform: str) -> list[tuple[str, str]]:
        return []

    async def recent_message_ids(
        self, platform: str, community_id: str, channel_id: str, since: datetime
    ) -> set[str]:
        return set()

    async def manual_flag(
        self, platform: str, community_id: str, channel_id: str, message_id: str, actor: str
    ) -> FlagOutcome:
        return FlagOutcome(ok=False, message="Nothing is stored here.")

    async def status_text(self, platform: str, community_id: str) -> str:
        return ""

    async def community_settings(self, platform: str, community_id: str) -> CommunitySettings:
        return CommunitySettings(sensitivity=0.5, default_sensitivity=0.5)

    async def set_sensitivity(
        self, platform: str, community_id: str, threshold: float | None
    ) -> None:
        return None

    async def set_competitors(
        self, platform: str, community_id: str, names: Sequence[str] | None
    ) -> None:
        return None

    async def competitor_mentions(
        self, platform: str, community_id: str, days: int = 7
    ) -> list[tuple[str, str, int]]:
        return []
