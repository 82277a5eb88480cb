"""The core's vocabulary: platform-neutral events coming in and actions going out.

Adapters in ``bot/`` translate Discord and Slack objects into these and execute the
actions; nothing here knows which platform a value came from beyond its ``platform``
string. All ids are strings (Discord snowflakes arrive as ints in some payloads and
Slack timestamps are strings: one type avoids a class of equality bugs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from storage.records import record


class Platform(StrEnum):
    DISCORD = "discord"
    SLACK = "slack"
    SANDBOX = "sandbox"


class MessageKind(StrEnum):
    NEW = "new"
    EDIT = "edit"
    DELETE = "delete"


@record
class Author:
    """Who wrote a message, as the platform names them."""

    id: str
    name: str = ""
    is_bot: bool = False


@record
class MessageEvent:
    """A message was posted, edited or deleted in a community channel.

    ``thread_id`` is the thread the message lives in (Discord thread channel id or Slack
    ``thread_ts``), ``None`` when it is top-level. ``reply_to`` is the message it answers.
    For ``DELETE`` only the ids matter; for ``EDIT`` ``text`` is the new text.
    """

    platform: str
    community_id: str
    channel_id: str
    message_id: str
    author: Author
    text: str
    created_at: datetime
    kind: MessageKind = MessageKind.NEW
    thread_id: str | None = None
    reply_to: str | None = None
    edited_at: datetime | None = None
    community_name: str = ""
    channel_name: str = ""
    permalink: str | None = None


@record
class ReactionEvent:
    """A member added (or removed) a reaction to a message."""

    platform: str
    community_id: str
    channel_id: str
    message_id: str
    member_id: str
    emoji: str
    added: bool
    at: datetime


@record
class MemberJoinEvent:
    """A member joined a community."""

    platform: str
    community_id: str
    member: Author
    at: datetime


@dataclass(frozen=True, slots=True)
class Target:
    """Where an outgoing message goes: a channel, optionally as a reply or in a thread."""

    platform: str
    community_id: str
    channel_id: str
    thread_id: str | None = None
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class PostMessage:
    """Post ``text`` at ``target`` (a reply or thread reply when the target says so)."""

    target: Target
    text: str
    mention_user_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplyInThread:
    """Reply to a member where they spoke: in their thread, or as a reply to their message."""

    target: Target
    text: str
    flag_id: int | None = None


@dataclass(frozen=True, slots=True)
class PostFlagCard:
    """Post the card for a flag in the managers' channel (rendered from the flag's state)."""

    flag_id: int


@dataclass(frozen=True, slots=True)
class UpdateFlagCard:
    """Re-render a flag's card in place from its current state."""

    flag_id: int


@dataclass(frozen=True, slots=True)
class PostCardThreadReply:
    """Post a note in the thread under a flag's card (SLA reminders, send failures)."""

    flag_id: int
    text: str
    mention_group: str | None = None
    while_state: str | None = None
    """Post only while the flag is still in this state: an SLA reminder that waited in
    the outbox (the platform was down) is moot once a manager has claimed the flag."""


@dataclass(frozen=True, slots=True)
class AddReaction:
    target: Target
    message_id: str
    emoji: str


Action = (
    PostMessage | ReplyInThread | PostFlagCard | UpdateFlagCard | PostCardThreadReply | AddReaction
)


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an adapter reports after executing an action.

    ``ok`` false with ``retryable`` true means try again later; ``ref`` carries what the
    platform assigned (for a card, ``channel`` and ``ts``; for a reply, its message id).
    """

    ok: bool
    ref: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    retryable: bool = False
