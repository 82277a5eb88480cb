"""The seams between the core and the adapters.

Adapters call the core through :class:`CommunityCore` and :class:`FlagWorkflow`; the core
reaches the platforms only through :class:`ActionExecutor` implementations that adapters
register. Keeping these as protocols lets each side be tested against the real other side
or a small in-process stand-in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, Protocol

from handlers.events import Action, ActionResult, MemberJoinEvent, MessageEvent, ReactionEvent


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    id: str
    name: str
    is_thread: bool = False
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class ContextLine:
    author: str
    text: str
    at: datetime


@dataclass(frozen=True, slots=True)
class HistoryLine:
    at: datetime
    actor: str
    action: str
    detail: str = ""


KB_SOURCES_PREFIX: Final = "kb: "
"""A draft note that starts with this lists the knowledge-base sections the draft drew
on (where the reply came from); every other draft note is a warning for the manager."""


@dataclass(frozen=True, slots=True)
class FlagCardView:
    """Everything a flag card shows, already decided by the core; adapters only render.

    Text fields hold raw member/LLM text: the renderer must escape them for its platform.
    """

    flag_id: int
    state: str  # open | claimed | replied | dismissed | resolved
    severity: str  # low | medium | high
    reason: str
    rationale: str
    score: float
    platform: str
    community_name: str
    channel_name: str
    author_name: str
    author_id: str
    text: str
    created_at: datetime
    permalink: str | None = None
    context: tuple[ContextLine, ...] = ()
    draft: str = ""
    draft_kind: str = "drafting"  # drafting | llm | template | manual
    draft_warnings: tuple[str, ...] = ()
    """Warnings about the draft, and its sources as one ``KB_SOURCES_PREFIX`` note."""
    claimed_by: str | None = None
    history: tuple[HistoryLine, ...] = ()
    send_error: str | None = None
    incident_size: int = 1
    escalation: str = ""
    message_deleted: bool = False
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FlagOutcome:
    """The result of a manager's action on a flag; ``message`` is shown to that manager."""

    ok: bool
    message: str
    state: str = ""
    flag_id: int | None = None


@dataclass(frozen=True, slots=True)
class CommunitySettings:
    """What an admin has set for one community (``/rapport sensitivity``, ``competitors``)."""

    sensitivity: float
    """Messages scoring at least this are flagged (lower = more flags)."""
    default_sensitivity: float
    competitors: tuple[str, ...] = ()
    competitors_are_default: bool = True
    """True while the community uses the deployment's list (``RAPPORT_COMPETITORS``)."""


class CommunityCore(Protocol):
    """What adapters call when something happens in a community."""

    async def on_message(self, event: MessageEvent) -> None: ...

    def accept(self, event: MessageEvent) -> None:
        """Take a NEW message without a task or an await of its own (a busy adapter's
        fast path): judged with the others that arrived meanwhile, and followed up by the
        core. ``await on_message(event)`` judges it at once and awaits what follows."""
        ...

    async def on_reaction(self, event: ReactionEvent) -> None: ...

    async def on_member_join(self, event: MemberJoinEvent) -> None: ...

    async def register_community(
        self, platform: str, community_id: str, name: str, channels: list[ChannelInfo]
    ) -> None: ...

    async def is_watched(self, platform: str, community_id: str, channel_id: str) -> bool: ...

    async def last_message_id(
        self, platform: str, community_id: str, channel_id: str, before: datetime | None = None
    ) -> str | None:
        """The newest stored message in a channel (created before ``before``, if given):
        where a backfill after a gap starts. ``before`` is when the new session began,
        so live messages stored meanwhile do not hide the gap."""
        ...

    async def known_channels(self, platform: str) -> list[tuple[str, str]]:
        """(community, channel) pairs with stored messages, for backfill after downtime."""
        ...

    async def recent_message_ids(
        self, platform: str, community_id: str, channel_id: str, since: datetime
    ) -> set[str]:
        """Stored, not deleted, top-level (not in a thread) messages of a channel created
        since ``since``: what a platform's history is compared with to find the messages
        deleted while Rapport was away."""
        ...

    async def recent_threads(
        self, platform: str, community_id: str, channel_id: str, since: datetime
    ) -> list[tuple[str, datetime]]:
        """Threads of a channel with replies stored since ``since``, as ``(thread id,
        newest stored reply time)``, most recently active first (bounded), for backfill."""
        ...

    async def manual_flag(
        self, platform: str, community_id: str, channel_id: str, message_id: str, actor: str
    ) -> FlagOutcome: ...

    async def status_text(self, platform: str, community_id: str) -> str: ...

    async def community_settings(self, platform: str, community_id: str) -> CommunitySettings: ...

    async def set_sensitivity(
        self, platform: str, community_id: str, threshold: float | None
    ) -> None:
        """Flag this community's messages scoring ``>= threshold``; None: the default."""
        ...

    async def set_competitors(
        self, platform: str, community_id: str, names: Sequence[str] | None
    ) -> None:
        """Tag these competitor names here; None: the deployment's default list."""
        ...

    async def competitor_mentions(
        self, platform: str, community_id: str, days: int = 7
    ) -> list[tuple[str, str, int]]:
        """``(competitor, sentiment, mentions)`` in this community over the last days."""
        ...


class FlagWorkflow(Protocol):
    """What the managers' adapter (Slack) calls when a manager acts on a card."""

    def is_manager(self, user_id: str) -> bool: ...

    async def claim(self, flag_id: int, actor: str) -> FlagOutcome: ...

    async def send(self, flag_id: int, actor: str, text: str | None = None) -> FlagOutcome: ...

    async def dismiss(self, flag_id: int, actor: str) -> FlagOutcome: ...

    async def resolve(self, flag_id: int, actor: str) -> FlagOutcome: ...

    async def card(self, flag_id: int) -> FlagCardView | None: ...


class ActionExecutor(Protocol):
    """Executes the core's actions on one platform. Registered by adapters at start-up."""

    platform: str

    async def execute(self, action: Action) -> ActionResult: ...
