"""Schema upgrades with Alembic, configured in code so no ini file has to be found."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from storage.db import Database

MIGRATIONS = Path(__file__).parent / "migrations"

MIGRATION_LOCK_KEY = 0x52415051  # "RAPQ": not the scheduler's key (storage.leader)


def alembic_config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


@contextmanager
def _migration_lock(db: Database) -> Iterator[Connection]:
    """A connection for Alembic that, on PostgreSQL, holds a session advisory lock.

    Replicas started together on an empty database would otherwise all create the same
    tables at once and all but one fail; with the lock the others wait, then find the
    schema at head and have nothing to do. SQLite is one process: no lock.
    """
    with db.engine.connect() as conn:
        if db.sqlite:
            yield conn
            return
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()  # a session lock: it outlives this transaction
        try:
            yield conn
        finally:
            if conn.in_transaction():
                conn.rollback()
            # If the connection died the lock went with it; closing it is then enough.
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
            except Exception:
                conn.invalidate()


def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to call on every start, by every replica."""
    cfg = alembic_config(db)
    with _migration_lock(db) as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()


def downgrade(db: Database, revision: str) -> None:
    cfg = alembic_config(db)
    with _migration_lock(db) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        conn.commit()


def current(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
