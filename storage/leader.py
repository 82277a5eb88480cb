"""Exactly one scheduler leader across replicas: a PostgreSQL advisory lock.

The lock lives as long as the connection that took it, so a leader that dies releases
it with its connection and another replica takes over at its next try. SQLite means
one process, which is always the leader.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, text

from storage.db import Database

logger = logging.getLogger(__name__)

SCHEDULER_LOCK_KEY = 0x52415050  # "RAPP"


class LeaderLock:
    def __init__(self, db: Database, key: int = SCHEDULER_LOCK_KEY) -> None:
        self._db = db
        self._key = key
        self._conn: Connection | None = None
        self.held = False

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True while this process is the leader."""
        if self.held:
            return True
        if self._db.sqlite:
            self.held = True
            return True
        conn = self._db.engine.connect()
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar())
        conn.commit()
        if got:
            self._conn = conn
            self.held = True
            logger.info("this process is now the scheduler leader")
        else:
            conn.close()
        return got

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None
        self.held = False
