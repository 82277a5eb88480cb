"""indexes for finding a message's flags and a flag's feedback

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 08:00:00

A delete, an edit and an opt-out now reach the flags raised on a message (or by a
member) and the managers' feedback on those flags, to erase them and re-render the
cards. Without these indexes each look-up scanned every flag and every feedback row of
the database, inside the writer's transaction (about 25 ms a delete at 50,000 flags).
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_flags_message", "flags", ["platform", "community_id", "message_id"], unique=False
    )
    op.create_index(
        "ix_flags_author", "flags", ["platform", "community_id", "author_id"], unique=False
    )
    op.create_index("ix_feedback_flag", "feedback", ["flag_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_feedback_flag", table_name="feedback")
    op.drop_index("ix_flags_author", table_name="flags")
    op.drop_index("ix_flags_message", table_name="flags")
