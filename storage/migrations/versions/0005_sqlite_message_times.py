"""one text form for message times on SQLite

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 05:00:00

New messages went into SQLite through the driver and their ``created_at`` was written as
``2026-01-05 09:00:01+00:00``, while every row written through the ORM reads
``2026-01-05 09:00:01.000000``. SQLite compares these as text, so a message sent on a
whole second fell outside a time window starting on that second. This rewrites the
driver-written form to the ORM's (the values were always UTC). PostgreSQL stores real
timestamps and is untouched.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# "YYYY-MM-DD HH:MM:SS+00:00" (25 characters) or "YYYY-MM-DD HH:MM:SS.ffffff+00:00" (32).
_FIX = """
UPDATE messages SET created_at = CASE
    WHEN length(created_at) = 25 THEN substr(created_at, 1, 19) || '.000000'
    ELSE substr(created_at, 1, 26)
END
WHERE created_at LIKE '%+00:00' AND length(created_at) IN (25, 32)
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(_FIX)


def downgrade() -> None:
    """Nothing to undo: the ORM's form reads back the same on every version."""
