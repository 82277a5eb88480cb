"""Exactly one scheduler leader across replicas: a PostgreSQL advisory lock.

The lock lives as long as the connection that took it, so a leader that dies releases
it with its connection and another replica takes over at its next try. The same goes
for a leader whose connection dies under it (PostgreSQL restart, failover, idle-session
timeout): so a leader checks at every try that its connection still holds the lock, and
stands down (then tries again, like any replica) when it does not. SQLite means one
process, which is always the leader.
"""

from __future__ import annotations

import contextlib
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
        if self._db.sqlite:
            self.held = True
            return True
        if self.held:
            if self._still_held():
                return True
            self._drop()
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

    def _still_held(self) -> bool:
        """Whether the lock connection is alive and its session still holds the lock.

        Any failure counts as "no": the lock went with the connection, and another
        replica may already have taken it.
        """
        if self._conn is None:
            return False
        classid, objid = (self._key >> 32) & 0xFFFFFFFF, self._key & 0xFFFFFFFF
        try:
            alive = bool(
                self._conn.execute(
                    text(
                        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                        " AND pid = pg_backend_pid() AND granted"
                        " AND classid::bigint = :c AND objid::bigint = :o AND objsubid = 1)"
                    ),
                    {"c": classid, "o": objid},
                ).scalar()
            )
            self._conn.commit()
        except Exception as exc:
            logger.warning("scheduler leader lock lost with its connection: %s", exc)
            return False
        if not alive:
            logger.warning("scheduler leader lock no longer held by this process")
        return alive

    def _drop(self) -> None:
        """Forget the lock connection without talking to the server (it may be gone)."""
        conn, self._conn, self.held = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
            with contextlib.suppress(Exception):
                conn.close()
        logger.info("this process is no longer the scheduler leader")

    def release(self) -> None:
        """Give the lock up; a connection that is already gone gave it up already."""
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                self._conn.commit()
            except Exception as exc:
                logger.warning(
                    "scheduler leader lock: connection already gone (%s); the lock went with it",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                )
                with contextlib.suppress(Exception):
                    self._conn.invalidate()
            finally:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
        self.held = False
