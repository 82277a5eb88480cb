"""competitor mentions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 02:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "competitor_mentions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("community_id", sa.String(length=64), nullable=False),
        sa.Column("channel_id", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("competitor", sa.String(length=100), nullable=False),
        sa.Column("sentiment", sa.String(length=8), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "platform",
            "community_id",
            "channel_id",
            "message_id",
            "competitor",
            name="uq_competitor_mention",
        ),
    )
    op.create_index(
        "ix_competitor_mentions_at",
        "competitor_mentions",
        ["platform", "community_id", "at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_competitor_mentions_at", table_name="competitor_mentions")
    op.drop_table("competitor_mentions")
