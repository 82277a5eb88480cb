"""partial indexes for thread and reply look-ups

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 04:20:00

Escalation looks up the replies to a flagged message (``reply_to``) and the messages of
its thread (``thread_id``). ``reply_to`` had no index, so that look-up scanned every
message of the community; ``thread_id`` had one over every message, although most have
no thread. Both are now partial indexes over the messages that have a value: the
look-ups are index searches, and an ordinary message (no thread, no reply) updates
neither index when it is stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_messages_thread", table_name="messages")
    op.create_index(
        "ix_messages_thread",
        "messages",
        ["platform", "community_id", "thread_id"],
        unique=False,
        sqlite_where=sa.text("thread_id IS NOT NULL"),
        postgresql_where=sa.text("thread_id IS NOT NULL"),
    )
    op.create_index(
        "ix_messages_reply",
        "messages",
        ["platform", "community_id", "reply_to"],
        unique=False,
        sqlite_where=sa.text("reply_to IS NOT NULL"),
        postgresql_where=sa.text("reply_to IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_reply", table_name="messages")
    op.drop_index("ix_messages_thread", table_name="messages")
    op.create_index(
        "ix_messages_thread", "messages", ["platform", "community_id", "thread_id"], unique=False
    )
