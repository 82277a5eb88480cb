"""The schema: SQLModel tables. Alembic migrations in ``storage/migrations`` create them.

Messages carry the platform's own ids as strings (platform, community, channel, message)
rather than foreign keys, so the hot ingestion path writes one row with no look-ups.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel


class Community(SQLModel, table=True):
    __tablename__ = "communities"
    __table_args__ = (UniqueConstraint("platform", "external_id", name="uq_community"),)

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    external_id: str = Field(max_length=64)
    name: str = Field(default="", max_length=200)
    settings: dict[str, object] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    timezone: str = Field(default="UTC", max_length=64)
    created_at: datetime


class Channel(SQLModel, table=True):
    __tablename__ = "channels"
    __table_args__ = (
        UniqueConstraint("platform", "community_id", "external_id", name="uq_channel"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    community_id: str = Field(max_length=64)
    external_id: str = Field(max_length=64)
    name: str = Field(default="", max_length=200)
    watched: bool = True
    is_thread: bool = False


class Member(SQLModel, table=True):
    __tablename__ = "members"
    __table_args__ = (
        UniqueConstraint("platform", "community_id", "external_id", name="uq_member"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    community_id: str = Field(max_length=64)
    external_id: str = Field(max_length=64)
    display_name: str = Field(default="", max_length=200)
    first_seen: datetime
    last_seen: datetime
    message_count: int = 0
    opted_out: bool = False


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("platform", "community_id", "channel_id", "message_id", name="uq_message"),
        # Partial: most messages are in no thread and reply to nothing (migration 0004).
        Index(
            "ix_messages_thread",
            "platform",
            "community_id",
            "thread_id",
            sqlite_where=text("thread_id IS NOT NULL"),
            postgresql_where=text("thread_id IS NOT NULL"),
        ),
        Index(
            "ix_messages_reply",
            "platform",
            "community_id",
            "reply_to",
            sqlite_where=text("reply_to IS NOT NULL"),
            postgresql_where=text("reply_to IS NOT NULL"),
        ),
        Index("ix_messages_created", "platform", "community_id", "channel_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    community_id: str = Field(max_length=64)
    channel_id: str = Field(max_length=64)
    message_id: str = Field(max_length=64)
    thread_id: str | None = Field(default=None, max_length=64)
    reply_to: str | None = Field(default=None, max_length=64)
    author_id: str = Field(max_length=64)
    author_name: str = Field(default="", max_length=200)
    text: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime
    edited_at: datetime | None = None
    deleted_at: datetime | None = None
    score: float | None = None
    reason: str | None = Field(default=None, max_length=32)
    severity: str | None = Field(default=None, max_length=8)
    permalink: str | None = Field(default=None, max_length=400)


class Reaction(SQLModel, table=True):
    __tablename__ = "reactions"
    __table_args__ = (
        UniqueConstraint(
            "platform", "community_id", "message_id", "member_id", "emoji", name="uq_reaction"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    community_id: str = Field(max_length=64)
    channel_id: str = Field(max_length=64)
    message_id: str = Field(max_length=64)
    member_id: str = Field(max_length=64)
    emoji: str = Field(max_length=64)
    at: datetime


class CompetitorMention(SQLModel, table=True):
    """A competitor named in a member's message, with the sentiment toward it (digest)."""

    __tablename__ = "competitor_mentions"
    __table_args__ = (
        UniqueConstraint(
            "platform",
            "community_id",
            "channel_id",
            "message_id",
            "competitor",
            name="uq_competitor_mention",
        ),
        Index("ix_competitor_mentions_at", "platform", "community_id", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    community_id: str = Field(max_length=64)
    channel_id: str = Field(max_length=64)
    message_id: str = Field(max_length=64)
    competitor: str = Field(max_length=100)
    sentiment: str = Field(max_length=8)
    score: float = 0.0
    at: datetime


class Flag(SQLModel, table=True):
    __tablename__ = "flags"
    __table_args__ = (
        UniqueConstraint("message_pk", name="uq_flag_message"),
        Index("ix_flags_state", "state", "next_reminder_at"),
        Index("ix_flags_incident", "platform", "community_id", "incident_key"),
        Index("ix_flags_message", "platform", "community_id", "message_id"),
        Index("ix_flags_author", "platform", "community_id", "author_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_pk: int = Field(foreign_key="messages.id")
    platform: str = Field(max_length=16)
    community_id: str = Field(max_length=64)
    channel_id: str = Field(max_length=64)
    message_id: str = Field(max_length=64)
    thread_id: str | None = Field(default=None, max_length=64)
    author_id: str = Field(default="", max_length=64)
    author_name: str = Field(default="", max_length=200)
    quoted_text: str = Field(default="", sa_column=Column(Text, nullable=False))
    reason: str = Field(max_length=32)
    severity: str = Field(max_length=8)
    score: float = 0.0
    rationale: str = Field(default="", max_length=400)
    source: str = Field(default="detector", max_length=16)  # detector | manual
    state: str = Field(default="open", max_length=16)
    assignee: str | None = Field(default=None, max_length=64)
    draft: str = Field(default="", sa_column=Column(Text, nullable=False))
    draft_kind: str = Field(default="drafting", max_length=16)
    draft_warnings: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    card_channel: str | None = Field(default=None, max_length=64)
    card_ts: str | None = Field(default=None, max_length=64)
    incident_key: str | None = Field(default=None, max_length=64)
    incident_size: int = 1
    escalation: str = Field(default="", max_length=400)
    send_error: str | None = Field(default=None, max_length=400)
    sending: bool = False
    reminders_sent: int = 0
    next_reminder_at: datetime | None = None
    created_at: datetime
    claimed_at: datetime | None = None
    first_response_at: datetime | None = None
    resolved_at: datetime | None = None
    version: int = 0


class Outbox(SQLModel, table=True):
    """Work that must happen (a card to post, a reply to send): written before it is done."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("dedupe_key", name="uq_outbox_dedupe"),
        Index("ix_outbox_due", "state", "due_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    platform: str = Field(default="", max_length=16)
    payload: dict[str, object] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    dedupe_key: str = Field(max_length=200)
    state: str = Field(default="pending", max_length=16)  # pending | running | done | failed
    attempts: int = 0
    due_at: datetime
    created_at: datetime
    done_at: datetime | None = None
    last_error: str | None = Field(default=None, max_length=400)
    result: dict[str, object] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Feedback(SQLModel, table=True):
    """A manager's verdict on a message: what the detector learns each community's language from."""

    __tablename__ = "feedback"
    __table_args__ = (
        Index("ix_feedback_community", "platform", "community_id"),
        Index("ix_feedback_flag", "flag_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    platform: str = Field(max_length=16)
    community_id: str = Field(max_length=64)
    text: str = Field(sa_column=Column(Text, nullable=False))
    is_negative: bool
    source: str = Field(max_length=16)  # dismiss | manual | confirm
    flag_id: int | None = None
    actor: str = Field(default="", max_length=64)
    created_at: datetime


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime
    actor: str = Field(max_length=64)
    action: str = Field(max_length=32)
    flag_id: int | None = Field(default=None, index=True)
    detail: str = Field(default="", max_length=400)
